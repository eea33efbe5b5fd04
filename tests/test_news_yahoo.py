"""YahooNewsSource against the fake Yahoo (tests/fakeyahoo.py): yfinance's real get_news() code
asks POST /xhr/ncp and parses the answer; items in both shapes come back as one batch."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aimoves.news import NewsRequest, merge_news, normalize_news
from aimoves.news.parse import parse_yahoo_news
from aimoves.retry import RetryPolicy
from aimoves.sources.yahoo import YahooNewsSource
from aimoves.universe import parse_universe
from fakeyahoo import FakeYahooNews, news_flat, news_nested

UNIVERSE = parse_universe(
    """
stocks:
  - {symbol: NVDA, name: NVIDIA, market: US, sector: semiconductors, aliases: [Nvidia]}
  - {symbol: AMD, name: Advanced Micro Devices, market: US, sector: semiconductors, aliases: [AMD]}
  - {symbol: 0981.HK, name: SMIC, market: HK, sector: semiconductors}
""",
    "test",
)
T = datetime(2025, 1, 28, 2, 30, tzinfo=UTC)
STORY = "https://finance.yahoo.com/news/nvidia-amd-plunge.html"


@pytest.fixture()
def fake(yf_cache_dir: Path) -> Iterator[FakeYahooNews]:
    news = {
        "NVDA": [
            news_nested("u1", "Nvidia and AMD plunge as DeepSeek rattles chip stocks", T, STORY + "?.tsrc=rss", tickers=["NVDA", "AMD"]),
            {"id": "ad", "ad": [{"x": 1}]},  # yfinance drops ads
            news_nested("u2", "Nvidia to report earnings", T, "https://finance.yahoo.com/news/nv-earnings.html"),
        ],
        "AMD": [news_flat("u1", "Nvidia and AMD plunge as DeepSeek rattles chip stocks", T, STORY, tickers=["AMD", "NVDA"])],
        "0981.HK": [],
    }
    with FakeYahooNews({}, news=news) as server:
        yield server


def test_news_in_both_shapes_through_yfinance(fake: FakeYahooNews) -> None:
    batch = YahooNewsSource(session=fake.session(), retry=RetryPolicy(backoff_seconds=0.001)).fetch_news(NewsRequest(("NVDA", "AMD", "0981.HK")))
    assert batch.failures == []
    assert sorted(batch.items["source_shape"]) == ["yahoo_flat", "yahoo_nested", "yahoo_nested"]
    assert [p.name for p in batch.payloads] == ["NVDA.json", "AMD.json", "0981.HK.json"]
    # the raw payload re-parses to the same items (what replay does)
    again = parse_yahoo_news(batch.payloads[0].data, "NVDA", batch.fetched_at)
    assert [r["title"] for r in again] == list(batch.items["title"][:2])
    rows = merge_news(None, normalize_news(batch.items, UNIVERSE))
    assert len(rows) == 2  # the story fetched for NVDA and for AMD is one row
    story = rows[rows["url"] == STORY].iloc[0]
    assert story["symbols"] == ["AMD", "NVDA"]
    assert story["source"] == "yahoo"
    assert fake.news_calls == {"NVDA": 1, "AMD": 1, "0981.HK": 1}


def test_rate_limit_is_retried_then_reported(fake: FakeYahooNews) -> None:
    fake.misbehave("AMD", status=429, times=None)
    calls: list[int] = []
    source = YahooNewsSource(session=fake.session(), retry=RetryPolicy(max_attempts=2, backoff_seconds=0.001), throttle=lambda: calls.append(1))
    batch = source.fetch_news(NewsRequest(("NVDA", "AMD")))
    assert len(calls) == 3  # NVDA once, AMD twice: every request passes the throttle
    assert [f.target for f in batch.failures] == ["AMD"]
    assert "rate limit" in batch.failures[0].reason and "2 attempts" in batch.failures[0].reason
    assert len(batch.items) == 2  # NVDA's items still arrive
    assert batch.notes and "retried" in batch.notes[0]


def test_a_yahoo_down_page_is_transient_and_retried(fake: FakeYahooNews) -> None:
    fake.misbehave("AMD", status=503, times=2)  # the first attempt (a request and yfinance's repeat): "Will be right back"
    batch = YahooNewsSource(session=fake.session(), retry=RetryPolicy(max_attempts=3, backoff_seconds=0.001)).fetch_news(NewsRequest(("AMD",)))
    assert batch.failures == [] and len(batch.items) == 1 and fake.news_calls["AMD"] == 3
    fake.misbehave("AMD", status=503, times=None)
    batch = YahooNewsSource(session=fake.session(), retry=RetryPolicy(max_attempts=2, backoff_seconds=0.001)).fetch_news(NewsRequest(("AMD",)))
    reason = batch.failures[0].reason
    assert "transient error on all 2 attempts" in reason and "HTTP 503" in reason, reason
