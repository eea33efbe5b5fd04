"""Two writers at once on one data dir: serialized by the OS lock, nothing corrupted or duplicated."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import duckdb
import pandas as pd

from aimoves.schema import PRICES
from aimoves.store import upsert


def _frame(symbols: list[str], close: float) -> pd.DataFrame:
    dates = pd.bdate_range("2025-01-02", periods=40)
    rows = [
        {"date": d, "symbol": s, "market": "US", "currency": "USD", "open": close, "high": close + 1, "low": close - 1, "close": close,
         "adj_close": close, "volume": 1, "source": "test", "ingested_at": pd.Timestamp("2026-01-01", tz="UTC"), "dq_flags": [], "year": d.year}
        for s in symbols for d in dates
    ]
    return pd.DataFrame(rows)


def _writer(data_dir: str, symbols: list[str], rounds: int) -> None:
    for i in range(rounds):
        upsert(_frame(symbols, 10.0 + i % 2), PRICES, Path(data_dir))
    upsert(_frame(symbols, 10.0), PRICES, Path(data_dir))


def test_concurrent_runs_on_the_same_market_and_dates(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    shared = ["NVDA", "AMD"]  # both runs write these keys
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), [*shared, own], 15)) for own in ("MSFT", "ORCL")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    data = pd.read_parquet(tmp_path / "prices")
    assert not data.duplicated(["symbol", "date"]).any()
    assert data.groupby("symbol").size().to_dict() == {s: 40 for s in ("AMD", "MSFT", "NVDA", "ORCL")}
    assert (data["close"] == 10.0).all()
    n = duckdb.sql(f"select count(*) from read_parquet('{tmp_path}/prices/**/*.parquet', hive_partitioning=1)").fetchall()[0][0]
    assert n == 160
    assert not any((tmp_path / "_staging").iterdir())
