"""The production shape, started by tests: PostgreSQL, a Prefect server on it, the `aimoves` pool, deployments, two
workers, and the datasets on an S3-compatible server (moto's, on 127.0.0.1).

Every part is a process this module started and stops by its process group: SIGTERM, a timeout,
then SIGKILL (Prefect workers ignore SIGTERM and SIGINT for 30 s+). A process worker starts each
flow run in a session of its own (Prefect 3.9: `start_new_session`), outside the worker's group, so
a worker's flow-run subprocesses are found through /proc and their groups signalled too. The workers
get the standard AWS settings of the S3 server; the team's data location, the Prefect Variable
aimoves-data-dir, is `s3://aimoves-team/team`. PostgreSQL's initdb and pg_ctl
refuse to run as root, so as root they run as the `postgres` user, in a data dir, socket dir and log
file that user owns; the server listens on 127.0.0.1 and a free port. Where PostgreSQL or asyncpg
or moto cannot be had, `team()` skips with the reason.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from aimoves.location import VARIABLE
from s3kit import S3Server, free_port, s3_server

REPO = Path(__file__).resolve().parents[1]
POOL = "aimoves"
BUCKET = "aimoves-team"
STOP_TIMEOUT_S = 10.0


def _pg_bin() -> Path | None:
    """The newest PostgreSQL server binaries installed (Debian keeps them under /usr/lib/postgresql/N/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def why_no_team() -> str | None:
    """None when the team stack can start here, else why not (the skip reason)."""
    if _pg_bin() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql"
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run initdb/pg_ctl as"
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return "asyncpg is not installed (pip install -e '.[dev]')"
    try:
        import boto3  # noqa: F401
        import moto.moto_server.werkzeug_app  # noqa: F401
    except ImportError:
        return "moto's S3 server or boto3 is not installed (pip install -e '.[dev]')"
    return None


def _as_postgres(args: list[str]) -> list[str]:
    """`args` run as the postgres user when we are root (initdb and pg_ctl refuse root)."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def descendants(pid: int) -> list[int]:
    """The process ids of every live descendant of `pid` (from /proc), children first."""
    parents: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:  # exited while we looked
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        if fields[0] != "Z":
            parents.setdefault(int(fields[1]), []).append(int(Path(stat).parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(0), [])
        found += children
        todo += children
    return found


def alive(pid: int) -> bool:
    """`pid` runs (a zombie, dead and not yet reaped, does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _kill_groups(pids: list[int]) -> None:
    """SIGKILL to every process group led by one of `pids` (only groups our own processes lead), and to each of `pids`."""
    for pid in pids:
        for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            try:
                target()
            except (ProcessLookupError, PermissionError):
                pass


def kill_group(proc: subprocess.Popen[Any]) -> list[int]:
    """SIGKILL, now: the process group `proc` leads and its descendants with their groups (a worker's flow-run
    subprocesses lead their own); returns the descendants' ids, each dead when this returns."""
    children = descendants(proc.pid)
    _kill_groups([proc.pid, *children])
    proc.wait(timeout=STOP_TIMEOUT_S)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    return children


def stop_group(proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to the process group `proc` leads, then SIGKILL after `timeout` seconds; then SIGKILL to whatever of
    its descendants outlived it (a worker's flow-run subprocesses run in sessions of their own)."""
    if proc.poll() is not None:
        return
    children = descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass
    _kill_groups([proc.pid, *children])  # those that outlived their leader


@dataclass
class Postgres:
    port: int
    data: Path
    bin: Path
    user: str = "aimoves"
    db: str = "prefect"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{self.db}"


@contextmanager
def postgres(tmp: Path) -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster on 127.0.0.1:<free port> with a database `prefect` (trust auth, local only)."""
    pg_bin = _pg_bin()
    assert pg_bin is not None
    # NOTE: not under pytest's tmp_path: pytest keeps /tmp/pytest-of-<user> at mode 0700 (and every
    # pytest session on the machine resets it), so the postgres user could not reach its files there.
    root = Path(tempfile.mkdtemp(prefix="aimoves-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, sock, log = root / "data", root / "sock", root / "log"
    pg = Postgres(free_port(), data, pg_bin)

    def run(args: list[str]) -> None:
        done = subprocess.run(_as_postgres(args), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}\n{log.read_text() if log.exists() else ''}")

    run(["mkdir", "-p", str(sock)])
    run([str(pg_bin / "initdb"), "-D", str(data), "-U", pg.user, "--auth=trust", "-E", "UTF8", "--no-sync"])
    opts = f"-c listen_addresses=127.0.0.1 -p {pg.port} -k {sock} -c fsync=off"
    run([str(pg_bin / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60", "start"])
    try:
        run([str(pg_bin / "createdb"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", pg.user, pg.db])
        yield pg
    finally:
        subprocess.run(_as_postgres([str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Team:
    """A Prefect server on PostgreSQL with the `aimoves` pool, prefect.yaml deployed, two workers, and an S3 server."""

    tmp: Path
    pg: Postgres
    s3: S3Server
    port: int
    env: dict[str, str]
    clone: Path
    server: subprocess.Popen[bytes] | None = None
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def data(self) -> str:
        """The team's data location: the Prefect Variable aimoves-data-dir that `team()` sets."""
        return self.location("team")

    @staticmethod
    def location(prefix: str) -> str:
        """A data location in the team's bucket."""
        return f"s3://{BUCKET}/{prefix}"

    def cli(self, *args: str, cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """`python -m prefect …` (or another module) against this server."""
        env = {**self.env, "PWD": str(cwd or self.tmp)}
        return subprocess.run([sys.executable, *args], cwd=cwd or self.tmp, env=env, capture_output=True, text=True, timeout=timeout)

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        return subprocess.Popen([sys.executable, *args], cwd=self.clone, env={**self.env, "PWD": str(self.clone)},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    @contextmanager
    def settings(self) -> Iterator[None]:
        """This process's Prefect client talks to the team server."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
            yield

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        # --limit 2: a worker takes at most two runs at once, so three runs submitted together spread over both
        # workers (and a chunked backfill's parent, which waits for its chunks, leaves its worker a slot).
        proc = self.spawn(name, "-m", "prefect", "worker", "start", "--pool", POOL, "--name", name, "--limit", "2",
                          "--prefetch-seconds", "0")
        self.workers[name] = proc
        return proc

    def events(self, name: str) -> list[dict[str, Any]]:
        """Events named `name` from the server's API, oldest first."""
        import httpx

        body = {"filter": {"event": {"name": [name]}, "occurred": {"since": "2000-01-01T00:00:00Z"}}, "limit": 50}
        response = httpx.post(f"{self.api_url}/events/filter", json=body, timeout=30)
        response.raise_for_status()
        return list(reversed(response.json()["events"]))

    def workers_of(self, ids: list[Any], timeout: float = 30) -> dict[str, str | None]:
        """flow-run id → its worker's name, waiting up to `timeout` for the events (they reach the database a moment after a run ends)."""
        deadline = time.monotonic() + timeout
        while True:
            taken = self.workers_of_runs()
            if all(str(i) in taken for i in ids) or time.monotonic() > deadline:
                return {str(i): taken.get(str(i)) for i in ids}
            time.sleep(0.5)

    def workers_of_runs(self) -> dict[str, str]:
        """flow-run id → the name of the worker that submitted it (from `prefect.worker.submitted-flow-run` events)."""
        taken = {}
        for event in self.events("prefect.worker.submitted-flow-run"):
            worker = event["resource"].get("prefect.resource.name", event["resource"]["prefect.resource.id"])
            for related in event.get("related", []):
                if related["prefect.resource.id"].startswith("prefect.flow-run."):
                    taken[related["prefect.resource.id"].removeprefix("prefect.flow-run.")] = worker
        return taken


def _wait_healthy(team: Team, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert team.server is not None
        if team.server.poll() is not None:
            raise RuntimeError(f"prefect server exited with {team.server.returncode}:\n{team.log('server')}")
        try:
            if httpx.get(f"{team.api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"prefect server not healthy after {timeout:.0f} s:\n{team.log('server')}")


@contextmanager
def team(tmp: Path, workers: int = 2, server_timeout: float = 180) -> Iterator[Team]:
    """PostgreSQL, `prefect server start` on it, `prefect work-pool create`, `workers` workers, `prefect deploy --all`,
    moto's S3 on 127.0.0.1 with the bucket aimoves-team, and the Variable aimoves-data-dir (`s3://aimoves-team/team`)."""
    reason = why_no_team()
    if reason:
        pytest.skip(reason)
    with ExitStack() as stack:
        started = time.monotonic()
        pg = stack.enter_context(postgres(tmp))
        s3 = stack.enter_context(s3_server())  # a thread of this process: stopped last, after the workers
        s3.client().create_bucket(Bucket=BUCKET)
        clone = tmp / "clone"  # a checkout's deployable part: prefect.yaml and flows/ (the package is installed)
        clone.mkdir()
        shutil.copy(REPO / "prefect.yaml", clone)
        shutil.copytree(REPO / "flows", clone / "flows", ignore=shutil.ignore_patterns("__pycache__"))
        port = free_port()
        env = {
            **os.environ,
            "PREFECT_HOME": str(tmp / "prefect-home"),
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_API_DATABASE_CONNECTION_URL": pg.url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            # Server services this shape does not exercise, off to spare the CPU: the scheduler would insert
            # ~100 future runs per scheduled deployment (test_deployments checks the schedules), automations, and
            # the sweepers of late, paused, cancelled and lost runs.
            **{f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in (
                "SCHEDULER", "TRIGGERS", "LATE_RUNS", "PAUSE_EXPIRATIONS", "CANCELLATION_CLEANUP", "REPOSSESSOR", "FOREMAN",
                "CLEANUP_RECONCILER")},
            "PREFECT_WORKER_HEARTBEAT_SECONDS": "10",
            "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
            **s3.env(),  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL: what the workers' runs write with
        }
        env.pop("PREFECT_PROFILES_PATH", None)
        env.pop("AIMOVES_DATA_DIR", None)  # the team's data location is the server's Variable (below)
        t = Team(tmp, pg, s3, port, env, clone)
        t.timings["postgres+s3"] = time.monotonic() - started
        t.server = t.spawn("server", "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port))
        stack.callback(lambda: stop_group(t.server))  # type: ignore[arg-type]
        _wait_healthy(t, server_timeout)
        t.timings["server"] = time.monotonic() - started - t.timings["postgres+s3"]
        pool = t.cli("-m", "prefect", "work-pool", "create", POOL, "--type", "process", cwd=clone)
        assert pool.returncode == 0, pool.stdout + pool.stderr
        for i in range(1, workers + 1):  # they start (imports, first poll) while the deployments are made
            proc = t.start_worker(f"worker-{i}")
            stack.callback(stop_group, proc)
        mark = time.monotonic()
        deploy = t.cli("-m", "prefect", "deploy", "--all", cwd=clone, timeout=300)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        variable = t.cli("-m", "prefect", "variable", "set", VARIABLE, str(t.data), cwd=clone)  # prefect.yaml names no data dir
        assert variable.returncode == 0, variable.stdout + variable.stderr
        t.timings["deploy"] = time.monotonic() - mark
        wait_for_workers(t, set(t.workers))
        t.timings["total"] = time.monotonic() - started
        yield t


def wait_for_workers(t: Team, names: set[str], timeout: float = 120) -> None:
    """Until every worker in `names` has sent its first heartbeat to the pool."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    with t.settings(), get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            seen = {w.name for w in client.read_workers_for_work_pool(POOL)}
            if names <= seen:
                return
            for name in names - seen:
                if t.workers[name].poll() is not None:
                    raise RuntimeError(f"{name} exited with {t.workers[name].returncode}:\n{t.log(name)}")
            time.sleep(0.25)
    raise RuntimeError(f"workers {sorted(names - seen)} did not reach the pool in {timeout:.0f} s")


def wait_for_runs(t: Team, ids: list[Any], timeout: float = 300) -> list[Any]:
    """The flow runs `ids` once all are in a final state."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with t.settings(), get_client(sync_client=True) as client:
        while True:
            runs = [client.read_flow_run(i) for i in ids]
            if all(r.state is not None and r.state.is_final() for r in runs):
                return runs
            if time.monotonic() > deadline:
                states = {r.name: r.state.name if r.state else None for r in runs}
                raise TimeoutError(f"runs not final after {timeout:.0f} s: {states}\n"
                                   + "\n".join(f"--- {n}\n{t.log(n)}" for n in t.workers))
            time.sleep(0.5)
