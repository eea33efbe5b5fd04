"""Yahoo long form (any source) → the canonical `prices` columns."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from aimoves.markets import MARKET_INFO, normalize_symbol
from aimoves.sources.base import PriceBatch

PRICE_COLUMNS = ["date", "symbol", "market", "currency", "open", "high", "low", "close", "adj_close", "volume", "source"]
_RENAME = {"Ticker": "symbol", "Open": "open", "High": "high", "Low": "low", "Close": "close", "Adj Close": "adj_close", "Volume": "volume"}


@dataclass
class NormalizedPrices:
    prices: pd.DataFrame  # PRICE_COLUMNS (date as datetime64, midnight, exchange-local)
    rejected: pd.DataFrame  # rows that cannot be normalized: PRICE_COLUMNS + reason
    empty_bars: int = 0  # all-NaN rows (no trade that day), dropped
    duplicates_collapsed: int = 0
    unsettled_dropped: int = 0  # bars of sessions not closed yet (live bars), dropped
    notes: list[str] = field(default_factory=list)


def exchange_dates(values: pd.Series, timezone: str) -> tuple[pd.Series, pd.Series]:
    """Dates in the exchange's own calendar, and a mask of values that could not be read.

    Naive values are taken as exchange-local dates. Values with a UTC offset or zone are converted
    to the exchange's zone first: a bar stamped 2025-01-27 00:00-05:00 is the 27th in New York.
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        ts = values
        if getattr(ts.dt, "tz", None) is not None:
            ts = ts.dt.tz_convert(timezone).dt.tz_localize(None)
        return ts.dt.normalize(), ts.isna()
    text = values.astype("string").str.strip()
    has_zone = text.str.contains(r"(?:[+-]\d\d:?\d\d|Z|UTC)$", regex=True, na=False)
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    if (~has_zone).any():
        naive = pd.to_datetime(text[~has_zone], errors="coerce", format="mixed")
        out.loc[~has_zone] = naive.dt.normalize()
    if has_zone.any():
        aware = pd.to_datetime(text[has_zone], errors="coerce", utc=True, format="mixed")
        out.loc[has_zone] = aware.dt.tz_convert(timezone).dt.tz_localize(None).dt.normalize()
    return out, out.isna()


def _normalized_symbols(symbols: pd.Series) -> pd.Series:
    """normalize_symbol over a column, computed once per distinct symbol."""
    # NOTE: spread by factorized code; Series.map of a dict over millions of rows costs seconds
    codes, uniques = pd.factorize(symbols.astype("string"))
    normalized = np.array([normalize_symbol(v) for v in uniques] + [None], dtype=object)  # code -1 (missing) → None
    return pd.Series(normalized[codes], index=symbols.index).astype("string")


def normalize_prices(batch: PriceBatch, market: str, settled_through: date | None = None, today: date | None = None) -> NormalizedPrices:
    """Rename, type and key the bars of one market; collapse identical duplicate rows.

    Bars dated after `settled_through` (the latest session that has closed, plus a buffer) up to
    `today` (the exchange's current date) are the live, unfinished bar of a session under way:
    they are dropped, never stored. Bars dated after `today` are left for validation to quarantine.
    """
    info = MARKET_INFO[market]
    bars = batch.bars.rename(columns=_RENAME)
    if "adj_close" not in bars.columns:
        bars["adj_close"] = bars["close"]  # NOTE: auto-adjusted data has no Adj Close: close is adjusted
    source = bars.pop("Source") if "Source" in bars.columns else pd.Series(batch.source, index=bars.index)
    flags = bars["Flags"] if "Flags" in bars.columns else None  # dq flags a source attached (csv: adj_close_from_close)
    out = pd.DataFrame(
        {
            "date": bars["Date"],
            "symbol": _normalized_symbols(bars["symbol"]),
            "market": market,
            "currency": info.currency,
            **{c: pd.to_numeric(bars[c], errors="coerce").astype("float64") for c in ("open", "high", "low", "close", "adj_close")},
            "volume": pd.to_numeric(bars["volume"], errors="coerce").astype("float64") if "volume" in bars else np.nan,
            "source": source.astype("string"),
        }
    )
    if flags is not None:
        out["dq_flags"] = [f if isinstance(f, tuple) else () for f in flags]  # NOTE: tuples: hashable, for duplicated()
    out["date"], bad_date = exchange_dates(bars["Date"], info.timezone)
    prices_cols = ["open", "high", "low", "close", "adj_close", "volume"]
    empty = out[prices_cols].isna().all(axis=1)
    result = NormalizedPrices(prices=out, rejected=_empty_rejected())
    result.empty_bars = int(empty.sum())
    bad = bad_date & ~empty
    if bad.any():
        rej = out[bad].copy()
        rej["date"] = pd.NaT
        rej["reason"] = [f"date {v!r} is not a date" for v in bars.loc[bad, "Date"]]
        result.rejected = rej
    out = out[~empty & ~bad]
    if settled_through is not None:
        live = out["date"] > pd.Timestamp(settled_through)
        if today is not None:
            live &= out["date"] <= pd.Timestamp(today)
        result.unsettled_dropped = int(live.sum())
        out = out[~live]
    # Identical rows collapse to one; only rows whose (symbol, date) repeats can be identical.
    repeated = out.duplicated(["symbol", "date"], keep=False)
    if repeated.any():
        identical = out[repeated].duplicated(keep="first")
        result.duplicates_collapsed = int(identical.sum())
        out = out.drop(index=identical[identical].index)
    result.prices = out.sort_values(["symbol", "date"], kind="stable").reset_index(drop=True)
    return result


def _empty_rejected() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in [*PRICE_COLUMNS, "reason"]})


def rejected_from_source(batch: PriceBatch, market: str) -> pd.DataFrame:
    """Rows a source could not parse, in quarantine shape (PRICE_COLUMNS + reason)."""
    if batch.rejected is None or batch.rejected.empty:
        return _empty_rejected()
    rej = batch.rejected
    info = MARKET_INFO[market]
    dates, _ = exchange_dates(rej["Date"], info.timezone) if "Date" in rej else (pd.Series(pd.NaT, index=rej.index), None)
    out = pd.DataFrame(
        {
            "date": dates,
            "symbol": rej["Ticker"].astype("string"),
            "market": market,
            "currency": info.currency,
            **{c: pd.to_numeric(rej.get(k), errors="coerce") if k in rej else np.nan for k, c in _RENAME.items() if k != "Ticker"},
            "source": batch.source,
            "reason": rej["reason"],
        }
    )
    return out
