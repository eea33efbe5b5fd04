"""Crash safety: SIGKILL a backfill at many points; nothing is lost, half-written or duplicated.

62 trials in forked workers (48 at moments spread over the writing phase of a reference run, each held as
"so many seconds after its n-th write", and 14 at precise
points: just before and just after publishing a file), and 5 that kill the real `aimoves` command.
A forked trial counts only when its kill landed while the run was writing (after its first write,
before its end); a worker that finished first, or exited, does not count. The last test asserts
that at least MIN_COUNTED did and says how many. See tests/crashkit.py.
Set AIMOVES_RELIABILITY_OUT=FILE to collect each trial's outcome (docs/reliability.md is made from it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import pytest

import crashkit as ck
from aimoves.universe import parse_universe
from conftest import SMALL_UNIVERSE

pytestmark = pytest.mark.crash

UNIVERSE = parse_universe(SMALL_UNIVERSE, "small")
MARKETS = ("US", "HK", "CN")
BASELINE = (date(2024, 10, 1), date(2024, 12, 31))
RUN = (date(2025, 1, 2), date(2025, 1, 31))  # its 70-session warm-up rewrites the baseline's Q4 partitions
TIMER_TRIALS = 48  # more than MIN_COUNTED needs: a run slower or faster than the reference can end before a late kill
MIN_COUNTED = 50
POINT_TRIALS = [("replace", n, after) for n in (1, 3, 5, 7, 9, 11, 13) for after in (False, True)]
CLI_TRIALS = 5


def _record(kind: str, point: str, outcome: str, verdict: str) -> None:
    out = os.environ.get("AIMOVES_RELIABILITY_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"kind": kind, "point": point, "outcome": outcome, "verdict": verdict}) + "\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("crash")
    baseline = root / "baseline"
    ck.run_backfill(baseline, UNIVERSE, *BASELINE, MARKETS)  # also warms imports (GX) before any fork
    reference = ck.copy_dir(baseline, root / "reference")
    writes, duration = ck.write_times(lambda: ck.run_backfill(reference, UNIVERSE, *RUN, MARKETS))
    return {
        "root": root,
        "baseline": baseline,
        "before": ck.check_readable_and_unique(baseline),
        "reference": ck.read_all(reference),
        "writes": writes,
        "duration": duration,
        "trials": {},  # test id -> landed while writing
    }


def _verify(world: dict, trial: Path) -> None:
    after = ck.check_readable_and_unique(trial)
    ck.assert_nothing_lost(world["before"], after)
    ck.run_backfill(trial, UNIVERSE, *RUN, MARKETS)  # the re-run
    ck.assert_same(ck.read_all(trial), world["reference"])


def _outcome(trial: ck.Trial) -> str:
    return f"{trial.outcome}, {'while the run was writing' if trial.landed_while_writing else 'not while writing: does not count'}"


@pytest.mark.parametrize("i", range(TIMER_TRIALS))
def test_kill_at_a_moment_during_the_run(world: dict, i: int) -> None:
    trial = ck.copy_dir(world["baseline"], world["root"] / f"timer-{i}")
    # moments spread over the writing phase of the reference run (first write to 85% of its duration)
    # each held as "s seconds after the reference's n-th write began", so a faster or slower machine still kills mid-run
    first = world["writes"][0]
    moment = first + (0.85 * world["duration"] - first) * (i + 0.5) / TIMER_TRIALS
    n, seconds = ck.moment_after_write(world["writes"], moment)
    result = ck.forked_trial(lambda: ck.run_backfill(trial, UNIVERSE, *RUN, MARKETS), lambda: ck.kill_after_write(n, seconds),
                             world["root"] / f"marks-timer-{i}")
    assert result.outcome in ("killed by signal 9", "exited 0"), result.outcome
    _verify(world, trial)
    world["trials"][f"timer-{i}"] = result.counts
    _record("forked worker, timer", f"{seconds:.2f} s after write #{n} ({moment:.2f} s of the reference's {world['duration']:.2f} s)",
            _outcome(result), "ok")


@pytest.mark.parametrize(("name", "n", "after"), POINT_TRIALS)
def test_kill_at_a_precise_point(world: dict, name: str, n: int, after: bool) -> None:
    trial = ck.copy_dir(world["baseline"], world["root"] / f"point-{name}-{n}-{after}")
    result = ck.forked_trial(lambda: ck.run_backfill(trial, UNIVERSE, *RUN, MARKETS), lambda: ck.kill_at_call(os, name, n, after),
                             world["root"] / f"marks-point-{n}-{after}")
    assert result.outcome in ("killed by signal 9", "exited 0"), result.outcome
    _verify(world, trial)
    world["trials"][f"point-{n}-{after}"] = result.counts
    _record("forked worker, point", f"{'after' if after else 'before'} os.{name} call #{n}", _outcome(result), "ok")


def test_enough_kills_landed_while_the_run_was_writing(world: dict) -> None:
    """Run after the forked trials (file order): at least MIN_COUNTED of them killed a run mid-write."""
    if len(world["trials"]) < TIMER_TRIALS + len(POINT_TRIALS):
        pytest.skip(f"only {len(world['trials'])} forked trials ran (a selection): the count needs all of them")
    counted = sum(world["trials"].values())
    message = f"{counted} of {len(world['trials'])} forked trials killed the run while it was writing"
    _record("forked worker, summary", "kills that landed while the run was writing", message, "ok" if counted >= MIN_COUNTED else "too few")
    print(message)
    assert counted >= MIN_COUNTED, message


@pytest.mark.flow
@pytest.mark.parametrize("i", range(CLI_TRIALS))
def test_kill_the_aimoves_command(world: dict, tmp_path: Path, i: int) -> None:
    trial = ck.copy_dir(world["baseline"], world["root"] / f"cli-{i}")
    (tmp_path / "u.yaml").write_text(SMALL_UNIVERSE)
    env = {**os.environ, "PREFECT_HOME": str(world["root"] / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    cmd = [sys.executable, "-m", "aimoves", "backfill", "--source", "simulated", "--inject-defects", "--universe", str(tmp_path / "u.yaml"),
           "--start", RUN[0].isoformat(), "--end", RUN[1].isoformat(), "--data-dir", str(trial)]
    # The engine starts first (seconds); each kill lands a different time after the flow run begins.
    delay = (0.3, 2.0, 4.5, 5.5, 6.5)[i]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    deadline = time.time() + 120
    while not any("Beginning flow run" in line for line in lines) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and its embedded Prefect server
        proc.wait()
        last = [line for line in lines if "Task run '" in line]
        task = last[-1].split("Task run '")[1].split("'")[0] if last else None
        stage = f"after task {task}" if task else "before the first task finished"
        outcome = f"killed {delay:.1f} s into the flow run, {stage}"
    else:
        outcome = f"finished before the kill (exit {proc.returncode})"
    _verify(world, trial)
    _record("aimoves command", f"SIGKILL to its process group {delay:.1f} s into the flow run", outcome, "ok")
