"""News joined to sessions across time zones, sector news stats, and the simulated headlines."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from aimoves.news import NewsRequest, link_news_to_sessions, normalize_news, sector_news_stats, session_closes
from aimoves.news.simulated import SHOCK_DOWN, SHOCK_UP, SimulatedNewsSource, simulate_news
from aimoves.sources.base import PriceRequest
from aimoves.sources.simulated import DEFAULT_SEED, DEFAULT_SHOCK, simulate_bars
from aimoves.universe import load_universe

NY = ZoneInfo("America/New_York")
HKT = ZoneInfo("Asia/Hong_Kong")
MARKETS = {"NVDA": "US", "AMD": "US", "0981.HK": "HK", "3896.HK": "HK", "688981.SS": "CN"}
SECTORS = {"NVDA": "semiconductors", "AMD": "semiconductors", "0981.HK": "semiconductors", "3896.HK": "cloud", "688981.SS": "semiconductors"}


def news(*rows: tuple[str, datetime, list[str], float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [r[0] for r in rows],
            "published_at": pd.to_datetime([r[1] for r in rows], utc=True),
            "symbols": [r[2] for r in rows],
            "sentiment": [r[3] for r in rows],
        }
    )


def sessions_of(links: pd.DataFrame) -> dict[tuple[str, str], list[str]]:
    return {(s, d.date().isoformat()): ids for s, d, ids in links.itertuples(index=False)}


def test_monday_evening_new_york_headline_joins_tuesday_us_and_hk_half_day() -> None:
    # 21:30 New York, Monday 2025-01-27 = 02:30 UTC = 10:30 HKT Tuesday 2025-01-28.
    # US: window of 2025-01-28 is (16:00 NY Mon, 16:00 NY Tue]. HK: 2025-01-28 is a half-day,
    # window (16:00 HKT Mon, 12:00 HKT Tue]: the session was already under way.
    item = news(("a", datetime(2025, 1, 27, 21, 30, tzinfo=NY), ["NVDA", "0981.HK"], -1.0))
    links = link_news_to_sessions(item, MARKETS, date(2025, 1, 20), date(2025, 2, 7))
    assert list(links.columns) == ["symbol", "date", "news_ids"]
    assert sessions_of(links) == {("NVDA", "2025-01-28"): ["a"], ("0981.HK", "2025-01-28"): ["a"]}
    closes = session_closes("HK", date(2025, 1, 27), date(2025, 1, 28))
    assert closes[pd.Timestamp("2025-01-28")] == pd.Timestamp(datetime(2025, 1, 28, 12, 0, tzinfo=HKT))
    assert closes[pd.Timestamp("2025-01-27")] == pd.Timestamp(datetime(2025, 1, 27, 16, 0, tzinfo=HKT))


def test_window_edges_weekends_and_holidays_roll_to_the_next_session() -> None:
    items = news(
        ("at_close", datetime(2025, 1, 27, 16, 0, tzinfo=NY), ["NVDA"], 0.0),  # (prev close, close]: belongs to Mon
        ("after_close", datetime(2025, 1, 27, 16, 0, 1, tzinfo=NY), ["NVDA"], 0.0),  # → Tue
        ("saturday", datetime(2025, 1, 25, 12, 0, tzinfo=NY), ["NVDA", "0981.HK", "688981.SS"], 0.0),  # → Mon everywhere
        ("mlk_day", datetime(2025, 1, 20, 12, 0, tzinfo=NY), ["AMD"], 0.0),  # NYSE closed 2025-01-20 → Tue 21
        ("hk_half_day_after", datetime(2025, 1, 28, 12, 0, 1, tzinfo=HKT), ["3896.HK"], 0.0),  # HK shut 29-31 → Mon 02-03
        ("lunar_new_year", datetime(2025, 1, 30, 10, 0, tzinfo=HKT), ["3896.HK", "688981.SS"], 0.0),  # SSE shut 01-28..02-04
        ("elsewhere", datetime(2025, 1, 27, 12, 0, tzinfo=NY), ["TSLA"], 0.0),  # not in the mapping: ignored
    )
    links = sessions_of(link_news_to_sessions(items, MARKETS, date(2025, 1, 20), date(2025, 2, 7)))
    assert links == {
        ("NVDA", "2025-01-27"): ["at_close", "saturday"],
        ("NVDA", "2025-01-28"): ["after_close"],
        ("0981.HK", "2025-01-27"): ["saturday"],
        ("688981.SS", "2025-01-27"): ["saturday"],
        ("AMD", "2025-01-21"): ["mlk_day"],
        ("3896.HK", "2025-02-03"): ["hk_half_day_after", "lunar_new_year"],
        ("688981.SS", "2025-02-05"): ["lunar_new_year"],
    }
    # the window bounds the sessions reported
    only = sessions_of(link_news_to_sessions(items, MARKETS, date(2025, 1, 28), date(2025, 1, 31)))
    assert only == {("NVDA", "2025-01-28"): ["after_close"]}
    assert link_news_to_sessions(items.iloc[0:0], MARKETS, date(2025, 1, 1), date(2025, 1, 2)).empty


def test_provisional_sessions_past_the_calendar_end() -> None:
    from aimoves.calendars import last_known_session

    last = last_known_session("CN")
    day = pd.bdate_range(pd.Timestamp(last) + pd.Timedelta(days=1), periods=3)[1]
    item = news(("late", datetime.combine(day.date(), datetime.min.time(), ZoneInfo("Asia/Shanghai")).replace(hour=10), ["688981.SS"], 0.0))
    links = sessions_of(link_news_to_sessions(item, MARKETS, day.date(), day.date()))
    assert links == {("688981.SS", day.date().isoformat()): ["late"]}


def test_sector_news_stats_count_distinct_items_per_region_and_all() -> None:
    items = news(
        ("both_us", datetime(2025, 1, 27, 10, 0, tzinfo=NY), ["NVDA", "AMD"], -1.0),
        ("nvda_only", datetime(2025, 1, 27, 11, 0, tzinfo=NY), ["NVDA"], 0.0),
        ("global", datetime(2025, 1, 27, 13, 0, tzinfo=HKT), ["NVDA", "0981.HK"], 1.0),
        ("cloud", datetime(2025, 1, 27, 13, 0, tzinfo=HKT), ["3896.HK"], 0.5),
    )
    links = link_news_to_sessions(items, MARKETS, date(2025, 1, 27), date(2025, 1, 27))
    stats = sector_news_stats(items, links, SECTORS, MARKETS)
    got = {(r.region, r.sector): (r.news_count, round(r.sentiment_mean, 6)) for r in stats.itertuples()}
    assert got == {
        ("US", "semiconductors"): (3, 0.0),  # both_us counted once
        ("HK", "semiconductors"): (1, 1.0),
        ("HK", "cloud"): (1, 0.5),
        ("ALL", "semiconductors"): (3, 0.0),  # "global" counted once across US and HK
        ("ALL", "cloud"): (1, 0.5),
    }
    assert set(stats["date"]) == {pd.Timestamp("2025-01-27")}


# -- simulated ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def universe():
    return load_universe()


def test_simulated_news_is_deterministic_and_labelled(universe) -> None:
    a = simulate_news(universe, date(2025, 1, 20), date(2025, 2, 3))
    b = simulate_news(universe, date(2025, 1, 20), date(2025, 2, 3))
    assert a == b and len(a) > 30
    assert {r["source"] for r in a} == {"simulated"}
    other = simulate_news(universe, date(2025, 1, 20), date(2025, 2, 3), seed=DEFAULT_SEED + 1)
    assert [r["title"] for r in other] != [r["title"] for r in a]
    # a sub-window reproduces the same items for its days
    sub = simulate_news(universe, date(2025, 1, 27), date(2025, 1, 28))
    day = {r["link"] for r in a if date(2025, 1, 27) <= r["published_at"].date() <= date(2025, 1, 28) and "eve" not in r["link"]}
    assert {r["link"] for r in sub if "eve" not in r["link"]} == day
    batch = SimulatedNewsSource(universe).fetch_news(NewsRequest(start=date(2025, 1, 27), end=date(2025, 1, 27)))
    assert batch.payloads[0].kind == "news_items_json" and len(batch.items) > 0


def test_simulated_shock_day_names_the_big_movers(universe) -> None:
    records = simulate_news(universe, date(2025, 1, 27), date(2025, 1, 27))
    frame = normalize_news(pd.DataFrame.from_records(records), universe)
    for market, templates, sign in (("US", SHOCK_DOWN, -1), ("HK", SHOCK_UP, 1), ("CN", SHOCK_UP, 1)):
        stocks = [s for s in universe.stocks if s.market == market]
        bars = simulate_bars(PriceRequest(market, tuple(s.symbol for s in stocks), date(2025, 1, 10), DEFAULT_SHOCK), {s.symbol: s.sector for s in stocks}, DEFAULT_SEED, DEFAULT_SHOCK)
        ret = bars.pivot_table(index="Date", columns="Ticker", values="Close").pct_change().loc[pd.Timestamp(DEFAULT_SHOCK)]
        movers = set(ret.abs().sort_values(ascending=False).index[:3])
        shock = frame[frame["url"].str.contains(f"/{market.lower()}/2025/01/27/shock")]
        assert len(shock) == 3
        named = set().union(*shock["symbols"])
        assert movers <= named, (market, movers, named)
        assert all((s > 0) if sign > 0 else (s < 0) for s in shock["sentiment"]), shock[["title", "sentiment"]]
    us = frame[frame["url"].str.contains("/us/2025/01/27/shock0")].iloc[0]
    assert "plunge" in us["title"] and "DeepSeek" in us["title"]
    # the market-wide item the day before names nobody and rolls to Monday's session
    eve = frame[frame["url"].str.contains("/eve-")]
    assert len(eve) == 1 and eve.iloc[0]["symbols"] == []
