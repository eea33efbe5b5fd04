"""The dataset writer: atomic per partition, idempotent by key, readable by pyarrow and DuckDB."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from aimoves import store
from aimoves.schema import PRICES
from aimoves.store import upsert


def _prices(symbols: list[str], dates: list[str], close: float = 10.0, at: str = "2026-01-01T00:00:00Z") -> pd.DataFrame:
    rows = [
        {"date": pd.Timestamp(d), "symbol": s, "market": "US", "currency": "USD", "open": close, "high": close + 1, "low": close - 1,
         "close": close, "adj_close": close, "volume": 100, "source": "test", "ingested_at": pd.Timestamp(at), "dq_flags": [],
         "year": pd.Timestamp(d).year}
        for s in symbols for d in dates
    ]
    return pd.DataFrame(rows)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def test_layout_schema_and_metadata(tmp_path: Path) -> None:
    upsert(_prices(["NVDA", "AMD"], ["2024-12-31", "2025-01-02"]), PRICES, tmp_path)
    assert sorted(_files(tmp_path / "prices")) == ["market=US/year=2024/part-0.parquet", "market=US/year=2025/part-0.parquet"]
    meta = pq.read_schema(tmp_path / "prices/market=US/year=2025/part-0.parquet").metadata
    assert meta[b"aimoves.schema_version"] == b"1" and meta[b"aimoves.dataset"] == b"prices"
    table = ds.dataset(tmp_path / "prices", partitioning="hive").to_table()
    assert table.num_rows == 4
    n = duckdb.sql(f"select count(*) from read_parquet('{tmp_path}/prices/**/*.parquet', hive_partitioning=1) where market='US'").fetchall()[0][0]
    assert n == 4


def test_rewrite_is_idempotent_and_keeps_other_dates(tmp_path: Path) -> None:
    upsert(_prices(["NVDA"], ["2025-01-02", "2025-01-03", "2025-01-06"]), PRICES, tmp_path)
    first = _files(tmp_path / "prices")
    # the same rows again, at a later time: nothing changes, not even ingested_at
    result = upsert(_prices(["NVDA"], ["2025-01-02", "2025-01-03", "2025-01-06"], at="2026-02-01T00:00:00Z"), PRICES, tmp_path)
    assert result.partitions_written == [] and result.partitions_unchanged == ["market=US/year=2025"]
    assert _files(tmp_path / "prices") == first
    # one date restated: only that row changes; other dates untouched; no duplicates
    upsert(_prices(["NVDA"], ["2025-01-03"], close=11.0, at="2026-03-01T00:00:00Z"), PRICES, tmp_path)
    df = pd.read_parquet(tmp_path / "prices").sort_values("date")
    assert list(df["close"]) == [10.0, 11.0, 10.0]
    assert df["ingested_at"].dt.month.tolist() == [1, 3, 1]
    assert not df.duplicated(["symbol", "date"]).any()


def test_a_crash_before_publish_leaves_the_old_partition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    upsert(_prices(["NVDA"], ["2025-01-02"]), PRICES, tmp_path)
    before = _files(tmp_path / "prices")

    def crash(*args: object) -> None:
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(store.os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        upsert(_prices(["NVDA", "AMD"], ["2025-01-02", "2025-01-03"], close=12.0), PRICES, tmp_path)
    assert _files(tmp_path / "prices") == before
    assert list((tmp_path / "_staging").iterdir()) == []  # the half-made file was removed
    assert pd.read_parquet(tmp_path / "prices")["close"].tolist() == [10.0]


def test_a_killed_writer_leaves_only_staging_debris_that_readers_never_see(tmp_path: Path) -> None:
    upsert(_prices(["NVDA"], ["2025-01-02"]), PRICES, tmp_path)
    (tmp_path / "_staging").mkdir(exist_ok=True)
    (tmp_path / "_staging" / "dead.parquet").write_bytes(b"PAR1 truncated")
    assert ds.dataset(tmp_path / "prices", partitioning="hive").to_table().num_rows == 1


def test_rows_sharing_a_key_are_refused(tmp_path: Path) -> None:
    frame = pd.concat([_prices(["NVDA"], ["2025-01-02"]), _prices(["NVDA"], ["2025-01-02"], close=3.0)])
    with pytest.raises(ValueError, match="share a key"):
        upsert(frame, PRICES, tmp_path)
    assert not (tmp_path / "prices").exists()


def test_lock_is_released_when_its_holder_dies(tmp_path: Path) -> None:
    import fcntl
    import subprocess
    import sys

    lock = tmp_path / "_locks" / "prices.lock"
    code = (
        "import sys, os\nfrom aimoves.catalog import Catalog\n"
        f"with Catalog({str(tmp_path)!r}).lock('prices'):\n    print('held', flush=True)\n    os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "held" in proc.stdout and proc.returncode == -9
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # would raise if still held


def test_restated_bars_are_recorded_with_old_and_new_values(tmp_path: Path) -> None:
    from aimoves.restatements import restatements, write_restatements

    upsert(_prices(["NVDA"], ["2025-01-02", "2025-01-03"]), PRICES, tmp_path)
    again = _prices(["NVDA"], ["2025-01-02", "2025-01-03"])
    again.loc[1, ["adj_close"]] = 9.5  # a dividend restates adj_close
    written = upsert(again, PRICES, tmp_path)
    frame = restatements(written, again)
    assert len(frame) == 1
    row = frame.iloc[0]
    assert (row["symbol"], str(row["date"].date()), row["adj_close_old"], row["adj_close_new"]) == ("NVDA", "2025-01-03", 10.0, 9.5)
    path = write_restatements(frame, tmp_path, "run1", "US")
    assert path is not None and Path(path).parent == tmp_path / "_restatements" / "prices"
    assert restatements(upsert(again, PRICES, tmp_path), again).empty  # the same data again restates nothing


def test_live_bars_of_an_open_session_are_not_stored() -> None:
    from datetime import date

    from aimoves.normalize import normalize_prices
    from aimoves.sources.base import PriceBatch, PriceRequest

    bars = pd.DataFrame({"Date": ["2025-01-27", "2025-01-28"], "Ticker": "NVDA", "Open": 1.0, "High": 1.0, "Low": 1.0, "Close": 1.0, "Adj Close": 1.0, "Volume": 1})
    batch = PriceBatch("test", PriceRequest("US", ("NVDA",), date(2025, 1, 27), date(2025, 1, 28)), bars)
    result = normalize_prices(batch, "US", settled_through=date(2025, 1, 27), today=date(2025, 1, 28))
    assert result.unsettled_dropped == 1 and list(result.prices["date"].astype(str)) == ["2025-01-27"]


def test_delete_keys_removes_only_those_rows(tmp_path: Path) -> None:
    from aimoves.store import delete_keys

    upsert(_prices(["NVDA", "AMD"], ["2025-01-02", "2025-01-03"]), PRICES, tmp_path)
    removed = delete_keys(pd.DataFrame({"symbol": ["AMD"], "date": [pd.Timestamp("2025-01-03")], "market": ["US"], "year": [2025]}), PRICES, tmp_path)
    assert removed == 1
    left = pd.read_parquet(tmp_path / "prices")
    assert sorted(zip(left["symbol"], left["date"].astype(str))) == [("AMD", "2025-01-02"), ("NVDA", "2025-01-02"), ("NVDA", "2025-01-03")]


def test_bars_after_today_are_left_for_validation_not_dropped_as_live() -> None:
    from datetime import date

    from aimoves.normalize import normalize_prices
    from aimoves.sources.base import PriceBatch, PriceRequest

    bars = pd.DataFrame({"Date": ["2025-01-27", "2025-01-28", "2031-01-06"], "Ticker": "NVDA", "Open": 1.0, "High": 1.0, "Low": 1.0, "Close": 1.0, "Adj Close": 1.0, "Volume": 1})
    batch = PriceBatch("test", PriceRequest("US", ("NVDA",), date(2025, 1, 27), date(2031, 1, 6)), bars)
    result = normalize_prices(batch, "US", settled_through=date(2025, 1, 27), today=date(2025, 1, 28))
    assert result.unsettled_dropped == 1
    assert list(result.prices["date"].astype(str)) == ["2025-01-27", "2031-01-06"]


# -- the Catalog: files that are not ours, and data dirs written before it -----------------------
OLDDATA = Path(__file__).parent / "olddata" / "data"


def test_stray_files_in_a_dataset_folder_are_never_read_and_status_lists_them(tmp_path: Path) -> None:
    from aimoves.api import load_prices
    from aimoves.ops import status

    upsert(_prices(["NVDA", "AMD"], ["2025-01-02", "2025-01-03"]), PRICES, tmp_path)
    part = tmp_path / "prices" / "market=US" / "year=2025"
    strays = [tmp_path / "prices" / "README.txt", part / "copy of part-0.parquet", tmp_path / "prices" / "market=US" / "part-0.parquet",
              tmp_path / "prices" / "market=US" / "year=2025 (1)" / "part-0.parquet"]
    strays[0].write_text("what this folder holds\n")
    strays[-1].parent.mkdir()
    for copy in strays[1:]:
        copy.write_bytes((part / "part-0.parquet").read_bytes())  # the same keys again: a duplicate if it were read
    assert len(load_prices(data_dir=tmp_path)) == 4
    assert len(store.read_frame(PRICES, tmp_path)) == 4
    written = upsert(_prices(["NVDA"], ["2025-01-06"]), PRICES, tmp_path)  # writes on, past the strays
    assert written.partitions_written == ["market=US/year=2025"] and len(load_prices(data_dir=tmp_path)) == 5
    assert status(tmp_path, datetime(2025, 1, 7, tzinfo=UTC)).strays == sorted(str(p) for p in strays)


def test_a_data_dir_written_before_the_catalog_reads_appends_and_derives(tmp_path: Path) -> None:
    """tests/olddata/data was written by main before this change (see make_olddata.py beside it)."""
    import shutil
    from datetime import date

    from aimoves.api import load_prices, load_sector_moves, load_stock_moves
    from aimoves.catalog import Catalog
    from aimoves.news.store import load_news
    from aimoves.ops import status
    from aimoves.planning import plan_backfill
    from aimoves.run import run_prices
    from aimoves.schema import ALL_DATASETS
    from aimoves.sources.factory import SourceSettings
    from aimoves.universe import parse_universe

    script = (OLDDATA.parent / "make_olddata.py").read_text()  # its universe (the script imports the old code: not imported here)
    universe = parse_universe(script.split('UNIVERSE = """')[1].split('"""')[0], "olddata")
    data = shutil.copytree(OLDDATA, tmp_path / "data")
    catalog = Catalog(data)
    assert catalog.strays(list(ALL_DATASETS)) == []
    before = {s.name: pd.read_parquet(data / s.name) for s in ALL_DATASETS if (data / s.name).is_dir()}
    # reads: every dataset by the one reader, as pyarrow reads the files directly
    assert len(load_prices(data_dir=data)) == len(before["prices"]) > 0
    assert len(load_stock_moves(data_dir=data)) == len(before["stock_moves"]) > 0
    assert len(load_sector_moves(data_dir=data)) == len(before["sector_moves"]) > 0
    assert len(load_news(data)) == len(before["news"]) > 0
    assert status(data, datetime(2025, 1, 18, tzinfo=UTC)).last_run["flow"] == "backfill"
    # appends and derives: a later backfill whose warm-up overlaps the stored sessions
    plans = [plan_backfill(universe, m, date(2025, 1, 20), date(2025, 1, 24)) for m in ("US", "HK")]
    run_prices("backfill", plans, SourceSettings("simulated", inject_defects=True, news="simulated"), universe, data)
    after = load_prices(data_dir=data)
    assert not after.duplicated(["symbol", "date"]).any()
    keys = [pd.MultiIndex.from_arrays([f["symbol"], pd.to_datetime(f["date"])]) for f in (before["prices"], after)]
    assert keys[0].isin(keys[1]).all()
    assert pd.to_datetime(after["date"]).max() == pd.Timestamp("2025-01-24")
    moves = load_stock_moves("2025-01-20", "2025-01-24", data_dir=data)
    assert set(moves["market"]) == {"US", "HK"} and not moves.duplicated(["symbol", "date"]).any()
    assert load_sector_moves("2025-01-24", "2025-01-24", regions=["ALL"], data_dir=data)["n_members"].sum() > 0
