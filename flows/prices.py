"""`backfill` and `daily`: the recipe of a prices run, top to bottom, each stage a task (tasks/).

Per market: fetch → raw log → normalize; one validation of every market's bars (GX's cost is per
call); per market: write. Then FX, news, stock moves and sector moves over what was written; then
the run record and the artifacts the UI shows. The helpers between the stages are plain functions
of aimoves.run (which also runs the same stages without Prefect: `aimoves.run.run_prices`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger

from aimoves import options
from aimoves.catalog import Catalog
from aimoves.planning import MarketPlan, latest_settled_session, plan_backfill, plan_daily
from aimoves.run import (
    DerivePlan, Fetched, Run, each_market, end_markets, guarded, open_markets, raise_if_failed, record_run, report_market, start_run,
    suite_runs_of, validation_of, warn_blocked,
)
from aimoves.runs import MarketReport, RunFailed, RunSummary
from aimoves.sources.factory import SourceSettings, news_source_for
from aimoves.tasks import derive as td
from aimoves.tasks import prices as t
from aimoves.universe import Universe
from aimoves.validate import ValidationResult

from .runlogs import library_logs_to_run

__all__ = ["NEEDS_ATTENTION", "RunFailed", "backfill", "daily", "prices"]


def prices(kind: str, plans: list[MarketPlan], settings: SourceSettings, universe: Universe, catalog: Catalog, now: datetime | None = None) -> RunSummary:
    """The recipe: every market's prices, then FX, news and moves over what was written, then the record and artifacts."""
    run = start_run(kind, settings, universe, catalog, now)
    work = markets(plans, run)
    if work:
        s = run.summary
        s.fx = guarded("FX update", td.fx, run.source, universe, work.start, work.end, catalog, s.run_id, run.now)
        if settings.news:
            s.news = guarded("news update", td.news, settings.news, universe, work.markets, work.start, work.end, catalog, s.run_id,
                             run.now, settings.seed, settings.shock_date)
        s.stock_moves = td.stock_moves(catalog, universe, work.windows, s.run_id, run.now)
        s.sector_moves = td.sector_moves(catalog, universe, work.windows, work.blocked, s.run_id, run.now)
        if kind == "backfill":  # the divergence needs every market of a date: backfills and derive-all compute it
            s.divergence = td.divergence(catalog, universe, work.write_start, work.end, work.blocked, s.run_id, run.now)
        warn_blocked(s.sector_moves)
    publish_run(record_run(run), catalog, suite_runs_of(run))
    return raise_if_failed(run.summary)


def markets(plans: list[MarketPlan], run: Run) -> DerivePlan | None:
    """Every market: fetch → raw → normalize each, one validation of all their bars, then each one's write."""
    fetched = each_market(open_markets(plans, run), run, fetch_market, run)
    checked = t.validate(fetched, run.universe, run.now) if fetched else {}
    each_market(fetched, run, write_market, checked, run)
    return end_markets(plans, run)


def fetch_market(plan: MarketPlan, run: Run) -> Fetched:
    batch = t.fetch_prices(run.source, plan.request)
    raw = t.store_raw(batch, run.catalog) if run.source.name != "replay" else None
    return Fetched(plan, batch, raw, t.normalize(batch, plan, run.now))


def write_market(fetched: Fetched, checked: dict[str, ValidationResult | Exception], run: Run) -> MarketReport:
    plan, validation = fetched.plan, validation_of(checked, fetched.plan.market)
    written = t.write(validation, fetched.normalized, fetched.batch, plan, run.catalog, run.summary.run_id, run.now)
    return report_market(plan, run, fetched, validation, written)


def publish_run(summary: RunSummary, catalog: Catalog, suite_runs: list) -> None:
    """Artifacts for the UI; an event when too much was quarantined (an automation alerts on it)."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
    from prefect.events import emit_event
    from prefect.runtime import flow_run

    from aimoves import publish
    from aimoves.schema import SECTOR_MOVES

    window = summary.sector_moves.window if summary.sector_moves is not None else ""
    sectors = catalog.read_frame(SECTOR_MOVES, *window.split("..")) if window else pd.DataFrame()
    run_name = flow_run.name or summary.run_id
    markets = "-".join(m.market.lower() for m in summary.markets)
    create_markdown_artifact(publish.sector_moves_markdown(sectors, run_name), key=f"sector-moves-{markets}", description="Sector moves")
    create_markdown_artifact(publish.data_quality_markdown(summary), key=f"data-quality-{markets}", description="Rows passed, flagged, quarantined")
    failed = publish.failed_symbols_table(summary)
    if failed:
        create_table_artifact(failed, key=f"failed-symbols-{markets}", description="Symbols that failed to fetch")
    create_markdown_artifact(publish.written_markdown(summary), key=f"written-{markets}", description="Partitions written")
    try:  # Data Docs are a convenience: their failure must not fail a run that wrote its data
        from aimoves import datadocs

        index = datadocs.build(catalog, summary.run_id, datetime.fromisoformat(summary.started_at), suite_runs)
        if index is not None:
            create_link_artifact(catalog.fs.unstrip_protocol(index), link_text="Great Expectations Data Docs", key=f"data-docs-{markets}",
                                 description=f"Validation results of this run ({index})")
    except Exception as exc:
        get_run_logger().warning("Data Docs not built: %s", exc)
    from aimoves.assets import publish_derived

    publish_derived(summary, catalog.location, run_name)  # NOTE: assets and digest take a local path (not yet on the Catalog)
    share = publish.quarantine_share(summary)
    if share > publish.QUARANTINE_ALERT_SHARE:
        emit_event(
            event="aimoves.quarantine.exceeded",
            resource={"prefect.resource.id": f"aimoves.run.{summary.run_id}", "prefect.resource.name": run_name},
            payload={"share": round(share, 4), "threshold": publish.QUARANTINE_ALERT_SHARE, "markets": [m.market for m in summary.markets]},
        )


NEEDS_ATTENTION = "Needs attention"


def finish(summary: RunSummary) -> RunSummary:
    """The flow's end: `Completed`, or a completed state named "Needs attention" (the UI shows the
    name) when symbols failed or rows were quarantined; its message lists them."""
    if not summary.needs_attention:
        return summary
    from prefect.states import Completed

    failed = [f"{m.market}:{f['symbol']}" for m in summary.markets for f in m.failures]
    quarantined = sum(m.quarantined for m in summary.markets)
    message = f"{len(failed)} symbols failed" + (f" ({', '.join(failed[:20])}{' …' if len(failed) > 20 else ''})" if failed else "")
    message += f"; {quarantined} rows quarantined"
    return Completed(name=NEEDS_ATTENTION, message=message, data=summary)  # type: ignore[return-value]


def _scheduled_now() -> datetime:
    """Now, or the run's scheduled time if that is later: workers may start a scheduled run a few
    seconds early, and a daily run must then still see the session it was scheduled after."""
    from prefect.runtime import flow_run

    now = datetime.now(UTC)
    scheduled = flow_run.scheduled_start_time
    return max(now, datetime.fromtimestamp(scheduled.timestamp(), UTC)) if scheduled is not None else now


def _run_name() -> str:
    """backfill-US+HK-2025-01-02-to-2025-02-28, daily-HK-2025-01-28, daily-US-latest."""
    from prefect.runtime import flow_run

    p = flow_run.parameters
    markets = "+".join(p.get("markets") or ["all"])
    if flow_run.flow_name == "backfill":
        return f"backfill-{markets}-{p.get('start')}-to-{p.get('end')}"
    return f"daily-{markets}-{p.get('day') or 'latest'}"


@flow(name="backfill", flow_run_name=_run_name)
def backfill(
    start: date,
    end: date,
    markets: list[str] | None = None,
    source: str = "yahoo",
    data_dir: str | None = None,
    universe: str | None = None,
    csv_dir: str | None = None,
    seed: int | None = None,
    shock_date: date | None = None,
    inject_defects: bool = False,
    news_source: str | None = None,
) -> RunSummary:
    """Prices for every session from `start` to `end` (after a warm-up read before `start`), then news and moves.

    Parameters are the fields of `aimoves.options.BackfillOptions` (declared and validated there):
    `markets` defaults to the markets the universe lists; `news_source` to the price source's news."""
    opts = options.parse(options.BackfillOptions, **locals())
    stocks = options.load_universe(opts.universe)
    plans = [plan_backfill(stocks, m, opts.start, opts.end) for m in options.run_markets(opts, stocks)]
    with library_logs_to_run():
        return finish(prices("backfill", plans, _source_settings(opts), stocks, Catalog(opts.data_dir)))


@flow(name="daily", flow_run_name=_run_name)
def daily(
    day: date | None = None,
    markets: list[str] | None = None,
    source: str = "yahoo",
    data_dir: str | None = None,
    universe: str | None = None,
    csv_dir: str | None = None,
    seed: int | None = None,
    shock_date: date | None = None,
    inject_defects: bool = False,
    news_source: str | None = None,
) -> RunSummary:
    """One session per market: `day`, or each market's latest settled session (then news and moves).

    Parameters are the fields of `aimoves.options.DailyOptions`; `markets` defaults to the universe's."""
    opts = options.parse(options.DailyOptions, **locals())
    stocks = options.load_universe(opts.universe)
    now = _scheduled_now()
    plans = [plan_daily(stocks, m, opts.day or latest_settled_session(m, now)) for m in options.run_markets(opts, stocks)]
    with library_logs_to_run():
        return finish(prices("daily", plans, _source_settings(opts), stocks, Catalog(opts.data_dir), now))


def _source_settings(opts: options.RunOptions) -> SourceSettings:
    return SourceSettings(opts.source, Path(opts.csv_dir) if opts.csv_dir else None, opts.seed, opts.shock_date,
                          opts.inject_defects, news_source_for(opts.source, opts.news_source))
