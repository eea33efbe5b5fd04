"""`aimoves serve`: a local Prefect server plus this project's deployments, served in this process.

No work pool and no worker: the deployments of `prefect.yaml` (names, parameters, schedules: defined
there once) are built with `flow.to_deployment(...)` and registered and run by a Prefect `Runner`
(what `prefect.serve(...)` uses), each flow run in a subprocess of this one. The server is a child process (`prefect server start`) in its
own session; Ctrl-C or SIGTERM stops the serve loop (cancelling runs in flight), then the server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aimoves.errors import AimovesError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200
HEALTH_TIMEOUT = 120.0  # seconds; a first start on a new database takes ~10-14 s on 2 cores
STOP_GRACE = 20.0  # seconds the server gets to shut down (it takes ~1.5 s) before SIGTERM, SIGKILL
SCHEDULE_KEYS = {"cron", "interval", "rrule", "timezone", "day_or", "active", "parameters", "slug", "anchor_date"}
OVERRIDABLE = ("source", "data_dir", "universe")  # command-line overrides of deployment parameters


class ServeError(AimovesError):
    """`aimoves serve` cannot start: bad prefect.yaml, port in use, server not healthy in time."""


@dataclass(frozen=True)
class DeploymentSpec:
    """One entry of prefect.yaml's `deployments:` (the fields `aimoves serve` uses)."""

    name: str
    entrypoint: str
    parameters: dict[str, Any] = field(default_factory=dict)
    schedules: list[dict[str, Any]] = field(default_factory=list)
    description: str | None = None
    tags: list[str] = field(default_factory=list)

    def schedule_text(self) -> str:
        if not self.schedules:
            return "by hand"
        parts = []
        for s in self.schedules:
            what = s.get("cron") or (f"every {s['interval']} s" if "interval" in s else s.get("rrule", "?"))
            parts.append(f"{what} {s.get('timezone', 'UTC')}" + ("" if s.get("active", True) else " (inactive)"))
        return "; ".join(parts)


# --- prefect.yaml ---------------------------------------------------------------------------------


def find_prefect_yaml(path: Path | None = None) -> Path:
    """The given file, else ./prefect.yaml, else the one at the root of this repository."""
    if path is not None:
        if not path.is_file():
            raise ServeError(f"--prefect-yaml {path}: no such file")
        return path.resolve()
    for candidate in (Path.cwd() / "prefect.yaml", Path(__file__).resolve().parents[1] / "prefect.yaml"):
        if candidate.is_file():
            return candidate
    raise ServeError("no prefect.yaml in the current folder: run from the repository root, or give --prefect-yaml FILE")


def load_specs(path: Path) -> list[DeploymentSpec]:
    """The deployments of a prefect.yaml, checked enough to fail before any server starts."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ServeError(f"{path}: cannot read it as YAML: {exc}") from None
    entries = (doc or {}).get("deployments") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ServeError(f"{path}: no `deployments:` list")
    specs, seen = [], set()
    for i, entry in enumerate(entries):
        where = f"{path}: deployments[{i}]"
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("entrypoint"):
            raise ServeError(f"{where}: needs `name` and `entrypoint`")
        where = f"{path}: deployment {entry['name']!r}"
        if entry["name"] in seen:
            raise ServeError(f"{where}: defined twice")
        seen.add(entry["name"])
        if ":" not in str(entry["entrypoint"]):
            raise ServeError(f"{where}: entrypoint {entry['entrypoint']!r} is not `path/to/file.py:flow_function`")
        schedules = entry.get("schedules") or []
        if not isinstance(schedules, list):
            raise ServeError(f"{where}: `schedules` must be a list")
        for s in schedules:
            if not isinstance(s, dict) or not ({"cron", "interval", "rrule"} & set(s)):
                raise ServeError(f"{where}: each schedule needs cron, interval or rrule (got {s!r})")
            unknown = set(s) - SCHEDULE_KEYS
            if unknown:
                raise ServeError(f"{where}: schedule keys not supported by aimoves serve: {', '.join(sorted(unknown))}")
        params = entry.get("parameters") or {}
        if not isinstance(params, dict):
            raise ServeError(f"{where}: `parameters` must be a mapping")
        specs.append(DeploymentSpec(str(entry["name"]), str(entry["entrypoint"]), dict(params), list(schedules),
                                    entry.get("description"), list(entry.get("tags") or [])))
    return specs


def _schedule(config: dict[str, Any]) -> Any:
    """One prefect.yaml schedule entry as a Prefect schedule (the same keys `prefect deploy` reads)."""
    from datetime import datetime, timedelta

    from prefect.schedules import Cron, Interval, RRule

    common: dict[str, Any] = {"active": config.get("active", True)}
    if config.get("parameters"):
        common["parameters"] = config["parameters"]
    if config.get("slug"):
        common["slug"] = config["slug"]
    tz = config.get("timezone")
    if "cron" in config:
        return Cron(config["cron"], timezone=tz, day_or=config.get("day_or", True), **common)
    if "interval" in config:
        interval = config["interval"]
        anchor = config.get("anchor_date")
        return Interval(timedelta(seconds=interval) if isinstance(interval, (int, float)) else interval,
                        datetime.fromisoformat(str(anchor)) if anchor else None, timezone=tz, **common)
    return RRule(config["rrule"], timezone=tz, **common)


def load_flow(entrypoint: str, root: Path) -> Any:
    """`flows/prices.py:daily` → the flow object (flows/ installs as `aimoves.flows`)."""
    import importlib

    file, _, func = entrypoint.partition(":")
    rel = Path(file)
    if rel.parts and rel.parts[0] == "flows" and rel.suffix == ".py":
        module = importlib.import_module(".".join(("aimoves", *rel.with_suffix("").parts)))
        flow = getattr(module, func, None)
    else:
        from prefect.flows import load_flow_from_entrypoint

        flow = load_flow_from_entrypoint(f"{root / file}:{func}")
    if flow is None or not hasattr(flow, "to_deployment"):
        raise ServeError(f"entrypoint {entrypoint}: no flow named {func!r}")
    return flow


def effective_parameters(spec: DeploymentSpec, flow: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """prefect.yaml's parameters, with the command-line overrides the flow accepts; relative data_dir absolute."""
    accepted = set(flow.parameters.properties)
    params = dict(spec.parameters)
    for key, value in overrides.items():
        if value is not None and key in accepted:
            params[key] = value
    if params.get("data_dir") and not Path(str(params["data_dir"])).is_absolute():
        params["data_dir"] = str(Path(str(params["data_dir"])).resolve())
    return params


def build_deployments(specs: list[DeploymentSpec], root: Path, overrides: dict[str, Any]) -> list[Any]:
    """RunnerDeployments for `serve(...)`: schedules and parameters as prefect.yaml defines them."""
    from prefect.deployments.runner import EntrypointType

    deployments = []
    for spec in specs:
        flow = load_flow(spec.entrypoint, root)
        deployments.append(flow.to_deployment(
            name=spec.name,
            schedules=[_schedule(s) for s in spec.schedules] or None,
            parameters=effective_parameters(spec, flow, overrides),
            description=spec.description,
            tags=spec.tags or None,
            # the runner imports aimoves.flows.prices wherever it runs, not a file path relative to cwd
            entrypoint_type=EntrypointType.MODULE_PATH,
        ))
    return deployments


# --- the server -----------------------------------------------------------------------------------


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _load_libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()  # loaded up front: the child between fork and exec should only call into it


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM when its parent dies without cleaning up (even by SIGKILL)."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class PrefectServer:
    """`prefect server start --host H --port N` as a child process, healthy or a clear error."""

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, log_path: Path | None = None) -> None:
        self.host, self.port = host, port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        # The UI is a browser app: it must call this server, not :4200 or an API URL set for other work.
        env["PREFECT_API_URL"] = self.api_url
        env["PREFECT_UI_API_URL"] = self.api_url
        return env

    def start(self) -> None:
        if port_in_use(self.host, self.port):
            raise ServeError(f"{self.host}:{self.port} is already in use (another Prefect server?): stop it, or use --port")
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(self.log_path, "ab")
        else:
            log = subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--host", self.host, "--port", str(self.port)],
                env=self.env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal reaches us, and we stop the server in order
                preexec_fn=_die_with_parent if _LIBC is not None else None,
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as r:
                return r.status == 200 and r.read().strip() == b"true"
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT) -> float:
        """Seconds it took; ServeError (with the end of the server's log) if it exits or times out."""
        assert self.process is not None
        started = time.monotonic()
        while True:
            if self.healthy():
                return time.monotonic() - started
            code = self.process.poll()
            if code is not None:
                raise ServeError(f"the Prefect server exited with code {code} before it was healthy{self._log_tail()}")
            if time.monotonic() - started > timeout:
                self.stop()
                raise ServeError(f"the Prefect server was not healthy at {self.api_url}/health after {timeout:.0f} s{self._log_tail()}")
            time.sleep(0.25)

    def _log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"; its log ({self.log_path}) ends:\n" + "\n".join(tail)

    def stop(self, grace: float = STOP_GRACE) -> int | None:
        """SIGINT to the server's process group (a graceful uvicorn shutdown, exit 0: SIGTERM kills it
        at once), then SIGTERM, then SIGKILL; its exit code."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                return proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        return proc.poll()


# --- aimoves serve --------------------------------------------------------------------------------


@contextmanager
def _terminate_as_interrupt() -> Iterator[list[int]]:
    """Ctrl-C, SIGTERM and SIGHUP raise KeyboardInterrupt until Prefect's runner installs its own
    handlers, and are remembered (the list yielded): library code that catches BaseException can
    swallow the KeyboardInterrupt (seen under load: a Ctrl-C during start-up was lost and the server
    kept serving), so `serve` checks the list between its steps."""
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _stop_if(received: list[int]) -> None:
    if received:
        raise KeyboardInterrupt(f"signal {received[0]}")


def serve(
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    source: str | None = None,
    data_dir: Path | None = None,
    universe: Path | None = None,
    prefect_yaml: Path | None = None,
    timeout: float = HEALTH_TIMEOUT,
    server_log: Path | None = None,
    say: Callable[[str], None] = print,
) -> None:
    """Start the server, register prefect.yaml's deployments, serve them until Ctrl-C or SIGTERM."""
    path = find_prefect_yaml(prefect_yaml)
    specs = load_specs(path)
    if universe is not None and not universe.is_file():
        raise ServeError(f"--universe {universe}: no such file")
    overrides = {"source": source, "data_dir": str(data_dir.resolve()) if data_dir else None,
                 "universe": str(universe.resolve()) if universe else None}
    server = PrefectServer(host, port, server_log or _default_server_log(port))
    # Before Prefect is imported in this process: its settings are read from the environment then.
    os.environ["PREFECT_API_URL"] = server.api_url
    os.environ["PREFECT_UI_API_URL"] = server.api_url
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with _terminate_as_interrupt() as received:
        started = time.monotonic()
        server.start()
        assert server.process is not None
        try:
            say(f"Starting the Prefect server (pid {server.process.pid}, log {server.log_path}) …")
            deployments = build_deployments(specs, path.parent, overrides)  # imports while the server boots
            _stop_if(received)
            server.wait_healthy(timeout)
            _stop_if(received)
            say(f"Prefect server healthy after {time.monotonic() - started:.1f} s. UI: {server.ui_url}")
            for spec, dep in zip(specs, deployments):
                shown = {k: dep.parameters[k] for k in ("markets", "source", "data_dir") if k in dep.parameters}
                say(f"  {dep.flow_name}/{spec.name}: {spec.schedule_text()}  {shown}")
            _serve(deployments, server, lambda: say(
                f"Serving {len(deployments)} deployments from {path} (flow runs execute here). Ctrl-C to stop."))
        finally:
            # A second Ctrl-C or SIGTERM must not cut the shutdown short and orphan the server.
            previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                say("Stopping the Prefect server …")
                code = server.stop()
                say(f"Prefect server stopped (exit code {code}).")
            finally:
                for sig, old in previous.items():
                    signal.signal(sig, old)


def _serve(deployments: list[Any], server: PrefectServer, ready: Callable[[], None]) -> None:
    """What `prefect.serve(...)` does, with `ready()` called once the deployments are registered."""
    import asyncio

    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_API_URL, temporary_settings

    # In case Prefect was imported before the environment was set (tests, `python -c`), set it here too.
    with temporary_settings(updates={PREFECT_API_URL: server.api_url, PREFECT_UI_API_URL: server.api_url}):
        # prefetch 0: start a scheduled run at its time, not up to 10 s early (a daily run asks for the
        # latest session settled 30 minutes after the close, exactly when the schedules fire).
        # pause_on_shutdown: no schedules pile up as Late runs while nothing serves them; the next
        # `aimoves serve` registers the deployments again, which resumes them.
        runner = Runner(pause_on_shutdown=True, prefetch_seconds=0)
        for deployment in deployments:
            runner.add_deployment(deployment)
        ready()
        try:
            asyncio.run(runner.start())
        except (KeyboardInterrupt, TerminationSignal):
            pass


def _default_server_log(port: int) -> Path:
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    return home / f"aimoves-serve-server-{port}.log"
