"""Deployments, `aimoves serve` and the automations, against a real local Prefect server.

One `aimoves serve --source simulated` per session (it starts `prefect server start` on a free port
with a temporary PREFECT_HOME): the server start costs ~5-14 s, so every test here shares it, and
so does tests/test_ui_browser.py (through `acquire_stack`). The session ends by stopping it with
SIGTERM while a flow run is in flight and checking that nothing it started is left running.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Iterator
from zoneinfo import ZoneInfo

import pytest
import yaml

from aimoves.serve import _die_with_parent  # the child's half of PR_SET_PDEATHSIG (stdlib only)
from conftest import SMALL_UNIVERSE

pytestmark = pytest.mark.flow

REPO = Path(__file__).resolve().parents[1]
SERVE_STARTUP_TIMEOUT = 240.0
ONE_US_STOCK = "stocks:\n  - {symbol: NVDA, name: NVIDIA, market: US, sector: semiconductors}\n"


# --- helpers: processes ---------------------------------------------------------------------------


def _process_table() -> dict[int, tuple[int, str]]:
    """pid → (ppid, state) from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry.name)] = (int(fields[1]), fields[0])
    return table


def descendants(pid: int) -> set[int]:
    table = _process_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    table = _process_table()
    return {p for p in pids if p in table and table[p][1] != "Z"}


def _port_open(port: int) -> bool:
    from aimoves.serve import port_in_use

    return port_in_use("127.0.0.1", port)


# --- the served stack -----------------------------------------------------------------------------


@dataclass
class Stack:
    """`aimoves serve` in a subprocess, and a client for its server."""

    tmp: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    data_dir: Path
    universe: Path
    env: dict[str, str]
    server_pid: int = 0
    startup_seconds: float = 0.0
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @contextmanager
    def settings(self) -> Iterator[None]:
        """This process's Prefect client talks to the stack (Prefect may be imported already)."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
            yield

    def client(self) -> Any:
        from prefect.client.orchestration import get_client

        return get_client(sync_client=True)

    def run(self, name: str, parameters: dict[str, Any] | None = None, timeout: float = 300) -> Any:
        """A deployment run to its final state (the served runner picks it up within ~2 s)."""
        from prefect.deployments import run_deployment

        with self.settings():
            return run_deployment(name, parameters=parameters or {}, timeout=timeout, poll_interval=1)

    def submit(self, name: str, parameters: dict[str, Any] | None = None) -> Any:
        from prefect.deployments import run_deployment

        with self.settings():
            return run_deployment(name, parameters=parameters or {}, timeout=0)

    def wait(self, *runs: Any, timeout: float = 300) -> list[Any]:
        """Runs submitted together (they run side by side) to their final states."""
        deadline = time.monotonic() + timeout
        with self.settings(), self.client() as client:
            while True:
                now = [client.read_flow_run(r.id) for r in runs]
                if all(r.state is not None and r.state.is_final() for r in now) or time.monotonic() > deadline:
                    return now
                time.sleep(1)

    def market_runs(self) -> dict[str, Any]:
        """A simulated run of each market's daily deployment for 2025-01-27, submitted together (they
        run side by side), shared by the tests that look at them."""
        if "markets" not in self.cache:
            started = time.monotonic()
            markets = ("US", "HK", "CN")
            runs = self.wait(*(self.submit(f"daily/daily-{m.lower()}", {"day": "2025-01-27"}) for m in markets))
            self.cache["markets"] = dict(zip(markets, runs))
            self.cache["markets-seconds"] = time.monotonic() - started
        return self.cache["markets"]

    def daily_us_run(self) -> Any:
        return self.market_runs()["US"]

    def artifacts(self, flow_run_id: Any) -> list[Any]:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        with self.settings(), self.client() as client:
            return client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))

    def cli(self, *args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = dict(self.env, PREFECT_API_URL=self.api_url)
        if cwd is not None:
            env["PWD"] = str(cwd)
        return subprocess.run([sys.executable, *args], cwd=cwd or REPO, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)


def start_stack(tmp: Path) -> Stack:
    from aimoves.serve import free_port

    (tmp / "universe.yaml").write_text(SMALL_UNIVERSE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_RUNNER_POLL_FREQUENCY="2", PYTHONUNBUFFERED="1")
    port = free_port()
    log = tmp / "serve.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aimoves", "serve", "--port", str(port), "--source", "simulated",
             "--data-dir", str(tmp / "data"), "--universe", str(tmp / "universe.yaml")],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # a killed pytest (no teardown) still stops it, gracefully
        )
    stack = Stack(tmp, port, proc, log, tmp / "data", tmp / "universe.yaml", env)
    while "Ctrl-C to stop" not in stack.output():
        if proc.poll() is not None or time.monotonic() - started > SERVE_STARTUP_TIMEOUT:
            proc.kill()
            pytest.fail(f"aimoves serve did not come up (exit {proc.poll()}):\n{stack.output()[-4000:]}")
        time.sleep(0.2)
    stack.startup_seconds = time.monotonic() - started
    text = stack.output()
    stack.server_pid = int(text.split("Prefect server (pid ", 1)[1].split(",", 1)[0])
    return stack


def stop_stack(stack: Stack) -> dict[str, Any]:
    """SIGTERM with a backfill in flight; what was left behind (nothing, if all is well)."""
    from prefect.client.schemas.objects import StateType

    in_flight = None
    if stack.proc.poll() is None:
        with stack.settings():
            from prefect.deployments import run_deployment

            in_flight = run_deployment("backfill/backfill", parameters={"start": "2023-01-02", "end": "2025-01-31"}, timeout=0)
            deadline = time.monotonic() + 60
            with stack.client() as client:
                while time.monotonic() < deadline and client.read_flow_run(in_flight.id).state_type != StateType.RUNNING:
                    time.sleep(0.5)
    tree = descendants(stack.proc.pid) | {stack.server_pid}
    started = time.monotonic()
    stack.proc.send_signal(signal.SIGTERM)
    try:
        code = stack.proc.wait(90)
    except subprocess.TimeoutExpired:
        stack.proc.kill()
        code = None
    seconds = time.monotonic() - started
    time.sleep(0.5)
    return {"code": code, "seconds": seconds, "left": alive(tree), "tree": tree, "in_flight": in_flight}


_SHARED: dict[str, Any] = {"stack": None, "users": 0}


def acquire_stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """The session's stack, started on first use (test_ui_browser.py shares it)."""
    if _SHARED["stack"] is None:
        _SHARED["stack"] = start_stack(tmp_path_factory.mktemp("served"))
    _SHARED["users"] += 1
    return _SHARED["stack"]


def release_stack() -> None:
    _SHARED["users"] -= 1
    if _SHARED["users"] > 0 or _SHARED["stack"] is None:
        return
    stack, _SHARED["stack"] = _SHARED["stack"], None
    result = stop_stack(stack)
    if stack.proc.poll() is None:
        stack.proc.kill()
    for pid in result["left"]:
        os.kill(pid, signal.SIGKILL)
    problems = []
    if result["code"] != 0:
        problems.append(f"aimoves serve exited {result['code']} after SIGTERM")
    if len(result["tree"]) < 2:
        problems.append(f"no flow run was in flight when SIGTERM came (processes: {sorted(result['tree'])})")
    if result["left"]:
        problems.append(f"processes left running after aimoves serve stopped: {sorted(result['left'])}")
    if _port_open(stack.port):
        problems.append(f"port {stack.port} still open")
    if problems:
        pytest.fail("; ".join(problems) + "\n" + stack.output()[-4000:])


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield acquire_stack(tmp_path_factory)
    release_stack()


# --- prefect.yaml ---------------------------------------------------------------------------------


def test_prefect_yaml_defines_each_schedule_once() -> None:
    from aimoves.serve import load_specs

    specs = {s.name: s for s in load_specs(REPO / "prefect.yaml")}
    assert list(specs) == ["daily-us", "daily-hk", "daily-cn", "derive-all", "backfill", "chunked-backfill", "backfill-chunk"]
    expected = {
        "daily-us": ("30 16 * * 1-5", "America/New_York", ["US"]),
        "daily-hk": ("30 16 * * 1-5", "Asia/Hong_Kong", ["HK"]),
        "daily-cn": ("30 15 * * 1-5", "Asia/Shanghai", ["CN"]),
    }
    for name, (cron, tz, markets) in expected.items():
        spec = specs[name]
        assert spec.entrypoint == "flows/prices.py:daily"
        assert spec.schedules == [{"cron": cron, "timezone": tz}]
        assert spec.parameters["markets"] == markets and spec.parameters["source"] == "yahoo"
    assert specs["backfill"].schedules == [] and specs["backfill"].parameters["source"] == "yahoo"
    assert specs["derive-all"].entrypoint == "flows/derive.py:derive"
    assert "start" not in specs["derive-all"].parameters  # the flow's default: yesterday UTC


def test_derive_all_derives_the_new_york_date_whose_markets_are_in() -> None:
    """At 20:30 New York on a weekday D, "yesterday UTC" is D, and CN, HK and US of D have closed
    (and their daily deployments have run): through both DST switches of two years."""
    from aimoves.serve import load_specs

    spec = next(s for s in load_specs(REPO / "prefect.yaml") if s.name == "derive-all")
    minute, hour, _, _, weekdays = spec.schedules[0]["cron"].split()
    assert weekdays == "1-5"
    ny, utc = ZoneInfo(spec.schedules[0]["timezone"]), ZoneInfo("UTC")
    daily_runs = {"daily-us": ((16, 30), "America/New_York"), "daily-hk": ((16, 30), "Asia/Hong_Kong"), "daily-cn": ((15, 30), "Asia/Shanghai")}
    day = date(2025, 1, 1)
    while day < date(2027, 1, 1):
        if day.weekday() < 5:
            fire = datetime(day.year, day.month, day.day, int(hour), int(minute), tzinfo=ny)
            assert fire.astimezone(utc).date() - timedelta(days=1) == day, fire
            for (h, m), tz in daily_runs.values():
                ran = datetime(day.year, day.month, day.day, h, m, tzinfo=ZoneInfo(tz))
                assert ran < fire - timedelta(hours=1), (day, tz)
        day += timedelta(days=1)


# --- aimoves serve --------------------------------------------------------------------------------


def test_serve_registers_the_deployments_and_schedules_of_prefect_yaml(stack: Stack) -> None:
    from aimoves.serve import load_specs

    specs = {s.name: s for s in load_specs(REPO / "prefect.yaml")}
    with stack.settings(), stack.client() as client:
        deployments = {d.name: d for d in client.read_deployments()}
    assert set(deployments) == set(specs)
    for name, spec in specs.items():
        d = deployments[name]
        got = [{"cron": s.schedule.cron, "timezone": s.schedule.timezone} for s in d.schedules if s.active]
        assert got == spec.schedules, name
        assert not d.paused
        if "source" in spec.parameters:
            assert d.parameters["source"] == "simulated"  # --source overrides prefect.yaml's yahoo
        assert d.parameters["data_dir"] == str(stack.data_dir)
    assert f"UI: {stack.ui_url}" in stack.output()


def test_a_served_daily_run_completes_and_publishes_artifacts(stack: Stack) -> None:
    run = stack.daily_us_run()
    assert run.state.is_completed(), run.state
    assert run.name == "daily-US-2025-01-27"
    assert (stack.data_dir / "prices" / "market=US" / "year=2025").is_dir()
    keys = {a.key for a in stack.artifacts(run.id)}
    assert keys, "the run published no artifacts"
    assert any(k and k.startswith("sector-moves") for k in keys), keys


def test_every_market_deployment_runs(stack: Stack) -> None:
    for market, run in stack.market_runs().items():
        assert run.state.is_completed(), (market, run.state)
        assert run.name == f"daily-{market}-2025-01-27"
        assert (stack.data_dir / "prices" / f"market={market}").is_dir()


def test_serve_refuses_a_port_in_use(stack: Stack) -> None:
    result = stack.cli("-m", "aimoves", "serve", "--port", str(stack.port), timeout=60)
    assert result.returncode == 1
    assert f"127.0.0.1:{stack.port} is already in use" in result.stdout + result.stderr


def test_ctrl_c_while_the_server_starts_leaves_nothing_running(tmp_path: Path) -> None:
    from aimoves.serve import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "aimoves", "serve", "--port", str(port), "--source", "simulated"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_die_with_parent)
    deadline = time.monotonic() + 60
    tree: set[int] = set()
    while time.monotonic() < deadline and not tree:
        tree = descendants(proc.pid)
        time.sleep(0.1)
    assert tree, "aimoves serve started no server"
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    out, _ = proc.communicate(timeout=60)
    time.sleep(0.3)
    assert not alive(tree), out
    assert not _port_open(port)
    assert "Prefect server stopped" in out



def test_a_ctrl_c_swallowed_by_library_code_during_start_up_still_stops_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under load a Ctrl-C landed in code that catches BaseException and was lost: the server came up
    and kept serving. The signal is remembered and acted on between serve's steps."""
    from aimoves import serve as serving

    class FakeServer:
        def __init__(self, host: str, port: int, log_path: Path) -> None:
            self.api_url, self.ui_url, self.log_path = f"http://{host}:{port}/api", f"http://{host}:{port}", log_path
            self.process, self.calls = None, []

        def start(self) -> None:
            self.process = subprocess.Popen([sys.executable, "-c", "pass"])
            self.calls.append("start")

        def wait_healthy(self, timeout: float) -> float:
            self.calls.append("wait_healthy")
            return 0.0

        def stop(self) -> int:
            self.calls.append("stop")
            return 0

    servers: list[FakeServer] = []
    monkeypatch.setattr(serving, "PrefectServer", lambda *a: servers.append(FakeServer(*a)) or servers[-1])

    def build_deployments_swallowing_ctrl_c(*args: Any) -> list:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except BaseException:  # noqa: BLE001, S110  as some library code does
            pass
        return []

    monkeypatch.setattr(serving, "build_deployments", build_deployments_swallowing_ctrl_c)
    before = signal.getsignal(signal.SIGINT)  # default_int_handler; SIG_IGN in an xdist worker
    said: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        serving.serve(port=1, prefect_yaml=REPO / "prefect.yaml", say=said.append)
    assert servers[0].calls == ["start", "stop"], servers[0].calls
    assert said[-1] == "Prefect server stopped (exit code 0)."
    assert signal.getsignal(signal.SIGINT) is before

# --- automations ----------------------------------------------------------------------------------


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).received.append(json.loads(body or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Hook", (_Hook,), {"received": received})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


def test_automation_files_apply_with_the_prefect_cli(stack: Stack, tmp_path: Path) -> None:
    """The files are what `prefect automation create --from-file` reads, once the block id is in."""
    result = stack.cli(str(REPO / "automations" / "apply.py"), "--webhook-url", "http://127.0.0.1:9/none", "--render-to", str(tmp_path))
    assert result.returncode == 0, result.stderr
    names = []
    for f in sorted((REPO / "automations").glob("*.yaml")):
        created = stack.cli("-m", "prefect", "automation", "create", "--from-file", str(tmp_path / f.name))
        assert created.returncode == 0 and "Created automation" in created.stdout, created.stdout + created.stderr
        names.append(yaml.safe_load(f.read_text())["name"])
    with stack.settings(), stack.client() as client:
        for name in names:
            (automation,) = client.read_automations_by_name(name)
            client.delete_automation(automation.id)


def test_failures_and_heavy_quarantine_send_notifications(stack: Stack, webhook: tuple[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    url, received = webhook
    result = stack.cli(str(REPO / "automations" / "apply.py"), "--webhook-url", url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("automation") == len(list((REPO / "automations").glob("*.yaml"))), result.stdout
    (tmp_path / "one.yaml").write_text(ONE_US_STOCK)
    failed, heavy = stack.wait(
        stack.submit("daily/daily-us", {"source": "csv"}),  # fails: --source csv without a csv_dir
        # quarantines more than 5%: the injected defects among one stock's bars
        stack.submit("daily/daily-us", {"day": "2025-01-27", "inject_defects": True, "universe": str(tmp_path / "one.yaml"),
                                        "data_dir": str(tmp_path / "data")}),
    )
    assert failed.state.is_failed(), failed.state
    assert heavy.state.is_completed(), heavy.state
    deadline = time.monotonic() + 60
    while len(received) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    subjects = sorted(m.get("subject", "") for m in received)
    assert len(received) == 2, received
    assert subjects[0] == "aimoves: daily run daily-US-latest Failed", subjects
    assert subjects[1].startswith("aimoves: daily-US-2025-01-27 quarantined "), subjects
    failure = next(m for m in received if m["subject"].endswith("Failed"))
    assert "--source csv needs --csv-dir" in failure["body"]
    assert f"{stack.ui_url}/runs/flow-run/{failed.id}" in failure["body"]
    quarantine = next(m for m in received if "quarantined" in m["subject"])
    assert f"{stack.ui_url}/runs/flow-run/{heavy.id}" in quarantine["body"]
    assert "threshold 5.0%" in quarantine["body"]


# --- prefect deploy --all (last: it re-points the served deployments at the work pool) ------------


def test_prefect_deploy_all_from_a_clean_checkout(stack: Stack, tmp_path: Path) -> None:
    stack.daily_us_run()  # the browser test's run, made while the deployments are still served
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(REPO / "prefect.yaml", clone)
    shutil.copytree(REPO / "flows", clone / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    pool = stack.cli("-m", "prefect", "work-pool", "create", "aimoves", "--type", "process", cwd=clone)
    assert pool.returncode == 0, pool.stdout + pool.stderr
    started = time.monotonic()
    deploy = stack.cli("-m", "prefect", "deploy", "--all", cwd=clone, timeout=180)
    stack.cache["deploy-seconds"] = time.monotonic() - started
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert not list(clone.glob(".prefect*")) and sorted(p.name for p in clone.iterdir()) == ["flows", "prefect.yaml"]
    from aimoves.serve import load_specs

    with stack.settings(), stack.client() as client:
        deployments = {d.name: d for d in client.read_deployments()}
    for spec in load_specs(REPO / "prefect.yaml"):
        d = deployments[spec.name]
        assert d.work_pool_name == "aimoves"
        assert d.entrypoint == spec.entrypoint
        assert d.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(clone)}}]
        assert [{"cron": s.schedule.cron, "timezone": s.schedule.timezone} for s in d.schedules] == spec.schedules
        assert d.parameters == spec.parameters  # source yahoo, data_dir data: as in prefect.yaml
    # Back to what `aimoves serve` registered (same deployment ids: its runner keeps serving them).
    from aimoves.serve import build_deployments

    overrides = {"source": "simulated", "data_dir": str(stack.data_dir), "universe": str(stack.universe)}
    with stack.settings():
        for served in build_deployments(load_specs(REPO / "prefect.yaml"), REPO, overrides):
            served.apply()
        with stack.client() as client:
            restored = {d.name: d for d in client.read_deployments()}
    assert {d.id for d in restored.values()} == {d.id for d in deployments.values()}
    # (the work pool stays set on the server's side; the runner serves its deployments by id regardless)
    assert all(d.parameters.get("source", "simulated") == "simulated" and not d.pull_steps for d in restored.values()), restored
