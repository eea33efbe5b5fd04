"""Stock and sector moves on hand-made prices, checked against calculations written here."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from aimoves.calendars import sessions
from aimoves.expectations import suite_definition
from aimoves.derive import BIG_MOVE_Z, VOL_MIN_PERIODS, DeriveWindow, compute_sector_moves, compute_stock_moves
from aimoves.universe import parse_universe

UNIVERSE = parse_universe(
    """
benchmarks: {US: "^GSPC"}
stocks:
  - {symbol: BABA, name: Alibaba ADR, market: US, sector: internet_platforms, company: alibaba, shares_outstanding: 100}
  - {symbol: META, name: Meta, market: US, sector: internet_platforms, shares_outstanding: 300}
  - {symbol: NVDA, name: NVIDIA, market: US, sector: semiconductors, shares_outstanding: 1000}
  - {symbol: AMD, name: AMD, market: US, sector: semiconductors, shares_outstanding: 10}
  - {symbol: NEWCO, name: Listed later, market: US, sector: semiconductors, shares_outstanding: 10, since: 2025-02-03}
  - {symbol: 9988.HK, name: Alibaba, market: HK, sector: internet_platforms, company: alibaba, shares_outstanding: 800}
  - {symbol: 0981.HK, name: SMIC, market: HK, sector: semiconductors, shares_outstanding: 50}
""",
    "test-universe",
)
CURRENCY = {"US": "USD", "HK": "HKD"}


def bars(symbol: str, market: str, closes: dict[str, float]) -> pd.DataFrame:
    dates = pd.to_datetime(list(closes))
    c = np.array(list(closes.values()), dtype=float)
    return pd.DataFrame({"date": dates, "symbol": symbol, "market": market, "currency": CURRENCY[market], "close": c * 2, "adj_close": c})


def fx_frame(rates: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame({"date": pd.to_datetime(list(rates)), "currency": "HKD", "usd_rate": list(rates.values())})


HK_DAYS = ["2025-01-24", "2025-01-27", "2025-01-28", "2025-02-03"]  # 28th a half day; closed 29..31
US_DAYS = ["2025-01-24", "2025-01-27", "2025-01-28", "2025-01-29", "2025-01-30", "2025-01-31", "2025-02-03"]


def test_returns_follow_each_symbols_previous_session_across_holidays() -> None:
    prices = bars("0981.HK", "HK", dict(zip(HK_DAYS, [40.0, 38.15, 38.0, 41.9])))
    moves = compute_stock_moves(prices, fx_frame({}), UNIVERSE, [DeriveWindow("HK", date(2025, 1, 24), date(2025, 2, 3))])
    moves = moves.set_index(moves["date"].dt.strftime("%Y-%m-%d"))
    assert pd.isna(moves.loc["2025-01-24", "ret"])  # no previous session: no return, not 0
    assert moves.loc["2025-02-03", "ret"] == pytest.approx(41.9 / 38.0 - 1)
    assert moves.loc["2025-02-03", "prev_date"] == pd.Timestamp("2025-01-28")
    assert "return_spans_gap" not in moves.loc["2025-02-03", "dq_flags"]  # the holiday is not a gap


def test_a_missing_session_is_flagged_as_a_gap() -> None:
    prices = bars("NVDA", "US", {"2025-01-24": 142.62, "2025-01-28": 128.99})  # no bar on the 27th
    moves = compute_stock_moves(prices, fx_frame({}), UNIVERSE, [DeriveWindow("US", date(2025, 1, 24), date(2025, 1, 28))])
    last = moves.iloc[-1]
    assert last["ret"] == pytest.approx(128.99 / 142.62 - 1)
    assert last["dq_flags"] == ["return_spans_gap"]


def test_usd_returns_use_the_rate_of_each_date_and_missing_rates_stay_null() -> None:
    prices = bars("0981.HK", "HK", dict(zip(HK_DAYS, [40.0, 38.15, 38.0, 41.9])))
    fx = fx_frame({"2025-01-24": 0.1280, "2025-01-27": 0.1290, "2025-01-28": 0.1285})  # no rate for 02-03
    moves = compute_stock_moves(prices, fx, UNIVERSE, [DeriveWindow("HK", date(2025, 1, 24), date(2025, 2, 3))])
    moves = moves.set_index(moves["date"].dt.strftime("%Y-%m-%d"))
    assert moves.loc["2025-01-27", "ret_usd"] == pytest.approx(38.15 * 0.1290 / (40.0 * 0.1280) - 1)
    assert pd.isna(moves.loc["2025-02-03", "ret_usd"])
    assert "fx_missing" in moves.loc["2025-02-03", "dq_flags"]
    assert moves.loc["2025-01-27", "mcap_usd_prev"] == pytest.approx(50 * 80.0 * 0.1280)  # shares × previous close × FX


def test_zscore_uses_trailing_volatility_only() -> None:
    rng = np.random.default_rng(1)
    days = pd.bdate_range("2024-06-03", periods=90)
    days = days[days.isin(sessions("US", date(2024, 6, 1), date(2024, 12, 31)).dates)]
    rets = rng.normal(0, 0.01, len(days))
    rets[-1] = 0.08
    closes = 100 * np.cumprod(1 + rets)
    prices = bars("AMD", "US", {d.strftime("%Y-%m-%d"): c for d, c in zip(days, closes)})
    moves = compute_stock_moves(prices, fx_frame({}), UNIVERSE, [DeriveWindow("US", days[0].date(), days[-1].date())])
    expected_vol = pd.Series(rets[1:-1]).tail(60).std()
    assert moves["zscore"].iloc[-1] == pytest.approx(rets[-1] / expected_vol, rel=1e-6)
    assert bool(moves["big_move"].iloc[-1]) == (abs(rets[-1] / expected_vol) >= BIG_MOVE_Z)
    assert moves["zscore"].iloc[: VOL_MIN_PERIODS + 1].isna().all()


def _two_market_moves() -> pd.DataFrame:
    us = {
        "NVDA": [142.62, 118.42, 128.99, 123.70, 124.65, 120.07, 116.66],
        "AMD": [121.0, 115.0, 117.0, 118.0, 119.0, 115.0, 114.0],
        "META": [647.0, 659.0, 674.0, 676.0, 687.0, 689.0, 697.0],
        "BABA": [85.0, 84.0, 86.0, 87.0, 88.0, 89.0, 96.0],
        "NEWCO": [10.0, 10.5, 11.0, 11.5, 12.0, 12.5, 13.0],
        "^GSPC": [6101.0, 6012.0, 6067.0, 6039.0, 6071.0, 6040.0, 5994.0],
    }
    hk = {"0981.HK": [40.0, 38.15, 38.0, 41.9], "9988.HK": [82.0, 84.0, 85.0, 90.0]}
    prices = pd.concat(
        [bars(s, "US", dict(zip(US_DAYS, c))) for s, c in us.items()] + [bars(s, "HK", dict(zip(HK_DAYS, c))) for s, c in hk.items()],
        ignore_index=True,
    )
    fx = fx_frame({d: 0.128 + i * 0.0001 for i, d in enumerate(US_DAYS)})
    windows = [DeriveWindow("US", date(2025, 1, 24), date(2025, 2, 3)), DeriveWindow("HK", date(2025, 1, 24), date(2025, 2, 3))]
    return compute_stock_moves(prices, fx, UNIVERSE, windows)


def _row(sectors: pd.DataFrame, day: str, region: str, sector: str) -> pd.Series:
    hit = sectors[(sectors["date"] == pd.Timestamp(day)) & (sectors["region"] == region) & (sectors["sector"] == sector)]
    assert len(hit) == 1, hit
    return hit.iloc[0]


def test_equal_and_cap_weights_best_worst_and_excess() -> None:
    moves = _two_market_moves()
    sectors = compute_sector_moves(moves, UNIVERSE, ["US", "HK", "ALL"], date(2025, 1, 27), date(2025, 2, 3))
    semis = _row(sectors, "2025-01-27", "US", "semiconductors")
    nvda, amd = 118.42 / 142.62 - 1, 115.0 / 121.0 - 1
    assert semis["n_members"] == 2 and semis["n_traded"] == 2  # NEWCO joins on 2025-02-03
    assert semis["ret_ew"] == pytest.approx((nvda + amd) / 2)
    cap_nvda, cap_amd = 1000 * 142.62 * 2, 10 * 121.0 * 2  # shares × previous (unadjusted) close
    assert semis["ret_cw"] == pytest.approx((cap_nvda * nvda + cap_amd * amd) / (cap_nvda + cap_amd))
    assert (semis["top_symbol"], semis["bottom_symbol"]) == ("AMD", "NVDA")
    assert semis["bottom_ret"] == pytest.approx(nvda)
    assert (semis["advancers"], semis["decliners"]) == (0, 2)
    assert semis["excess_vs_benchmark"] == pytest.approx(semis["ret_ew"] - (6012.0 / 6101.0 - 1))
    assert semis["ret_ew_usd"] == pytest.approx(semis["ret_ew"])  # USD market
    assert _row(sectors, "2025-02-03", "US", "semiconductors")["n_members"] == 3


def test_closed_market_rows_are_marked_closed_never_zero() -> None:
    moves = _two_market_moves()
    sectors = compute_sector_moves(moves, UNIVERSE, ["HK"], date(2025, 1, 27), date(2025, 2, 3))
    for day in ("2025-01-29", "2025-01-30", "2025-01-31"):
        row = _row(sectors, day, "HK", "semiconductors")
        assert not row["market_open"] and row["n_traded"] == 0 and pd.isna(row["ret_ew"])
    half_day = _row(sectors, "2025-01-28", "HK", "semiconductors")
    assert half_day["market_open"] and half_day["ret_ew"] == pytest.approx(38.0 / 38.15 - 1)


def test_dual_listing_counts_once_in_all() -> None:
    moves = _two_market_moves()
    sectors = compute_sector_moves(moves, UNIVERSE, ["ALL"], date(2025, 1, 27), date(2025, 2, 3))
    platforms = _row(sectors, "2025-01-27", "ALL", "internet_platforms")
    assert platforms["n_members"] == 2  # alibaba (BABA + 9988.HK) and META
    assert platforms["n_traded"] == 2
    # rule: the first listing in universe order that traded that day → BABA (USD) for alibaba
    m = moves.set_index(["symbol", moves["date"].dt.strftime("%Y-%m-%d")])
    expected = (m.loc[("BABA", "2025-01-27"), "ret_usd"] + m.loc[("META", "2025-01-27"), "ret_usd"]) / 2
    assert platforms["ret_ew_usd"] == pytest.approx(expected)
    assert platforms["ret_ew"] == pytest.approx(expected)  # ALL is in USD
    # while HK is closed (29th), ALL still has the US members, and market_open is true
    assert _row(sectors, "2025-01-29", "ALL", "semiconductors")["market_open"]


def test_a_blocked_market_date_is_not_aggregated_and_all_says_so() -> None:
    moves = _two_market_moves()
    blocked = {("HK", date(2025, 1, 27))}
    sectors = compute_sector_moves(moves, UNIVERSE, ["HK", "ALL"], date(2025, 1, 27), date(2025, 1, 28), blocked)
    assert sectors[(sectors["region"] == "HK") & (sectors["date"] == pd.Timestamp("2025-01-27"))].empty
    semis_all = _row(sectors, "2025-01-27", "ALL", "semiconductors")
    assert semis_all["dq_flags"] == ["blocked:HK"]
    assert semis_all["n_traded"] == 2  # NVDA, AMD; SMIC left out
    assert not sectors[(sectors["region"] == "HK") & (sectors["date"] == pd.Timestamp("2025-01-28"))].empty


def _sector_moves() -> pd.DataFrame:
    return compute_sector_moves(_two_market_moves(), UNIVERSE, ["US", "HK", "ALL"], date(2025, 1, 27), date(2025, 2, 3))


def _first(frame: pd.DataFrame, mask: pd.Series) -> int:
    return int(np.flatnonzero(mask.to_numpy())[0])


def _break_sector_row(name: str, f: pd.DataFrame) -> int:
    """Break one row of sector moves so that expectation `name` fails; returns the row."""
    traded = f["n_traded"] > 0
    if name == "one_row_per_date_region_sector":
        f.loc[len(f)] = f.loc[0]
        return len(f) - 1
    if name == "members_ge_traded":
        f.loc[0, "n_traded"] = f.loc[0, "n_members"] + 1
        return 0
    if name == "traded_ge_advancers_plus_decliners":
        i = _first(f, traded)
        f.loc[i, "advancers_plus_decliners"] = f.loc[i, "n_traded"] + 1
        return i
    if name.endswith("_in_bounds"):
        i = _first(f, traded)
        f.loc[i, name.removesuffix("_in_bounds")] = -1.5
        return i
    if name == "closed_market_has_no_returns":
        i = _first(f, ~f["market_open"])
        f.loc[i, "ret_ew"] = 0.0
        return i
    if name == "region_known":
        f.loc[0, "region"] = "EU"
        return 0
    if name == "top_ge_bottom":
        i = _first(f, f["n_traded"] > 1)
        f.loc[i, "top_ret"] = f.loc[i, "bottom_ret"] - 0.01
        return i
    if name == "traded_sector_has_return":
        i = _first(f, traded)
        f.loc[i, "ret_ew"] = np.nan
        return i
    raise AssertionError(f"no case breaks {name}: add one")


SECTOR_EXPECTATIONS = [e["meta"]["name"] for e in suite_definition("sector_moves")["expectations"]]


def test_sector_moves_pass_their_suite() -> None:
    from aimoves.schema import SECTOR_MOVES
    from aimoves.validate import split_by_suite

    result = split_by_suite("sector_moves", _sector_moves(), [f.name for f in SECTOR_MOVES.schema])
    assert result.quarantined.empty, result.quarantined
    assert result.failed_expectations == {}


@pytest.mark.parametrize("name", SECTOR_EXPECTATIONS)
def test_every_sector_expectation_can_fail_on_data(name: str) -> None:
    from aimoves.schema import SECTOR_MOVES
    from aimoves.validate import split_by_suite

    broken = _sector_moves()
    row = broken.loc[_break_sector_row(name, broken)]
    result = split_by_suite("sector_moves", broken, [f.name for f in SECTOR_MOVES.schema])
    assert name in result.failed_expectations, result.failed_expectations
    hit = result.quarantined[result.quarantined["expectation"].str.contains(name)]
    assert ((hit["date"] == row["date"]) & (hit["region"] == row["region"]) & (hit["sector"] == row["sector"])).any()


def test_a_quarantined_sector_row_is_written_to_quarantine(tmp_path) -> None:  # noqa: ANN001
    from datetime import UTC, datetime

    from aimoves.derive import _split_and_write
    from aimoves.schema import QUARANTINE_SECTOR_MOVES, SECTOR_MOVES
    from aimoves.store import read_frame

    broken = _sector_moves()
    blocked = _first(broken, broken["region"] == "ALL")
    broken.at[blocked, "dq_flags"] = ["blocked:HK"]
    broken.loc[blocked, "n_traded"] = broken.loc[blocked, "n_members"] + 1
    now = datetime(2025, 2, 4, tzinfo=UTC)
    report = _split_and_write(broken, "sector_moves", SECTOR_MOVES, QUARANTINE_SECTOR_MOVES, tmp_path, "r1", now, "2025-01-27..2025-02-03")
    assert report.quarantined == 1 and report.passed == len(broken) - 1
    q = read_frame(QUARANTINE_SECTOR_MOVES, tmp_path, date(2025, 1, 1), date(2025, 12, 31))
    assert len(q) == 1 and q.iloc[0]["expectation"] == "members_ge_traded"
    assert list(q.iloc[0]["dq_flags"]) == ["blocked:HK"]
    assert [r.label for r in report.suite_runs] == ["sector_moves"]
