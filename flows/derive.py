"""`derive`: recompute stock and sector moves from what is stored (no fetching).

The ALL region needs every market's session of a date: the `derive-all` deployment runs this once
the three markets' daily runs of that date are in. Also the way to rebuild moves after a method
change: `aimoves derive --start D --end D`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from prefect import flow, get_run_logger

from aimoves import options
from aimoves.catalog import Catalog
from aimoves.derive import DeriveWindow
from aimoves.runs import RunSummary, new_run_id, write_run_record
from aimoves.tasks import derive as td

from .runlogs import library_logs_to_run


def _run_name() -> str:
    from prefect.runtime import flow_run

    p = flow_run.parameters
    return f"derive-{'+'.join(p.get('markets') or ['all'])}-{p.get('start') or 'yesterday'}-to-{p.get('end') or p.get('start') or 'yesterday'}"


@flow(name="derive", flow_run_name=_run_name)
def derive(
    start: date | None = None,
    end: date | None = None,
    markets: list[str] | None = None,
    data_dir: str = "data",
    universe: str | None = None,
) -> RunSummary:
    """Stock moves of `markets` (default: the universe's) and sector moves of their regions and ALL, for start..end (default: yesterday UTC).

    Parameters are the fields of `aimoves.options.DeriveOptions` (declared and validated there)."""
    opts = options.parse(options.DeriveOptions, **locals())
    logger = get_run_logger()
    now = datetime.now(UTC)
    start = opts.start or (now.date() - timedelta(days=1))
    end = opts.end or start
    stocks = options.load_universe(opts.universe)
    catalog = Catalog(opts.data_dir)
    summary = RunSummary(new_run_id(now), "derive", str(catalog), now.isoformat())
    windows = [DeriveWindow(m, start, end) for m in options.run_markets(opts, stocks)]
    with library_logs_to_run():
        summary.stock_moves = td.stock_moves(catalog, stocks, windows, summary.run_id, now)
        summary.sector_moves = td.sector_moves(catalog, stocks, windows, set(), summary.run_id, now)
        summary.divergence = td.divergence(catalog, stocks, start, end, set(), summary.run_id, now)
    logger.info("stock_moves: %d rows; sector_moves: %d rows; divergence: %d rows", summary.stock_moves.passed, summary.sector_moves.passed,
                summary.divergence.passed)
    summary.finished_at = datetime.now(UTC).isoformat()
    write_run_record(summary, catalog)
    from aimoves.assets import publish_derived
    from prefect.runtime import flow_run

    publish_derived(summary, catalog.location, flow_run.name or summary.run_id, digest_day=end)  # NOTE: a local path (not yet on the Catalog)
    return summary
