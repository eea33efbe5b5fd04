"""The analyst API: the curated datasets as pandas frames, filtered while reading.

    from aimoves.api import load_sector_moves, cumulative_sector_move
    moves = load_sector_moves("2025-01-20", "2025-02-03", regions=["US", "HK"], data_dir="data")
    cumulative_sector_move("HK", "cloud", "2025-01-20", "2025-02-03")   # e.g. 0.41 for +41%

Every loader reads the hive-partitioned Parquet under `data_dir` with pyarrow.dataset, using the
dataset's explicit Arrow schema (a column added after a file was written reads as null there) and
pushing the filters down: partitions outside the markets/regions and years asked for are not opened,
row groups outside the dates are skipped. The frames they return:

* `date` (and any other date column) holds `datetime.date` objects, as the files store them (Arrow
  `date32`) and as `pd.read_parquet`, pyarrow, DuckDB and Polars return them: the exchange-local
  trading date. Compare with `datetime.date(2025, 1, 27)`; for time-series work convert with
  `pd.to_datetime(df["date"])`. A date that could not be read is `None`.
* Partition columns (`market`, `region`, `year`) are ordinary columns: strings and ints, not
  categoricals.
* Rows are sorted by the dataset's natural key.
* A dataset that was never written gives an empty frame with the right columns; a `data_dir` that
  does not exist raises `AimovesError`.

`start` and `end` are inclusive and accept a `date`, a `datetime`/`pd.Timestamp` or `"YYYY-MM-DD"`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from aimoves.catalog import Catalog, as_catalog
from aimoves.errors import AimovesError
from aimoves.markets import MARKETS, normalize_symbol
from aimoves.schema import FX, PRICES, QUARANTINE_PRICES, SECTOR_MOVES, STOCK_MOVES, DatasetSpec

__all__ = [
    "REGIONS",
    "DateLike",
    "cumulative_sector_move",
    "load_fx",
    "load_prices",
    "load_quarantine",
    "load_sector_moves",
    "load_stock_moves",
    "return_column",
]

log = logging.getLogger(__name__)

REGIONS: tuple[str, ...] = (*MARKETS, "ALL")

DateLike = date | datetime | pd.Timestamp | str


def load_prices(
    start: DateLike | None = None,
    end: DateLike | None = None,
    *,
    symbols: str | Iterable[str] | None = None,
    markets: str | Iterable[str] | None = None,
    data_dir: str | Path | Catalog = "data",
) -> pd.DataFrame:
    """Daily bars of `prices` (one row per symbol and date, sorted by symbol, date); `date` is datetime.date."""
    return _load(
        PRICES, data_dir, start, end,
        equals={"symbol": _symbols(symbols), "market": _choices(markets, MARKETS, "markets")},
        order=["symbol", "date"],
    )


def load_stock_moves(
    start: DateLike | None = None,
    end: DateLike | None = None,
    *,
    symbols: str | Iterable[str] | None = None,
    markets: str | Iterable[str] | None = None,
    sectors: str | Iterable[str] | None = None,
    data_dir: str | Path | Catalog = "data",
) -> pd.DataFrame:
    """Per-stock daily returns of `stock_moves` (sorted by symbol, date); `date`, `prev_date` are datetime.date."""
    return _load(
        STOCK_MOVES, data_dir, start, end,
        equals={"symbol": _symbols(symbols), "market": _choices(markets, MARKETS, "markets"), "sector": _names(sectors)},
        order=["symbol", "date"],
    )


def load_sector_moves(
    start: DateLike | None = None,
    end: DateLike | None = None,
    *,
    regions: str | Iterable[str] | None = None,
    sectors: str | Iterable[str] | None = None,
    data_dir: str | Path | Catalog = "data",
) -> pd.DataFrame:
    """Per-sector daily returns of `sector_moves`, one row per (date, region, sector) and sorted so; `date` is datetime.date.

    Rows with `market_open` false are days that region's market was closed: their returns are null
    and they are not sessions (not a 0% move). Region ALL is in USD (`ret_ew_usd`, `ret_cw_usd`) and
    dated by calendar date.
    """
    return _load(
        SECTOR_MOVES, data_dir, start, end,
        equals={"region": _choices(regions, REGIONS, "regions"), "sector": _names(sectors)},
        order=["date", "region", "sector"],
    )


def load_fx(
    start: DateLike | None = None,
    end: DateLike | None = None,
    *,
    currencies: str | Iterable[str] | None = None,
    data_dir: str | Path | Catalog = "data",
) -> pd.DataFrame:
    """Daily FX rates of `fx` (`usd_rate`: USD per unit of `currency`), sorted by currency, date; `date` is datetime.date."""
    currencies = [c.upper() for c in _names(currencies)] if currencies is not None else None
    return _load(FX, data_dir, start, end, equals={"currency": currencies}, order=["currency", "date"])


def load_quarantine(
    start: DateLike | None = None,
    end: DateLike | None = None,
    *,
    symbols: str | Iterable[str] | None = None,
    markets: str | Iterable[str] | None = None,
    data_dir: str | Path | Catalog = "data",
) -> pd.DataFrame:
    """Rows of `quarantine/prices` with the failed `expectation` and a `reason`, sorted by symbol, date, row_id.

    `date` is datetime.date and may be None (the date itself could not be read); such rows are
    returned only when neither `start` nor `end` is given.
    """
    return _load(
        QUARANTINE_PRICES, data_dir, start, end,
        equals={"symbol": _symbols(symbols), "market": _choices(markets, MARKETS, "markets")},
        order=["symbol", "date", "row_id"],
    )


def return_column(region: str) -> str:
    """The equal-weighted return a region is read in: `ret_ew` (local currency), `ret_ew_usd` for ALL."""
    return "ret_ew_usd" if region == "ALL" else "ret_ew"


def cumulative_sector_move(
    region: str,
    sector: str,
    start: DateLike,
    end: DateLike,
    *,
    data_dir: str | Path | Catalog = "data",
) -> float:
    """Compounded equal-weighted move of one sector over the sessions from `start` to `end` (0.41 = +41%).

    Compounds `ret_ew` (`ret_ew_usd` for region ALL) over the rows with `market_open` true, so the
    first session's own return counts (the move from the close before `start`) and closed days do
    not. NaN when an open session's return is missing. Raises `AimovesError` when the window has no
    session of that region and sector.
    """
    region = _choices(region, REGIONS, "region")[0]  # type: ignore[index]
    moves = load_sector_moves(start, end, regions=[region], sectors=[sector], data_dir=data_dir)
    sessions = moves[moves["market_open"].fillna(False).astype(bool)]
    if sessions.empty:
        raise AimovesError(
            f"sector_moves has no open session of {region}/{sector} from {_as_date(start)} to {_as_date(end)} "
            f"in {as_catalog(data_dir).dataset_dir(SECTOR_MOVES)} ({len(moves)} rows there, all closed days)"
        )
    rets = sessions[return_column(region)].astype(float)
    return float((1.0 + rets).prod(skipna=False) - 1.0)


# --- reading -------------------------------------------------------------------------------------


def _load(
    spec: DatasetSpec,
    data_dir: str | Path | Catalog,
    start: DateLike | None,
    end: DateLike | None,
    *,
    equals: dict[str, list[str] | None],
    order: list[str],
) -> pd.DataFrame:
    catalog = as_catalog(data_dir)
    if not catalog.exists():
        raise AimovesError(f"data dir {data_dir} does not exist (point data_dir / --data-dir at the folder `aimoves backfill` writes)")
    start_d, end_d = _as_date(start, "start"), _as_date(end, "end")
    if start_d and end_d and end_d < start_d:
        raise AimovesError(f"end {end_d} is before start {start_d}")

    expr = pc.scalar(True)
    for column, values in equals.items():
        if values is not None:
            expr &= pc.field(column).isin(values)
    if start_d:  # the year filter prunes partitions; the date filter prunes row groups and rows
        expr &= (pc.field("date") >= pa.scalar(start_d, pa.date32())) & (pc.field("year") >= start_d.year)
    if end_d:
        expr &= (pc.field("date") <= pa.scalar(end_d, pa.date32())) & (pc.field("year") <= end_d.year)
    return _to_frame(catalog.read_table(spec, expr), order)


def _to_frame(table: pa.Table, order: list[str]) -> pd.DataFrame:
    frame = table.to_pandas()  # date32 columns become datetime.date objects, as pd.read_parquet gives them
    frame = frame.sort_values(order, kind="stable", na_position="last").reset_index(drop=True)
    return frame


def _as_date(value: DateLike | None, what: str = "date") -> date | None:
    if value is None:
        return None
    if isinstance(value, pd.Timestamp | datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, np.datetime64):
        return pd.Timestamp(value).date()
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise AimovesError(f"{what}: {value!r} is not a date (YYYY-MM-DD)") from None


def _names(values: str | Iterable[str] | None) -> list[str] | None:
    if values is None:
        return None
    values = [values] if isinstance(values, str) else list(values)
    return [str(v).strip() for v in values]


def _symbols(values: str | Iterable[str] | None) -> list[str] | None:
    names = _names(values)
    return None if names is None else [normalize_symbol(s) for s in names]


def _choices(values: str | Iterable[str] | None, allowed: tuple[str, ...], what: str) -> list[str] | None:
    names = _names(values)
    if names is None:
        return None
    names = [n.upper() for n in names]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise AimovesError(f"{what}: unknown {', '.join(unknown)} (choose from {', '.join(allowed)})")
    return names
