"""News joined to trading sessions: which session's move can a headline explain?

Each (news item, linked symbol) goes to the session of the symbol's exchange whose window
contains the item's `published_at`: the window of session t is

    (close of the previous session, close of t]

with closes from exchange_calendars in UTC (half-days have their early close: HK's 2025-01-28
session closed at 12:00 HKT). News after a close, over a weekend or over a holiday rolls to the
next session. A headline at 21:30 New York time on Monday 2025-01-27 (02:30 UTC Tuesday) belongs
to Tuesday 2025-01-28's US session, and to HK's 2025-01-28 session too (10:30 HKT Tuesday, inside
(16:00 HKT Monday, 12:00 HKT Tuesday]). Past the end of a calendar's known schedule (XSHG:
2026-12-31) weekdays are provisional sessions closing at the market's regular close.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from aimoves.calendars import exchange_calendar, last_known_session
from aimoves.markets import MARKET_INFO

LINK_COLUMNS = ["symbol", "date", "news_ids"]
STATS_COLUMNS = ["date", "region", "sector", "news_count", "sentiment_mean"]


def session_closes(market: str, start: date, end: date) -> pd.Series:
    """Close (UTC) of each session of `market` from `start` to `end`, indexed by the naive session
    date; provisional weekdays past the calendar's end close at the market's regular close."""
    return _session_closes(market, pd.Timestamp(start).date(), pd.Timestamp(end).date())


@lru_cache(maxsize=64)
def _session_closes(market: str, start: date, end: date) -> pd.Series:
    closes = exchange_calendar(market).closes
    closes = closes.loc[pd.Timestamp(start) : pd.Timestamp(end)]
    closes = closes.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    closes.index = pd.DatetimeIndex(closes.index).tz_localize(None).astype("datetime64[ns]")
    last = pd.Timestamp(last_known_session(market))
    if pd.Timestamp(end) > last:
        info = MARKET_INFO[market]
        tail = pd.bdate_range(max(pd.Timestamp(start), last + pd.Timedelta(days=1)), pd.Timestamp(end))
        zone = ZoneInfo(info.timezone)
        values = [pd.Timestamp(datetime.combine(d.date(), info.close, zone)).tz_convert("UTC") for d in tail]
        extra = pd.Series(values, index=tail, dtype="datetime64[us, UTC]")
        closes = pd.concat([closes, extra])
    return closes


def assign_sessions(published_at: pd.Series, market: str) -> pd.Series:
    """The session (naive date) of `market` whose window holds each timestamp; NaT if unknown."""
    published = pd.to_datetime(published_at, utc=True)
    out = pd.Series(pd.NaT, index=published.index, dtype="datetime64[ns]")
    valid = published.notna()
    if not valid.any():
        return out
    lo = (published[valid].min() - pd.Timedelta(days=1)).date()
    hi = (published[valid].max() + pd.Timedelta(days=21)).date()
    closes = session_closes(market, lo, hi)
    if closes.empty:
        return out
    values = closes.to_numpy(dtype="datetime64[us]")  # UTC instants, zone dropped
    stamps = published[valid].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    idx = np.searchsorted(values, stamps, side="left")  # first close >= published_at
    ok = idx < len(values)
    sessions = np.full(len(stamps), np.datetime64("NaT"), dtype="datetime64[ns]")
    sessions[ok] = closes.index.to_numpy()[idx[ok]]
    out.loc[valid] = sessions
    return out


def link_news_to_sessions(news: pd.DataFrame, symbols_markets: dict[str, str], start: date, end: date) -> pd.DataFrame:
    """(symbol, date, news_ids) for each symbol and session from `start` to `end` with news.

    `news`: rows with id, published_at (UTC) and symbols (list), e.g. from `load_news`; only
    symbols in `symbols_markets` (symbol → market, as `Universe.market_of()`) are linked. `date` is
    the exchange-local session date (datetime64, midnight, as `read_frame` returns dates);
    news_ids are sorted and distinct. Load news published from a week before `start` to the day
    after `end` (`aimoves.news.store.news_window`) so that holiday roll-overs are seen.
    """
    if news is None or news.empty:
        return pd.DataFrame({"symbol": pd.Series(dtype="object"), "date": pd.Series(dtype="datetime64[ns]"), "news_ids": pd.Series(dtype="object")})
    pairs = news[["id", "published_at", "symbols"]].explode("symbols").rename(columns={"symbols": "symbol"})
    pairs = pairs[pairs["symbol"].notna() & pairs["symbol"].isin(list(symbols_markets))]
    pairs = pairs.assign(market=pairs["symbol"].map(symbols_markets))
    parts = []
    for market, group in pairs.groupby("market", sort=True):
        sessions = assign_sessions(group["published_at"], str(market))
        parts.append(group.assign(date=sessions.to_numpy()))
    if not parts:
        return link_news_to_sessions(pd.DataFrame(), {}, start, end)
    linked = pd.concat(parts, ignore_index=True)
    linked = linked[linked["date"].notna()]
    linked = linked[(linked["date"] >= pd.Timestamp(start)) & (linked["date"] <= pd.Timestamp(end))]
    out = (
        linked.groupby(["symbol", "date"], sort=True)["id"]
        .agg(lambda ids: sorted(set(ids)))
        .rename("news_ids")
        .reset_index()
    )
    out["date"] = out["date"].astype("datetime64[ns]")
    return out[LINK_COLUMNS]


def sector_news_stats(news: pd.DataFrame, links: pd.DataFrame, sectors: dict[str, str], markets: dict[str, str]) -> pd.DataFrame:
    """News per (date, region, sector): `news_count` = distinct items linked to the sector's members
    that session, `sentiment_mean` = their mean sentiment.

    `links` from `link_news_to_sessions`; `sectors` and `markets` map symbol → sector / market
    (members only: filter by membership dates before calling if they matter). Region is the
    market, plus `ALL`: the distinct items of the sector's members across markets whose session
    falls on that calendar date. Only (date, region, sector) with news appear: a sector without
    news that day has news_count 0 and sentiment_mean null.
    """
    empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(STATS_COLUMNS, ["datetime64[ns]", "object", "object", "int64", "float64"])})
    if links is None or links.empty or news is None or news.empty:
        return empty
    pairs = links.explode("news_ids").rename(columns={"news_ids": "id"})
    pairs = pairs[pairs["symbol"].isin(list(sectors)) & pairs["id"].notna()]
    pairs = pairs.assign(sector=pairs["symbol"].map(sectors), region=pairs["symbol"].map(markets))
    pairs = pairs[pairs["region"].notna()]
    both = pd.concat([pairs, pairs.assign(region="ALL")], ignore_index=True)
    both = both.drop_duplicates(["date", "region", "sector", "id"])
    sentiment = news.drop_duplicates("id").set_index("id")["sentiment"]
    both["sentiment"] = both["id"].map(sentiment).astype("float64")
    out = both.groupby(["date", "region", "sector"], sort=True).agg(news_count=("id", "nunique"), sentiment_mean=("sentiment", "mean")).reset_index()
    out["news_count"] = out["news_count"].astype("int64")
    return out[STATS_COLUMNS]
