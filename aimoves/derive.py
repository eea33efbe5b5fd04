"""Stock and sector moves from stored prices and FX: plain pandas, no Prefect.

The method (weights, FX timing, missing members, membership, dual listings) is documented in
docs/methodology.md; the constants below are the ones it names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from aimoves.store import empty_lists
from aimoves.calendars import sessions
from aimoves.markets import MARKETS
from aimoves.universe import SECTORS, Universe

log = logging.getLogger(__name__)

VOL_WINDOW = 60  # sessions of the symbol's own returns behind its z-score
VOL_MIN_PERIODS = 20  # fewer returns than this: no z-score
BIG_MOVE_Z = 3.0  # |zscore| at or above this is a big move
BLOCK_QUARANTINE_SHARE = 0.2  # a market-date with more of its rows quarantined is not aggregated
LOOKBACK_DAYS = 130  # calendar days of stored prices read before a derive window (> VOL_WINDOW sessions)
REGIONS = (*MARKETS, "ALL")


@dataclass(frozen=True)
class DeriveWindow:
    market: str
    start: date
    end: date


def _fx_lookup(fx: pd.DataFrame) -> dict[str, pd.Series]:
    if fx.empty:
        return {}
    return {cur: g.set_index("date")["usd_rate"] for cur, g in fx.groupby("currency")}


def _rates(lookup: dict[str, pd.Series], currency: pd.Series, dates: pd.Series) -> np.ndarray:
    out = np.full(len(dates), np.nan)
    usd = (currency == "USD").to_numpy()
    out[usd] = 1.0
    for cur, series in lookup.items():
        mask = (currency == cur).to_numpy()
        if mask.any():
            out[mask] = series.reindex(pd.DatetimeIndex(dates[mask])).to_numpy()
    return out


def _expected_previous_session(market: pd.Series, dates: pd.Series) -> pd.Series:
    """For each (market, date): the exchange's session before `date`."""
    out = pd.Series(pd.NaT, index=dates.index, dtype="datetime64[ns]")
    if dates.empty:
        return out
    for m in market.unique():
        mask = market == m
        d = dates[mask]
        s = sessions(m, (d.min() - pd.Timedelta(days=20)).date(), d.max().date()).dates
        pos = s.searchsorted(d.to_numpy())
        prev = np.where(pos > 0, s[np.maximum(pos - 1, 0)], np.datetime64("NaT"))
        out[mask] = prev
    return out


def compute_stock_moves(prices: pd.DataFrame, fx: pd.DataFrame, universe: Universe, windows: list[DeriveWindow]) -> pd.DataFrame:
    """Moves of every symbol of the windows' markets, for the windows' dates.

    `prices` holds stored rows (date as datetime64) reaching at least LOOKBACK_DAYS before each
    window; returns run from the symbol's previous stored session.
    """
    if prices.empty:
        return pd.DataFrame(columns=["date", "symbol", "market"])
    p = prices.sort_values(["symbol", "date"], kind="stable").reset_index(drop=True)
    p["date"] = pd.to_datetime(p["date"])
    group = pd.factorize(p["symbol"])[0]  # NOTE: grouping by integer codes, not by the (Arrow) strings: same groups, faster
    by_symbol = p.groupby(group, sort=False)
    p["prev_date"] = by_symbol["date"].shift(1)
    prev_adj = by_symbol["adj_close"].shift(1)
    prev_close = by_symbol["close"].shift(1)
    p["ret"] = p["adj_close"] / prev_adj - 1
    vol = p["ret"].groupby(group, sort=False).rolling(VOL_WINDOW, min_periods=VOL_MIN_PERIODS).std()
    vol = vol.reset_index(level=0, drop=True).reindex(p.index)
    p["vol"] = vol.groupby(group, sort=False).shift(1)  # trailing: today's return is not in its own yardstick

    in_window = np.zeros(len(p), dtype=bool)
    for w in windows:
        in_window |= ((p["market"] == w.market) & (p["date"] >= pd.Timestamp(w.start)) & (p["date"] <= pd.Timestamp(w.end))).to_numpy()
    p = p[in_window].copy()
    prev_close = prev_close[in_window]

    lookup = _fx_lookup(fx)
    fx_t = _rates(lookup, p["currency"], p["date"])
    fx_prev = _rates(lookup, p["currency"], p["prev_date"])
    p["ret_usd"] = (1 + p["ret"]) * fx_t / fx_prev - 1
    p["zscore"] = p["ret"] / p["vol"].where(p["vol"] > 0)
    p["big_move"] = (p["zscore"].abs() >= BIG_MOVE_Z).fillna(False).astype(bool)

    benchmarks = set(universe.benchmarks.values())
    # Per-symbol attributes looked up once per distinct symbol, then spread by code (Series.map of a
    # dict over millions of rows was most of this function's time).
    codes, symbols = pd.factorize(p["symbol"])
    stock = {s.symbol: s for s in universe.stocks}
    known = [stock.get(sym) for sym in symbols]
    p["sector"] = np.array([s.sector if s else None for s in known], dtype=object)[codes]
    p["company"] = np.array([s.company_key if s else sym for s, sym in zip(known, symbols)], dtype=object)[codes]
    p["is_benchmark"] = np.array([sym in benchmarks for sym in symbols], dtype=bool)[codes]
    shares = pd.Series(np.array([s.shares_outstanding if s and s.shares_outstanding is not None else np.nan for s in known], dtype="float64")[codes], index=p.index)
    p["mcap_usd_prev"] = shares * prev_close * fx_prev

    gap = p["prev_date"].notna() & (p["prev_date"] != _expected_previous_session(p["market"], p["date"]))
    fx_missing = p["ret"].notna() & np.isnan(p["ret_usd"].to_numpy())
    flags = pd.Series(empty_lists(len(p)), index=p.index, dtype=object)
    for i in np.flatnonzero((gap | fx_missing).to_numpy()):  # only the flagged rows get a non-empty list
        flags.iat[i] = [f for f, on in (("return_spans_gap", gap.iat[i]), ("fx_missing", fx_missing.iat[i])) if on]
    p["dq_flags"] = flags
    p["news_ids"] = empty_lists(len(p))
    p["year"] = p["date"].dt.year
    cols = ["date", "symbol", "market", "sector", "ret", "ret_usd", "zscore", "big_move", "news_ids", "prev_date", "company",
            "mcap_usd_prev", "is_benchmark", "dq_flags", "year"]
    return p[cols].reset_index(drop=True)


def _membership(universe: Universe, dates: pd.DatetimeIndex) -> pd.DataFrame:
    """dates × stocks boolean: the stock is a member on that date (since/until)."""
    d = dates.to_numpy()[:, None]
    since = np.array([np.datetime64(s.since) if s.since else np.datetime64("1900-01-01") for s in universe.stocks], dtype="datetime64[ns]")
    until = np.array([np.datetime64(s.until) if s.until else np.datetime64("2200-01-01") for s in universe.stocks], dtype="datetime64[ns]")
    return pd.DataFrame((d >= since[None, :]) & (d <= until[None, :]), index=dates, columns=[s.symbol for s in universe.stocks])


def _aggregate(traded: pd.DataFrame, ret: str, ret_usd: str) -> pd.DataFrame:
    """Per (date, sector) aggregates of traded members; ties for best/worst go to the first symbol."""
    # Only the columns needed, rows with a return (in ALL, a listing without an FX rate has none).
    traded = traded.loc[traded[ret].notna(), list(dict.fromkeys(["date", "sector", "symbol", ret, ret_usd, "mcap_usd_prev"]))]
    traded = traded.sort_values(["date", "sector", "symbol"], kind="stable").reset_index(drop=True)
    w = traded["mcap_usd_prev"]
    has_w = w.notna()
    traded["_w"] = w.where(has_w)
    traded["_wr"] = (w * traded[ret]).where(has_w)
    traded["_wr_usd"] = (w * traded[ret_usd]).where(has_w)
    traded["_usd_missing"] = traded[ret_usd].isna()
    traded["_adv"] = traded[ret] > 0
    traded["_dec"] = traded[ret] < 0
    g = traded.groupby(["date", "sector"], sort=True)
    agg = g.agg(
        n_traded=(ret, "count"),
        ret_ew=(ret, "mean"),
        ret_ew_usd=(ret_usd, "mean"),
        usd_missing=("_usd_missing", "sum"),
        w_sum=("_w", "sum"),
        w_count=("_w", "count"),
        wr=("_wr", "sum"),
        wr_usd=("_wr_usd", "sum"),
        advancers=("_adv", "sum"),
        decliners=("_dec", "sum"),
    )
    top = traded.loc[g[ret].idxmax().dropna().astype(int)].set_index(["date", "sector"])
    bottom = traded.loc[g[ret].idxmin().dropna().astype(int)].set_index(["date", "sector"])
    agg["top_symbol"], agg["top_ret"] = top["symbol"].astype(object), top[ret]
    agg["bottom_symbol"], agg["bottom_ret"] = bottom["symbol"].astype(object), bottom[ret]
    full_w = agg["w_count"] == agg["n_traded"]  # cap weights only when every traded member has a cap
    agg["ret_cw"] = (agg["wr"] / agg["w_sum"]).where(full_w & (agg["w_sum"] > 0))
    agg["ret_cw_usd"] = (agg["wr_usd"] / agg["w_sum"]).where(full_w & (agg["w_sum"] > 0) & (agg["usd_missing"] == 0))
    agg["ret_ew_usd"] = agg["ret_ew_usd"].where(agg["usd_missing"] == 0)
    if isinstance(agg.index.levels[1].dtype, pd.CategoricalDtype):  # sectors back to plain strings for the caller's grid
        agg.index = agg.index.set_levels(agg.index.levels[1].astype(object), level=1)
    return agg


def compute_sector_moves(
    moves: pd.DataFrame,
    universe: Universe,
    regions: list[str],
    start: date,
    end: date,
    blocked: set[tuple[str, date]] | None = None,
) -> pd.DataFrame:
    """Sector moves for `regions` (markets and/or ALL) on every date from `start` to `end` when any market traded."""
    blocked = blocked or set()
    open_by_market = {m: sessions(m, start, end, universe.extra_holidays.get(m, ())).dates for m in MARKETS}  # type: ignore[call-overload]
    all_dates = open_by_market["US"].union(open_by_market["HK"]).union(open_by_market["CN"])
    if len(all_dates) == 0:
        return pd.DataFrame()
    members = _membership(universe, all_dates)
    stocks = list(universe.stocks)
    sector_of = {s.symbol: s.sector for s in stocks}
    order = {s.symbol: i for i, s in enumerate(stocks)}
    if not pd.api.types.is_datetime64_any_dtype(moves["date"]):
        moves = moves.assign(date=pd.to_datetime(moves["date"]))
    moves = moves[moves["date"].isin(all_dates)]
    is_blocked = pd.Series(False, index=moves.index)
    for market, day in blocked:
        is_blocked |= (moves["market"] == market) & (moves["date"] == pd.Timestamp(day))
    # Per-symbol attributes looked up once per distinct symbol and spread by code; symbols, sectors
    # and companies as categoricals, so sorting and grouping work on integer codes, not strings.
    codes, symbols = pd.factorize(moves["symbol"])
    position = np.array([order.get(sym, -1) for sym in symbols], dtype=np.int64)
    listed_mask = (position[codes] >= 0) & moves["ret"].notna().to_numpy() & ~is_blocked.to_numpy()
    if listed_mask.any():
        rows = all_dates.get_indexer(moves["date"][listed_mask])
        listed_mask[listed_mask] = members.to_numpy()[rows, position[codes[listed_mask]]]
    listed = moves.loc[listed_mask, ["date", "market", "ret", "ret_usd", "mcap_usd_prev"]]
    sym_codes = codes[listed_mask]
    names = sorted(str(sym) for sym in symbols)
    listed["symbol"] = pd.Categorical.from_codes(
        pd.Index(names).get_indexer(np.asarray(symbols, dtype=object))[sym_codes], categories=pd.Index(names, dtype=object), ordered=True
    )
    listed["company"] = pd.Categorical(moves["company"].to_numpy()[listed_mask])
    listed["sector"] = pd.Categorical.from_codes(
        np.array([SECTORS.index(sector_of[sym]) if sym in sector_of else -1 for sym in symbols], dtype=np.int64)[sym_codes],
        categories=pd.Index(list(SECTORS), dtype=object),
    )
    listed["_order"] = position[sym_codes]
    bench_ret = moves[moves["is_benchmark"]].set_index(["market", "date"])["ret"] if "is_benchmark" in moves else pd.Series(dtype=float)
    del moves, is_blocked

    frames = []
    for region in regions:
        if region == "ALL":
            # One listing per company: the first, in universe order, that traded that day (in USD).
            first = listed.groupby(["date", "company"], sort=False)["_order"].transform("min")
            traded = listed[listed["_order"] == first]
            company_members = members.T.groupby([s.company_key for s in stocks], sort=False).max().T
            first_sector = {}
            for s in stocks:
                first_sector.setdefault(s.company_key, s.sector)
            n_members = company_members.T.groupby(pd.Series(first_sector)[company_members.columns].to_numpy()).sum().T
            agg = _aggregate(traded, "ret_usd", "ret_usd")
            is_open = pd.Series(True, index=all_dates)  # all_dates is the union of the markets' sessions
        else:
            traded = listed[listed["market"] == region]
            cols = [s.symbol for s in stocks if s.market == region]
            n_members = members[cols].T.groupby(pd.Series({c: sector_of[c] for c in cols})[cols].to_numpy()).sum().T if cols else pd.DataFrame(index=all_dates)
            agg = _aggregate(traded, "ret", "ret_usd")
            is_open = pd.Series(all_dates.isin(open_by_market[region]), index=all_dates)
        grid = pd.MultiIndex.from_product([all_dates, list(SECTORS)], names=["date", "sector"])
        out = agg.reindex(grid)
        counts = n_members.reindex(columns=list(SECTORS), fill_value=0).stack()
        out["n_members"] = counts.reindex(grid, fill_value=0).astype(int).to_numpy()
        out["market_open"] = is_open.reindex(grid.get_level_values("date")).to_numpy()
        out = out.reset_index()
        out["region"] = region
        # Blocked market-dates are not aggregated; in ALL they contribute nothing and are flagged.
        blocked_here = {pd.Timestamp(d) for m, d in blocked if m == region}
        if blocked_here:
            out = out[~out["date"].isin(blocked_here)]
        out["dq_flags"] = empty_lists(len(out))
        if region == "ALL" and blocked:
            by_day: dict[pd.Timestamp, list[str]] = {}
            for m, d in sorted(blocked):
                by_day.setdefault(pd.Timestamp(d), []).append(f"blocked:{m}")
            out["dq_flags"] = [by_day.get(d, ()) for d in out["date"]]
        if region == "ALL":
            out["benchmark_ret"] = np.nan
        else:
            bench = bench_ret.xs(region, level="market") if region in bench_ret.index.get_level_values(0) else pd.Series(dtype=float)
            out["benchmark_ret"] = bench.reindex(out["date"]).to_numpy()
        out = out[(out["n_members"] > 0)]
        frames.append(out)
    result = pd.concat(frames, ignore_index=True)
    result["n_traded"] = result["n_traded"].fillna(0).astype(int)
    for c in ("advancers", "decliners"):
        result[c] = result[c].fillna(0).astype(int)
    result["excess_vs_benchmark"] = result["ret_ew"] - result["benchmark_ret"]
    result["news_count"] = 0
    result["sentiment_mean"] = np.nan
    result["advancers_plus_decliners"] = result["advancers"] + result["decliners"]
    result["year"] = result["date"].dt.year
    cols = ["date", "region", "sector", "n_members", "n_traded", "ret_ew", "ret_cw", "ret_ew_usd", "ret_cw_usd", "excess_vs_benchmark",
            "advancers", "decliners", "top_symbol", "top_ret", "bottom_symbol", "bottom_ret", "news_count", "sentiment_mean", "market_open",
            "benchmark_ret", "dq_flags", "year", "advancers_plus_decliners"]
    return result[cols].sort_values(["region", "date", "sector"]).reset_index(drop=True)


@dataclass
class DeriveReport:
    dataset: str
    window: str
    passed: int = 0
    flagged: int = 0
    quarantined: int = 0
    failed_expectations: dict[str, int] | None = None
    partitions_written: list[str] | None = None
    blocked: list[str] | None = None
    suite_runs: list = field(default_factory=list)  # validate.SuiteRun: GX results, for Data Docs


def _split_and_write(frame: pd.DataFrame, suite: str, spec, qspec, data_dir, run_id: str, now, window: str, label: str = "") -> DeriveReport:  # noqa: ANN001
    from aimoves.quarantine import with_quarantine_stamps
    from aimoves.store import upsert
    from aimoves.validate import split_by_suite

    base = [f.name for f in spec.schema]
    if frame.empty:
        return DeriveReport(spec.name, window)
    result = split_by_suite(suite, frame, base, label=label or suite)
    written = upsert(result.passed, spec, data_dir)
    if len(result.quarantined):
        quarantined = result.quarantined
        if "dq_flags" not in quarantined:  # the quarantine schema keeps the dataset's dq_flags column
            quarantined = quarantined.assign(dq_flags=empty_lists(len(quarantined)))
        upsert(with_quarantine_stamps(quarantined, run_id, now), qspec, data_dir)
    return DeriveReport(
        spec.name, window, passed=len(result.passed), flagged=int((result.passed["dq_flags"].map(len) > 0).sum()),
        quarantined=len(result.quarantined), failed_expectations=result.failed_expectations, partitions_written=written.partitions_written,
        suite_runs=result.suite_runs,
    )


def derive_stock_moves(
    data_dir, universe: Universe, windows: list[DeriveWindow], run_id: str, now, symbols: list[str] | None = None  # noqa: ANN001
) -> DeriveReport:
    """Read stored prices and FX, compute stock moves for the windows (only `symbols` when given), validate, write."""
    from aimoves.schema import FX, PRICES, QUARANTINE_STOCK_MOVES, STOCK_MOVES
    from aimoves.store import read_frame

    if not windows:
        return DeriveReport("stock_moves", "")
    lo, hi = min(w.start for w in windows), max(w.end for w in windows)
    fx = read_frame(FX, data_dir, lo - pd.Timedelta(days=LOOKBACK_DAYS), hi, columns=["date", "currency", "usd_rate"])
    window_text = f"{lo}..{hi}"
    parts = []
    for window in windows:  # prices one market at a time: memory holds one market's history, not all three
        start = window.start - pd.Timedelta(days=LOOKBACK_DAYS)
        prices = read_frame(PRICES, data_dir, start, window.end, columns=PRICE_INPUTS, market=[window.market], symbol=symbols)
        moves = compute_stock_moves(prices, fx, universe, [window])
        del prices
        parts.append(attach_news_ids(moves, data_dir, universe, window.start, window.end))
    # One GX validation and one write for every market: GX's cost is mostly fixed per call (its
    # metric graph is built per validation), so three calls cost nearly three times one.
    moves = pd.concat([p for p in parts if not p.empty], ignore_index=True) if any(not p.empty for p in parts) else parts[0]
    del parts
    report = _split_and_write(moves, "stock_moves", STOCK_MOVES, QUARANTINE_STOCK_MOVES, data_dir, run_id, now, window_text, "stock_moves")
    report.failed_expectations = report.failed_expectations or {}
    report.partitions_written = report.partitions_written or []
    return report


PRICE_INPUTS = ["date", "symbol", "market", "currency", "close", "adj_close"]
MOVE_INPUTS = ["date", "symbol", "market", "ret", "ret_usd", "mcap_usd_prev", "company", "is_benchmark"]


def _news_links(data_dir, universe: Universe, lo: date, hi: date) -> tuple[pd.DataFrame, pd.DataFrame]:  # noqa: ANN001
    """Stored news around lo..hi and its (symbol, session date, news_ids) links."""
    from aimoves.news.join import link_news_to_sessions
    from aimoves.news.store import load_news, news_window

    from aimoves.catalog import as_catalog
    from aimoves.schema import NEWS

    if not as_catalog(data_dir).has_dataset(NEWS):
        return pd.DataFrame(), pd.DataFrame()
    news = load_news(data_dir, *news_window(lo, hi))
    if news.empty:
        return news, pd.DataFrame()
    return news, link_news_to_sessions(news, {s.symbol: s.market for s in universe.stocks}, lo, hi)


def attach_news_ids(moves: pd.DataFrame, data_dir, universe: Universe, lo: date, hi: date) -> pd.DataFrame:  # noqa: ANN001
    """news_ids: the items about the symbol published between the previous session's close and this one's."""
    _, links = _news_links(data_dir, universe, lo, hi)
    if moves.empty or links.empty:
        return moves
    ids = moves[["symbol", "date"]].merge(links, on=["symbol", "date"], how="left")["news_ids"]
    moves = moves.copy()
    moves["news_ids"] = [sorted(v) if isinstance(v, list | np.ndarray) else [] for v in ids]
    return moves


def derive_sector_moves(
    data_dir, universe: Universe, windows: list[DeriveWindow], blocked: set[tuple[str, date]], run_id: str, now  # noqa: ANN001
) -> DeriveReport:
    """Aggregate stored stock moves of every market into sector moves for the windows' regions and ALL."""
    from aimoves.schema import QUARANTINE_SECTOR_MOVES, SECTOR_MOVES, STOCK_MOVES
    from aimoves.store import read_frame

    if not windows:
        return DeriveReport("sector_moves", "")
    lo, hi = min(w.start for w in windows), max(w.end for w in windows)
    moves = read_frame(STOCK_MOVES, data_dir, lo, hi, columns=MOVE_INPUTS)
    regions = [m for m in MARKETS if any(w.market == m for w in windows)] + ["ALL"]
    sectors = compute_sector_moves(moves, universe, regions, lo, hi, blocked)
    sectors = attach_news_stats(sectors, data_dir, universe, lo, hi)
    report = _split_and_write(sectors, "sector_moves", SECTOR_MOVES, QUARANTINE_SECTOR_MOVES, data_dir, run_id, now, f"{lo}..{hi}")
    report.blocked = sorted(f"{m} {d}" for m, d in blocked if lo <= d <= hi)
    return report


def attach_news_stats(sectors: pd.DataFrame, data_dir, universe: Universe, lo: date, hi: date) -> pd.DataFrame:  # noqa: ANN001
    """news_count and sentiment_mean per (date, region, sector) from the members' linked news."""
    from aimoves.news.join import sector_news_stats

    news, links = _news_links(data_dir, universe, lo, hi)
    if sectors.empty or links.empty:
        return sectors
    stats = sector_news_stats(news, links, {s.symbol: s.sector for s in universe.stocks}, {s.symbol: s.market for s in universe.stocks})
    merged = sectors.drop(columns=["news_count", "sentiment_mean"]).merge(stats, on=["date", "region", "sector"], how="left")
    merged["news_count"] = merged["news_count"].fillna(0).astype(int)
    return merged[sectors.columns]
