"""Property tests (hypothesis) of the transforms on random well-formed prices."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aimoves.calendars import sessions
from aimoves.derive import DeriveWindow, compute_sector_moves, compute_stock_moves
from aimoves.universe import parse_universe

UNIVERSE = parse_universe(
    """
benchmarks: {US: "^GSPC"}
stocks:
  - {symbol: AAA, name: A, market: US, sector: semiconductors, shares_outstanding: 100}
  - {symbol: BBB, name: B, market: US, sector: semiconductors, shares_outstanding: 2500}
  - {symbol: CCC, name: C, market: US, sector: semiconductors, shares_outstanding: 40}
  - {symbol: DDD, name: D, market: US, sector: cloud, shares_outstanding: 700}
""",
    "props",
)
DAYS = sessions("US", date(2025, 1, 2), date(2025, 2, 28)).dates[:25]
SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "^GSPC"]


@st.composite
def price_panels(draw: st.DrawFn) -> pd.DataFrame:
    rets = draw(st.lists(st.floats(-0.3, 0.3, allow_nan=False), min_size=len(DAYS) * len(SYMBOLS), max_size=len(DAYS) * len(SYMBOLS)))
    start = draw(st.lists(st.floats(1.0, 1000.0), min_size=len(SYMBOLS), max_size=len(SYMBOLS)))
    gaps = draw(st.sets(st.integers(0, len(DAYS) * len(SYMBOLS) - 1), max_size=8))  # missing bars (suspensions)
    r = np.array(rets).reshape(len(SYMBOLS), len(DAYS))
    frames = []
    for i, symbol in enumerate(SYMBOLS):
        adj = start[i] * np.cumprod(1 + r[i])
        keep = [j for j in range(len(DAYS)) if i * len(DAYS) + j not in gaps]
        frames.append(pd.DataFrame({"date": DAYS[keep], "symbol": symbol, "market": "US", "currency": "USD", "close": adj[keep] * 1.5, "adj_close": adj[keep]}))
    return pd.concat(frames, ignore_index=True)


def _derive(prices: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    window = [DeriveWindow("US", DAYS[0].date(), DAYS[-1].date())]
    moves = compute_stock_moves(prices, pd.DataFrame(columns=["date", "currency", "usd_rate"]), UNIVERSE, window)
    sectors = compute_sector_moves(moves, UNIVERSE, ["US"], DAYS[1].date(), DAYS[-1].date())
    return moves, sectors


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(price_panels())
def test_sector_aggregates_satisfy_their_invariants(prices: pd.DataFrame) -> None:
    moves, sectors = _derive(prices)
    members = moves[~moves["is_benchmark"] & moves["ret"].notna()]
    bench = moves[moves["is_benchmark"]].set_index("date")["ret"]
    for _, row in sectors[sectors["market_open"]].iterrows():
        group = members[(members["date"] == row["date"]) & (members["sector"] == row["sector"])]
        assert row["n_traded"] == len(group) <= row["n_members"]
        assert row["advancers"] + row["decliners"] <= row["n_traded"]
        if len(group) == 0:
            assert pd.isna(row["ret_ew"])
            continue
        assert np.isclose(row["ret_ew"], group["ret"].mean())  # equal weights average
        w = group["mcap_usd_prev"] / group["mcap_usd_prev"].sum()
        assert np.isclose(w.sum(), 1.0)  # cap weights sum to one
        assert np.isclose(row["ret_cw"], (w * group["ret"]).sum())
        assert group["ret"].min() <= row["ret_cw"] + 1e-12 and row["ret_cw"] <= group["ret"].max() + 1e-12
        if row["date"] in bench.index and pd.notna(bench[row["date"]]):
            assert np.isclose(row["excess_vs_benchmark"], row["ret_ew"] - bench[row["date"]])  # excess = return − benchmark
        assert row["top_ret"] == group["ret"].max() and row["bottom_ret"] == group["ret"].min()


@SETTINGS
@given(price_panels(), st.randoms())
def test_recompute_is_idempotent_and_order_free(prices: pd.DataFrame, rnd) -> None:  # noqa: ANN001
    moves_a, sectors_a = _derive(prices)
    shuffled = prices.sample(frac=1.0, random_state=rnd.randint(0, 2**31)).reset_index(drop=True)
    moves_b, sectors_b = _derive(shuffled)
    pd.testing.assert_frame_equal(moves_a.drop(columns=["dq_flags", "news_ids"]), moves_b.drop(columns=["dq_flags", "news_ids"]))
    pd.testing.assert_frame_equal(sectors_a.drop(columns="dq_flags"), sectors_b.drop(columns="dq_flags"))


@SETTINGS
@given(price_panels())
def test_returns_chain_back_to_prices(prices: pd.DataFrame) -> None:
    moves, _ = _derive(prices)
    for symbol, g in moves.groupby("symbol"):
        adj = prices[prices["symbol"] == symbol].set_index("date")["adj_close"].sort_index()
        rets = g.set_index("date")["ret"].dropna()
        growth = float(np.prod(1 + rets.to_numpy()))
        assert np.isclose(growth, adj.iloc[-1] / adj.iloc[0], rtol=1e-9)
