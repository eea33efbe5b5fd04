"""The flows end to end under one Prefect test harness (in-process: no engine start per test)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from conftest import REALDATA_UNIVERSE

pytestmark = pytest.mark.flow

NVDA_JAN = """Date,Open,High,Low,Close,Adj Close,Volume
2025-01-13,129.99,133.49,129.51,133.23,133.18,204808900
2025-01-14,136.05,136.38,130.05,131.76,131.71,195590500
2025-01-14,136.05,136.38,130.05,131.76,131.71,195590500
2025-01-15,133.65,136.45,131.29,136.24,136.19,185217300
2025-01-16,138.64,138.75,133.49,133.57,133.52,209235600
2025-01-17,136.69,138.50,135.46,137.71,137.66,201188800
2025-01-20,137.00,139.00,136.00,138.00,137.95,100000000
2025-01-21,139.16,141.83,137.09,140.83,140.78,197749000
2025-01-22,144.66,147.79,143.67,147.07,147.02,237651400
2025-01-23,145.05,147.23,143.72,-147.22,147.17,155915500
2025-01-24,148.37,148.97,141.88,142.62,142.57,234657600
"""
AMD_JAN = """Date,Open,High,Low,Close,Adj Close,Volume
2025-01-16,121.0,122.0,118.0,119.0,119.0,30000000
2025-01-17,120.0,123.0,119.5,122.5,122.5,30000000
2025-01-21,123.0,124.0,121.0,121.5,121.5,30000000
"""
US_ONLY = """
stocks:
  - {symbol: NVDA, name: NVIDIA, market: US, sector: semiconductors}
  - {symbol: AMD, name: AMD, market: US, sector: semiconductors}
"""


def _read(data_dir: Path, dataset: str = "prices") -> pd.DataFrame:
    return pd.read_parquet(data_dir / dataset).sort_values(["symbol", "date"]).reset_index(drop=True)


def test_bad_csv_rows_are_quarantined_and_the_rest_written(prefect_harness, tmp_path: Path) -> None:
    from aimoves.flows.prices import backfill

    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    (csv_dir / "NVDA.csv").write_text(NVDA_JAN)
    (csv_dir / "AMD.csv").write_text(AMD_JAN)
    (tmp_path / "u.yaml").write_text(US_ONLY)
    data = tmp_path / "data"
    summary = backfill(date(2025, 1, 13), date(2025, 1, 24), markets=["US"], source="csv", csv_dir=str(csv_dir),
                       universe=str(tmp_path / "u.yaml"), data_dir=str(data))
    us = summary.markets[0]
    assert (us.duplicates_collapsed, us.quarantined) == (1, 2)
    prices = _read(data)
    nvda = prices[prices.symbol == "NVDA"]
    assert len(nvda) == 8  # 11 lines: one duplicate collapsed, the holiday and the negative close quarantined
    assert (nvda["date"].astype(str) == "2025-01-14").sum() == 1
    assert len(prices[prices.symbol == "AMD"]) == 3
    quarantine = _read(data, "quarantine/prices")
    reasons = dict(zip(quarantine["date"].astype(str), quarantine["reason"]))
    assert "not a session of XNYS" in reasons["2025-01-20"]
    assert "close -147.22 is not a positive price" in reasons["2025-01-23"]
    assert set(quarantine["symbol"]) == {"NVDA"}


def test_backfill_twice_gives_identical_data_and_replay_reproduces_it(prefect_harness, tmp_path: Path, small_universe_file: Path) -> None:
    from aimoves.flows.prices import backfill

    data = tmp_path / "data"
    args = dict(markets=["US", "HK", "CN"], source="simulated", universe=str(small_universe_file), data_dir=str(data), inject_defects=True)
    first = backfill(date(2025, 1, 2), date(2025, 2, 28), **args)
    files = {p: p.read_bytes() for p in sorted((data / "prices").rglob("*.parquet"))}
    quarantine = _read(data, "quarantine/prices")
    assert sum(m.quarantined for m in first.markets) >= 6
    moves = {p: p.read_bytes() for name in ("stock_moves", "sector_moves", "fx") for p in sorted((data / name).rglob("*.parquet"))}
    assert len(moves) >= 6
    second = backfill(date(2025, 1, 2), date(2025, 2, 28), **args)
    assert all(m.partitions_written == [] for m in second.markets)
    assert {p: p.read_bytes() for p in sorted((data / "prices").rglob("*.parquet"))} == files
    assert {p: p.read_bytes() for name in ("stock_moves", "sector_moves", "fx") for p in sorted((data / name).rglob("*.parquet"))} == moves
    pd.testing.assert_frame_equal(_read(data, "quarantine/prices"), quarantine)

    replayed = tmp_path / "replayed"
    import shutil

    shutil.copytree(data / "raw", replayed / "raw")
    backfill(date(2025, 1, 2), date(2025, 2, 28), **{**args, "source": "replay", "data_dir": str(replayed)})
    a, b = _read(data), _read(replayed)
    pd.testing.assert_frame_equal(a.drop(columns="ingested_at"), b.drop(columns="ingested_at"))
    assert set(b["source"]) == {"simulated"}


def test_daily_on_a_holiday_completes_and_says_closed(prefect_harness, tmp_path: Path, small_universe_file: Path) -> None:
    from aimoves.flows.prices import daily

    summary = daily(date(2025, 1, 29), markets=["HK", "US"], source="simulated", universe=str(small_universe_file), data_dir=str(tmp_path))
    hk, us = summary.markets
    assert hk.closed and "closed on 2025-01-29" in hk.closed
    # 2025-01-29 and the 15 sessions before it (re-read for context and late corrections), 4 symbols
    assert us.passed == 16 * 4 and us.window == "2025-01-06..2025-01-29"
    prices = _read(tmp_path)
    assert set(prices["market"]) == {"US"} and prices["date"].astype(str).max() == "2025-01-29"


def test_library_logs_reach_the_flow_runs_logs_in_the_ui(prefect_harness, tmp_path: Path, small_universe_file: Path) -> None:
    """What aimoves' plain modules log (here aimoves.run: the stale-data warning, the quarantine counts) is in the run's logs."""
    import logging

    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    from aimoves.flows.prices import daily

    state = daily(date(2025, 1, 29), markets=["US"], source="simulated", universe=str(small_universe_file), data_dir=str(tmp_path),
                  inject_defects=True, return_state=True)
    APILogWorker.drain_all(timeout=10)
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    library = [(log.name, log.level, log.message) for log in logs if log.name.startswith("aimoves.")]
    assert any(level == logging.WARNING and "stale: the latest stored US session" in message for _, level, message in library), library
    assert any(name == "aimoves.run" and "quarantined" in message for name, _, message in library), library
    assert logging.getLogger("aimoves").handlers == []  # the run's handler is gone after the run


def test_a_run_that_fetches_nothing_fails_with_a_message(prefect_harness, tmp_path: Path) -> None:
    from aimoves.flows.prices import RunFailed, backfill

    (tmp_path / "u.yaml").write_text(US_ONLY)
    (tmp_path / "csv").mkdir()
    with pytest.raises(RunFailed, match="US: no rows to validate: nothing usable was fetched") as info:
        backfill(date(2025, 1, 13), date(2025, 1, 24), markets=["US"], source="csv", csv_dir=str(tmp_path / "csv"),
                 universe=str(tmp_path / "u.yaml"), data_dir=str(tmp_path / "data"))
    assert {f["symbol"] for f in info.value.summary.markets[0].failures} == {"NVDA", "AMD"}


@pytest.mark.realdata
def test_realdata_january_2025(prefect_harness, tmp_path: Path, realdata_dir: Path) -> None:
    from aimoves.flows.prices import backfill

    (tmp_path / "u.yaml").write_text(REALDATA_UNIVERSE)
    backfill(date(2025, 1, 2), date(2025, 2, 28), markets=["US", "HK"], source="csv", csv_dir=str(realdata_dir),
             universe=str(tmp_path / "u.yaml"), data_dir=str(tmp_path))
    prices = _read(tmp_path).set_index(["symbol", "date"])
    assert prices.loc[("NVDA", pd.Timestamp("2025-01-27").date()), "close"] == pytest.approx(118.42, abs=0.005)
    hk = prices.xs("0981.HK", level="symbol")
    hk_dates = {d.isoformat() for d in hk.index}
    assert not hk_dates & {"2025-01-29", "2025-01-30", "2025-01-31"}
    half_day = hk.loc[pd.Timestamp("2025-01-28").date()]
    assert list(half_day["dq_flags"]) == ["adj_close_from_close", "zero_volume"]  # 0981.HK.csv has no Adj Close

    # sector_moves: US semiconductors on 2025-01-27 is the mean of its members' adj_close returns,
    # computed here straight from the CSV files.
    rets = {}
    for symbol in ("NVDA", "AMD", "AVGO", "TSM"):
        csv = pd.read_csv(realdata_dir / f"{symbol}.csv", index_col="Date")["Adj Close"]
        rets[symbol] = csv.loc["2025-01-27"] / csv.loc["2025-01-24"] - 1
    sectors = pd.read_parquet(tmp_path / "sector_moves")
    sectors["date"] = sectors["date"].astype(str)
    semis = sectors[(sectors.region == "US") & (sectors.sector == "semiconductors") & (sectors.date == "2025-01-27")].iloc[0]
    assert semis["ret_ew"] == pytest.approx(sum(rets.values()) / 4, abs=1e-12)
    assert semis["n_traded"] == 4
    worst, best = min(rets, key=rets.get), max(rets, key=rets.get)
    assert (semis["bottom_symbol"], semis["top_symbol"]) == (worst, best) == ("AVGO", "AMD")  # AVGO -17.4%, NVDA -17.0%, AMD -6.4%
    assert semis["bottom_ret"] == pytest.approx(rets[worst]) and semis["top_ret"] == pytest.approx(rets[best])
    moves = pd.read_parquet(tmp_path / "stock_moves", filters=[("symbol", "==", "NVDA")])
    nvda = moves[moves["date"].astype(str) == "2025-01-27"].iloc[0]
    assert nvda["ret"] == pytest.approx(-0.1697, abs=5e-5) and nvda["big_move"]
    hk_closed = sectors[(sectors.region == "HK") & sectors.date.isin(["2025-01-29", "2025-01-30", "2025-01-31"])]
    assert len(hk_closed) == 3 and not hk_closed["market_open"].any() and hk_closed["ret_ew"].isna().all()


def test_partial_failure_ends_in_a_state_that_needs_attention(prefect_harness, tmp_path: Path) -> None:
    from aimoves.flows.prices import NEEDS_ATTENTION, backfill

    (tmp_path / "u.yaml").write_text(US_ONLY)
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    (csv_dir / "NVDA.csv").write_text(NVDA_JAN)  # AMD.csv missing
    state = backfill(date(2025, 1, 13), date(2025, 1, 24), markets=["US"], source="csv", csv_dir=str(csv_dir),
                     universe=str(tmp_path / "u.yaml"), data_dir=str(tmp_path / "data"), return_state=True)
    assert state.is_completed() and state.name == NEEDS_ATTENTION
    assert "US:AMD" in state.message and "2 rows quarantined" in state.message
    assert state.result().markets[0].passed > 0


def test_stages_carry_no_tags_so_no_task_run_asks_the_server_for_concurrency_slots() -> None:
    """Prefect requests a concurrency slot per tag per task run; on SQLite servers a 503 then costs 2 s each (tasks/__init__.py)."""
    from prefect import Task

    from tasks import derive, prices, stage

    stages = [v for m in (prices, derive) for v in vars(m).values() if isinstance(v, Task)]
    assert len(stages) >= 9
    assert {s.name: s.tags for s in stages if s.tags} == {}
    with pytest.raises(ValueError, match="no tags"):
        stage(name="x", tags=["fetch"])
