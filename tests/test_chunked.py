"""Chunked backfills: the plan, and a chunked run that writes exactly what an unchunked backfill writes."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from aimoves.chunks import Chunk, divergence_windows, plan_chunks, plan_sector_chunks, symbol_batches, year_windows
from aimoves.universe import parse_universe
from conftest import SMALL_UNIVERSE


def test_a_window_splits_per_market_year_and_symbol_batch() -> None:
    universe = parse_universe(SMALL_UNIVERSE, "small")
    chunks = plan_chunks(universe, ["US", "HK", "CN"], date(2024, 11, 1), date(2025, 2, 28), batch_size=2)
    assert [k.name for k in chunks] == [
        "US-2024-b1of2", "US-2024-b2of2", "US-2025-b1of2", "US-2025-b2of2", "HK-2024-b1of2", "HK-2024-b2of2",
        "HK-2025-b1of2", "HK-2025-b2of2", "CN-2024", "CN-2025",
    ]
    us = [k for k in chunks if k.market == "US" and k.start.year == 2024]
    assert [k.symbols for k in us] == [("NVDA", "AMD"), ("MSFT", "^GSPC")]  # the benchmark rides in a batch
    assert (us[0].start, us[0].end) == (date(2024, 11, 1), date(2024, 12, 31))
    assert [k.name for k in plan_sector_chunks(date(2024, 11, 1), date(2025, 2, 28))] == ["ALL-2024", "ALL-2025"]
    assert year_windows(date(2024, 3, 5), date(2024, 3, 9)) == [(date(2024, 3, 5), date(2024, 3, 9))]
    assert symbol_batches(list("abcde"), 2) == [("a", "b"), ("c", "d"), ("e",)]
    with pytest.raises(ValueError, match="at least 1"):
        symbol_batches(["a"], 0)
    assert Chunk("US", date(2024, 1, 1), date(2024, 12, 31)).name == "US-2024"


def test_divergence_windows_shrink_with_the_universe_and_cover_the_window_once() -> None:
    start, end = date(2023, 3, 15), date(2025, 6, 30)
    for n_symbols, longest in ((1_000, 366), (10_000, 153), (50_000, 31)):
        windows = divergence_windows(start, end, n_symbols)
        assert windows[0][0] == start and windows[-1][1] == end
        assert all(b[0] - a[1] == pd.Timedelta(days=1) for a, b in zip(windows, windows[1:]))  # no gap, no overlap
        assert all(lo.year == hi.year for lo, hi in windows)
        assert max((hi - lo).days + 1 for lo, hi in windows) == longest, n_symbols
    assert divergence_windows(date(2024, 3, 5), date(2024, 11, 9), 10_000) == [(date(2024, 3, 5), date(2024, 7, 31)), (date(2024, 8, 1), date(2024, 11, 9))]


def _frame(data: Path, name: str) -> pd.DataFrame:
    frame = pd.read_parquet(data / name)
    frame = frame[[c for c in frame.columns if not c.endswith("_at")]]
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype(str)
        if frame[column].map(lambda v: hasattr(v, "__len__") and not isinstance(v, str)).any():
            frame[column] = frame[column].map(lambda v: tuple(v) if v is not None else None)
    keys = [c for c in ("date", "symbol", "currency", "region", "sector") if c in frame.columns]
    return frame.sort_values(keys).reset_index(drop=True)


@pytest.mark.flow
def test_a_chunked_backfill_writes_what_an_unchunked_one_writes(prefect_harness: None, tmp_path: Path) -> None:
    from aimoves.flows.chunked import chunked_backfill
    from aimoves.flows.prices import backfill

    universe = tmp_path / "universe.yaml"
    universe.write_text(SMALL_UNIVERSE)
    args = {"start": date(2024, 12, 16), "end": date(2025, 1, 10), "markets": ["US", "CN"], "source": "simulated", "universe": str(universe)}
    backfill(**args, data_dir=str(tmp_path / "whole"), news_source="none")
    result = chunked_backfill(**args, data_dir=str(tmp_path / "chunked"), batch_size=2)
    assert result["chunks"] == 6  # US: 2 years x 2 batches, CN: 2 years
    for name in ("prices", "fx", "stock_moves", "sector_moves", "divergence"):
        whole, chunked = _frame(tmp_path / "whole", name), _frame(tmp_path / "chunked", name)
        assert len(whole) > 0, name
        pd.testing.assert_frame_equal(chunked, whole, check_dtype=False, obj=name)
