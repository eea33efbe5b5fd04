"""Crash-trial kit: run the whole recipe in a forked worker and SIGKILL it somewhere inside.

Used by tests/test_crash.py. A trial:
1. copies a baseline data dir (an earlier backfill that the run overlaps),
2. forks a worker that runs the whole backfill (`aimoves.run.run_prices`: the flow's stages as plain
   calls, no engine) and is killed either by a timer or at the n-th call of a chosen function (a
   precise point); the worker notes when its first write to the data dir began and when its run
   ended, so that a trial counts only when the kill landed while the run was writing,
3. checks the data dir: every dataset readable by pyarrow and DuckDB, no duplicated keys, every
   row stored before still there,
4. re-runs the backfill to completion and compares the datasets with an uninterrupted run.
"""

from __future__ import annotations

import bisect
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.dataset as ds
from pyarrow import fs as pafs

from aimoves.planning import plan_backfill
from aimoves.run import run_prices
from aimoves.sources.factory import SourceSettings
from aimoves.schema import ALL_DATASETS, DatasetSpec
from aimoves.universe import Universe

DATASETS: tuple[DatasetSpec, ...] = ALL_DATASETS  # every dataset and quarantine a backfill writes, divergence included
STAMPS = {"ingested_at", "quarantined_at", "run_id", "first_seen_at"}


def run_backfill(data_dir: Path, universe: Universe, start: date, end: date, markets: tuple[str, ...], defects: bool = True) -> None:
    plans = [plan_backfill(universe, m, start, end) for m in markets]
    settings = SourceSettings("simulated", inject_defects=defects, news="simulated")  # as the CLI does
    run_prices("backfill", plans, settings, universe, data_dir)


def read_all(data_dir: Path | str, filesystem: pafs.FileSystem | None = None) -> dict[str, pd.DataFrame]:
    """Every dataset via pyarrow (hive), stamps dropped, sorted; raises if anything is unreadable.

    `data_dir` is a path of `filesystem` (local by default; `bucket/prefix` on an S3 filesystem)."""
    fs = filesystem or pafs.LocalFileSystem()
    out = {}
    for spec in DATASETS:
        root = f"{data_dir}/{spec.name}"
        if fs.get_file_info(root).type != pafs.FileType.Directory:
            out[spec.name] = pd.DataFrame()
            continue
        table = ds.dataset(root, filesystem=fs, format="parquet",
                           partitioning=ds.partitioning(spec.partitioning_schema, flavor="hive")).to_table()
        frame = table.to_pandas()
        frame = frame[[c for c in frame.columns if c not in STAMPS]]
        for c in frame.columns:
            if frame[c].map(lambda v: hasattr(v, "tolist")).any():
                frame[c] = frame[c].map(lambda v: tuple(v.tolist()) if hasattr(v, "tolist") else v)
        keys = [k for k in (*spec.partition_by, *spec.key)]
        out[spec.name] = frame.sort_values(keys).reset_index(drop=True)
    return out


def check_readable_and_unique(data_dir: Path) -> dict[str, pd.DataFrame]:
    frames = read_all(data_dir)
    for spec in DATASETS:
        frame = frames[spec.name]
        if frame.empty:
            continue
        keys = [*spec.partition_by, *spec.key]
        dupes = frame.duplicated(keys)
        assert not dupes.any(), f"{spec.name}: {int(dupes.sum())} duplicated keys"
        glob = f"{data_dir}/{spec.name}/**/*.parquet"
        n = duckdb.sql(f"select count(*) from read_parquet('{glob}', hive_partitioning = true)").fetchall()[0][0]
        assert n == len(frame), f"{spec.name}: DuckDB reads {n} rows, pyarrow {len(frame)}"
    return frames


def assert_nothing_lost(before: dict[str, pd.DataFrame], after: dict[str, pd.DataFrame]) -> None:
    for spec in DATASETS:
        old = before[spec.name]
        if old.empty:
            continue
        keys = [*spec.partition_by, *spec.key]
        present = pd.MultiIndex.from_frame(old[keys]).isin(pd.MultiIndex.from_frame(after[spec.name][keys]))
        assert present.all(), f"{spec.name}: {int((~present).sum())} stored rows lost"


def assert_same(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    for spec in DATASETS:
        pd.testing.assert_frame_equal(a[spec.name], b[spec.name], check_dtype=False, obj=spec.name)


def kill_after_write(n: int, seconds: float) -> None:
    """SIGKILL this process `seconds` after its n-th publish into the data dir began.

    Counting from a write, not from the start, keeps a kill inside the writing phase when the
    machine is slower or faster than when the moment was chosen (a timer from the start of the
    run landed after the end in a third of the trials once the machine's load dropped)."""
    calls = {"n": 0}

    def on_write() -> None:
        calls["n"] += 1
        if calls["n"] == n:
            threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGKILL)).start()

    watch_writes(on_write)


def kill_at_call(module: object, name: str, n: int, after: bool = False) -> None:
    """SIGKILL this process at the n-th call of module.name (before it runs, or right after)."""
    original: Callable = getattr(module, name)
    calls = {"n": 0}

    def wrapper(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == n and not after:
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if calls["n"] == n and after:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(module, name, wrapper)


def watch_writes(on_write: Callable[[], None]) -> Callable[[], None]:
    """Call `on_write()` before each publish into the data dir (a dataset file, a raw fetch folder); returns the undo."""
    from aimoves.catalog import Catalog

    originals = {name: getattr(Catalog, name) for name in ("publish", "publish_folder")}
    for name, original in originals.items():

        def wrapper(self: Catalog, *args: object, _original: Callable = original) -> object:
            on_write()
            return _original(self, *args)

        setattr(Catalog, name, wrapper)
    return lambda: [setattr(Catalog, name, original) for name, original in originals.items()] and None


@dataclass(frozen=True)
class Trial:
    outcome: str  # how the worker ended
    landed_while_writing: bool  # killed after its first write began and before its run ended

    @property
    def counts(self) -> bool:
        return self.landed_while_writing


def forked_trial(work: Callable[[], None], arm: Callable[[], None], marks: Path, timeout: float = 120) -> Trial:
    """Run `work` in a forked child after `arm()` set up its death; returns how the child ended and
    whether the kill landed while the run was writing (between its first write and its end)."""
    marks.mkdir(parents=True, exist_ok=True)
    pid = os.fork()
    if pid == 0:  # child
        try:
            watch_writes(lambda: (marks / "writing").touch(exist_ok=True))
            arm()
            work()
            (marks / "finished").touch()
        except BaseException:
            os._exit(3)
        os._exit(0)
    deadline = time.time() + timeout
    outcome = "timed out"
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            outcome = f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exited {os.WEXITSTATUS(status)}"
            break
        time.sleep(0.02)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    killed = outcome == f"killed by signal {signal.SIGKILL.value}"
    return Trial(outcome, killed and (marks / "writing").exists() and not (marks / "finished").exists())


def write_times(work: Callable[[], None]) -> tuple[list[float], float]:
    """Seconds from the start of `work` to each of its writes into the data dir, and to its end (in-process)."""
    started = time.perf_counter()
    times: list[float] = []
    undo = watch_writes(lambda: times.append(time.perf_counter() - started))
    try:
        work()
    finally:
        undo()
    return times, time.perf_counter() - started


def moment_after_write(times: list[float], moment: float) -> tuple[int, float]:
    """A moment of a reference run as (n, seconds): that long after its n-th write began (n >= 1)."""
    n = max(1, bisect.bisect_right(times, moment))
    return n, max(0.0, moment - times[n - 1])


def copy_dir(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst
