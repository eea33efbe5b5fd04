"""The news-source protocol shared by yahoo, rss, simulated and replay.

A source answers a `NewsRequest` with a `NewsBatch`:

* `items`: one row per item as the source gave it, in `ITEM_COLUMNS` (raw title and summary,
  possibly HTML; the link as given; `published_at` parsed to UTC where the source gave a usable
  date, else NaT with the raw value in `published_raw`; `related`: symbols the source itself
  files the item under, e.g. the Yahoo ticker it was fetched for). Normalization (plain text,
  canonical URL, symbol linking, sentiment, ids) happens later, in one place, for every source.
* `payloads`: what the source returned, in the closest form it exposes (the JSON list yfinance
  gives per symbol, a feed's bytes, the simulated items), for `raw/news/` and `replay`.
* `failures`: a symbol or feed that returned nothing usable, with the reason.
* `notes`: what the run should say about the batch (a feed read with another encoding ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Protocol

import pandas as pd

ITEM_COLUMNS = [
    "source",  # yahoo, rss, simulated
    "source_shape",  # yahoo_nested, yahoo_flat, yahoo_unknown, rss, atom, simulated
    "title",  # as given (may hold HTML or entities)
    "summary",
    "publisher",
    "link",  # as given
    "published_at",  # UTC, NaT when missing or unreadable
    "published_raw",  # the source's own date value, as text (for reasons)
    "fetched_at",  # UTC: when this copy was fetched (becomes first_seen_at)
    "related",  # list[str]: symbols the source filed the item under
    "origin",  # where it came from: "yahoo:NVDA", a feed URL or path, "simulated"
    "item_flags",  # list[str]: problems found while reading (e.g. feed_encoding_fallback)
]


@dataclass(frozen=True)
class NewsRequest:
    """Which symbols (for per-symbol sources) and which publication window (for sources that can
    select by date: simulated, replay). Live sources (yahoo, rss) return what they have now."""

    symbols: tuple[str, ...] = ()
    start: date | None = None
    end: date | None = None  # inclusive

    def as_dict(self) -> dict:
        return {
            "symbols": list(self.symbols),
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
        }


@dataclass(frozen=True)
class NewsPayload:
    """One artifact as fetched. kind: yahoo_news_json (the list yfinance returned for one symbol),
    feed (a feed's bytes), news_items_json (simulated items)."""

    name: str
    kind: str
    data: bytes
    meta: dict = field(default_factory=dict)  # symbol, feed, content_type ...


@dataclass(frozen=True)
class NewsFailure:
    target: str  # a symbol or a feed
    reason: str


@dataclass
class NewsBatch:
    source: str
    request: NewsRequest
    items: pd.DataFrame
    fetched_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    payloads: list[NewsPayload] = field(default_factory=list)
    failures: list[NewsFailure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class NewsSource(Protocol):
    name: str

    def fetch_news(self, request: NewsRequest) -> NewsBatch: ...


def empty_items() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="object") for c in ITEM_COLUMNS})
    frame["published_at"] = pd.Series(dtype="datetime64[us, UTC]")
    frame["fetched_at"] = pd.Series(dtype="datetime64[us, UTC]")
    return frame


def items_frame(records: list[dict]) -> pd.DataFrame:
    """Records (dicts with ITEM_COLUMNS keys) as an items frame with UTC timestamps."""
    if not records:
        return empty_items()
    frame = pd.DataFrame.from_records(records, columns=ITEM_COLUMNS)
    for column in ("published_at", "fetched_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce").astype("datetime64[us, UTC]")
    for column in ("related", "item_flags"):
        frame[column] = [list(v) if isinstance(v, (list, tuple)) else [] for v in frame[column]]
    return frame
