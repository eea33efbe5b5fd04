"""`backfill` and `daily`: prices for each market, fetched, logged raw, validated and written."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
from prefect import flow, get_run_logger

from aimoves import options, pipeline
from aimoves.derive import BLOCK_QUARANTINE_SHARE, DeriveWindow
from aimoves.errors import AimovesError
from aimoves.raw import clean_staging
from aimoves.sources.base import PriceSource
from aimoves.universe import Universe
from aimoves.tasks import derive as td
from aimoves.tasks import prices as t


# The recipe's steps as Prefect tasks; PLAIN_STEPS are the same functions without the engine
# (crash trials and other tests run the whole recipe in a forked process with them).
PREFECT_STEPS = SimpleNamespace(
    fetch_prices=t.fetch_prices, store_raw=t.store_raw, normalize=t.normalize, validate=t.validate, write=t.write,
    fx=td.fx, news=td.news, stock_moves=td.stock_moves, sector_moves=td.sector_moves, divergence=td.divergence,
)
PLAIN_STEPS = SimpleNamespace(**{name: step.fn for name, step in vars(PREFECT_STEPS).items()})


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The run logger inside a flow run (its lines reach the UI), the module logger outside."""
    from prefect.context import FlowRunContext

    return get_run_logger() if FlowRunContext.get() else logging.getLogger(__name__)


class RunFailed(AimovesError):
    """The run could not do its job for at least one market; the summary says which and why."""

    def __init__(self, message: str, summary: pipeline.RunSummary) -> None:
        super().__init__(message)
        self.summary = summary


def run_market(
    plan: pipeline.MarketPlan, source: PriceSource, universe: Universe, data_dir: Path, run_id: str, now: datetime, steps: SimpleNamespace = PREFECT_STEPS,
    suite_runs: list | None = None,
) -> pipeline.MarketReport:
    """One market: fetch → raw → normalize → validate → write."""
    if plan.closed_reason:
        return pipeline.MarketReport(plan.market, source.name, f"{plan.write_start}..{plan.write_end}", closed=plan.closed_reason)
    extra = tuple(universe.extra_holidays.get(plan.market, ()))  # type: ignore[call-overload]
    batch = steps.fetch_prices(source, plan.request)
    raw = steps.store_raw(batch, data_dir) if source.name != "replay" else None
    normalized = steps.normalize(batch, plan.market, pipeline.latest_settled_session(plan.market, now), pipeline.exchange_today(plan.market, now))
    checked = steps.validate(normalized, plan.market, list(plan.request.symbols), pipeline.exchange_today(plan.market, now), extra)
    if suite_runs is not None:
        suite_runs.extend(checked.suite_runs)
    written, quarantined, restated = steps.write(checked, normalized, batch, plan, data_dir, run_id, now)
    report = pipeline.market_report(plan, batch, normalized, checked, written, quarantined, raw.path if raw else None)
    report.restated = restated
    report.blocked_dates = pipeline.blocked_dates(checked, plan, BLOCK_QUARANTINE_SHARE)
    return report


def warn_if_stale(summary: pipeline.RunSummary, data_dir: Path, now: datetime) -> None:
    """Freshness: say so when a market's latest stored session is older than its latest settled one."""
    from aimoves.ops import latest_stored_date

    logger = _logger()
    for report in summary.markets:
        expected = pipeline.latest_settled_session(report.market, now)
        latest = latest_stored_date(data_dir / "prices", "market", report.market)
        if latest is None or latest < expected:
            note = f"stale: the latest stored {report.market} session is {latest or 'none'}, expected {expected}"
            report.notes.append(note)
            logger.warning(note)


def run_suite_runs(summary: pipeline.RunSummary, prices: list) -> list:
    """Every GX result of the run, returned as values by its stages: prices, FX, news, moves."""
    out = list(prices)
    for part in (summary.fx, summary.news):
        out += (part or {}).get("suite_runs", [])
    for report in (summary.stock_moves, summary.sector_moves):
        out += getattr(report, "suite_runs", [])
    return out


def publish_run(summary: pipeline.RunSummary, data_dir: Path, suite_runs: list) -> None:
    """Artifacts for the UI; an event when too much was quarantined (an automation alerts on it)."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
    from prefect.events import emit_event
    from prefect.runtime import flow_run

    from aimoves import publish
    from aimoves.schema import SECTOR_MOVES
    from aimoves.store import read_frame

    window = summary.sector_moves.window if summary.sector_moves is not None else ""
    sectors = read_frame(SECTOR_MOVES, data_dir, *window.split("..")) if window else pd.DataFrame()
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

        index = datadocs.build(data_dir, summary.run_id, datetime.fromisoformat(summary.started_at), suite_runs)
        if index is not None:
            create_link_artifact(index.resolve().as_uri(), link_text="Great Expectations Data Docs", key=f"data-docs-{markets}",
                                 description=f"Validation results of this run ({index})")
    except Exception as exc:
        get_run_logger().warning("Data Docs not built: %s", exc)
    from aimoves.assets import publish_derived

    publish_derived(summary, data_dir, run_name)
    share = publish.quarantine_share(summary)
    if share > publish.QUARANTINE_ALERT_SHARE:
        emit_event(
            event="aimoves.quarantine.exceeded",
            resource={"prefect.resource.id": f"aimoves.run.{summary.run_id}", "prefect.resource.name": run_name},
            payload={"share": round(share, 4), "threshold": publish.QUARANTINE_ALERT_SHARE, "markets": [m.market for m in summary.markets]},
        )


def run_prices(
    kind: str,
    plans: list[pipeline.MarketPlan],
    source: pipeline.SourceSettings,
    universe: Universe,
    data_dir: Path,
    steps: SimpleNamespace = PREFECT_STEPS,
    now: datetime | None = None,
) -> pipeline.RunSummary:
    logger = _logger()
    now = now or datetime.now(UTC)
    summary = pipeline.RunSummary(pipeline.new_run_id(now), kind, str(data_dir), now.isoformat())
    price_suite_runs: list = []
    data_dir.mkdir(parents=True, exist_ok=True)
    clean_staging(data_dir)
    price_source = pipeline.make_source(source, universe, data_dir)
    for plan in plans:
        try:
            report = run_market(plan, price_source, universe, data_dir, summary.run_id, now, steps, price_suite_runs)
        except Exception as exc:  # one market's failure must not stop the others; the run fails at the end
            if not isinstance(exc, AimovesError):
                logger.exception("%s failed", plan.market)
            report = pipeline.MarketReport(plan.market, source.name, f"{plan.write_start}..{plan.write_end}", error=f"{type(exc).__name__}: {exc}" if not isinstance(exc, AimovesError) else str(exc))
        if report.closed:
            logger.info("%s: %s", plan.market, report.closed)
        elif report.error:
            logger.error("%s: %s", plan.market, report.error)
        else:
            logger.info(
                "%s %s: %d passed (%d flagged), %d quarantined, %d symbols failed; partitions written: %s",
                plan.market, report.window, report.passed, report.flagged, report.quarantined, len(report.failures),
                ", ".join(report.partitions_written) or "none (unchanged)",
            )
        summary.markets.append(report)
    derived = [(p, r) for p, r in zip(plans, summary.markets) if not r.closed and not r.error]
    if derived:
        # FX for the USD columns, then moves: every session whose prices were (re)written except the
        # first of each fetch, whose return would mix freshly fetched and stored adj_close.
        start = min(p.request.start for p, _ in derived)
        end = max(p.write_end for p, _ in derived)
        try:
            summary.fx = steps.fx(price_source, universe, start, end, data_dir, summary.run_id, now)
        except Exception as exc:  # FX trouble leaves USD columns null and flagged; it never stops prices
            logger.warning("FX update failed: %s", exc)
            summary.fx = {"error": f"{type(exc).__name__}: {exc}"}
        if source.news:
            try:  # news trouble never stops prices or moves; it is reported
                summary.news = steps.news(source.news, universe, [p.market for p, _ in derived], start, end, data_dir, summary.run_id, now,
                                          source.seed, source.shock_date)
            except Exception as exc:
                logger.warning("news update failed: %s", exc)
                summary.news = {"error": f"{type(exc).__name__}: {exc}"}
        windows = [DeriveWindow(p.market, pipeline.next_session(p.market, p.request.start), p.write_end) for p, _ in derived]
        blocked = {(r.market, d) for _, r in derived for d in r.blocked_dates}
        summary.stock_moves = steps.stock_moves(data_dir, universe, windows, summary.run_id, now)
        summary.sector_moves = steps.sector_moves(data_dir, universe, windows, blocked, summary.run_id, now)
        if kind == "backfill":  # the divergence needs every market of a date: backfills and derive-all compute it
            summary.divergence = steps.divergence(data_dir, universe, min(p.write_start for p, _ in derived), end, blocked, summary.run_id, now)
        if blocked:
            listed = summary.sector_moves.blocked or []
            more = f" and {len(listed) - 10} more" if len(listed) > 10 else ""
            logger.warning("sector moves not computed for %s%s: the prices batch failed there", ", ".join(listed[:10]), more)
    if kind == "daily":
        warn_if_stale(summary, data_dir, now)
    summary.finished_at = datetime.now(UTC).isoformat()
    pipeline.write_run_record(summary, data_dir)
    if steps is PREFECT_STEPS:
        publish_run(summary, data_dir, run_suite_runs(summary, price_suite_runs))
    failed = [m for m in summary.markets if m.error or (not m.closed and m.passed == 0)]
    if failed:
        by_reason: dict[str, list[str]] = {}  # one reason said once, e.g. "US, HK, CN: Yahoo Finance unreachable: ..."
        for m in failed:
            by_reason.setdefault(m.error or "no valid rows fetched", []).append(m.market)
        reasons = "; ".join(f"{', '.join(markets)}: {reason}" for reason, markets in by_reason.items())
        raise RunFailed(f"{kind} could not complete: {reasons}", summary)
    return summary


NEEDS_ATTENTION = "Needs attention"


def finish(summary: pipeline.RunSummary) -> pipeline.RunSummary:
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
    data_dir: str = "data",
    universe: str | None = None,
    csv_dir: str | None = None,
    seed: int | None = None,
    shock_date: date | None = None,
    inject_defects: bool = False,
    news_source: str | None = None,
) -> pipeline.RunSummary:
    """Prices for every session from `start` to `end` (after a warm-up read before `start`), then news and moves.

    Parameters are the fields of `aimoves.options.BackfillOptions` (declared and validated there):
    `markets` defaults to the markets the universe lists; `news_source` to the price source's news."""
    opts = options.parse(options.BackfillOptions, **locals())
    stocks = options.load_universe(opts.universe)
    plans = [pipeline.plan_backfill(stocks, m, opts.start, opts.end) for m in options.run_markets(opts, stocks)]
    return finish(run_prices("backfill", plans, _source_settings(opts), stocks, Path(opts.data_dir)))


@flow(name="daily", flow_run_name=_run_name)
def daily(
    day: date | None = None,
    markets: list[str] | None = None,
    source: str = "yahoo",
    data_dir: str = "data",
    universe: str | None = None,
    csv_dir: str | None = None,
    seed: int | None = None,
    shock_date: date | None = None,
    inject_defects: bool = False,
    news_source: str | None = None,
) -> pipeline.RunSummary:
    """One session per market: `day`, or each market's latest settled session (then news and moves).

    Parameters are the fields of `aimoves.options.DailyOptions`; `markets` defaults to the universe's."""
    opts = options.parse(options.DailyOptions, **locals())
    stocks = options.load_universe(opts.universe)
    now = _scheduled_now()
    plans = [pipeline.plan_daily(stocks, m, opts.day or pipeline.latest_settled_session(m, now)) for m in options.run_markets(opts, stocks)]
    return finish(run_prices("daily", plans, _source_settings(opts), stocks, Path(opts.data_dir), now=now))


def _source_settings(opts: options.RunOptions) -> pipeline.SourceSettings:
    return pipeline.SourceSettings(opts.source, Path(opts.csv_dir) if opts.csv_dir else None, opts.seed, opts.shock_date,
                                   opts.inject_defects, pipeline.news_source_for(opts.source, opts.news_source))
