"""Run records: what each market's run did (MarketReport), the run's summary, and its record under `_runs/`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import date, datetime
from pathlib import Path

from aimoves.calendars import last_known_session
from aimoves.catalog import Catalog, as_catalog
from aimoves.errors import AimovesError
from aimoves.markets import MARKET_INFO
from aimoves.normalize import NormalizedPrices
from aimoves.planning import MarketPlan, in_window
from aimoves.sources.base import PriceBatch
from aimoves.store import WriteResult
from aimoves.validate import ValidationResult

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
    passed_in_window = in_window(validation.passed, plan.request.start, plan.write_end)
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
    peak_rss_mib: int | None = None  # chunk runs: the process's peak resident memory (Linux VmHWM) when it wrote its record

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


def write_run_record(summary: RunSummary, data_dir: Catalog | Path | str) -> str:
    """Keep the run's summary under `_runs/` (for `aimoves status` and operators)."""
    catalog = as_catalog(data_dir)
    return catalog.write_json(catalog.run_record_path(summary.run_id), summary.to_json())


class RunFailed(AimovesError):
    """The run could not do its job for at least one market; the summary says which and why."""

    def __init__(self, message: str, summary: RunSummary) -> None:
        super().__init__(message)
        self.summary = summary
