"""Reprocess what earlier fetches stored under `raw/`, without the network.

For each (symbol, date) the latest fetch wins. Rows keep the source that originally fetched them.
A payload that cannot be read (a truncated Parquet file, say) is reported, never fatal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from aimoves.catalog import Catalog, as_catalog
from aimoves.errors import InputFileError
from aimoves.raw import list_manifests
from aimoves.sources.base import PriceBatch, PriceRequest, empty_bars, missing_symbols
from aimoves.sources.csv import read_price_csv


def _overlaps(manifest: dict, request: PriceRequest) -> bool:
    req = manifest["request"]
    return (
        req["market"] == request.market
        and date.fromisoformat(req["start"]) <= request.end
        and date.fromisoformat(req["end"]) >= request.start
        and bool(set(req["symbols"]) & set(request.symbols))
    )


@dataclass(frozen=True)
class ReplaySource:
    data_dir: Catalog | Path
    name: str = "replay"
    dataset: str = "prices"  # or "fx"

    def fetch_prices(self, request: PriceRequest) -> PriceBatch:
        wanted = set(request.symbols)
        frames, rejected, failures, notes = [], [], [], []
        catalog = as_catalog(self.data_dir)
        manifests = [m for m in list_manifests(catalog, "fx" if request.market == "FX" else self.dataset) if _overlaps(m, request)]
        for order, manifest in enumerate(manifests):
            for payload in manifest["payloads"]:
                path = catalog.raw_payload(manifest, payload["name"])
                try:
                    if payload["kind"] == "csv":
                        symbol = payload["name"].removesuffix(".csv")
                        if symbol not in wanted:
                            continue
                        bars, bad = read_price_csv(catalog.read_bytes(path), path, symbol)
                        if len(bad):
                            rejected.append(bad)
                    else:
                        bars = pq.read_table(path, filesystem=catalog.fs).to_pandas()
                except (InputFileError, OSError, ValueError) as exc:
                    notes.append(f"unreadable raw payload {path}: {exc}")
                    continue
                bars = bars[bars["Ticker"].isin(wanted)].copy()
                bars["Source"] = manifest["source"]
                bars["_order"] = order
                frames.append(bars)
        if not manifests:
            notes.append(f"raw/ holds no fetch for {request.market} overlapping {request.start}..{request.end}")
        if frames:
            bars = pd.concat(frames, ignore_index=True)
            day = pd.to_datetime(bars["Date"].astype("string").str.slice(0, 10), errors="coerce")
            bars = bars[(day >= pd.Timestamp(request.start)) & (day <= pd.Timestamp(request.end)) | day.isna()]
            day = day[bars.index]
            # Latest fetch per (symbol, date); identical duplicates inside one fetch are kept for validation.
            latest = bars.assign(_day=day).groupby(["Ticker", "_day"])["_order"].transform("max")
            bars = bars[bars["_order"] == latest].drop(columns="_order").reset_index(drop=True)
        else:
            bars = empty_bars()
        failures.extend(missing_symbols(request, bars, failures))
        return PriceBatch(
            source=self.name,
            request=request,
            bars=bars,
            failures=failures,
            rejected=pd.concat(rejected, ignore_index=True) if rejected else None,
            notes=notes,
        )
