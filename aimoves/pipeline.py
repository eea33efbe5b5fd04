"""The prices pipeline as plain functions: what each Prefect task calls.

fetch → raw log → normalize → validate → write, one market at a time. Nothing here imports Prefect,
so every step runs and tests on its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd

from aimoves.calendars import last_known_session, sessions, sessions_back
from aimoves.errors import AimovesError
from aimoves.markets import MARKET_INFO
from aimoves.normalize import NormalizedPrices, rejected_from_source
from aimoves.schema import PRICES, QUARANTINE_PRICES, DatasetSpec
from aimoves.sources.base import PriceBatch, PriceRequest, PriceSource
from aimoves.store import WriteResult, upsert
from aimoves.universe import Universe
from aimoves.validate import ValidationResult

log = logging.getLogger(__name__)

SOURCES = ("yahoo", "csv", "simulated", "replay")
# A backfill reads this many sessions before --start: the first requested day then has the same
# context (previous close, neighbouring bars, trailing volatility) as any other day.
WARMUP_SESSIONS = 70
# A daily run re-reads this many sessions before its date, for the same reason.
DAILY_CONTEXT_SESSIONS = 15


@dataclass(frozen=True)
class SourceSettings:
    name: str = "simulated"
    csv_dir: Path | None = None
    seed: int | None = None
    shock_date: date | None = None
    inject_defects: bool = False
    news: str | None = None  # news source name; None: no news


NEWS_FOLLOWS = {"yahoo": "yahoo", "simulated": "simulated", "replay": "replay", "csv": None}


def news_source_for(price_source: str, news_source: str | None) -> str | None:
    """`--news-source`, or by default the price source where it has news (csv has none)."""
    if news_source is None:
        return NEWS_FOLLOWS.get(price_source)
    return None if news_source == "none" else news_source


def make_source(settings: SourceSettings, universe: Universe, data_dir: Path) -> PriceSource:
    """The source named in `settings`; a clear error when its options are missing."""
    if settings.name == "simulated":
        from aimoves.sources.simulated import DEFAULT_SEED, DEFAULT_SHOCK, SimulatedSource

        return SimulatedSource(
            sectors={s.symbol: s.sector for s in universe.stocks},
            seed=DEFAULT_SEED if settings.seed is None else settings.seed,
            shock_date=settings.shock_date or DEFAULT_SHOCK,
            inject_defects=settings.inject_defects,
        )
    if settings.name == "csv":
        from aimoves.sources.csv import CsvSource

        if settings.csv_dir is None:
            raise AimovesError("--source csv needs --csv-dir DIR (a folder of <SYMBOL>.csv files)")
        return CsvSource(Path(settings.csv_dir))
    if settings.name == "replay":
        from aimoves.sources.replay import ReplaySource

        if not (data_dir / "raw" / "prices").is_dir():
            raise AimovesError(f"--source replay: {data_dir / 'raw' / 'prices'} does not exist; nothing was fetched into this data dir yet")
        return ReplaySource(data_dir)
    if settings.name == "yahoo":
        from aimoves.sources.yahoo import YahooSource

        return YahooSource()
    raise AimovesError(f"unknown source {settings.name!r}; choose one of {', '.join(SOURCES)}")


@dataclass
class MarketPlan:
    """What one market's run fetches and writes."""

    market: str
    request: PriceRequest  # includes the warm-up / context sessions
    write_start: date
    write_end: date
    closed_reason: str | None = None  # set when there is nothing to do (holiday)
    provisional: bool = False


def plan_backfill(universe: Universe, market: str, start: date, end: date) -> MarketPlan:
    extra = universe.extra_holidays.get(market, ())  # type: ignore[call-overload]
    fetch_start = sessions_back(market, start, WARMUP_SESSIONS, extra)
    symbols = tuple(universe.symbols_by_market([market]).get(market, ()))
    s = sessions(market, start, end, extra)
    plan = MarketPlan(market, PriceRequest(market, symbols, fetch_start, end), start, end, provisional=s.any_provisional)
    if len(s.dates) == 0:
        plan.closed_reason = f"{market} has no trading session from {start} to {end}"
    return plan


def plan_daily(universe: Universe, market: str, day: date) -> MarketPlan:
    extra = universe.extra_holidays.get(market, ())  # type: ignore[call-overload]
    symbols = tuple(universe.symbols_by_market([market]).get(market, ()))
    s = sessions(market, day, day, extra)
    fetch_start = sessions_back(market, day, DAILY_CONTEXT_SESSIONS, extra)
    plan = MarketPlan(market, PriceRequest(market, symbols, fetch_start, day), day, day, provisional=s.any_provisional)
    if len(s.dates) == 0:
        plan.closed_reason = f"{market} market closed on {day} ({MARKET_INFO[market].calendar} has no session that day)"
    return plan


def latest_settled_session(market: str, now: datetime, buffer_minutes: int = 30) -> date:
    """The latest session of `market` whose close (+ buffer) is before `now`."""
    from aimoves.calendars import exchange_calendar

    cal = exchange_calendar(market)
    local_today = pd.Timestamp(now).tz_convert(MARKET_INFO[market].timezone).date()
    recent = sessions(market, local_today - pd.Timedelta(days=15), local_today)
    for day in reversed(recent.dates):
        if day <= cal.last_session:
            close = cal.session_close(day)
        else:
            close = pd.Timestamp.combine(day.date(), MARKET_INFO[market].close).tz_localize(MARKET_INFO[market].timezone)
        if close + pd.Timedelta(minutes=buffer_minutes) <= pd.Timestamp(now):
            return day.date()
    raise AimovesError(f"no settled {market} session in the 15 days before {now}")


def next_session(market: str, day: date) -> date:
    """The first session strictly after `day`."""
    s = sessions(market, day + pd.Timedelta(days=1), day + pd.Timedelta(days=20))
    return s.dates[0].date()


def exchange_today(market: str, now: datetime | None = None) -> date:
    now = now or datetime.now(UTC)
    return pd.Timestamp(now).tz_convert(MARKET_INFO[market].timezone).date()


def _in_window(frame: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    d = frame["date"]
    return frame[(d >= pd.Timestamp(start)) & (d <= pd.Timestamp(end))]


def _row_ids(frame: pd.DataFrame) -> list[str]:
    cols = ["symbol", "date", "open", "high", "low", "close", "adj_close", "volume", "source"]
    text = frame[cols].astype(str).fillna("<NA>").agg("|".join, axis=1)  # NOTE: pandas 3 keeps NaN through astype(str)
    return [hashlib.blake2b(t.encode(), digest_size=10).hexdigest() for t in text]


def prices_for_write(validation: ValidationResult, plan: MarketPlan, ingested_at: datetime) -> pd.DataFrame:
    """Passed rows of the whole fetched window (warm-up included: it is the newest data we have),
    with the stamps and partition columns."""
    rows = _in_window(validation.passed, plan.request.start, plan.write_end).copy()
    rows["ingested_at"] = pd.Timestamp(ingested_at)
    rows["year"] = rows["date"].dt.year
    return rows


def quarantine_for_write(
    validation: ValidationResult, normalized: NormalizedPrices, batch: PriceBatch, plan: MarketPlan, run_id: str, now: datetime
) -> pd.DataFrame:
    """Every quarantined row: failed checks, unreadable rows, unparsable dates, and passed rows whose
    exchange date falls outside the fetched window (so no fetched row is silently left out)."""
    outside = validation.passed.drop(index=_in_window(validation.passed, plan.request.start, plan.write_end).index)
    outside = outside.drop(columns="dq_flags", errors="ignore").assign(
        expectation="date_in_fetched_window",
        reason=[f"{d.date()} is outside the fetched window {plan.request.start}..{plan.write_end}" for d in outside["date"]],
    )
    parts = [validation.quarantined, outside]
    for extra, expectation in ((normalized.rejected, "row_readable"), (rejected_from_source(batch, plan.market), "row_readable")):
        if len(extra):
            extra = extra.copy()
            extra["expectation"] = expectation
            window = extra["date"].isna() | ((extra["date"] >= pd.Timestamp(plan.request.start)) & (extra["date"] <= pd.Timestamp(plan.write_end)))
            parts.append(extra[window])
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=[f.name for f in QUARANTINE_PRICES.schema])
    rows = pd.concat(parts, ignore_index=True)
    rows["date"] = pd.to_datetime(rows["date"])
    rows["row_id"] = _row_ids(rows)
    rows["quarantined_at"] = pd.Timestamp(now)
    rows["run_id"] = run_id
    rows["year"] = rows["date"].dt.year.fillna(now.year).astype(int)
    rows["market"] = plan.market
    return rows.drop_duplicates(["row_id", "expectation"])


@dataclass
class MarketReport:
    market: str
    source: str
    window: str
    requested_symbols: int = 0
    bars_fetched: int = 0
    failures: list[dict] = field(default_factory=list)
    empty_bars_dropped: int = 0
    duplicates_collapsed: int = 0
    passed: int = 0
    flagged: int = 0
    quarantined: int = 0
    failed_expectations: dict[str, int] = field(default_factory=dict)
    partitions_written: list[str] = field(default_factory=list)
    partitions_unchanged: list[str] = field(default_factory=list)
    raw_path: str | None = None
    closed: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    blocked_dates: list[date] = field(default_factory=list)
    restated: int = 0  # stored bars whose values this run changed (see _restatements/)
    unsettled_dropped: int = 0  # live bars of sessions not closed yet

    @property
    def needs_attention(self) -> bool:
        return bool(self.failures or self.quarantined or self.error)


def market_report(
    plan: MarketPlan,
    batch: PriceBatch,
    normalized: NormalizedPrices,
    validation: ValidationResult,
    written: WriteResult,
    quarantine_written: int,
    raw_path: Path | None,
) -> MarketReport:
    passed_in_window = _in_window(validation.passed, plan.request.start, plan.write_end)
    notes = list(batch.notes) + list(normalized.notes)
    if plan.provisional:
        notes.append(
            f"sessions after {last_known_session(plan.market)} are provisional: the {MARKET_INFO[plan.market].calendar} "
            "calendar ends there, weekdays are assumed (add extra_holidays to the universe file)"
        )
    return MarketReport(
        market=plan.market,
        source=batch.source,
        window=f"{plan.request.start}..{plan.write_end}",
        requested_symbols=len(plan.request.symbols),
        bars_fetched=len(batch.bars),
        failures=[{"symbol": f.symbol, "reason": f.reason} for f in batch.failures],  # not asdict: it deep-copies (50,000 symbols: seconds)
        empty_bars_dropped=normalized.empty_bars,
        duplicates_collapsed=normalized.duplicates_collapsed,
        passed=len(passed_in_window),
        flagged=int((passed_in_window["dq_flags"].map(len) > 0).sum()) if len(passed_in_window) else 0,
        quarantined=quarantine_written,
        failed_expectations=validation.failed_expectations,
        partitions_written=written.partitions_written,
        partitions_unchanged=written.partitions_unchanged,
        raw_path=str(raw_path) if raw_path else None,
        unsettled_dropped=normalized.unsettled_dropped,
        error=validation.batch_error,
        notes=notes,
    )


@dataclass
class RunSummary:
    run_id: str
    flow: str
    data_dir: str
    started_at: str
    markets: list[MarketReport] = field(default_factory=list)
    fx: dict | None = None
    news: dict | None = None
    stock_moves: object | None = None  # derive.DeriveReport
    sector_moves: object | None = None  # derive.DeriveReport
    divergence: object | None = None  # derive.DeriveReport (backfill and derive only)
    finished_at: str | None = None

    @property
    def needs_attention(self) -> bool:
        return any(m.needs_attention for m in self.markets)

    @property
    def wrote_nothing(self) -> bool:
        return all(m.closed or (m.passed == 0) for m in self.markets)

    def to_json(self) -> str:
        return json.dumps(self, indent=2, default=_plain)


def _plain(value: object) -> object:
    """JSON for a run record: dataclasses as their fields (without asdict's deep copy), the rest as text."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in fields(value)}
    return str(value)


def new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{os.getpid()}"


def write_run_record(summary: RunSummary, data_dir: Path) -> Path:
    """Keep the run's summary under `_runs/` (for `aimoves status` and operators)."""
    runs = data_dir / "_runs"
    runs.mkdir(parents=True, exist_ok=True)
    path = runs / f"{summary.run_id}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(summary.to_json())
    os.replace(tmp, path)
    return path


def write_prices(frame: pd.DataFrame, data_dir: Path) -> WriteResult:
    return upsert(frame, PRICES, data_dir)


def write_quarantine(frame: pd.DataFrame, data_dir: Path) -> WriteResult:
    return upsert(frame, QUARANTINE_PRICES, data_dir)


def blocked_dates(validation: ValidationResult, plan: MarketPlan, share: float) -> list[date]:
    """Sessions whose batch failed: in the requested window, no valid row; anywhere in the fetched
    window, more than `share` of the date's rows quarantined."""
    if plan.closed_reason:
        return []
    days = sessions(plan.market, plan.request.start, plan.write_end).dates
    passed = validation.passed["date"].value_counts() if len(validation.passed) else pd.Series(dtype=int)
    bad = validation.quarantined["date"].value_counts() if len(validation.quarantined) else pd.Series(dtype=int)
    out = []
    for day in days:
        ok, q = int(passed.get(day, 0)), int(bad.get(day, 0))
        requested = day >= pd.Timestamp(plan.write_start)
        if (ok == 0 and (q or requested)) or (ok + q and q / (ok + q) > share):
            out.append(day.date())
    return out


def with_quarantine_stamps(rows: pd.DataFrame, run_id: str, now: datetime) -> pd.DataFrame:
    rows = rows.copy()
    rows["quarantined_at"] = pd.Timestamp(now)
    rows["run_id"] = run_id
    if "date" in rows:
        rows["year"] = pd.to_datetime(rows["date"]).dt.year
    return rows


def write_dataset(frame: pd.DataFrame, spec: DatasetSpec, data_dir: Path) -> WriteResult:
    return upsert(frame, spec, data_dir)


RESTATED_COLUMNS = ("open", "high", "low", "close", "adj_close", "volume")


def restatements(written: WriteResult, new_rows: pd.DataFrame) -> pd.DataFrame:
    """Stored bars this write changed: symbol, date, and old/new values of what changed."""
    if not written.replaced:
        return pd.DataFrame()
    old = pd.concat(written.replaced, ignore_index=True)
    old["date"] = pd.to_datetime(old["date"])
    new = new_rows.assign(date=pd.to_datetime(new_rows["date"]))
    both = old.merge(new, on=["symbol", "date"], suffixes=("_old", "_new"))
    changed = pd.Series(False, index=both.index)
    for c in RESTATED_COLUMNS:
        a, b = both[f"{c}_old"].astype("float64"), both[f"{c}_new"].astype("float64")
        changed |= ~((a == b) | (a.isna() & b.isna()))
    cols = ["symbol", "date"] + [f"{c}_{v}" for c in RESTATED_COLUMNS for v in ("old", "new")]
    return both.loc[changed, cols].reset_index(drop=True)


def write_restatements(frame: pd.DataFrame, data_dir: Path, run_id: str, market: str) -> Path | None:
    """Keep a record of restated bars under `_restatements/prices/` (one file per run and market)."""
    if frame.empty:
        return None
    folder = data_dir / "_restatements" / "prices"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_id}-{market}.parquet"
    tmp = path.with_suffix(".tmp")
    frame.assign(market=market, run_id=run_id).to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path
