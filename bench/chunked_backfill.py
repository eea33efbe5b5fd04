#!/usr/bin/env python
"""Chunked backfill benchmark: `python bench/backfill.py --symbols N --years Y --chunked [--batch-size B] [--data-dir D | --moto]`.

One fresh child process runs the `chunked-backfill` flow in-process (its chunks as subflows, one
after the other) on the same synthetic universe and window as bench/backfill.py, against the Prefect
test server (started before the clock, not counted). Printed: wall time, chunk count, price rows,
Parquet files, and the child's peak RSS (ru_maxrss: the whole process, imports included), which is
what a chunk bounds; the server's peak on its own line. Pass/fail against 2 GiB per process.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from backfill import (  # noqa: E402  (the bench folder is not a package)
    GIB,
    MIB,
    TARGET_RSS_GIB,
    _peak_self,
    _prefect_session,
    _rss_now,
    bench_env,
    call_child,
    git_revision,
    progress,
    stop_on_sigterm,
    universe_yaml,
    window,
)


RUNNER_DEPLOYMENT = "backfill-chunk/bench-chunk"


@contextmanager
def chunk_runner(slots: int) -> Iterator[str]:
    """`backfill-chunk` served by a Prefect runner in a process of its own, against this process's
    (test) server: the runner starts each chunk run in a fresh process, as a process worker does.
    Yields the deployment to hand to `chunked_backfill`; the runner is stopped at the end."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    code = f"from aimoves.flows.chunked import backfill_chunk; backfill_chunk.serve(name='bench-chunk', limit={slots}, print_starting_message=False)"
    runner = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    try:
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 300
            while True:
                try:
                    client.read_deployment_by_name(RUNNER_DEPLOYMENT)
                    break
                except Exception:
                    if runner.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"the chunk runner did not start (exit {runner.poll()})") from None
                    time.sleep(0.5)
        yield RUNNER_DEPLOYMENT
    finally:
        os.killpg(runner.pid, signal.SIGTERM)
        try:
            runner.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()


def child(spec: dict) -> dict:
    """The measured run (in a fresh process): the chunks in this process, or each in its own (`slots`)."""
    from contextlib import nullcontext

    from aimoves.flows.chunked import chunked_backfill

    stack, server_s, _ = _prefect_session()
    try:
        with chunk_runner(spec["slots"]) if spec["slots"] else nullcontext() as deployment:
            rss_start = _rss_now()
            t0 = time.perf_counter()
            result = chunked_backfill(date.fromisoformat(spec["start"]), date.fromisoformat(spec["end"]), markets=spec["markets"],
                                      source="simulated", data_dir=spec["data_dir"], universe=spec["universe"], batch_size=spec["batch_size"],
                                      chunk_deployment=deployment)
            wall = time.perf_counter() - t0
            peak = _peak_self()
    finally:
        stack.close()
    return {"wall": wall, "server_start": server_s, "rss_start": rss_start, "peak_rss": peak, "chunks": result["chunks"],
            "run_id": result["run_id"], "server_peak_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}


def chunk_peaks(catalog, run_id: str) -> dict[str, int]:  # noqa: ANN001
    """Peak RSS (MiB) of each chunk run of `run_id`, from the records the chunk runs wrote."""
    peaks = {}
    for path in catalog.run_records():
        if Path(path).name.startswith(f"{run_id}-"):
            record = json.loads(catalog.read_text(path))
            if record.get("peak_rss_mib") is not None:
                peaks[Path(path).stem.removeprefix(f"{run_id}-")] = record["peak_rss_mib"]
    return peaks


@contextmanager
def moto_s3(bucket: str) -> Iterator[str]:
    """moto's S3 on 127.0.0.1 (tests/s3kit.py: one request at a time, as S3's conditional writes need), the
    AWS settings in this process's environment (the child inherits them), `bucket` made; yields s3://bucket/aimoves."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from s3kit import s3_server

    with s3_server() as s3:
        saved = {k: os.environ.get(k) for k in s3.env()}
        os.environ.update(s3.env())
        try:
            s3.client().create_bucket(Bucket=bucket)
            yield f"s3://{bucket}/aimoves"
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def main(symbols: int, years: int, markets: list[str], batch_size: int, data_dir: str | None, out: Path | None, moto: bool = False,
         slots: int = 0) -> int:
    """Run the chunked benchmark once and print its figures."""
    if moto:
        with moto_s3("aimoves-bench") as location:
            print(f"moto's S3 on {os.environ['AWS_ENDPOINT_URL']}, data dir {location}")
            return main(symbols, years, markets, batch_size, location, out, slots=slots)
    revision = git_revision()
    work = out.resolve() if out else Path(tempfile.mkdtemp(prefix="aimoves-bench-chunked-"))
    work.mkdir(parents=True, exist_ok=True)
    remote = bool(data_dir and data_dir.startswith("s3://"))  # an s3:// location: AWS settings from the environment
    data = data_dir if remote else (Path(data_dir).resolve() if data_dir else work / "data")
    if not remote:
        shutil.rmtree(data, ignore_errors=True)
    try:
        universe = work / "universe.yaml"
        universe.write_text(universe_yaml(symbols))
        start, end = window(years)
        spec = {"start": start.isoformat(), "end": end.isoformat(), "markets": markets, "universe": str(universe),
                "data_dir": str(data), "batch_size": batch_size, "slots": slots, "result": str(work / "chunked.result.json")}
        (work / "chunked.spec.json").write_text(json.dumps(spec))
        log = work / "chunked.log"
        where = f"each chunk in a process of its own, {slots} at a time (a Prefect runner)" if slots else "every chunk in one process"
        progress(f"chunked backfill of {symbols} symbols x {years} years ({start}..{end}), batches of {batch_size}, {where}; log: {log}")
        t0 = time.perf_counter()
        with open(log, "w") as f:
            rc = call_child([sys.executable, os.path.abspath(__file__), str(work / "chunked.spec.json")], bench_env(work), f)
        if rc != 0:
            raise SystemExit(f"chunked child failed (exit {rc}); last lines of {log}:\n{''.join(log.read_text().splitlines(True)[-40:])}")
        res = json.loads(Path(spec["result"]).read_text())
        from aimoves.catalog import Catalog
        from aimoves.schema import PRICES, SECTOR_MOVES, STOCK_MOVES

        catalog = Catalog(str(data))
        rows = catalog.count_rows(PRICES)
        peaks = chunk_peaks(catalog, res["run_id"])
        print(f"revision: {revision}")
        print(f"chunked backfill: {symbols} symbols x {years} years, markets {','.join(markets)}, batch size {batch_size}, "
              f"{res['chunks']} price chunks, {len(peaks)} chunk runs, {where}")
        print(f"wall: {res['wall']:.1f} s (process {time.perf_counter() - t0:.1f} s; Prefect server start {res['server_start']:.1f} s not counted)")
        print(f"price rows: {rows:,}  ({rows / res['wall']:,.0f} rows/s)")
        print(f"parquet files: prices {len(catalog.dataset_files(PRICES))}, stock_moves {len(catalog.dataset_files(STOCK_MOVES))}, "
              f"sector_moves {len(catalog.dataset_files(SECTOR_MOVES))} ({data})")
        print(f"peak RSS, chunked-backfill process: {res['peak_rss'] / MIB:,.0f} MiB (at start {res['rss_start'] / MIB:,.0f} MiB)")
        if peaks:
            top = max(peaks, key=peaks.get)
            stages = {st: max(v for k, v in peaks.items() if k.startswith(st)) for st in ("prices", "stock_moves", "sector_moves")
                      if any(k.startswith(st) for k in peaks)}
            print(f"peak RSS, chunk runs (their records): largest {peaks[top]:,} MiB ({top}); per stage "
                  + ", ".join(f"{st} {v:,}" for st, v in stages.items()) + " MiB")
        print(f"peak RSS, largest child process (Prefect server{'; the runner and every chunk run' if slots else ''}): "
              f"{res['server_peak_rss'] / MIB:,.0f} MiB")
        worst = max([res["peak_rss"] / MIB, *peaks.values()])  # in-process chunk runs record this process's peak
        ok = worst <= TARGET_RSS_GIB * GIB / MIB
        print(f"{'PASS' if ok else 'FAIL'}: peak RSS per process <= {TARGET_RSS_GIB:.0f} GiB (largest {worst:,.0f} MiB)")
        return 0
    finally:
        if out is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    stop_on_sigterm()
    spec = json.loads(Path(sys.argv[1]).read_text())
    Path(spec["result"]).write_text(json.dumps(child(spec)))
