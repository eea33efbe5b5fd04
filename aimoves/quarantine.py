"""Quarantine rows: stamped with the run, identified by a hash of the bar, and the sessions whose batch failed."""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from pathlib import Path

import pandas as pd

from aimoves.calendars import sessions
from aimoves.catalog import Catalog
from aimoves.normalize import NormalizedPrices, rejected_from_source
from aimoves.planning import MarketPlan, in_window
from aimoves.schema import QUARANTINE_PRICES
from aimoves.sources.base import PriceBatch
from aimoves.store import WriteResult, upsert
from aimoves.validate import ValidationResult

def _row_ids(frame: pd.DataFrame) -> list[str]:
    cols = ["symbol", "date", "open", "high", "low", "close", "adj_close", "volume", "source"]
    text = frame[cols].astype(str).fillna("<NA>").agg("|".join, axis=1)  # NOTE: pandas 3 keeps NaN through astype(str)
    return [hashlib.blake2b(t.encode(), digest_size=10).hexdigest() for t in text]


def quarantine_for_write(
    validation: ValidationResult, normalized: NormalizedPrices, batch: PriceBatch, plan: MarketPlan, run_id: str, now: datetime
) -> pd.DataFrame:
    """Every quarantined row: failed checks, unreadable rows, unparsable dates, and passed rows whose
    exchange date falls outside the fetched window (so no fetched row is silently left out)."""
    outside = validation.passed.drop(index=in_window(validation.passed, plan.request.start, plan.write_end).index)
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


def write_quarantine(frame: pd.DataFrame, data_dir: Catalog | Path | str) -> WriteResult:
    return upsert(frame, QUARANTINE_PRICES, data_dir)


def with_quarantine_stamps(rows: pd.DataFrame, run_id: str, now: datetime) -> pd.DataFrame:
    rows = rows.copy()
    rows["quarantined_at"] = pd.Timestamp(now)
    rows["run_id"] = run_id
    if "date" in rows:
        rows["year"] = pd.to_datetime(rows["date"]).dt.year
    return rows


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
