"""Per-symbol CSV files as people already have them.

One file per symbol, named `<SYMBOL>.csv` (`NVDA.csv`, `3896.HK.csv`), in any of:

* the classic Yahoo download: `Date,Open,High,Low,Close,Adj Close,Volume`;
* what yfinance's `df.to_csv()` writes for a download: a 3-line header
  `Price,Close,High,...` / `Ticker,NVDA,...` / `Date,,,...`;
* one header line (`Date,Close,High,Low,Open,Volume`, any order, `Price` or `Date` first).

Without an `Adj Close` column the prices are taken as already adjusted. A missing file is a
failure record for that symbol, not an error; a file that cannot be read is a failure record
whose reason names the file, the line and the field.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from aimoves.errors import InputFileError
from aimoves.sources.base import (
    FetchFailure,
    PriceBatch,
    PriceRequest,
    RawPayload,
    empty_bars,
)

log = logging.getLogger(__name__)

REQUIRED = ("Date", "Open", "High", "Low", "Close")
NUMERIC = ("Open", "High", "Low", "Close", "Adj Close", "Volume")
_ALIASES = {"adj close": "Adj Close", "adj_close": "Adj Close", "adjclose": "Adj Close", "price": "Date", "datetime": "Date"}


def _canonical(name: str) -> str:
    key = name.strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    return key.title() if key in {"date", "open", "high", "low", "close", "volume"} else name.strip()


def read_price_csv(data: bytes, path: str, symbol: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Parse one CSV file into Yahoo long form; returns (bars, rejected rows with reasons).

    Raises InputFileError naming the file (and line, field) when the file as a whole is unusable.
    """
    try:
        text = data.decode("utf-8-sig")  # NOTE: Excel-saved files start with a BOM
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    rows = list(csv.reader(io.StringIO(text)))
    while rows and not any(cell.strip() for cell in rows[-1]):
        rows.pop()
    if not rows:
        raise InputFileError(f"{path}: empty file, expected a header line such as Date,Open,High,Low,Close,Adj Close,Volume")
    header = [c.strip() for c in rows[0]]
    first_data = 1
    # yfinance's to_csv() of a download: Price,... / Ticker,... / Date,,,
    if header and header[0].lower() == "price" and len(rows) > 1 and rows[1] and rows[1][0].strip().lower() == "ticker":
        tickers = {c.strip().upper() for c in rows[1][1:] if c.strip()}
        if tickers and symbol.upper() not in tickers:
            raise InputFileError(f"{path}, line 2: the Ticker row names {sorted(tickers)}, not {symbol}")
        first_data = 2
        if len(rows) > 2 and rows[2] and rows[2][0].strip().lower() == "date" and not any(c.strip() for c in rows[2][1:]):
            first_data = 3
        header[0] = "Date"
    columns = [_canonical(c) for c in header]
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise InputFileError(f"{path}, line 1: missing column(s) {', '.join(missing)} (header: {','.join(header)})")
    dupes = {c for c in columns if columns.count(c) > 1 and c in NUMERIC + ("Date",)}
    if dupes:
        raise InputFileError(f"{path}, line 1: column(s) {', '.join(sorted(dupes))} appear more than once")

    body = rows[first_data:]
    width = len(columns)
    frame = pd.DataFrame([(r + [""] * width)[:width] for r in body], columns=columns, dtype="string")
    frame["_line"] = np.arange(first_data + 1, first_data + 1 + len(frame))
    keep = [c for c in ("Date", *NUMERIC) if c in frame.columns]
    frame = frame[[*keep, "_line"]]

    reasons = pd.Series("", index=frame.index, dtype="object")
    for col in keep:
        raw = frame[col].str.strip()
        if col == "Date":
            bad = raw.isna() | (raw == "")
            reasons[bad] += f"{col} is empty; "
            continue
        values = pd.to_numeric(raw, errors="coerce")
        bad = values.isna() & raw.notna() & (raw != "") & ~raw.str.lower().isin(["nan", "null", "none"])
        for idx in frame.index[bad]:
            reasons[idx] += f"{col} {frame.at[idx, col]!r} is not a number; "
        frame[col] = values.astype("float64")
    rejected_mask = reasons != ""
    rejected = frame[rejected_mask].copy()
    if len(rejected):
        rejected["reason"] = [f"{path}, line {ln}: {r.rstrip('; ')}" for ln, r in zip(rejected["_line"], reasons[rejected_mask])]
        rejected["Ticker"] = symbol
    bars = frame[~rejected_mask].drop(columns="_line")
    bars.insert(1, "Ticker", symbol)
    return bars.reset_index(drop=True), rejected.drop(columns="_line", errors="ignore").reset_index(drop=True)


@dataclass(frozen=True)
class CsvSource:
    """Reads `<csv_dir>/<SYMBOL>.csv` for each requested symbol."""

    csv_dir: Path
    name: str = "csv"

    def fetch_prices(self, request: PriceRequest) -> PriceBatch:
        if not self.csv_dir.is_dir():
            raise InputFileError(f"{self.csv_dir}: CSV directory not found")
        frames, rejected, payloads, failures = [], [], [], []
        files = {entry.name for entry in os.scandir(self.csv_dir) if entry.is_file()}  # one listing, not a stat per symbol
        for symbol in request.symbols:
            path = self.csv_dir / f"{symbol}.csv"
            if path.name not in files:
                failures.append(FetchFailure(symbol, f"no file {path}"))
                continue
            data = path.read_bytes()
            payloads.append(RawPayload(path.name, "csv", data))
            try:
                bars, bad = read_price_csv(data, str(path), symbol)
            except InputFileError as exc:
                failures.append(FetchFailure(symbol, str(exc)))
                continue
            bars = _in_window(bars, request)
            if bars.empty and bad.empty:
                failures.append(FetchFailure(symbol, f"{path}: no bars in {request.start}..{request.end}"))
                continue
            frames.append(bars)
            if len(bad):
                rejected.append(bad)
        bars = pd.concat(frames, ignore_index=True) if frames else empty_bars()
        return PriceBatch(
            source=self.name,
            request=request,
            bars=bars,
            payloads=payloads,
            failures=failures,
            rejected=pd.concat(rejected, ignore_index=True) if rejected else None,
        )


def _in_window(bars: pd.DataFrame, request: PriceRequest) -> pd.DataFrame:
    """Rows whose date (the date part of the text, before any time or offset) is in the window."""
    day = pd.to_datetime(bars["Date"].astype("string").str.slice(0, 10), errors="coerce", format="%Y-%m-%d")
    inside = (day >= pd.Timestamp(request.start)) & (day <= pd.Timestamp(request.end))
    # Unparseable dates stay in: normalization quarantines them with a reason.
    return bars[inside | day.isna()].reset_index(drop=True)
