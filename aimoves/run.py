"""A prices run as plain functions: the pieces every recipe shares, and the whole run without Prefect.

`flows/prices.py` is the recipe under Prefect: it calls each stage as a task (tasks/) and these
helpers between them. `run_prices` here runs the same stages as plain calls, with no engine: tests
and the crash trials use it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from aimoves.catalog import Catalog, as_catalog
from aimoves.derive import BLOCK_QUARANTINE_SHARE, DeriveReport, DeriveWindow, derive_sector_moves, derive_stock_moves
from aimoves.errors import AimovesError
from aimoves.fx import update_fx
from aimoves.normalize import NormalizedPrices, normalize_prices
from aimoves.planning import MarketPlan, exchange_today, in_window, latest_settled_session, next_session
from aimoves.quarantine import blocked_dates, quarantine_for_write, write_quarantine
from aimoves.raw import RawRecord, write_raw
from aimoves.restatements import restatements, write_restatements
from aimoves.runs import MarketReport, RunFailed, RunSummary, market_report, new_run_id, write_run_record
from aimoves.schema import PRICES
from aimoves.sources.base import PriceBatch, PriceSource
from aimoves.sources.factory import SourceSettings, make_source
from aimoves.store import WriteResult, upsert
from aimoves.universe import Universe
from aimoves.validate import MarketPrices, ValidationResult, validate_markets

log = logging.getLogger(__name__)

# -- the write stage -------------------------------------------------------------------------------
def prices_for_write(validation: ValidationResult, plan: MarketPlan, ingested_at: datetime) -> pd.DataFrame:
    """Passed rows of the whole fetched window (warm-up included: it is the newest data we have),
    with the stamps and partition columns."""
    rows = in_window(validation.passed, plan.request.start, plan.write_end).copy()
    rows["ingested_at"] = pd.Timestamp(ingested_at)
    rows["year"] = rows["date"].dt.year
    return rows


def write_prices(frame: pd.DataFrame, data_dir: Catalog) -> WriteResult:
    return upsert(frame, PRICES, data_dir)


def write_market(
    validation: ValidationResult, normalized: NormalizedPrices, batch: PriceBatch, plan: MarketPlan, catalog: Catalog, run_id: str, now: datetime,
) -> tuple[WriteResult, int, int]:
    """Write passed rows to prices/, quarantined rows to quarantine/prices/, restated bars to _restatements/.

    Returns the write result, the number of quarantined rows and of restated bars."""
    quarantine = quarantine_for_write(validation, normalized, batch, plan, run_id, now)
    write_quarantine(quarantine, catalog)
    rows = prices_for_write(validation, plan, now)
    written = write_prices(rows, catalog)
    restated = restatements(written, rows)
    write_restatements(restated, catalog, run_id, plan.market)
    return written, len(quarantine), len(restated)


def normalize_market(batch: PriceBatch, plan: MarketPlan, now: datetime) -> NormalizedPrices:
    """The fetched bars in the canonical schema, unsettled sessions (as of `now`) dropped."""
    return normalize_prices(batch, plan.market, latest_settled_session(plan.market, now), exchange_today(plan.market, now))


@dataclass
class Fetched:
    """One market's bars between its fetch and the validation: fetched, logged raw, normalized."""

    plan: MarketPlan
    batch: PriceBatch
    raw: RawRecord | None
    normalized: NormalizedPrices


def validation_of(checked: dict[str, ValidationResult | Exception], market: str) -> ValidationResult:
    """The market's validation result; its exception raised when its validation failed (nothing of it is written)."""
    validation = checked[market]
    if isinstance(validation, Exception):
        raise validation
    return validation


VALIDATE_TOGETHER_ROWS = 1_000_000  # more bars than this (a backfill) are validated market by market: the copy would cost more than the call


def validate_fetched(fetched: list[Fetched], universe: Universe, now: datetime) -> dict[str, ValidationResult | Exception]:
    """The prices suite on every market's normalized bars, in one GX validation (its cost is mostly per
    call: a daily's three markets cost about one). When that raises, and for a backfill's millions of
    rows, each market alone: one market's batch that breaks GX never costs the others (the market
    gets its exception, raised again before its write: `validation_of`)."""
    parts = [
        MarketPrices(f.normalized.prices, f.plan.market, list(f.plan.request.symbols), exchange_today(f.plan.market, now),
                     tuple(universe.extra_holidays.get(f.plan.market, ())))  # type: ignore[call-overload]
        for f in fetched
    ]
    if len(parts) > 1 and sum(len(p.prices) for p in parts) <= VALIDATE_TOGETHER_ROWS:
        try:
            return dict(validate_markets(parts))
        except Exception:
            log.warning("validating the markets together failed; validating each alone", exc_info=True)
    out: dict[str, ValidationResult | Exception] = {}
    for part in parts:  # one market, a backfill's millions of rows (no concatenated copy), or after a failure together
        try:
            out[part.market] = validate_markets([part])[part.market]
        except Exception as exc:
            out[part.market] = exc
    return out


# -- a run from start to end -----------------------------------------------------------------------
@dataclass
class Run:
    """What one run carries from stage to stage."""

    catalog: Catalog
    universe: Universe
    settings: SourceSettings
    source: PriceSource
    summary: RunSummary
    now: datetime
    suite_runs: list = field(default_factory=list)  # validate.SuiteRun of each market's prices: GX results, for Data Docs


def start_run(kind: str, settings: SourceSettings, universe: Universe, catalog: Catalog, now: datetime | None = None) -> Run:
    """A new run id and summary, the data dir made and its stale staging cleaned, the price source made."""
    now = now or datetime.now(UTC)
    summary = RunSummary(new_run_id(now), kind, str(catalog), now.isoformat())
    catalog.fs.makedirs(catalog.root, exist_ok=True)
    catalog.clean_staging()
    return Run(catalog, universe, settings, make_source(settings, universe, catalog), summary, now)


def closed_market(plan: MarketPlan, run: Run) -> None:
    add_report(MarketReport(plan.market, run.source.name, f"{plan.write_start}..{plan.write_end}", closed=plan.closed_reason), run)


def failed_market(plan: MarketPlan, run: Run, exc: Exception) -> None:
    """The report of a market whose stage raised: one market's failure never stops the others."""
    if not isinstance(exc, AimovesError):
        log.exception("%s failed", plan.market, exc_info=exc)
    error = str(exc) if isinstance(exc, AimovesError) else f"{type(exc).__name__}: {exc}"
    add_report(MarketReport(plan.market, run.settings.name, f"{plan.write_start}..{plan.write_end}", error=error), run)


def report_market(
    plan: MarketPlan, run: Run, fetched: Fetched, checked: ValidationResult, written: tuple[WriteResult, int, int],
) -> MarketReport:
    """What one market's run did, with its restated bars and the sessions whose batch failed (its GX results kept on the run)."""
    run.suite_runs.extend(checked.suite_runs)
    result, quarantined, restated = written
    report = market_report(plan, fetched.batch, fetched.normalized, checked, result, quarantined, fetched.raw.path if fetched.raw else None)
    report.restated = restated
    report.blocked_dates = blocked_dates(checked, plan, BLOCK_QUARANTINE_SHARE)
    return add_report(report, run)


def add_report(report: MarketReport, run: Run) -> MarketReport:
    log_market(report)
    run.summary.markets.append(report)
    return report


def open_markets(plans: list[MarketPlan], run: Run) -> list[MarketPlan]:
    """The plans of the markets that trade; each closed one is reported now."""
    for plan in plans:
        if plan.closed_reason:
            closed_market(plan, run)
    return [p for p in plans if not p.closed_reason]


def each_market(items: list, run: Run, step: Callable[..., Any], *args: object) -> list:
    """`step(item, *args)` for each market's item (its plan, or its fetched bars); a market whose step
    raises is reported failed and left out of what is returned: one market's failure never stops the others."""
    out = []
    for item in items:
        try:
            out.append(step(item, *args))
        except Exception as exc:
            failed_market(item if isinstance(item, MarketPlan) else item.plan, run, exc)
    return out


def end_markets(plans: list[MarketPlan], run: Run) -> DerivePlan | None:
    """The markets' reports in the plans' order; what FX, news and the moves then cover."""
    order = {p.market: i for i, p in enumerate(plans)}
    run.summary.markets.sort(key=lambda r: order.get(r.market, len(order)))
    return plan_derive(plans, run.summary.markets)


def log_market(report: MarketReport) -> None:
    if report.closed:
        log.info("%s: %s", report.market, report.closed)
    elif report.error:
        log.error("%s: %s", report.market, report.error)
    else:
        log.info(
            "%s %s: %d passed (%d flagged), %d quarantined, %d symbols failed; partitions written: %s",
            report.market, report.window, report.passed, report.flagged, report.quarantined, len(report.failures),
            ", ".join(report.partitions_written) or "none (unchanged)",
        )


@dataclass
class DerivePlan:
    """What FX, news and the moves cover after the markets' writes."""

    start: date
    end: date
    write_start: date  # the earliest requested session (the divergence starts there)
    markets: list[str]
    windows: list[DeriveWindow]
    blocked: set[tuple[str, date]]


def plan_derive(plans: list[MarketPlan], reports: list[MarketReport]) -> DerivePlan | None:
    """FX and news over the written windows; moves for every session whose prices were (re)written
    except the first of each fetch, whose return would mix freshly fetched and stored adj_close.
    None when no market wrote."""
    done = [(p, r) for p, r in zip(plans, reports) if not r.closed and not r.error]
    if not done:
        return None
    return DerivePlan(
        start=min(p.request.start for p, _ in done),
        end=max(p.write_end for p, _ in done),
        write_start=min(p.write_start for p, _ in done),
        markets=[p.market for p, _ in done],
        windows=[DeriveWindow(p.market, next_session(p.market, p.request.start), p.write_end) for p, _ in done],
        blocked={(r.market, d) for _, r in done for d in r.blocked_dates},
    )


def guarded(what: str, step, *args: object) -> dict | None:  # noqa: ANN001
    """Run an optional stage (FX, news): its failure is reported in the summary, never stops the run."""
    try:
        return step(*args)
    except Exception as exc:
        log.warning("%s failed: %s", what, exc)
        return {"error": f"{type(exc).__name__}: {exc}"}


def warn_blocked(moves: DeriveReport) -> None:
    listed = moves.blocked or []
    if listed:
        more = f" and {len(listed) - 10} more" if len(listed) > 10 else ""
        log.warning("sector moves not computed for %s%s: the prices batch failed there", ", ".join(listed[:10]), more)


def warn_if_stale(summary: RunSummary, catalog: Catalog, now: datetime) -> None:
    """Freshness: say so when a market's latest stored session is older than its latest settled one."""
    from aimoves.ops import latest_stored_date

    for report in summary.markets:
        expected = latest_settled_session(report.market, now)
        latest = latest_stored_date(catalog, PRICES, "market", report.market)
        if latest is None or latest < expected:
            note = f"stale: the latest stored {report.market} session is {latest or 'none'}, expected {expected}"
            report.notes.append(note)
            log.warning(note)


def record_run(run: Run) -> RunSummary:
    """The run's end: freshness checked (daily), finished_at stamped, its record written under `_runs/`."""
    if run.summary.flow == "daily":
        warn_if_stale(run.summary, run.catalog, run.now)
    run.summary.finished_at = datetime.now(UTC).isoformat()
    write_run_record(run.summary, run.catalog)
    return run.summary


def suite_runs_of(run: Run) -> list:
    """Every GX result of the run, returned as values by its stages: prices, FX, news, moves, divergence."""
    out = list(run.suite_runs)
    for part in (run.summary.fx, run.summary.news):
        out += (part or {}).get("suite_runs", [])
    for report in (run.summary.stock_moves, run.summary.sector_moves, run.summary.divergence):
        out += getattr(report, "suite_runs", [])
    return out


def raise_if_failed(summary: RunSummary) -> RunSummary:
    """RunFailed when a market errored or wrote no valid row (closed markets aside)."""
    failed = [m for m in summary.markets if m.error or (not m.closed and m.passed == 0)]
    if failed:
        by_reason: dict[str, list[str]] = {}  # one reason said once, e.g. "US, HK, CN: Yahoo Finance unreachable: ..."
        for m in failed:
            by_reason.setdefault(m.error or "no valid rows fetched", []).append(m.market)
        reasons = "; ".join(f"{', '.join(markets)}: {reason}" for reason, markets in by_reason.items())
        raise RunFailed(f"{summary.flow} could not complete: {reasons}", summary)
    return summary


# -- the whole run, plain --------------------------------------------------------------------------
def fetch_market(plan: MarketPlan, run: Run) -> Fetched:
    """One market, plain: fetch → raw → normalize."""
    batch = run.source.fetch_prices(plan.request)
    raw = write_raw(batch, run.catalog) if run.source.name != "replay" else None
    return Fetched(plan, batch, raw, normalize_market(batch, plan, run.now))


def write_fetched(fetched: Fetched, checked: dict[str, ValidationResult | Exception], run: Run) -> MarketReport:
    """One market, plain: write → report."""
    validation = validation_of(checked, fetched.plan.market)
    written = write_market(validation, fetched.normalized, fetched.batch, fetched.plan, run.catalog, run.summary.run_id, run.now)
    return report_market(fetched.plan, run, fetched, validation, written)


def run_markets(plans: list[MarketPlan], run: Run) -> DerivePlan | None:
    """Every market, plain: fetch → raw → normalize each, one validation of them all, each one's write."""
    fetched = each_market(open_markets(plans, run), run, fetch_market, run)
    checked = validate_fetched(fetched, run.universe, run.now) if fetched else {}
    each_market(fetched, run, write_fetched, checked, run)
    return end_markets(plans, run)


def run_prices(
    kind: str, plans: list[MarketPlan], settings: SourceSettings, universe: Universe, data_dir: Catalog | Path | str, now: datetime | None = None,
) -> RunSummary:
    """The whole run without Prefect (the `backfill`/`daily` flows' stages as plain calls)."""
    catalog = as_catalog(data_dir)
    run = start_run(kind, settings, universe, catalog, now)
    work = run_markets(plans, run)
    if work:
        run.summary.fx = guarded("FX update", update_fx, run.source, universe, work.start, work.end, catalog, run.summary.run_id, run.now)
        if settings.news:
            from aimoves.news.stage import update_news

            run.summary.news = guarded("news update", update_news, settings.news, universe, work.markets, work.start, work.end, catalog,
                                       run.summary.run_id, run.now, settings.seed, settings.shock_date)
        run.summary.stock_moves = derive_stock_moves(catalog, universe, work.windows, run.summary.run_id, run.now)
        run.summary.sector_moves = derive_sector_moves(catalog, universe, work.windows, work.blocked, run.summary.run_id, run.now)
        if kind == "backfill":  # the divergence needs every market of a date: backfills and derive-all compute it
            from aimoves.divergence import derive_divergence

            run.summary.divergence = derive_divergence(catalog, universe, work.write_start, work.end, run.summary.run_id, run.now, work.blocked)
        warn_blocked(run.summary.sector_moves)
    return raise_if_failed(record_run(run))
