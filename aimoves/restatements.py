"""Restatements: stored bars whose values a write changed, kept under `_restatements/`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from aimoves.catalog import Catalog, as_catalog
from aimoves.store import WriteResult

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


def write_restatements(frame: pd.DataFrame, data_dir: Catalog | Path | str, run_id: str, market: str) -> str | None:
    """Keep a record of restated bars under `_restatements/prices/` (one file per run and market)."""
    if frame.empty:
        return None
    catalog = as_catalog(data_dir)
    path = catalog.restatement_path("prices", run_id, market)
    table = frame.assign(market=market, run_id=run_id)
    catalog.publish(path, lambda sink: table.to_parquet(sink, index=False))
    return path
