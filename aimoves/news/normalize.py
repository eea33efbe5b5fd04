"""Item records of any source → canonical news rows (the `NEWS` columns plus check columns).

Per item: title, summary and publisher as plain text (`aimoves.news.text.plain_text`);
`published_at` in UTC; `first_seen_at` = the fetch time; `url` = the canonical http(s) URL or
null (the link's scheme stays in `link_scheme` so validation can flag it); `title_key`; `id`;
`symbols` = the stocks the text names (`aimoves.news.linking`) plus the universe stocks the source
filed it under; `sectors` = their sectors; `sentiment` and `sentiment_method`
(`aimoves.news.sentiment`); `year`/`month` of `published_at` (of `first_seen_at` when there is no
usable date, for quarantine).

Check columns (dropped before writing): `link_scheme`, `published_raw`, `origin`,
`feed_encoding_fallback`.
"""

from __future__ import annotations

import pandas as pd

from aimoves.markets import normalize_symbol
from aimoves.news.base import ITEM_COLUMNS
from aimoves.news.linking import SymbolMatcher
from aimoves.news.parse import FEED_ENCODING_FALLBACK
from aimoves.news.sentiment import score_texts, sentiment_method
from aimoves.news.text import canonical_url, news_id, plain_text, title_key, url_scheme
from aimoves.schema import NEWS
from aimoves.universe import Universe

NEWS_COLUMNS = [f.name for f in NEWS.schema]
CHECK_COLUMNS = ["link_scheme", "published_raw", "origin", "feed_encoding_fallback"]


def empty_news(with_checks: bool = False) -> pd.DataFrame:
    columns = NEWS_COLUMNS + (CHECK_COLUMNS if with_checks else [])
    frame = pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    for column in ("published_at", "first_seen_at"):
        frame[column] = pd.Series(dtype="datetime64[us, UTC]")
    frame["sentiment"] = pd.Series(dtype="float64")
    frame["year"] = pd.Series(dtype="int64")
    frame["month"] = pd.Series(dtype="int64")
    return frame


def _matcher(universe: Universe) -> SymbolMatcher:
    return SymbolMatcher(universe.stocks)


def normalize_news(items: pd.DataFrame, universe: Universe, matcher: SymbolMatcher | None = None) -> pd.DataFrame:
    """Item records (`ITEM_COLUMNS`) → canonical rows + check columns, one row per item (no dedup)."""
    if items is None or items.empty:
        return empty_news(with_checks=True)
    missing = [c for c in ITEM_COLUMNS if c not in items]
    if missing:
        raise ValueError(f"news items lack columns {missing}")
    matcher = matcher or _matcher(universe)
    known = set(matcher.sector_of)
    items = items.reset_index(drop=True)
    titles = [plain_text(t) or "" for t in items["title"]]
    summaries = [plain_text(s) for s in items["summary"]]
    publishers = [plain_text(p) for p in items["publisher"]]
    published = pd.to_datetime(items["published_at"], utc=True, errors="coerce").astype("datetime64[us, UTC]")
    fetched = pd.to_datetime(items["fetched_at"], utc=True, errors="coerce").astype("datetime64[us, UTC]")
    urls = [canonical_url(link) for link in items["link"]]
    keys = [title_key(t) for t in titles]
    days = [None if pd.isna(p) else p.strftime("%Y-%m-%d") for p in published]
    ids = [
        news_id(u, k, d, fallback=f"{o}|{r}|{s}|{f}")
        for u, k, d, o, r, s, f in zip(urls, keys, days, items["origin"], items["published_raw"], summaries, fetched)
    ]
    symbols = []
    for title, summary, related in zip(titles, summaries, items["related"]):
        found = matcher.match(title, summary)
        for sym in related if isinstance(related, (list, tuple)) else list(related or []):
            try:
                sym = normalize_symbol(str(sym))
            except Exception:  # noqa: BLE001 - an odd ticker string from a source is just not linked
                continue
            if sym in known:
                found.add(sym)
        symbols.append(sorted(found))
    sectors = [sorted({matcher.sector_of[s] for s in syms}) for syms in symbols]
    texts = [f"{t} {s}" if s else t for t, s in zip(titles, summaries)]
    when = published.where(published.notna(), fetched)
    frame = pd.DataFrame(
        {
            "id": ids,
            "published_at": published,
            "first_seen_at": fetched,
            "title": titles,
            "publisher": publishers,
            "url": urls,
            "summary": summaries,
            "symbols": symbols,
            "sectors": sectors,
            "sentiment": score_texts(texts),
            "source": items["source"].astype("object"),
            "title_key": keys,
            "source_shape": items["source_shape"].astype("object"),
            "sentiment_method": sentiment_method(),
            "dq_flags": [[] for _ in range(len(items))],
            "year": when.dt.year.astype("Int64"),
            "month": when.dt.month.astype("Int64"),
            "link_scheme": [url_scheme(link) for link in items["link"]],
            "published_raw": items["published_raw"].astype("object"),
            "origin": items["origin"].astype("object"),
            "feed_encoding_fallback": [FEED_ENCODING_FALLBACK in (f or []) for f in items["item_flags"]],
        }
    )
    return frame
