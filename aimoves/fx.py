"""FX rates: USD per unit of each currency the universe trades in, from the same sources as prices.

FX symbols come from the universe's `fx:` map (`HKD: HKDUSD=X`). A symbol quoted as
`<CUR>USD=X` gives USD per unit directly; `USD<CUR>=X` or `<CUR>=X` (units per USD) is inverted.
FX bars are dated by the calendar day Yahoo stamps them with (its wall-clock date).
"""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import pandas as pd

from aimoves.sources.base import PriceBatch, PriceRequest
from aimoves.universe import Universe
from aimoves.validate import ValidationResult, default_parameters, split_by_suite

FX_MARKET = "FX"
FX_COLUMNS = ["date", "currency", "usd_rate", "symbol", "source"]


def fx_request(universe: Universe, start: date, end: date) -> PriceRequest | None:
    symbols = tuple(universe.fx.values())
    return PriceRequest(FX_MARKET, symbols, start, end) if symbols else None


def _inverted(symbol: str, currency: str) -> bool:
    return symbol.startswith(f"USD{currency}") or symbol == f"{currency}=X"


def normalize_fx(batch: PriceBatch, universe: Universe) -> pd.DataFrame:
    """Yahoo-long-form FX bars → date, currency, usd_rate, symbol, source."""
    currency_of = {sym: cur for cur, sym in universe.fx.items()}
    bars = batch.bars[batch.bars["Ticker"].isin(currency_of)]
    if bars.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in FX_COLUMNS})
    raw = pd.to_datetime(bars["Date"].astype("string").str.slice(0, 10), errors="coerce")  # NOTE: the bar's own wall date
    close = pd.to_numeric(bars["Close"], errors="coerce").astype("float64")
    currency = bars["Ticker"].map(currency_of)
    inverted = np.array([_inverted(s, c) for s, c in zip(bars["Ticker"], currency)], dtype=bool)
    rate = np.where(inverted, 1.0 / close.where(close != 0), close)
    source = bars["Source"] if "Source" in bars.columns else batch.source
    out = pd.DataFrame({"date": raw, "currency": currency, "usd_rate": rate, "symbol": bars["Ticker"], "source": source})
    out = out.dropna(subset=["usd_rate"], how="all").drop_duplicates()
    return out.sort_values(["currency", "date"], kind="stable").reset_index(drop=True)


def validate_fx(fx: pd.DataFrame, today: date) -> ValidationResult:
    if fx.empty:
        return ValidationResult(fx.assign(dq_flags=[]), fx.assign(expectation=[], reason=[]), batch_error="no FX rates fetched")
    frame = fx.copy()
    params = default_parameters("fx")
    frame["is_weekend"] = frame["date"].dt.dayofweek >= 5
    rate = frame["usd_rate"].where(frame["usd_rate"] > 0)
    median = rate.groupby(frame["currency"], sort=False).rolling(11, center=True, min_periods=1).median()
    frame["rate_vs_local_median"] = rate / median.reset_index(level=0, drop=True).reindex(frame.index)
    clean = rate[(frame["rate_vs_local_median"] >= params["glitch_ratio_min"]) & (frame["rate_vs_local_median"] <= params["glitch_ratio_max"])]
    frame["daily_change"] = (clean / clean.groupby(frame.loc[clean.index, "currency"]).shift(1) - 1).reindex(frame.index)
    return split_by_suite("fx", frame, FX_COLUMNS, {"today": pd.Timestamp(today)}, label="fx")


def fx_for_write(result: ValidationResult, ingested_at: datetime) -> pd.DataFrame:
    rows = result.passed.copy()
    rows["ingested_at"] = pd.Timestamp(ingested_at)
    rows["year"] = rows["date"].dt.year
    return rows


def update_fx(source, universe: Universe, start: date, end: date, data_dir, run_id: str, now: datetime) -> dict:  # noqa: ANN001
    """Fetch, log raw, validate and write FX rates for start..end; returns a small report dict."""
    from aimoves.quarantine import with_quarantine_stamps
    from aimoves.store import upsert
    from aimoves.raw import write_raw
    from aimoves.schema import FX, QUARANTINE_FX

    request = fx_request(universe, start, end)
    if request is None:
        return {"window": f"{start}..{end}", "note": "the universe lists no FX symbols"}
    batch = source.fetch_prices(request)
    if source.name != "replay":
        write_raw(batch, data_dir, dataset="fx")
    result = validate_fx(normalize_fx(batch, universe), now.date())
    written = upsert(fx_for_write(result, now), FX, data_dir) if len(result.passed) else None
    if len(result.quarantined):
        upsert(with_quarantine_stamps(result.quarantined, run_id, now), QUARANTINE_FX, data_dir)
    reasons = {f.symbol: f.reason for f in batch.failures}
    missing = [f"{cur} ({reasons[sym]})" for cur, sym in universe.fx.items() if sym in reasons]
    # Which input is missing, in one line (the summary adds that USD columns stay empty).
    error = f"no FX rates for {', '.join(missing)}" if missing else result.batch_error
    return {
        "window": f"{start}..{end}",
        "passed": len(result.passed),
        "quarantined": len(result.quarantined),
        "failures": [{"symbol": f.symbol, "reason": f.reason} for f in batch.failures],
        "failed_expectations": result.failed_expectations,
        "partitions_written": written.partitions_written if written else [],
        "error": error,
        "suite_runs": result.suite_runs,
    }
