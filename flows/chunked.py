"""`chunked-backfill`: a backfill in chunks of bounded memory, each chunk its own flow run (see aimoves/chunks.py).

With `chunk_deployment` (the `backfill-chunk` deployment of prefect.yaml) every chunk is a run on the
work pool, submitted with `run_deployment` as a subflow of this run, so several workers share one
backfill and the UI shows the parent with its chunk runs; without it the chunks run here, one after
the other, as subflows. Stages run in order (prices, FX, stock moves, sector moves, then the
divergence in windows of whole months, in this run), each once every chunk of the one before is in. A chunk is
retried once by Prefect on its own; when one still fails, the parent fails naming it, and `only=[<chunk names>]` re-runs just those price chunks, then derives.
News is not fetched here (a news backfill is small: run `backfill` with the same window for it).
"""

# NOTE: no `from __future__ import annotations` here: a Prefect runner (`serve`) pickles this module's
# functions by value for each run's subprocess, and string annotations (`date`) then no longer resolve
# when Prefect validates the parameters ("Backfill_ChunkModel is not fully defined").
import json
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from aimoves import chunks as c
from aimoves.catalog import Catalog
from aimoves.errors import AimovesError
from aimoves.location import resolve_data_dir
from aimoves.flows.prices import markets as markets_of
from aimoves.gcpause import peak_rss_mib, release_memory
from aimoves.markets import MARKETS
from aimoves.run import Run
from aimoves.runs import RunSummary, new_run_id, write_run_record
from aimoves.sources.factory import SourceSettings, make_source
from aimoves.tasks import derive as td
from aimoves.universe import load_universe


class ChunksFailed(AimovesError):
    """Some chunks failed after their retries; the message names them."""


def _chunk_run_name() -> str:
    from prefect.runtime import flow_run

    p = flow_run.parameters
    chunk = c.Chunk(p["market"], date.fromisoformat(str(p["start"])), date.fromisoformat(str(p["end"])), (), p.get("batch", 0), p.get("batches", 1))
    return f"{p['stage']}-{chunk.name}"


def _blocked_days(blocked: list[str] | None) -> set[tuple[str, date]]:
    """("US", 2025-01-27) from "US 2025-01-27": the form blocked dates take in chunk parameters."""
    return {(m, date.fromisoformat(d)) for m, d in (b.split(" ") for b in blocked or [])}


def _record(catalog: Catalog, run_id: str) -> dict[str, Any]:
    path = catalog.run_record_path(run_id)
    return json.loads(catalog.read_text(path)) if catalog.fs.exists(path) else {}


@flow(name="backfill-chunk", flow_run_name=_chunk_run_name, retries=1, retry_delay_seconds=5)
def backfill_chunk(
    stage: str, market: str, start: date, end: date, run_id: str, window_start: date,
    symbols: list[str] | None = None, batch: int = 0, batches: int = 1, markets: list[str] = list(MARKETS),
    blocked: list[str] | None = None, source: str = "yahoo", data_dir: str | None = None, universe: str | None = None,
    csv_dir: str | None = None, seed: int | None = None, shock_date: date | None = None, inject_defects: bool = False,
) -> dict[str, Any]:
    """One chunk of one stage: `prices` (fetch → write), `stock_moves` or `sector_moves`; its record goes to `_runs/<run_id>.json`."""
    chunk = c.Chunk(market, start, end, tuple(symbols or ()), batch, batches)
    stocks, root, now = load_universe(universe), Catalog(resolve_data_dir(data_dir)), datetime.now(UTC)
    summary = RunSummary(run_id, f"chunk-{stage}", str(root), now.isoformat())
    if stage == "prices":
        settings = SourceSettings(source, Path(csv_dir) if csv_dir else None, seed, shock_date, inject_defects, None)
        markets_of([c.chunk_plan(chunk, stocks)], Run(root, stocks, settings, make_source(settings, stocks, root), summary, now))
        report = summary.markets[0]
        if report.error or (not report.closed and report.passed == 0):
            summary.peak_rss_mib = peak_rss_mib()
            write_run_record(summary, root)
            raise ChunksFailed(f"{stage} {chunk.name}: {report.error or 'no valid rows fetched'}")
    elif stage == "stock_moves":
        summary.stock_moves = c.derive_stock_chunk(chunk, window_start, stocks, root, run_id, now)
    elif stage == "sector_moves":
        summary.sector_moves = c.derive_sector_chunk(chunk, window_start, markets, stocks, _blocked_days(blocked), root, run_id, now)
    else:
        raise AimovesError(f"unknown chunk stage {stage!r}: expected prices, stock_moves or sector_moves")
    summary.finished_at, summary.peak_rss_mib = datetime.now(UTC).isoformat(), peak_rss_mib()
    write_run_record(summary, root)
    return {"chunk": chunk.name, "stage": stage, "run_id": run_id}


def _run_stage(stage: str, chunks: list[c.Chunk], common: dict[str, Any], parent: str, deployment: str | None) -> list[str]:
    """Run every chunk of a stage (on the pool, or here); the names of those that failed."""
    logger = get_run_logger()
    params = [
        {**common, "stage": stage, "market": k.market, "start": k.start, "end": k.end, "symbols": list(k.symbols),
         "batch": k.batch, "batches": k.batches, "run_id": f"{parent}-{stage}-{k.name}"}
        for k in chunks
    ]
    failed = []
    if deployment is None:
        for k, p in zip(chunks, params):
            state = backfill_chunk(**p, return_state=True)
            if not state.is_completed():
                failed.append(k.name)
            release_memory()  # chunks in this one process: each starts from what the last one freed
    else:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
        from prefect.deployments import run_deployment

        runs = [run_deployment(deployment, parameters=p, timeout=0) for p in params]
        with get_client(sync_client=True) as client:
            pending = {r.id: k for r, k in zip(runs, chunks)}
            while pending:  # one request per 200 pending chunks and poll (the API's page limit), not one per chunk
                ids = list(pending)
                pages = [client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids[i : i + 200])), limit=200)
                         for i in range(0, len(ids), 200)]
                for run in (r for page in pages for r in page):
                    if run.state is not None and run.state.is_final():
                        k = pending.pop(run.id)
                        if not run.state.is_completed():
                            failed.append(k.name)
                if pending:
                    time.sleep(1.0)
    logger.info("%s: %d chunks, %d failed%s", stage, len(chunks), len(failed), f" ({', '.join(failed)})" if failed else "")
    return failed


@flow(name="chunked-backfill", flow_run_name="chunked-backfill-{start}-to-{end}")
def chunked_backfill(
    start: date, end: date, markets: list[str] = list(MARKETS), source: str = "yahoo", data_dir: str | None = None,
    universe: str | None = None, csv_dir: str | None = None, seed: int | None = None, shock_date: date | None = None,
    inject_defects: bool = False, batch_size: int = c.BATCH_SIZE, chunk_deployment: str | None = None, only: list[str] | None = None,
) -> dict[str, Any]:
    """Prices, FX, stock moves and sector moves from `start` to `end`, in chunks (per market, year and symbol batch)."""
    if end < start:
        raise AimovesError(f"--end {end} is before --start {start}")
    data_dir = resolve_data_dir(data_dir)  # once, here: every chunk writes where the parent decided
    stocks, root, now = load_universe(universe), Catalog(data_dir), datetime.now(UTC)
    parent = new_run_id(now)
    common = {"window_start": start, "markets": markets, "source": source, "data_dir": data_dir, "universe": universe,
              "csv_dir": csv_dir, "seed": seed, "shock_date": shock_date, "inject_defects": inject_defects}
    planned = c.plan_chunks(stocks, markets, start, end, batch_size)
    price_chunks = [k for k in planned if only is None or k.name in only]
    failed = _run_stage("prices", price_chunks, common, parent, chunk_deployment)
    if failed:
        raise ChunksFailed(f"price chunks failed: {', '.join(failed)}; re-run them alone with only={failed!r}, nothing was derived")
    blocked = sorted({f"{k.market} {d}" for k in price_chunks
                      for m in _record(root, f"{parent}-prices-{k.name}").get("markets", []) for d in m.get("blocked_dates", [])})
    settings = SourceSettings(source, Path(csv_dir) if csv_dir else None, seed, shock_date, inject_defects, None)
    fx_start = min(c.chunk_plan(k, stocks).request.start for k in planned if k.start == start)
    td.fx(make_source(settings, stocks, root), stocks, fx_start, end, root, parent, now)
    failed = _run_stage("stock_moves", planned, common, parent, chunk_deployment)
    failed += _run_stage("sector_moves", c.plan_sector_chunks(start, end), {**common, "blocked": blocked}, parent, chunk_deployment)
    if failed:
        raise ChunksFailed(f"derive chunks failed: {', '.join(failed)}; prices are in, re-run the backfill to derive again")
    blocked_days = _blocked_days(blocked)
    for lo, hi in c.divergence_windows(start, end, len(stocks.stocks)):  # memory bounded as the chunks' is
        td.divergence(root, stocks, lo, hi, blocked_days, parent, now)
        release_memory()
    return {"run_id": parent, "chunks": len(planned), "blocked": blocked}
