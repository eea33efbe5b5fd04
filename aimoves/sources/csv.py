"""Per-symbol CSV files as people already have them.

One file per symbol, named `<SYMBOL>.csv` (`NVDA.csv`, `3896.HK.csv`), in any of:

* the classic Yahoo download: `Date,Open,High,Low,Close,Adj Close,Volume`;
* what yfinance's `df.to_csv()` writes for a download: a 3-line header
  `Price,Close,High,...` / `Ticker,NVDA,...` / `Date,,,...`;
* one header line (`Date,Close,High,Low,Open,Volume`, any order, `Price` or `Date` first).

The adjusted close may be spelled `Adj Close`, `Adj. Close`, `adj_close`, `Adjusted Close` (any
case); another column that looks like one refuses the file, naming the column. Without an adjusted
column the prices are taken as already adjusted, per file, and every row of that file carries the
flag `adj_close_from_close`.

Dates are read as written: ISO (`2025-01-27`, with or without a time and offset), `2025/01/27`,
`20250127`, month names (`27-Jan-2025`, `Jan 27, 2025`); numeric day/month forms (`11/12/2024`)
take their order from the whole file (a day above 12 decides it), never per row, and a file where
nothing decides it is refused, naming the line.

A missing file is a failure record for that symbol, not an error; a file that cannot be read is a
failure record whose reason names the file, the line and the field. One bad line (a value that is
not a finite number, a volume beyond int64, an unclosed quote, a field over the csv module's limit,
an extra field, a date that cannot be read or stored) is a rejected row with its line, and the rest
of the file is read. Only regular files under the CSV folder are read (a symlink leaving it, a FIFO
or a device is refused by name), up to a size limit (`AIMOVES_CSV_MAX_MB`, default 200).
"""

from __future__ import annotations

import csv
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from aimoves.errors import InputFileError
from aimoves.settings import positive_setting
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
ADJ_FROM_CLOSE = "adj_close_from_close"  # dq flag: the file has no adjusted column; adj_close = close
FLAGS_COLUMN = "Flags"  # per-row dq flags a source attaches (tuples of str)
MAX_MB_ENV = "AIMOVES_CSV_MAX_MB"
DEFAULT_MAX_MB = 200
EXCERPT = 40  # characters of a rejected field or line echoed in a message

# Header names, compared lower-case with everything but letters and digits removed.
_NAMES = {
    "date": "Date", "datetime": "Date", "price": "Date",
    "open": "Open", "high": "High", "low": "Low", "close": "Close", "volume": "Volume",
    "adjclose": "Adj Close", "adjustedclose": "Adj Close",
}
_INT64_LIMIT = float(2**63)
# pandas' datetime64[ns] holds 1677-09-21..2262-04-11; whole years inside that are accepted.
_FIRST_YEAR, _LAST_YEAR = 1678, 2261

_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:\s*(?:Z|UTC|[+-]\d{2}:?\d{2}))?$")
_YMD = re.compile(r"^(\d{4})([/.])(\d{1,2})\2(\d{1,2})$")
_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_NUMERIC_DM = re.compile(r"^(\d{1,2})([/.-])(\d{1,2})\2(\d{4})(?:[ T]\d{1,2}:\d{2}(?::\d{2})?)?$")
_MONTH_NAME_FORMATS = ("%d-%b-%Y", "%d %b %Y", "%b %d, %Y", "%b %d %Y", "%d-%B-%Y", "%d %B %Y", "%B %d, %Y", "%B %d %Y")


def excerpt(text: str, limit: int = EXCERPT) -> str:
    """A short, escaped excerpt of untrusted text for a message."""
    return repr(text[:limit]) + ("…" if len(text) > limit else "")


def max_bytes_setting() -> int:
    """The CSV size limit in bytes: `AIMOVES_CSV_MAX_MB` (default 200)."""
    return int(positive_setting(MAX_MB_ENV, DEFAULT_MAX_MB) * 1024 * 1024)


def read_csv_bytes(path: Path, folder: Path, max_bytes: int) -> bytes:
    """The bytes of `path`, only if it is a regular file under `folder` (symlinks resolved) and at most `max_bytes`."""
    real = path.resolve()
    if not real.is_relative_to(folder.resolve()):
        raise InputFileError(f"{path}: refused, it is a link to {real}, outside the CSV folder {folder}")
    try:
        # NOTE: O_NONBLOCK so that opening a FIFO never waits for a writer; it is refused below.
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise InputFileError(f"{path}: cannot be opened ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputFileError(f"{path}: refused, not a regular file (a FIFO, device or socket)")
        if info.st_size > max_bytes:
            raise InputFileError(f"{path}: {info.st_size:,} bytes, over the CSV size limit of {max_bytes:,} ({MAX_MB_ENV})")
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise InputFileError(f"{path}: grew past the CSV size limit of {max_bytes:,} bytes ({MAX_MB_ENV}) while read")
    return data


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _column_name(name: str) -> str:
    """The canonical name of a header cell (`Adj. Close` → `Adj Close`), else the name as written."""
    return _NAMES.get(_key(name), name.strip())


def _looks_adjusted(name: str) -> bool:
    """An unrecognised column that looks like an adjusted close (`Adj Close*`, `Close (adj)`)."""
    key = _key(name)
    return key not in _NAMES and "close" in key and "adj" in key


def _open_quote(line: str) -> int | None:
    """The position of a quote opened and not closed on `line` (csv's double-quote rules), or None."""
    inside, start = False, None
    for i, ch in enumerate(line):
        if ch == '"':
            inside = not inside
            start = i if inside else start
    return start if inside else None


def _split_line(line: str) -> list[str]:
    """One physical line as CSV fields; raises ValueError with a readable reason."""
    try:
        return next(csv.reader([line], strict=True))
    except csv.Error as exc:
        text = str(exc)
        if "field larger than field limit" in text:
            raise ValueError(f"a field is longer than the csv module's limit of {csv.field_size_limit():,} characters") from None
        quote = _open_quote(line)
        if quote is not None:
            raise ValueError(f"a quote opens at field {line[:quote].count(',') + 1} and is not closed on this line") from None
        raise ValueError(f"not readable as CSV ({text})") from None


def _lines(text: str) -> list[str]:
    return re.split(r"\r\n|\n|\r", text)


@dataclass
class _Dates:
    values: list[str | None]  # ISO text (date, or the timestamp as written), None where unreadable
    reasons: list[str]  # "" where readable


def parse_dates(raw: list[str], lines: list[int], path: str) -> _Dates:
    """Read a file's dates as written; the order of numeric day/month forms is decided for the whole file."""
    values: list[str | None] = [None] * len(raw)
    reasons = [""] * len(raw)
    numeric: list[tuple[int, int, int, int]] = []  # (row, first, second, year)

    def ymd(i: int, y: int, m: int, d: int, keep: str | None = None) -> None:
        if not _FIRST_YEAR <= y <= _LAST_YEAR:
            reasons[i] = f"Date {excerpt(raw[i])} is outside the years {_FIRST_YEAR}..{_LAST_YEAR} that can be stored"
            return
        try:
            day = date(y, m, d)
        except ValueError:
            reasons[i] = f"Date {excerpt(raw[i])} is not a date"
            return
        values[i] = keep or day.isoformat()

    for i, text in enumerate(raw):
        text = text.strip()
        if not text:
            reasons[i] = "Date is empty"
        elif m := _ISO.match(text):
            ymd(i, int(m[1]), int(m[2]), int(m[3]), keep=text if len(text) > 10 else None)
        elif m := _YMD.match(text):
            ymd(i, int(m[1]), int(m[3]), int(m[4]))
        elif m := _COMPACT.match(text):
            ymd(i, int(m[1]), int(m[2]), int(m[3]))
        elif m := _NUMERIC_DM.match(text):
            numeric.append((i, int(m[1]), int(m[3]), int(m[4])))
        else:
            for fmt in _MONTH_NAME_FORMATS:
                try:
                    parsed = datetime.strptime(text, fmt)
                except ValueError:
                    continue
                ymd(i, parsed.year, parsed.month, parsed.day)
                break
            else:
                reasons[i] = f"Date {excerpt(text)} is not a date (expected e.g. 2025-01-27)"
    if numeric:
        day_first = [(i, a) for i, a, b, _ in numeric if a > 12]
        month_first = [(i, b) for i, a, b, _ in numeric if b > 12]
        if day_first and month_first:
            (i, _), (j, _) = day_first[0], month_first[0]
            raise InputFileError(
                f"{path}: dates mix day/month (line {lines[i]}: {excerpt(raw[i])}) and month/day (line {lines[j]}: "
                f"{excerpt(raw[j])}) order; write ISO dates (2025-01-27)"
            )
        if not day_first and not month_first:
            i = numeric[0][0]
            raise InputFileError(
                f"{path}, line {lines[i]}: date {excerpt(raw[i])} may be day/month or month/day and no date in the file "
                "has a day above 12 to decide; write ISO dates (2025-01-27)"
            )
        for i, a, b, y in numeric:
            ymd(i, y, b, a) if day_first else ymd(i, y, a, b)
    return _Dates(values, reasons)


def _header(rows: list[tuple[int, list[str]]], path: str, symbol: str) -> tuple[list[str], int]:
    """Canonical column names and the number of header rows (1, or 3 for yfinance's to_csv())."""
    header = [c.strip() for c in rows[0][1]]
    skip = 1
    # yfinance's to_csv() of a download: Price,... / Ticker,... / Date,,,
    if header and header[0].lower() == "price" and len(rows) > 1 and rows[1][1] and rows[1][1][0].strip().lower() == "ticker":
        tickers = {c.strip().upper() for c in rows[1][1][1:] if c.strip()}
        if tickers and symbol.upper() not in tickers:
            raise InputFileError(f"{path}, line {rows[1][0]}: the Ticker row names {sorted(tickers)}, not {symbol}")
        skip = 2
        if len(rows) > 2 and rows[2][1] and rows[2][1][0].strip().lower() == "date" and not any(c.strip() for c in rows[2][1][1:]):
            skip = 3
        header[0] = "Date"
    while header and not header[-1]:
        header.pop()  # NOTE: a trailing comma on the header line is not a column
    columns = [_column_name(c) for c in header]
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise InputFileError(f"{path}, line 1: missing column(s) {', '.join(missing)} (header: {excerpt(','.join(header), 120)})")
    lookalike = [c for c in columns if _looks_adjusted(c)]
    if lookalike:
        raise InputFileError(
            f"{path}, line 1: column {excerpt(lookalike[0])} looks like an adjusted close but is not one of "
            "Adj Close, Adj. Close, adj_close, Adjusted Close: rename it (or remove it) so that it is not ignored"
        )
    dupes = {c for c in columns if columns.count(c) > 1 and c in NUMERIC + ("Date",)}
    if dupes:
        raise InputFileError(f"{path}, line 1: column(s) {', '.join(sorted(dupes))} appear more than once")
    return columns, skip


def _numbers(raw: pd.Series, col: str) -> tuple[pd.Series, list[tuple[int, str]]]:
    """A column as float64, and (position, reason) of each value that is not a usable number (then NaN)."""
    text = raw.str.strip().fillna("")
    values = pd.to_numeric(text, errors="coerce").astype("float64").to_numpy(copy=True)
    given = ((text != "") & ~text.str.lower().isin(["nan", "null", "none"])).to_numpy(bool)
    checks = [(np.isnan(values) & given, "is not a number"), (np.isinf(values), "is not a finite number")]
    if col == "Volume":
        with np.errstate(invalid="ignore"):
            huge = np.abs(values) >= _INT64_LIMIT
            checks += [(huge, "does not fit a 64-bit integer"), (np.isfinite(values) & ~huge & (values != np.round(values)), "is not a whole number")]
    problems = []
    for mask, why in checks:
        problems += [(int(i), f"{col} {excerpt(text.iat[i])} {why}") for i in np.flatnonzero(mask)]
    values[[i for i, _ in problems]] = np.nan
    return pd.Series(values, index=raw.index), problems


def read_price_csv(data: bytes, path: str, symbol: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Parse one CSV file into Yahoo long form; returns (bars, rejected rows with reasons).

    Bars carry `Flags` (tuples of dq flags). Rejected rows carry `Date` (ISO, or None where the
    date itself is the problem) and `reason` ("<file>, line <n>: ..."). Raises InputFileError
    naming the file (and line, field) when the file as a whole is unusable.
    """
    try:
        text = data.decode("utf-8-sig")  # NOTE: Excel-saved files start with a BOM
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    # NOTE: each physical line is parsed on its own: a price file has no multi-line fields, and an
    # unclosed quote or an oversized field must cost one line, not the rest of the file.
    rows: list[tuple[int, list[str]]] = []
    broken: list[tuple[int, str]] = []  # (line, reason) of lines that are not CSV
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, _split_line(line)))
        except ValueError as exc:
            if not rows:
                raise InputFileError(f"{path}, line {number}: header {exc}") from None
            broken.append((number, str(exc)))
    if not rows:
        raise InputFileError(f"{path}: empty file, expected a header line such as Date,Open,High,Low,Close,Adj Close,Volume")
    columns, skip = _header(rows, path, symbol)
    width = len(columns)
    records: list[tuple[int, list[str], str]] = [(n, [""] * width, why) for n, why in broken if n > rows[skip - 1][0]]
    for number, fields in rows[skip:]:
        extra = [f for f in fields[width:] if f.strip()]
        if len(fields) < width or extra:
            records.append((number, [""] * width, f"{len(fields)} fields where the header has {width}"))
        else:
            records.append((number, fields[:width], ""))
    records.sort(key=lambda r: r[0])
    lines = [n for n, _, _ in records]
    frame = pd.DataFrame([f for _, f, _ in records], columns=columns, dtype="string")
    keep = [c for c in ("Date", *NUMERIC) if c in frame.columns]
    frame = frame[keep].copy()
    # A line that is not a row (broken CSV, wrong field count) keeps only its line number and reason.
    problems: dict[int, list[str]] = {i: [why] for i, (_, _, why) in enumerate(records) if why}
    readable = [i for i in range(len(records)) if i not in problems]
    date_text = frame["Date"].fillna("").tolist()
    dates = parse_dates([date_text[i] for i in readable], [lines[i] for i in readable], path)
    date_values: list[str | None] = [None] * len(records)
    for i, value, why in zip(readable, dates.values, dates.reasons):
        date_values[i] = value
        if why:
            problems.setdefault(i, []).append(why)
    frame["Date"] = pd.Series(date_values, dtype="object")
    for col in keep[1:]:
        values, bad = _numbers(frame[col], col)
        frame[col] = values
        for i, why in bad:
            if records[i][2] == "":
                problems.setdefault(i, []).append(why)
    if "Adj Close" not in frame.columns:
        frame["Adj Close"] = frame["Close"]  # NOTE: no adjusted column: the file's prices are taken as adjusted
        flags: tuple[str, ...] = (ADJ_FROM_CLOSE,)
    else:
        flags = ()
    frame.insert(1, "Ticker", symbol)
    frame[FLAGS_COLUMN] = [flags] * len(frame)
    frame["_line"] = lines
    rejected_mask = np.zeros(len(frame), dtype=bool)
    rejected_mask[list(problems)] = True
    rejected = frame[rejected_mask].copy()
    rejected["reason"] = [f"{path}, line {lines[i]}: {'; '.join(problems[i])}" for i in sorted(problems)]
    bars = frame[~rejected_mask].drop(columns="_line")
    rejected = rejected.drop(columns=["_line", FLAGS_COLUMN])
    return bars.reset_index(drop=True), rejected.reset_index(drop=True)


@dataclass(frozen=True)
class CsvSource:
    """Reads `<csv_dir>/<SYMBOL>.csv` for each requested symbol."""

    csv_dir: Path
    name: str = "csv"
    max_bytes: int = field(default_factory=max_bytes_setting)

    def fetch_prices(self, request: PriceRequest) -> PriceBatch:
        if not self.csv_dir.is_dir():
            raise InputFileError(f"{self.csv_dir}: CSV directory not found")
        frames, rejected, payloads, failures = [], [], [], []
        files = {entry.name for entry in os.scandir(self.csv_dir)}  # one listing, not a stat per symbol; what each is, is checked on read
        for symbol in request.symbols:
            path = self.csv_dir / f"{symbol}.csv"
            if path.name not in files:
                failures.append(FetchFailure(symbol, f"no file {path}"))
                continue
            try:
                data = read_csv_bytes(path, self.csv_dir, self.max_bytes)
                bars, bad = read_price_csv(data, str(path), symbol)
            except InputFileError as exc:
                failures.append(FetchFailure(symbol, str(exc)))
                continue
            # Only what parsed as a price CSV under the folder reaches raw/ (nothing local leaks there).
            payloads.append(RawPayload(path.name, "csv", data))
            bars, bad = in_window(bars, request), in_window(bad, request)
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


def in_window(rows: pd.DataFrame, request: PriceRequest) -> pd.DataFrame:
    """Rows whose date as written is in the request's window; rows without a readable date stay (they are quarantined)."""
    day = pd.to_datetime(rows["Date"].astype("string").str.slice(0, 10), errors="coerce", format="%Y-%m-%d")
    inside = (day >= pd.Timestamp(request.start)) & (day <= pd.Timestamp(request.end))
    return rows[inside | rows["Date"].isna()].reset_index(drop=True)
