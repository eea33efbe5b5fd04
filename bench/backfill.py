#!/usr/bin/env python
"""Backfill benchmark: the prices pipeline against a bare pandas+pyarrow floor.

    python bench/backfill.py --symbols 1000 --years 10 [--repeats 3] [--out DIR] [--data-dir DIR]
    python bench/backfill.py --symbols 1000 --years 10 --chunked [--batch-size 2500] [--slots 1] [--moto]   (bench/chunked_backfill.py)

What it measures
----------------
1. A synthetic universe of N stocks split round-robin over US / HK / CN (`SIM0001`, `1001.HK`,
   `600001.SS`, `000001.SZ`, ...; sectors cycling through the five universe sectors; a
   shares_outstanding each, so cap weights are computed), the default FX symbols (HKDUSD=X,
   CNYUSD=X) and no benchmarks, so exactly N stock symbols are fetched.
2. Window: Y years ending 2025-12-31 (fixed, so runs are comparable), source `simulated`.
3. Pipeline: the Prefect flow `aimoves.flows.prices.backfill`, called in-process: prices per
   market (fetch, raw log, normalize, GX validation, write), then FX, stock moves and sector moves.
   Every repeat is a fresh child process with a fresh data dir. In that child the Prefect test
   server (`prefect_test_harness`: a local uvicorn subprocess + temporary SQLite) is started and a
   trivial flow is run before the clock starts; both are reported on their own lines and are NOT
   counted. Great Expectations is imported lazily by the first validation, so its import and
   context set-up ARE counted (a real `aimoves backfill` pays them too; shown on their own line).
4. Floor: the same work as a bare pandas+pyarrow script (bench/floor_backfill.py), one fresh
   child process and data dir per repeat: the same `SimulatedSource` requests (warm-up included),
   raw Parquet + manifest, normalization, every expectation of the prices / fx / stock_moves /
   sector_moves / divergence suites as vectorized masks (the divergence itself computed by the same
   pandas function as the pipeline's, aimoves.divergence.compute_divergence, on the moves in memory), the good/quarantine split with dq_flags and reasons,
   the same derived datasets, one zstd file per partition with the same file schemas, row groups
   and fsync. After the repeats the benchmark checks with DuckDB that the floor's last repeat
   wrote exactly the rows the pipeline's last repeat wrote, in every dataset (stamp columns
   aside), so the ratio measures orchestration and validation overhead, not skipped work.
   News: where the flows take `news_source`, the benchmark passes "none" (the floor has no news
   stage yet; --with-news turns it on, and the equality check then reports the unmatched dataset).
5. Daily: Y years (and separately 1 year) of history are backfilled up to the day before the
   last 2025 session common to all markets (untimed setup, one child process for both); then
   `daily(day=<that session>)` runs in-process, each repeat on a fresh hard-linked copy of a
   history (the store replaces files, never edits them, so the copies stay independent),
   alternating Y-year and 1-year histories so that load drifts hit both alike. Server start
   excluded.
6. DuckDB: `select * from read_parquet('<data>/prices/**/*.parquet', hive_partitioning=1)
   where symbol = ?` over the last pipeline repeat's data, a new connection per repeat (page
   cache warm: the files were just written); and the number of Parquet files written.

How to read the output
----------------------
Every timing is the median of the repeats with min and max beside it. "peak RSS" is the child
process's own ru_maxrss (the whole process, imports included); the Prefect server is a separate
process and its peak is on its own line. rows/s = curated price rows written / wall time.
"where the time goes" splits the medians by stage: for the pipeline the time of each task call
(Prefect task engine included) with the task function's own time in brackets; "other" is the
rest of the flow run (flow engine, planning, run record, UI artifacts). Targets are printed as PASS/FAIL lines;
they are defined for 1,000 symbols x 10 years x 3 markets, so on other sizes they are indicative.
The last line is always `ratio pipeline/floor: X.XX` (median pipeline wall / median floor wall).

With --out DIR the last repeat's data dirs, child logs and results.json are kept in DIR;
otherwise everything lives in a temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path

END = date(2025, 12, 31)
MARKETS = ("US", "HK", "CN")
SECTORS = ("semiconductors", "cloud", "ai_software", "internet_platforms", "hardware")
TARGET_SIZE = (1000, 10)  # symbols, years the targets are defined for (3 markets)
TARGET_RATIO = 2.0
TARGET_RSS_GIB = 2.0
TARGET_DAILY_S = 6.0  # issue 11
TARGET_DAILY_DRIFT = 0.20
TARGET_DUCKDB_S = 0.2
TARGET_FILES = 500
GIB = 1024**3
MIB = 1024**2


# --------------------------------------------------------------------------------------------
# Synthetic universe and windows


def universe_yaml(n: int) -> str:
    lines = [
        f"# Synthetic benchmark universe: {n} stocks round-robin over US/HK/CN, default FX, no benchmarks.",
        "benchmarks: {}",
        'fx: {HKD: "HKDUSD=X", CNY: "CNYUSD=X"}',
        "stocks:",
    ]
    counts = dict.fromkeys(MARKETS, 0)
    for i in range(n):
        market = MARKETS[i % len(MARKETS)]
        counts[market] += 1
        k = counts[market]
        if market == "US":
            symbol = f"SIM{k:04d}"
        elif market == "HK":
            symbol = f"{1000 + k:04d}.HK"
        else:
            symbol = f"{600000 + (k + 1) // 2:06d}.SS" if k % 2 else f"{k // 2:06d}.SZ"
        shares = 50_000_000 + 7_919_000 * (i % 97)
        lines.append(f'  - {{symbol: "{symbol}", name: Sim {symbol}, market: {market}, sector: {SECTORS[i % len(SECTORS)]}, '
                     f"shares_outstanding: {shares}}}")
    return "\n".join(lines) + "\n"


def window(years: int, end: date = END) -> tuple[date, date]:
    """`years` calendar years ending on `end` (2016-01-01..2025-12-31 for 10)."""
    if (end.month, end.day) == (12, 31):
        return date(end.year - years + 1, 1, 1), end
    return end.replace(year=end.year - years) + timedelta(days=1), end


def daily_day(markets: list[str], end: date = END) -> date:
    """The last date on or before `end` that is a session of every market."""
    from aimoves.calendars import sessions

    common = None
    for m in markets:
        days = set(sessions(m, end - timedelta(days=30), end).dates.date)
        common = days if common is None else common & days
    return max(common)


# --------------------------------------------------------------------------------------------
# Child processes (one per measured run: honest peak RSS, fresh interpreter)


def _rss_now() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _peak_self() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _prefect_session():
    """Start the Prefect test server and warm the engine with a trivial flow; both timed."""
    from contextlib import ExitStack

    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    stack = ExitStack()
    t0 = time.perf_counter()
    stack.enter_context(prefect_test_harness(server_startup_timeout=600))
    server_s = time.perf_counter() - t0

    @flow(name="bench-warmup")
    def warmup() -> int:
        return 1

    t0 = time.perf_counter()
    warmup()
    return stack, server_s, time.perf_counter() - t0


def _summary_counts(summary) -> dict:
    def passed(report) -> int:
        return int(getattr(report, "passed", 0) or 0) if report is not None else 0

    return {
        "rows": sum(m.passed for m in summary.markets),
        "flagged": sum(m.flagged for m in summary.markets),
        "quarantined": sum(m.quarantined for m in summary.markets),
        "bars": sum(m.bars_fetched for m in summary.markets),
        "stock_moves": passed(getattr(summary, "stock_moves", None)),
        "sector_moves": passed(getattr(summary, "sector_moves", None)),
        "divergence": passed(getattr(summary, "divergence", None)),
    }


# task attribute (module, name) -> stage label shared with the floor's stages
PIPELINE_TASKS = {
    ("aimoves.tasks.prices", "fetch_prices"): "fetch",
    ("aimoves.tasks.prices", "store_raw"): "raw",
    ("aimoves.tasks.prices", "normalize"): "normalize",
    ("aimoves.tasks.prices", "validate"): "validate",
    ("aimoves.tasks.prices", "write"): "write",
    ("aimoves.tasks.derive", "fx"): "fx",
    ("aimoves.tasks.derive", "stock_moves"): "stock_moves",
    ("aimoves.tasks.derive", "sector_moves"): "sector_moves",
    ("aimoves.tasks.derive", "divergence"): "divergence",
}


def instrument_pipeline() -> dict[str, float]:
    """Time each task call (engine included) and its function, in memory only (no file is touched).

    Two perf_counter calls per task call: negligible next to the work. Returns the dict the
    timings accumulate into: "<stage>" (whole task call), "fn:<stage>" (the function itself),
    "rss:<stage>" (the process's peak RSS, bytes, when the stage's call returns), and "gx_init"
    (GX import, context and suite set-up: first use per suite; later calls are cache hits).
    """
    import functools
    import importlib
    from types import SimpleNamespace

    seconds: dict[str, float] = defaultdict(float)
    proxies = {}
    flow_modules = []
    for flow_module in ("aimoves.flows.prices", "aimoves.flows.derive"):  # import first: they bind tasks at import
        try:
            flow_modules.append(importlib.import_module(flow_module))
        except ImportError:
            continue
    for (module_name, attr), stage in PIPELINE_TASKS.items():
        module = importlib.import_module(module_name)
        task = getattr(module, attr, None)
        if task is None or not hasattr(task, "fn"):
            continue
        original_fn = task.fn

        def timed_fn(*a, _fn=original_fn, _stage=stage, **k):
            t0 = time.perf_counter()
            try:
                return _fn(*a, **k)
            finally:
                seconds["fn:" + _stage] += time.perf_counter() - t0

        task.fn = functools.wraps(original_fn)(timed_fn)

        def timed_call(*a, _task=task, _stage=stage, **k):
            t0 = time.perf_counter()
            try:
                return _task(*a, **k)
            finally:
                seconds[_stage] += time.perf_counter() - t0
                seconds["rss:" + _stage] = max(seconds["rss:" + _stage], _peak_self())

        timed_call.fn = task.fn  # type: ignore[attr-defined]  # as a Task has
        proxies[id(task)] = timed_call
        setattr(module, attr, timed_call)
    # flows may hold the tasks themselves (e.g. a SimpleNamespace of steps bound at import)
    for module in flow_modules:
        for value in list(vars(module).values()):
            if isinstance(value, SimpleNamespace):
                for name, step in list(vars(value).items()):
                    if id(step) in proxies:
                        setattr(value, name, proxies[id(step)])
        for name, value in list(vars(module).items()):
            if id(value) in proxies:
                setattr(module, name, proxies[id(value)])
    import aimoves.validate as validate

    original_gx = validate._batch_definition  # cached per suite: GX import, context and suite set-up on first use

    def timed_gx(name, market=None):
        t0 = time.perf_counter()
        try:
            return original_gx(name, market)
        finally:
            seconds["gx_init"] += time.perf_counter() - t0

    validate._batch_definition = timed_gx
    return seconds


def flow_args(flow, spec: dict, **extra) -> dict:
    """Keyword arguments for a flow; news off unless asked (the floor has no news stage)."""
    import inspect

    args = dict(markets=spec["markets"], source="simulated", universe=spec["universe"], inject_defects=spec["inject_defects"], **extra)
    if "news_source" in inspect.signature(flow.fn).parameters and not spec.get("with_news"):
        args["news_source"] = "none"
    return args


def child_pipeline(spec: dict) -> dict:
    from aimoves.flows.prices import backfill

    stages = instrument_pipeline()
    profile = spec.get("profile")
    stack, server_s, warm_s = _prefect_session()
    try:
        rss_start = _rss_now()
        args = flow_args(backfill, spec, data_dir=spec["data_dir"])
        start, end = date.fromisoformat(spec["start"]), date.fromisoformat(spec["end"])
        stages.clear()
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            t0 = time.perf_counter()
            profiler.enable()
            summary = backfill(start, end, **args)
            profiler.disable()
            wall = time.perf_counter() - t0
            profiler.dump_stats(profile)
        else:
            t0 = time.perf_counter()
            summary = backfill(start, end, **args)
            wall = time.perf_counter() - t0
        peak = _peak_self()
    finally:
        stack.close()
    return {"wall": wall, "server_start": server_s, "warmup": warm_s, "rss_start": rss_start, "peak_rss": peak,
            "server_peak_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, "stages": dict(stages), **_summary_counts(summary)}


def child_floor(spec: dict) -> dict:
    import numpy  # noqa: F401  imports before the clock, as the pipeline child imports its modules
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from floor_backfill import floor_backfill

    rss_start = _rss_now()
    t0 = time.perf_counter()
    counts = floor_backfill(spec["universe"], date.fromisoformat(spec["start"]), date.fromisoformat(spec["end"]), spec["markets"],
                            Path(spec["data_dir"]), spec["inject_defects"])
    wall = time.perf_counter() - t0
    return {"wall": wall, "rss_start": rss_start, "peak_rss": _peak_self(), **counts}


def child_daily(spec: dict) -> dict:
    """Backfill each history (untimed), then time `daily` on fresh copies, alternating histories
    repeat by repeat so that drifts in machine load hit every history alike."""
    from aimoves.flows.prices import backfill, daily

    stages = instrument_pipeline()
    stack, server_s, warm_s = _prefect_session()
    out: dict = {"server_start": server_s, "warmup": warm_s, "histories": {}}
    root = Path(spec["data_dir"])
    try:
        args = flow_args(backfill, spec)
        for h in spec["histories"]:
            t0 = time.perf_counter()
            backfill(date.fromisoformat(h["start"]), date.fromisoformat(h["end"]), data_dir=str(root / h["name"]), **args)
            out["histories"][h["name"]] = {"history_backfill": time.perf_counter() - t0, "walls": [], "rows": [], "stages": []}
        day = date.fromisoformat(spec["day"])
        for r in range(spec["repeats"]):
            for h in spec["histories"]:
                res = out["histories"][h["name"]]
                run_dir = root / f"{h['name']}-daily-{r}"
                shutil.copytree(root / h["name"], run_dir, copy_function=os.link)
                stages.clear()
                t0 = time.perf_counter()
                summary = daily(day, data_dir=str(run_dir), **args)
                res["walls"].append(time.perf_counter() - t0)
                res["stages"].append(dict(stages))
                res["rows"].append(_summary_counts(summary)["rows"])
                shutil.rmtree(run_dir)
        out["peak_rss"] = _peak_self()
    finally:
        stack.close()
        shutil.rmtree(root, ignore_errors=True)
    return out


CHILDREN = {"pipeline": child_pipeline, "floor": child_floor, "daily": child_daily}


# --------------------------------------------------------------------------------------------
# Parent: orchestration, DuckDB, report


def bench_env(work: Path) -> dict:
    env = dict(os.environ)
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_HOME=str(work / "prefect-home"),
        PYTHONUNBUFFERED="1",
    )
    env.pop("PREFECT_API_URL", None)  # never talk to a real server from the benchmark
    return env


def stop_on_sigterm() -> None:
    """SIGTERM ends this process as Ctrl-C does: its `finally` blocks run, so the Prefect server, the
    chunk runner, moto and the children it started are stopped, not left behind."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def call_child(cmd: list[str], env: dict, log) -> int:  # noqa: ANN001
    """Run a benchmark child to its end. If this process is stopped meanwhile, the child gets SIGTERM
    first (to stop what it started) and SIGKILL only if it has not ended 60 s later."""
    child = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        return child.wait()
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def run_child(kind: str, spec: dict, work: Path, env: dict, tag: str) -> dict:
    spec_path = work / "logs" / f"{tag}.spec.json"
    result_path = work / "logs" / f"{tag}.result.json"
    log_path = work / "logs" / f"{tag}.log"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps({**spec, "result": str(result_path)}))
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        rc = call_child([sys.executable, os.path.abspath(__file__), "--_child", kind, "--_spec", str(spec_path)], env, log)
    if rc != 0 or not result_path.exists():
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-40:])
        raise SystemExit(f"benchmark child {tag} failed (exit {rc}); last lines of {log_path}:\n{tail}")
    result = json.loads(result_path.read_text())
    result["process_s"] = time.perf_counter() - t0
    return result


def git_revision() -> str:
    repo = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{rev}{' + uncommitted changes' if dirty else ''}" if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def progress(message: str) -> None:
    print(f".. {message}", file=sys.stderr, flush=True)


def stats(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def count_files(root: Path) -> int:
    return sum(1 for _ in root.rglob("*.parquet")) if root.is_dir() else 0


def duckdb_timings(data_dir: Path, symbol: str, repeats: int) -> tuple[list[float], int]:
    import duckdb

    glob = str(data_dir / "prices" / "**" / "*.parquet").replace("'", "''")
    sql = f"select * from read_parquet('{glob}', hive_partitioning=1) where symbol = ?"
    walls, rows = [], 0
    for _ in range(repeats):
        con = duckdb.connect()
        t0 = time.perf_counter()
        rows = len(con.execute(sql, [symbol]).fetchall())
        walls.append(time.perf_counter() - t0)
        con.close()
    return walls, rows


STAMPS = ("ingested_at", "quarantined_at", "run_id")  # when/which-run columns: differ between any two runs
NOT_DATASETS = ("raw", "_staging", "_locks", "_runs")


def datasets_in(data_dir: Path) -> set[str]:
    """Dataset folders (prices, fx, quarantine/prices, ...): the top folders holding Parquet files."""
    out = set()
    if not data_dir.is_dir():
        return out
    for top in data_dir.iterdir():
        if not top.is_dir() or top.name in NOT_DATASETS:
            continue
        if top.name == "quarantine":
            out |= {f"quarantine/{sub.name}" for sub in top.iterdir() if sub.is_dir() and count_files(sub)}
        elif count_files(top):
            out.add(top.name)
    return out


def same_output(a: Path, b: Path) -> tuple[bool, list[str]]:
    """Do two data dirs hold the same datasets, files and rows (stamp columns aside)?"""
    import duckdb

    con = duckdb.connect()
    lines, ok = [], True
    in_a, in_b = datasets_in(a), datasets_in(b)
    for dataset in sorted(in_a | in_b, key=lambda d: (d.startswith("quarantine/"), d)):
        na, nb = count_files(a / dataset), count_files(b / dataset)
        if not na or not nb:
            ok = False
            lines.append(f"{dataset}: {na} vs {nb} files  << only one side writes it (the floor lacks this stage?)")
            continue
        reader = "read_parquet('{}/**/*.parquet', hive_partitioning=1, union_by_name=1)"
        columns = [r[0] for r in con.execute(f"describe select * from {reader.format(a / dataset)}").fetchall()]
        stamps = [c for c in columns if c in STAMPS]
        exclude = f" exclude ({', '.join(stamps)})" if stamps else ""
        qa, qb = (f"select *{exclude} from {reader.format(d / dataset)}" for d in (a, b))
        rows = con.execute(f"select count(*) from {reader.format(a / dataset)}").fetchone()[0]
        diff = con.execute(f"select (select count(*) from ({qa} except all {qb})) + (select count(*) from ({qb} except all {qa}))").fetchone()[0]
        same = diff == 0 and na == nb
        ok &= same
        lines.append(f"{dataset}: {rows:,} rows, {na} files{'' if same else f'  << {diff} rows differ, {na} vs {nb} files'}")
    con.close()
    return ok, lines


def fmt_row(label: str, values: list[float] | None, unit: str, scale: float = 1.0, digits: int = 2) -> str:
    if not values:
        return f"  {label:<44} {'n/a':>11}"
    med, lo, hi = (v / scale for v in stats(values))
    f = f"{{:>11,.{digits}f}}"
    return f"  {label:<44} {f.format(med)} {f.format(lo)} {f.format(hi)}  {unit}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=1000, help="stocks in the synthetic universe (split over US/HK/CN; default 1000)")
    parser.add_argument("--years", type=int, default=10, help="years of history ending 2025-12-31 (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per timing (default 3; reported figures need at least 3)")
    parser.add_argument("--out", type=Path, help="keep data, logs and results.json in this directory (default: temporary, removed)")
    parser.add_argument("--markets", default=None, help="markets to run, e.g. US,HK (default: the markets the universe lists)")
    parser.add_argument("--inject-defects", action="store_true", help="let the simulated source inject its defects (exercises quarantine)")
    parser.add_argument("--with-news", action="store_true", help="let the flows fetch news too (off by default: the floor has no news stage, so the ratio would compare unequal work)")
    parser.add_argument("--profile", action="store_true", help="also run one extra, untimed pipeline backfill under cProfile and print its top costs")
    parser.add_argument("--data-dir", help="write the runs' data under this folder (default: the work folder); with --chunked also s3://bucket/prefix (AWS settings from the environment)")
    parser.add_argument("--chunked", action="store_true", help="run the chunked backfill instead (bench/chunked_backfill.py): one run, peak RSS per process")
    parser.add_argument("--batch-size", type=int, default=2500, help="--chunked: symbols per chunk (default 2500, as the flow's)")
    parser.add_argument("--slots", type=int, default=1, help="--chunked: run each chunk in a process of its own, this many at a time "
                        "(a Prefect runner serving backfill-chunk, as a process worker runs them; default 1; 0: every chunk in this one process)")
    parser.add_argument("--moto", action="store_true", help="--chunked: write to moto's S3 server on 127.0.0.1, started and stopped here "
                        "(s3://aimoves-bench/aimoves; needs the dev dependencies)")
    parser.add_argument("--_child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--_spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    stop_on_sigterm()

    if args._child:
        spec = json.loads(Path(args._spec).read_text())
        result = CHILDREN[args._child](spec)
        Path(spec["result"]).write_text(json.dumps(result))
        return 0

    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.chunked:
        from chunked_backfill import main as chunked_main

        markets = [m.strip().upper() for m in (args.markets or ",".join(MARKETS)).split(",") if m.strip()]  # the synthetic universe lists all three
        if args.moto and args.data_dir:
            parser.error("--moto makes its own data dir (s3://aimoves-bench/aimoves): leave out --data-dir")
        return chunked_main(args.symbols, args.years, markets, args.batch_size, args.data_dir, args.out, args.moto, args.slots)
    if args.moto:
        parser.error("--moto goes with --chunked")
    if args.data_dir and args.data_dir.startswith("s3://"):
        parser.error("--data-dir s3://… goes with --chunked (the pipeline/floor comparison reads its output from local files)")
    if args.repeats < 3:
        print(f"note: --repeats {args.repeats}: figures are single runs, not medians of 3 (use this only while iterating)")
    if not 3 <= args.symbols <= 26_000:
        parser.error("--symbols must be between 3 and 26000")
    if not 1 <= args.years <= 20:
        parser.error("--years must be between 1 and 20 (the simulated source starts in 2005)")
    from aimoves.errors import AimovesError
    from aimoves.options import DataOptions, markets_of, parse
    from aimoves.universe import parse_universe

    try:
        market_options = parse(DataOptions, markets=args.markets)
    except AimovesError as exc:
        parser.error(str(exc))

    bench_started = time.perf_counter()
    revision = git_revision()
    work = Path(args.out).resolve() if args.out else Path(tempfile.mkdtemp(prefix="aimoves-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = bench_env(work)
    try:
        text = universe_yaml(args.symbols)
        universe_path = work / "universe.yaml"
        universe_path.write_text(text)
        universe = parse_universe(text, str(universe_path))
        markets = markets_of(market_options, universe)  # default: the universe's markets
        by_market = universe.symbols_by_market(markets)
        n_symbols = sum(len(v) for v in by_market.values())
        start, end = window(args.years)
        common = dict(universe=str(universe_path), markets=markets, inject_defects=args.inject_defects, with_news=args.with_news)

        # backfill: pipeline and floor, interleaved, one fresh process + data dir per repeat
        pipe, floor = [], []
        runs = Path(args.data_dir).resolve() if args.data_dir else work / "runs"
        for r in range(args.repeats):
            for kind, results in (("pipeline", pipe), ("floor", floor)):
                data = runs / f"{kind}-{r}"
                shutil.rmtree(data, ignore_errors=True)
                res = run_child(kind, {**common, "start": start.isoformat(), "end": end.isoformat(), "data_dir": str(data)}, work, env, f"{kind}-{r}")
                results.append(res)
                progress(f"{kind} repeat {r + 1}/{args.repeats}: {res['wall']:.2f} s, peak RSS {res['peak_rss'] / MIB:,.0f} MiB, {res['rows']:,} price rows")
                if r:
                    shutil.rmtree(runs / f"{kind}-{r - 1}", ignore_errors=True)
        pipe_dir, floor_dir = runs / f"pipeline-{args.repeats - 1}", runs / f"floor-{args.repeats - 1}"
        identical, identical_lines = same_output(pipe_dir, floor_dir)
        progress(f"floor output identical to pipeline output: {identical}")

        # daily over Y years and over 1 year of stored history: one child, alternating histories
        day = daily_day(markets)
        histories = []
        for years in sorted({args.years, 1}, reverse=True):
            h_start, h_end = window(years, day - timedelta(days=1))
            histories.append({"name": f"{years}y", "years": years, "start": h_start.isoformat(), "end": h_end.isoformat()})
        spec = {**common, "histories": histories, "day": day.isoformat(), "repeats": args.repeats, "data_dir": str(runs / "daily")}
        daily_result = run_child("daily", spec, work, env, "daily")
        daily: dict[int, dict] = {h["years"]: daily_result["histories"][h["name"]] for h in histories}
        for years, d in daily.items():
            progress(f"daily with {years} year(s) stored: {', '.join(f'{w:.2f}' for w in d['walls'])} s")

        # DuckDB: one symbol's full history; files written
        probe = by_market[markets[0]][0]
        dd_walls, dd_rows = duckdb_timings(pipe_dir, probe, args.repeats)
        files = {d: count_files(pipe_dir / d) for d in sorted(datasets_in(pipe_dir)) + ["raw"]}
        files_total = count_files(pipe_dir)

        profile_text = None
        if args.profile:
            prof_path = work / "logs" / "pipeline-profile.pstats"
            data = runs / "pipeline-profile"
            run_child("pipeline", {**common, "start": start.isoformat(), "end": end.isoformat(), "data_dir": str(data), "profile": str(prof_path)},
                      work, env, "pipeline-profile")
            shutil.rmtree(data, ignore_errors=True)
            import io
            import pstats

            buf = io.StringIO()
            pstats.Stats(str(prof_path), stream=buf).sort_stats("cumulative").print_stats(30)
            profile_text = buf.getvalue()

        # ---- report
        pw, fw = [r["wall"] for r in pipe], [r["wall"] for r in floor]
        ratio = statistics.median(pw) / statistics.median(fw)
        counts = {m: len(v) for m, v in by_market.items()}
        import duckdb
        import great_expectations
        import pandas
        import prefect
        import pyarrow

        def med(values: list[float]) -> float:
            return statistics.median(values) if values else 0.0

        lines = [
            "",
            f"aimoves backfill benchmark: {n_symbols:,} symbols x {args.years} year(s), markets {','.join(markets)}",
            f"  universe: {', '.join(f'{m} {c}' for m, c in counts.items())} (synthetic; FX HKD, CNY; no benchmarks); source simulated"
            + (" with injected defects" if args.inject_defects else "")
            + ("; news on (--with-news)" if args.with_news else "; news off (news_source='none' where the flows take it: the floor has no news stage)"),
            f"  window: {start}..{end} plus the 70-session warm-up read; {args.repeats} repeats, each in a fresh process and data dir",
            f"  machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, prefect {prefect.__version__}, "
            f"great-expectations {great_expectations.__version__}, pandas {pandas.__version__}, pyarrow {pyarrow.__version__}, duckdb {duckdb.__version__}",
            f"  code: git {revision} at start, {git_revision()} at end",
            "",
            f"  {'figure':<44} {'median':>11} {'min':>11} {'max':>11}",
            "  backfill, pipeline (Prefect flow, GX validation):",
            fmt_row("wall time", pw, "s"),
            fmt_row("peak RSS (process)", [r["peak_rss"] for r in pipe], "MiB", MIB, 0),
            fmt_row("RSS when the timed run starts", [r["rss_start"] for r in pipe], "MiB", MIB, 0),
            fmt_row("rows/s (price rows written / wall)", [r["rows"] / r["wall"] for r in pipe], "rows/s", 1, 0),
            fmt_row("Prefect server start (not counted)", [r["server_start"] for r in pipe], "s"),
            fmt_row("Prefect first trivial flow (not counted)", [r["warmup"] for r in pipe], "s"),
            fmt_row("Prefect server peak RSS (separate process)", [r["server_peak_rss"] for r in pipe], "MiB", MIB, 0),
            "  backfill, floor (bare pandas + pyarrow, same stages, same output):",
            fmt_row("wall time", fw, "s"),
            fmt_row("peak RSS (process)", [r["peak_rss"] for r in floor], "MiB", MIB, 0),
            fmt_row("rows/s (price rows written / wall)", [r["rows"] / r["wall"] for r in floor], "rows/s", 1, 0),
            "",
            f"  rows (pipeline / floor): {pipe[-1]['bars']:,} / {floor[-1]['bars']:,} bars fetched (warm-up included); prices written "
            f"{pipe[-1]['rows']:,} / {floor[-1]['rows']:,} ({pipe[-1]['flagged']:,} / {floor[-1]['flagged']:,} flagged), quarantined "
            f"{pipe[-1]['quarantined']:,} / {floor[-1]['quarantined']:,}; stock moves {pipe[-1]['stock_moves']:,} / {floor[-1].get('stock_moves', 0):,}; "
            f"sector moves {pipe[-1]['sector_moves']:,} / {floor[-1].get('sector_moves', 0):,}; "
            f"divergence {pipe[-1].get('divergence', 0):,} / {floor[-1].get('divergence', 0):,}",
            f"  floor output identical to pipeline output, every dataset, stamps aside: {'yes' if identical else 'NO'}",
            *[f"    {line}" for line in identical_lines],
            "",
            f"  where the time goes (median of repeats, s){'':<3} {'pipeline':>10} {'(task fn)':>10} {'floor':>10}",
        ]
        stage_labels = [("fetch", "prices: fetch (simulated source)"), ("raw", "prices: raw log"), ("normalize", "prices: normalize"),
                        ("validate", "prices: validate / checks + split"), ("write", "prices: write prices + quarantine"),
                        ("fx", "fx: fetch, raw, checks, write"), ("stock_moves", "stock moves: read, compute, checks, write"),
                        ("sector_moves", "sector moves: read, aggregate, checks, write"),
                        ("divergence", "divergence: read, compute, checks, write")]
        p_sum = f_sum = 0.0
        for key, label in stage_labels:
            pv = med([r["stages"].get(key, 0.0) for r in pipe])
            fn = med([r["stages"].get("fn:" + key, 0.0) for r in pipe])
            fv = med([r["stages"].get(key, 0.0) for r in floor])
            p_sum, f_sum = p_sum + pv, f_sum + fv
            lines.append(f"    {label:<44} {pv:>10.2f} {'(' + format(fn, '.2f') + ')':>10} {fv:>10.2f}")
        lines.append(f"    {'other (flow run, planning, run record, ...)':<44} {med(pw) - p_sum:>10.2f} {'':>10} {med(fw) - f_sum:>10.2f}")
        lines.append(f"    {'of which GX import + context + suite set-up':<44} {med([r['stages'].get('gx_init', 0.0) for r in pipe]):>10.2f}"
                     "   (inside the validating stages)")
        rss = [f"{key} {med([r['stages'].get('rss:' + key, 0.0) for r in pipe]) / MIB:,.0f}" for key, _ in stage_labels]
        lines.append(f"    pipeline peak RSS when each stage returns (MiB): {', '.join(rss)}")
        lines += ["", f"  daily run for {day} (one session per market, in-process, server start excluded; histories alternate repeat by repeat):"]
        for years in sorted(daily, reverse=True):
            lines.append(fmt_row(f"daily with {years} year(s) stored", daily[years]["walls"], "s"))
        for years in sorted(daily, reverse=True):
            d = daily[years]
            by_stage = ", ".join(f"{k} {med([s.get(k, 0.0) for s in d['stages']]):.2f}" for k, _ in stage_labels)
            lines.append(f"    {years}y: {by_stage}; {d['rows'][-1]:,} price rows upserted per run; "
                         f"history backfill (untimed setup) {d['history_backfill']:.1f} s")
        lines += [
            "  DuckDB:",
            fmt_row(f"one symbol's history ({probe}, {dd_rows:,} rows)", dd_walls, "s", 1, 3),
            f"  Parquet files written by one backfill: {files_total} in all: " + ", ".join(f"{k}/ {v}" for k, v in files.items()),
            f"  benchmark total time: {time.perf_counter() - bench_started:.0f} s",
            "",
        ]
        at_target = (args.symbols, args.years) == TARGET_SIZE and len(markets) == 3
        lines.append("targets" + ("" if at_target else
                     f" (defined for {TARGET_SIZE[0]} symbols x {TARGET_SIZE[1]} years x 3 markets; this run is {n_symbols} x {args.years} x {len(markets)}: indicative only)") + ":")
        peak_max = max(r["peak_rss"] for r in pipe)
        d_y = statistics.median(daily[args.years]["walls"])
        d_1 = statistics.median(daily[1]["walls"])
        drift = d_y / d_1 - 1
        dd = statistics.median(dd_walls)
        lines += [
            f"  {verdict(ratio <= TARGET_RATIO)}  ratio pipeline/floor {ratio:.2f} <= {TARGET_RATIO:.2f} (Prefect server start not counted)",
            f"  {verdict(peak_max <= TARGET_RSS_GIB * GIB)}  pipeline peak RSS {peak_max / GIB:.2f} GiB (max of repeats) <= {TARGET_RSS_GIB:.0f} GiB",
            f"  {verdict(d_y <= TARGET_DAILY_S)}  daily with {args.years} year(s) stored {d_y:.2f} s <= {TARGET_DAILY_S:.0f} s (server start excluded)",
            f"  {verdict(abs(drift) <= TARGET_DAILY_DRIFT)}  daily with {args.years} year(s) vs 1 year stored: {d_y:.2f} s vs {d_1:.2f} s = {drift:+.0%} (within +/-{TARGET_DAILY_DRIFT:.0%})",
            f"  {verdict(dd <= TARGET_DUCKDB_S)}  DuckDB one symbol's {args.years}-year history {dd:.3f} s <= {TARGET_DUCKDB_S} s",
            f"  {verdict(files_total <= TARGET_FILES)}  Parquet files in the data dir after the backfill {files_total} <= {TARGET_FILES} (all datasets, raw included)",
        ]
        if not identical:
            lines.append("  WARNING  the floor did not write the same rows as the pipeline (see above): the ratio is not comparing the same work")
        if profile_text:
            lines += ["", "cProfile of one extra pipeline backfill (untimed; cumulative, top 30):", profile_text]
        lines.append(f"ratio pipeline/floor: {ratio:.2f}")
        print("\n".join(lines), flush=True)

        if args.out:
            (work / "results.json").write_text(json.dumps({
                "symbols": n_symbols, "years": args.years, "markets": markets, "window": [start.isoformat(), end.isoformat()],
                "pipeline": pipe, "floor": floor, "daily": {str(k): v for k, v in daily.items()}, "daily_day": day.isoformat(),
                "duckdb": {"symbol": probe, "rows": dd_rows, "walls": dd_walls}, "files": files, "files_total": files_total,
                "identical": identical, "identical_detail": identical_lines, "ratio": ratio,
            }, indent=2))
    finally:
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
