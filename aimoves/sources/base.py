"""The price-source protocol shared by yahoo, csv, simulated and replay.

A source answers one request (a market's symbols over a date range) with a `PriceBatch`:

* `bars`: one row per symbol and bar in *Yahoo long form*, the shape yfinance itself uses,
  flattened: columns `Date, Ticker, Open, High, Low, Close, Adj Close, Volume` (`Adj Close` may be
  absent when prices are already adjusted; `Date` may be naive dates, tz-aware timestamps or text).
  Normalization to the canonical schema happens later, in one place, for every source.
* `payloads`: what the source returned in the closest form it exposes (CSV bytes, the library's
  frame as a table), stored append-only under `raw/` so that `replay` never needs the network.
* `failures`: one record per symbol that returned nothing usable, with the reason.
* `rejected`: rows that could not even be parsed (text in a number field, ...), with the reason;
  they go to quarantine, not silently away.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

import pandas as pd
import pyarrow as pa

YAHOO_COLUMNS = ["Date", "Ticker", "Open", "High", "Low", "Close", "Adj Close", "Volume"]
PRICE_FIELDS = ["Open", "High", "Low", "Close", "Adj Close", "Volume"]


@dataclass(frozen=True)
class PriceRequest:
    market: str
    symbols: tuple[str, ...]
    start: date
    end: date  # inclusive

    def as_dict(self) -> dict:
        return {
            "market": self.market,
            "symbols": list(self.symbols),
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
        }


@dataclass(frozen=True)
class FetchFailure:
    symbol: str
    reason: str


@dataclass(frozen=True)
class RawPayload:
    """One artifact as the source returned it: `kind` is "csv" (bytes) or "table" (Arrow)."""

    name: str
    kind: str
    data: bytes | pa.Table


@dataclass
class PriceBatch:
    source: str
    request: PriceRequest
    bars: pd.DataFrame
    payloads: list[RawPayload] = field(default_factory=list)
    failures: list[FetchFailure] = field(default_factory=list)
    rejected: pd.DataFrame | None = None  # columns: Ticker, Date, reason, plus any raw fields
    notes: list[str] = field(default_factory=list)

    @property
    def symbols_returned(self) -> set[str]:
        return set(self.bars["Ticker"].unique()) if len(self.bars) else set()


class PriceSource(Protocol):
    """Anything that can answer a `PriceRequest`. Implementations never raise for one bad symbol:
    they record a `FetchFailure` and go on; they raise only when the whole request cannot run."""

    name: str

    def fetch_prices(self, request: PriceRequest) -> PriceBatch: ...


def empty_bars() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64") for c in YAHOO_COLUMNS}).astype({"Date": "object", "Ticker": "object"})


def missing_symbols(request: PriceRequest, bars: pd.DataFrame, already: list[FetchFailure]) -> list[FetchFailure]:
    """Failure records for requested symbols that came back with no bar and no recorded reason."""
    got = set(bars["Ticker"].unique()) if len(bars) else set()
    known = {f.symbol for f in already}
    return [
        FetchFailure(s, f"no bars returned for {request.start}..{request.end}")
        for s in request.symbols
        if s not in got and s not in known
    ]
