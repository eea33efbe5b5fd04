"""Operator views and actions: status of the stored data, quarantine review and release."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc

from aimoves.catalog import Catalog, as_catalog
from aimoves.errors import AimovesError
from aimoves.markets import MARKETS
from aimoves.planning import latest_settled_session
from aimoves.schema import (
    ALL_DATASETS, PRICES, QUARANTINE_FX, QUARANTINE_NEWS, QUARANTINE_PRICES, QUARANTINE_SECTOR_MOVES, QUARANTINE_STOCK_MOVES,
    SECTOR_MOVES, STOCK_MOVES, DatasetSpec,
)
from aimoves.store import delete_keys, read_frame, upsert
from aimoves.universe import Universe

QUARANTINE_SPECS = (QUARANTINE_PRICES, QUARANTINE_FX, QUARANTINE_STOCK_MOVES, QUARANTINE_SECTOR_MOVES, QUARANTINE_NEWS)


def latest_stored_date(catalog: Catalog, spec: DatasetSpec, key: str, value: str) -> date | None:
    """Latest `date` of the rows with `key` == `value` (reads the newest year only)."""
    years = [y for (v, y) in _partitions(catalog, spec) if v == value]
    if not years:
        return None
    open_only = "market_open" in spec.schema.names  # sector_moves: a closed day is not a fresh session
    table = catalog.read_partition(spec, (value, max(years)), columns=["date", "market_open"] if open_only else ["date"])
    assert table is not None
    if open_only:
        table = table.filter(table.column("market_open"))
    return pc.max(table.column("date")).as_py()


def _partitions(catalog: Catalog, spec: DatasetSpec) -> list[tuple[str, int]]:
    """(first key value, year) of each stored partition file of a (key, year) dataset."""
    out = []
    for path in catalog.dataset_files(spec):
        first, year = path.split("/")[-3:-1]
        out.append((first.split("=", 1)[1], int(year.split("=", 1)[1])))
    return out


@dataclass
class Status:
    rows: list[dict] = field(default_factory=list)  # dataset, market/region, latest, expected, fresh
    last_run: dict | None = None
    quarantine: dict[str, int] = field(default_factory=dict)
    strays: list[str] = field(default_factory=list)  # files in dataset folders that the store did not write (never read)


def status(data_dir: Catalog | Path | str, now: datetime | None = None) -> Status:
    catalog = as_catalog(data_dir)
    if not catalog.exists():
        raise AimovesError(f"{data_dir}: no data dir here (run a backfill first, or pass --data-dir)")
    now = now or datetime.now(UTC)
    out = Status()
    for market in MARKETS:
        expected = latest_settled_session(market, now)
        for spec in (PRICES, STOCK_MOVES):
            latest = latest_stored_date(catalog, spec, "market", market)
            out.rows.append({"dataset": spec.name, "market": market, "latest": latest, "expected": expected,
                             "fresh": latest is not None and latest >= expected})
        latest = latest_stored_date(catalog, SECTOR_MOVES, "region", market)
        out.rows.append({"dataset": "sector_moves", "market": market, "latest": latest, "expected": expected,
                         "fresh": latest is not None and latest >= expected})
    runs = catalog.run_records()
    if runs:
        out.last_run = json.loads(catalog.read_text(runs[-1]))
    for spec in QUARANTINE_SPECS:
        out.quarantine[spec.name.removeprefix("quarantine/")] = catalog.count_rows(spec)
    out.strays = catalog.strays(list(ALL_DATASETS))
    return out


def quarantined_prices(data_dir: Path, start: object = None, end: object = None, symbols: list[str] | None = None) -> pd.DataFrame:
    frame = read_frame(QUARANTINE_PRICES, data_dir, start, end, symbol=symbols)
    return frame.sort_values(["date", "symbol", "row_id"]).reset_index(drop=True)


@dataclass
class ReleaseResult:
    released: pd.DataFrame  # written to prices
    kept: pd.DataFrame  # still failing: stay in quarantine, with today's reasons


def release_prices(data_dir: Path, universe: Universe, row_ids: list[str], accept: list[str], now: datetime | None = None) -> ReleaseResult:
    """Re-validate reviewed quarantined bars; write those that pass (or fail only `accept`ed checks).

    A released row carries `released:<expectation>` in dq_flags for each accepted check; rows that
    still fail stay in quarantine and their reasons are returned. Nothing is released silently.
    """
    from aimoves.validate import validate_prices

    now = now or datetime.now(UTC)
    quarantined = read_frame(QUARANTINE_PRICES, data_dir)
    chosen = quarantined[quarantined["row_id"].isin(row_ids)]
    missing = sorted(set(row_ids) - set(chosen["row_id"]))
    if missing:
        raise AimovesError(f"not in quarantine/prices: row_id {', '.join(missing)} (see `aimoves quarantine list`)")
    released, kept = [], []
    bar_columns = ["date", "symbol", "market", "currency", "open", "high", "low", "close", "adj_close", "volume", "source"]
    for market, rows in chosen.groupby("market"):
        bars = rows.drop_duplicates("row_id")
        context = read_frame(PRICES, data_dir, bars["date"].min() - pd.Timedelta(days=30), bars["date"].max() + pd.Timedelta(days=30),
                             market=[market], symbol=sorted(bars["symbol"].unique()))
        context = context[~pd.MultiIndex.from_frame(context[["symbol", "date"]]).isin(pd.MultiIndex.from_frame(bars[["symbol", "date"]]))]
        frame = pd.concat([context[bar_columns], bars[bar_columns]], ignore_index=True)
        frame = frame.sort_values(["symbol", "date"], kind="stable").reset_index(drop=True)
        symbols = universe.symbols_by_market([str(market)]).get(str(market), [])
        result = validate_prices(frame, str(market), symbols, now.date())
        # map results back to the released rows by (symbol, date)
        key = pd.MultiIndex.from_frame(bars[["symbol", "date"]])
        row_id_of = dict(zip(zip(bars["symbol"], bars["date"]), bars["row_id"]))
        ok = result.passed[pd.MultiIndex.from_frame(result.passed[["symbol", "date"]]).isin(key)].copy()
        bad = result.quarantined[pd.MultiIndex.from_frame(result.quarantined[["symbol", "date"]]).isin(key)].copy()
        acceptable = bad["expectation"].map(lambda e: set(e.split(",")) <= set(accept))
        accepted = bad[acceptable].drop(columns=["expectation", "reason"])
        accepted["dq_flags"] = [sorted(f"released:{x}" for x in e.split(",")) for e in bad.loc[acceptable, "expectation"]]
        ok = pd.concat([ok, accepted], ignore_index=True)
        ok["row_id"] = [row_id_of[(s, d)] for s, d in zip(ok["symbol"], ok["date"])]
        released.append(ok)
        kept.append(bad[~acceptable].assign(row_id=[row_id_of[(s, d)] for s, d in zip(bad.loc[~acceptable, "symbol"], bad.loc[~acceptable, "date"])]))
    released_df = pd.concat(released, ignore_index=True) if released else pd.DataFrame()
    if len(released_df):
        rows = released_df.drop(columns="row_id").assign(ingested_at=pd.Timestamp(now), year=released_df["date"].dt.year)
        upsert(rows, PRICES, data_dir)
        delete_keys(chosen[chosen["row_id"].isin(released_df["row_id"])], QUARANTINE_PRICES, data_dir)
    return ReleaseResult(released_df, pd.concat(kept, ignore_index=True) if kept else pd.DataFrame())
