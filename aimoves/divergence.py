"""The US↔China divergence: per date and sector, the US and the China (HK + CN) return in USD, their
spread and how unusual it is. Plain pandas, no Prefect; the method is in docs/methodology.md.

Time alignment: a calendar date D combines each market's session *dated D* in its own calendar.
Shanghai (15:00 CST = 07:00 UTC) and Hong Kong (16:00 HKT = 08:00 UTC) close before New York opens
(14:30 UTC in winter), and New York closes (21:00 / 20:00 UTC) before D ends in UTC, so every
session of D is closed by the end of D in UTC and D's China move is the one New York's session of D
traded after. A market without a session dated D is missing on D (flagged `closed:<market>`), never
carried forward and never 0%.
"""

from __future__ import annotations

import logging
from datetime import date

import numpy as np
import pandas as pd

from aimoves.calendars import sessions
from aimoves.derive import DeriveReport, _aggregate, _membership
from aimoves.markets import MARKETS
from aimoves.settings import positive_setting
from aimoves.universe import SECTORS, Universe

log = logging.getLogger(__name__)

ALL_AI = "all_ai"
DIVERGENCE_SECTORS: tuple[str, ...] = (*SECTORS, ALL_AI)
SIDE_OF_MARKET = {"US": "us", "HK": "china", "CN": "china"}
Z_WINDOW = 60  # trailing dates of the spread behind its z-score (today excluded)
Z_MIN_PERIODS = 20  # fewer earlier spreads than this: no z-score, the row is flagged short_history
SPREAD_SESSIONS = 5  # sessions of each side compounded into spread_5d
DIVERGENCE_Z = 3.0  # default |z| at or above which opposite-signed returns are divergent
THRESHOLD_ENV = "AIMOVES_DIVERGENCE_Z"
LOOKBACK_DAYS = 130  # calendar days of stock moves read before a window (> Z_WINDOW dates, holidays included)
INPUTS = ["date", "symbol", "market", "ret", "ret_usd", "mcap_usd_prev", "company", "is_benchmark"]

COLUMNS = [
    "date", "sector", "ret_us_usd", "ret_china_usd", "spread", "spread_5d", "zscore", "divergent", "n_us", "n_china",
    "us_top_symbol", "china_top_symbol", "dq_flags",
    "ret_us_usd_cw", "ret_china_usd_cw", "spread_cw", "spread_5d_cw", "zscore_cw", "divergent_cw",
    "us_top_ret", "china_top_ret", "n_us_members", "n_china_members", "year",
]
OPEN_COLUMNS = ["_us_open", "_china_open"]  # whether each side traded: for the suite's helper columns


def divergence_threshold(value: float | None = None) -> float:
    """The |z| threshold: `value`, else $AIMOVES_DIVERGENCE_Z, else DIVERGENCE_Z."""
    if value is not None:
        return float(value)
    return positive_setting(THRESHOLD_ENV, DIVERGENCE_Z)


def _side_returns(listed: pd.DataFrame, sector: str | None) -> pd.DataFrame:
    """Per date: n_traded, ret_ew, ret_cw (USD) and the top mover of one side's listings."""
    frame = listed if sector is None else listed[listed["sector"] == sector]
    if frame.empty:
        return pd.DataFrame(columns=["n_traded", "ret_ew", "ret_cw", "top_symbol", "top_ret"])
    agg = _aggregate(frame.assign(sector=sector or ALL_AI), "ret_usd", "ret_usd").droplevel("sector")
    up = agg["top_ret"].abs() >= agg["bottom_ret"].abs()  # the biggest move either way; ties go to the gainer
    return pd.DataFrame({
        "n_traded": agg["n_traded"],
        "ret_ew": agg["ret_ew"],
        "ret_cw": agg["ret_cw"],
        "top_symbol": agg["top_symbol"].where(up, agg["bottom_symbol"]),
        "top_ret": agg["top_ret"].where(up, agg["bottom_ret"]),
    })


def _compound(ret: pd.Series, n: int) -> pd.Series:
    """Π(1 + r) − 1 over the last n values (null when any is missing or fewer than n)."""
    return np.expm1(np.log1p(ret).rolling(n, min_periods=n).sum())


def _trailing_z(spread: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(z, enough history) of each spread against the earlier non-null spreads (at most Z_WINDOW)."""
    known = spread.dropna()
    prior = known.shift(1).rolling(Z_WINDOW, min_periods=Z_MIN_PERIODS)
    mean, std = prior.mean(), prior.std()
    z = ((known - mean) / std.where(std > 0)).reindex(spread.index)
    enough = prior.count().reindex(spread.index).fillna(0) >= Z_MIN_PERIODS
    return z, enough


def compute_divergence(
    moves: pd.DataFrame,
    universe: Universe,
    start: date,
    end: date,
    threshold: float | None = None,
    blocked: set[tuple[str, date]] | None = None,
) -> pd.DataFrame:
    """Divergence rows for start..end from stock moves that reach LOOKBACK_DAYS before `start`.

    One row per date on which any market traded and per sector with members on both sides.
    """
    z_limit = divergence_threshold(threshold)
    if moves.empty:
        return pd.DataFrame(columns=COLUMNS + OPEN_COLUMNS)
    moves = moves.assign(date=pd.to_datetime(moves["date"]))
    lo = min(moves["date"].min().date(), start)
    open_by_market = {m: sessions(m, lo, end, universe.extra_holidays.get(m, ())).dates for m in MARKETS}  # type: ignore[call-overload]
    all_dates = open_by_market["US"].union(open_by_market["HK"]).union(open_by_market["CN"])
    if len(all_dates) == 0:
        return pd.DataFrame(columns=COLUMNS + OPEN_COLUMNS)
    stocks = [s for s in universe.stocks if s.symbol not in set(universe.benchmarks.values())]
    order = {s.symbol: i for i, s in enumerate(stocks)}
    sector_of = {s.symbol: s.sector for s in stocks}
    company_of = {s.symbol: s.company_key for s in stocks}
    members = _membership(universe, all_dates)[[s.symbol for s in stocks]]

    listed = moves[moves["symbol"].isin(order) & moves["ret"].notna() & moves["date"].isin(all_dates)]
    for market, day in blocked or set():
        listed = listed[~((listed["market"] == market) & (listed["date"] == pd.Timestamp(day)))]
    if len(listed):
        rows, cols = all_dates.get_indexer(listed["date"]), members.columns.get_indexer(listed["symbol"])
        listed = listed[members.to_numpy()[rows, cols]]
    listed = listed.assign(side=listed["market"].map(SIDE_OF_MARKET), sector=listed["symbol"].map(sector_of),
                           _order=listed["symbol"].map(order))
    # A listing with a local return but no USD one (no FX rate) cannot be counted: flag its date and sector.
    no_fx = listed[listed["ret_usd"].isna()]
    listed = listed[listed["ret_usd"].notna()]
    # Dual listings once per side: of a company's listings on one side, the first in universe order that traded.
    first = listed.groupby(["date", "side", "company"], sort=False)["_order"].transform("min")
    listed = listed[listed["_order"] == first]

    side_markets = {"us": ["US"], "china": ["HK", "CN"]}
    frames = []
    for sector in DIVERGENCE_SECTORS:
        in_sector = [s for s in stocks if sector == ALL_AI or s.sector == sector]
        part = pd.DataFrame(index=all_dates)
        part.index.name = "date"
        for side, markets in side_markets.items():
            symbols = [s.symbol for s in in_sector if s.market in markets]
            companies = members[symbols].T.groupby([company_of[c] for c in symbols]).max().T \
                if symbols else pd.DataFrame(index=all_dates)
            part[f"n_{side}_members"] = companies.sum(axis=1).astype(int) if symbols else 0
            side_open = pd.Series(False, index=all_dates)
            for m in markets:
                side_open |= all_dates.isin(open_by_market[m])
            got = _side_returns(listed[listed["side"] == side], None if sector == ALL_AI else sector).reindex(all_dates)
            got.loc[~side_open.to_numpy(), :] = np.nan  # a closed side has no return, whatever is stored
            part[f"n_{side}"] = got["n_traded"].fillna(0).astype(int)
            part[f"ret_{side}_usd"] = got["ret_ew"].astype(float)
            part[f"ret_{side}_usd_cw"] = got["ret_cw"].astype(float)
            part[f"{side}_top_symbol"] = got["top_symbol"]
            part[f"{side}_top_ret"] = got["top_ret"].astype(float)
            part[f"_{side}_open"] = side_open.to_numpy()
            for suffix in ("", "_cw"):
                ret = part[f"ret_{side}_usd{suffix}"]
                on_side = ret[side_open.to_numpy()]  # the side's own sessions, closed days skipped
                part[f"_{side}_5d{suffix}"] = _compound(on_side, SPREAD_SESSIONS).reindex(all_dates)
        part = part[(part["n_us_members"] > 0) & (part["n_china_members"] > 0)]
        if part.empty:
            continue
        for suffix in ("", "_cw"):
            us, cn = part[f"ret_us_usd{suffix}"], part[f"ret_china_usd{suffix}"]
            part[f"spread{suffix}"] = cn - us
            part[f"spread_5d{suffix}"] = part[f"_china_5d{suffix}"] - part[f"_us_5d{suffix}"]
            z, enough = _trailing_z(part[f"spread{suffix}"])
            part[f"zscore{suffix}"] = z
            part[f"_enough{suffix}"] = enough
            opposite = ((us > 0) & (cn < 0)) | ((us < 0) & (cn > 0))
            part[f"divergent{suffix}"] = (opposite & (z.abs() >= z_limit)).fillna(False).astype(bool)
        part["sector"] = sector
        frames.append(part.reset_index())
    if not frames:
        return pd.DataFrame(columns=COLUMNS + OPEN_COLUMNS)
    out = pd.concat(frames, ignore_index=True)
    out = out[(out["date"] >= pd.Timestamp(start)) & (out["date"] <= pd.Timestamp(end))].reset_index(drop=True)
    out["dq_flags"] = _flags(out, open_by_market, no_fx, blocked or set())
    out["year"] = out["date"].dt.year
    return out[COLUMNS + OPEN_COLUMNS].sort_values(["date", "sector"], key=_sector_order).reset_index(drop=True)


def _sector_order(column: pd.Series) -> pd.Series:
    return column.map({s: i for i, s in enumerate(DIVERGENCE_SECTORS)}) if column.name == "sector" else column


def _flags(out: pd.DataFrame, open_by_market: dict[str, pd.DatetimeIndex], no_fx: pd.DataFrame, blocked: set[tuple[str, date]]) -> list:
    """Why a row's numbers are missing or thin: closed:<M>, blocked:<M>, fx_missing, short_history(_cw)."""
    fx_keys = set(zip(no_fx["date"], no_fx["sector"])) | {(d, ALL_AI) for d in no_fx["date"]}
    blocked_on = {}
    for m, d in blocked:
        blocked_on.setdefault(pd.Timestamp(d), []).append(f"blocked:{m}")
    flags = []
    for day, sector, spread, spread_cw, enough, enough_cw in out[["date", "sector", "spread", "spread_cw", "_enough", "_enough_cw"]].itertuples(index=False):
        f = [f"closed:{m}" for m in MARKETS if day not in open_by_market[m]]
        f += sorted(blocked_on.get(day, []))
        if (day, sector) in fx_keys:
            f.append("fx_missing")
        if pd.notna(spread) and not enough:
            f.append("short_history")
        if pd.notna(spread_cw) and not enough_cw:
            f.append("short_history_cw")
        flags.append(f)
    return flags


def suite_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows plus the helper columns the suite checks that GX cannot state on its own."""
    frame = rows.copy()
    # A side counted while its markets were all closed (the calendar knows, GX does not).
    frame["n_us_when_closed"] = frame["n_us"].where(~frame["_us_open"].astype(bool))
    frame["n_china_when_closed"] = frame["n_china"].where(~frame["_china_open"].astype(bool))
    frame["n_us_when_open"] = frame["n_us"].where(frame["_us_open"].astype(bool))
    frame["n_china_when_open"] = frame["n_china"].where(frame["_china_open"].astype(bool))
    return frame


def derive_divergence(data_dir, universe: Universe, start: date, end: date, run_id: str, now,  # noqa: ANN001
                      blocked: set[tuple[str, date]] | None = None, threshold: float | None = None) -> DeriveReport:
    """Read stored stock moves, compute the divergence for start..end, validate, write."""
    from aimoves.derive import _split_and_write
    from aimoves.schema import DIVERGENCE, QUARANTINE_DIVERGENCE, STOCK_MOVES
    from aimoves.store import read_frame

    moves = read_frame(STOCK_MOVES, data_dir, pd.Timestamp(start) - pd.Timedelta(days=LOOKBACK_DAYS), end, columns=INPUTS)
    rows = compute_divergence(moves, universe, start, end, threshold, blocked)
    report = _split_and_write(suite_frame(rows), "divergence", DIVERGENCE, QUARANTINE_DIVERGENCE, data_dir, run_id, now, f"{start}..{end}")
    report.window = f"{start}..{end}"
    divergent = rows.loc[rows["divergent"].astype(bool), ["date", "sector"]] if len(rows) else rows
    log.info("divergence %s..%s: %d rows, %d divergent (%s)", start, end, len(rows), len(divergent),
             ", ".join(f"{d:%Y-%m-%d} {s}" for d, s in divergent.itertuples(index=False)) or "none")
    return report
