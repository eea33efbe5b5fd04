"""Source payloads → item records (`aimoves.news.base.ITEM_COLUMNS`). Pure: no network.

Yahoo's news list (what yfinance's `Ticker.get_news()` returns) comes in two shapes:

* nested (since 2025): `{"id": ..., "content": {"title", "summary" | "description", "pubDate"
  (ISO 8601, UTC "Z"), "displayTime", "provider": {"displayName"}, "canonicalUrl": {"url"},
  "clickThroughUrl": {"url"}, "finance": {"stockTickers": [{"symbol"}]}}}` → `yahoo_nested`;
* flat (before): `{"uuid", "title", "publisher", "link", "providerPublishTime" (epoch seconds),
  "relatedTickers": [...]}` → `yahoo_flat`.

Anything else is kept as `yahoo_unknown` with no title, so validation quarantines it with the
keys it had. RSS 2.0 / RSS 1.0 / Atom feeds go through feedparser; a feed that is not valid in
its declared encoding is read as feedparser decides (windows-1252 usually) and its items carry
`feed_encoding_fallback`.
"""

from __future__ import annotations

import calendar
import json
from datetime import UTC, datetime
from typing import Any

import pandas as pd

FEED_ENCODING_FALLBACK = "feed_encoding_fallback"


def _utc(value: Any) -> pd.Timestamp | None:
    """A UTC timestamp from epoch seconds (or ms), ISO text or a datetime; None when unusable."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            seconds = float(value)
            if seconds != seconds:
                return None
            if seconds > 1e11:  # NOTE: milliseconds, as some Yahoo endpoints give
                seconds /= 1000.0
            return pd.Timestamp(seconds, unit="s", tz=UTC)
        text = str(value).strip()
        if text.lstrip("-").isdigit():
            return _utc(int(text))
        ts = pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError):
        return None
    if ts is pd.NaT:
        return None
    # NOTE: a date without a zone is taken as UTC (Yahoo's pubDate always says Z).
    return ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)


def _url(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("url")
    return str(value) if value else None


def parse_yahoo_item(item: Any, symbol: str, fetched_at: datetime) -> dict:
    """One Yahoo news item (either shape) as an item record, filed under `symbol`."""
    base = {
        "source": "yahoo",
        "fetched_at": fetched_at,
        "origin": f"yahoo:{symbol}",
        "item_flags": [],
        "related": [symbol],
    }
    content = item.get("content") if isinstance(item, dict) else None
    if isinstance(content, dict):
        tickers = ((content.get("finance") or {}).get("stockTickers") or []) if isinstance(content.get("finance"), dict) else []
        related = [str(t.get("symbol")) for t in tickers if isinstance(t, dict) and t.get("symbol")]
        published_raw = content.get("pubDate") or content.get("displayTime")
        provider = content.get("provider")
        return {
            **base,
            "source_shape": "yahoo_nested",
            "title": content.get("title"),
            "summary": content.get("summary") or content.get("description"),
            "publisher": provider.get("displayName") if isinstance(provider, dict) else (provider or None),
            "link": _url(content.get("canonicalUrl")) or _url(content.get("clickThroughUrl")) or _url(content.get("previewUrl")),
            "published_at": _utc(published_raw),
            "published_raw": None if published_raw is None else str(published_raw),
            "related": [symbol, *related],
        }
    if isinstance(item, dict) and ("title" in item or "uuid" in item or "link" in item):
        published_raw = item.get("providerPublishTime")
        return {
            **base,
            "source_shape": "yahoo_flat",
            "title": item.get("title"),
            "summary": item.get("summary"),
            "publisher": item.get("publisher"),
            "link": item.get("link"),
            "published_at": _utc(published_raw),
            "published_raw": None if published_raw is None else str(published_raw),
            "related": [symbol, *[str(t) for t in item.get("relatedTickers") or [] if t]],
        }
    keys = sorted(item)[:8] if isinstance(item, dict) else type(item).__name__
    return {
        **base,
        "source_shape": "yahoo_unknown",
        "title": None,
        "summary": None,
        "publisher": None,
        "link": None,
        "published_at": None,
        "published_raw": f"unknown Yahoo news shape (keys: {keys})",
    }


def parse_yahoo_news(payload: bytes | list, symbol: str, fetched_at: datetime) -> list[dict]:
    """The JSON list yfinance returned for `symbol` (bytes or already decoded) → item records."""
    items = json.loads(payload) if isinstance(payload, (bytes, bytearray, str)) else payload
    if isinstance(items, dict):  # the raw xhr answer: data.tickerStream.stream
        items = ((items.get("data") or {}).get("tickerStream") or {}).get("stream") or []
    return [parse_yahoo_item(item, symbol, fetched_at) for item in items if not (isinstance(item, dict) and item.get("ad"))]


def _struct_utc(value: Any) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        return pd.Timestamp(calendar.timegm(value), unit="s", tz=UTC)
    except (TypeError, ValueError, OverflowError):
        return None


def parse_feed(data: bytes, origin: str, fetched_at: datetime, content_type: str | None = None) -> tuple[list[dict], list[str], str | None]:
    """A feed's bytes → (item records, notes, fatal problem or None).

    A problem is fatal only when feedparser found no feed at all (not XML, an HTML page ...).
    """
    import feedparser  # NOTE: imported here: only the rss and replay sources need it

    headers = {"content-type": content_type} if content_type else None
    parsed = feedparser.parse(data, response_headers=headers) if headers else feedparser.parse(data)
    notes: list[str] = []
    flags: list[str] = []
    exc = parsed.get("bozo_exception")
    if parsed.get("bozo") and exc is not None:
        name = type(exc).__name__
        if name in ("CharacterEncodingOverride", "CharacterEncodingUnknown"):
            declared = _declared_encoding(data)
            bad = _first_bad_byte(data, declared or "utf-8")
            where = f" (first bad byte 0x{bad[1]:02X} at offset {bad[0]})" if bad else ""
            notes.append(
                f"{origin}: declared {declared or 'utf-8'} but not valid in it{where}; "
                f"read as {parsed.get('encoding')}, its items are flagged {FEED_ENCODING_FALLBACK}"
            )
            flags.append(FEED_ENCODING_FALLBACK)
        elif not parsed.entries:
            return [], notes, f"{origin}: not a readable RSS/Atom feed ({name}: {exc})"
        else:
            notes.append(f"{origin}: feed is not well-formed ({name}: {exc}); read what could be read")
    version = parsed.get("version") or ""
    if not parsed.entries and not version:
        return [], notes, f"{origin}: not an RSS or Atom feed (no channel or feed element found)"
    shape = "atom" if version.startswith("atom") else "rss"
    feed_title = (parsed.get("feed") or {}).get("title")
    records = []
    for entry in parsed.entries:
        source = entry.get("source") or {}
        published = _struct_utc(entry.get("published_parsed")) or _struct_utc(entry.get("updated_parsed"))
        raw_date = entry.get("published") or entry.get("updated")
        link = entry.get("link")
        if not link:
            alternates = [l.get("href") for l in entry.get("links") or [] if l.get("href")]
            link = alternates[0] if alternates else None
        records.append(
            {
                "source": "rss",
                "source_shape": shape,
                "title": entry.get("title"),
                "summary": entry.get("summary") or entry.get("description"),
                "publisher": (source.get("title") if isinstance(source, dict) else None) or feed_title,
                "link": link,
                "published_at": published,
                "published_raw": None if raw_date is None else str(raw_date),
                "fetched_at": fetched_at,
                "related": [],
                "origin": origin,
                "item_flags": list(flags),
            }
        )
    return records, notes, None


def _declared_encoding(data: bytes) -> str | None:
    import re

    match = re.search(rb"""<\?xml[^>]*encoding=["']([A-Za-z0-9._\-]+)["']""", data[:500])
    return match.group(1).decode("ascii").lower() if match else None


def _first_bad_byte(data: bytes, encoding: str) -> tuple[int, int] | None:
    try:
        data.decode(encoding)
    except UnicodeDecodeError as exc:
        return exc.start, data[exc.start]
    except LookupError:
        return None
    return None
