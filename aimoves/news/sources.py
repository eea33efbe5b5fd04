"""News sources: rss, replay, and the factory for all of them (yahoo lives in aimoves.sources.yahoo,
simulated in aimoves.news.simulated).

* `rss`: every feed listed in the universe's `feeds:` (http(s) URLs, `file://` URLs or local
  paths, relative ones from the universe file's folder), read within a size limit and a total
  deadline (`aimoves.fetch_limits`; local paths only when they are regular files), parsed with
  feedparser. Only a feed that parsed is stored raw. A feed that cannot be read or is not a feed
  becomes a `NewsFailure` with the reason (never its content); the other feeds go on.
* `replay`: every fetch stored under `raw/news/`, parsed again with the same parsers; items keep
  their original source and their fetch time as `first_seen_at`. With a window, items published
  from the day before `start` to the day after `end` (UTC) are kept.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd

from aimoves.errors import AimovesError
from aimoves.fetch_limits import FetchLimits, FetchRefused, excerpt, read_bounded
from aimoves.news.base import NewsBatch, NewsFailure, NewsPayload, NewsRequest, NewsSource, empty_items, items_frame
from aimoves.news.parse import parse_feed, parse_yahoo_news
from aimoves.news.raw import fetched_at_of, news_manifests
from aimoves.retry import RetryPolicy, is_transient_request, retry_call
from aimoves.universe import Universe

log = logging.getLogger(__name__)

NEWS_SOURCES = ("yahoo", "rss", "simulated", "replay", "none")
USER_AGENT = "aimoves/0.1 news reader (feedparser)"


FEED_RETRY = RetryPolicy(max_attempts=2, backoff_seconds=1.0)


def _read_feed(feed: str, limits: FetchLimits, retry: RetryPolicy = FEED_RETRY) -> tuple[bytes, str | None]:
    """A feed's bytes and content type (None for files), within `limits` for all attempts together."""
    deadline = time.monotonic() + limits.deadline_s

    def get(attempt: int) -> tuple[bytes, str | None]:
        return read_bounded(feed, limits.max_bytes, max(0.0, deadline - time.monotonic()), {"User-Agent": USER_AGENT})

    def retryable(exc: BaseException, attempt: int) -> bool:  # only while the deadline leaves room for the wait
        return is_transient_request(exc) and deadline - time.monotonic() > retry.backoff_seconds * 1.5 * attempt + 1

    return retry_call(get, retry, retryable, feed)


@dataclass(frozen=True)
class RssNewsSource:
    feeds: tuple[str, ...]
    name: str = "rss"
    limits: FetchLimits = field(default_factory=FetchLimits.for_feeds)

    def fetch_news(self, request: NewsRequest) -> NewsBatch:
        fetched_at = datetime.now(UTC)
        records: list[dict] = []
        payloads: list[NewsPayload] = []
        failures: list[NewsFailure] = []
        notes: list[str] = []
        for i, feed in enumerate(self.feeds):
            try:
                data, content_type = _read_feed(feed, self.limits)
            except FetchRefused as exc:
                failures.append(NewsFailure(feed, f"refused: {exc}"))
                continue
            except Exception as exc:  # noqa: BLE001 - one unreadable feed must not stop the others
                failures.append(NewsFailure(feed, f"could not read the feed: {type(exc).__name__}: {excerpt(str(exc), 200)}"))
                continue
            found, feed_notes, fatal = parse_feed(data, feed, fetched_at, content_type)
            notes.extend(feed_notes)
            if fatal:
                # NOTE: raw/ keeps only what parsed as a feed: a rejected file (/etc/shadow ...) is not copied.
                failures.append(NewsFailure(feed, fatal))
                continue
            payloads.append(NewsPayload(f"feed-{i:03d}.xml", "feed", data, {"feed": feed, "content_type": content_type}))
            if not found:
                notes.append(f"{feed}: the feed has no items")
            records.extend(found)
        return NewsBatch(self.name, request, items_frame(records), fetched_at, payloads, failures, notes)


def parse_raw_payload(folder: Path, payload: dict, fetched_at: datetime) -> tuple[list[dict], list[str], str | None]:
    """One stored payload → (item records, notes, problem)."""
    path = folder / payload["name"]
    data = path.read_bytes()
    kind = payload.get("kind")
    if kind == "yahoo_news_json":
        return parse_yahoo_news(data, payload.get("symbol") or Path(payload["name"]).stem, fetched_at), [], None
    if kind == "feed":
        return parse_feed(data, payload.get("feed") or str(path), fetched_at, payload.get("content_type"))
    if kind == "news_items_json":
        return json.loads(data), [], None
    return [], [], f"{path}: unknown payload kind {kind!r}"


@dataclass(frozen=True)
class ReplayNewsSource:
    data_dir: Path
    name: str = "replay"

    def fetch_news(self, request: NewsRequest) -> NewsBatch:
        records: list[dict] = []
        failures: list[NewsFailure] = []
        notes: list[str] = []
        manifests = news_manifests(self.data_dir)
        if not manifests:
            notes.append(f"raw/news in {self.data_dir} holds no news fetch")
        for manifest in manifests:
            fetched_at = fetched_at_of(manifest)
            folder = Path(manifest["_path"])
            for payload in manifest["payloads"]:
                try:
                    found, payload_notes, problem = parse_raw_payload(folder, payload, fetched_at)
                except (OSError, ValueError) as exc:
                    failures.append(NewsFailure(str(folder / payload["name"]), f"unreadable raw payload: {exc}"))
                    continue
                notes.extend(payload_notes)
                if problem:
                    failures.append(NewsFailure(str(folder / payload["name"]), problem))
                records.extend(found)
        items = items_frame(records) if records else empty_items()
        if len(items) and (request.start or request.end):
            when = items["published_at"].where(items["published_at"].notna(), items["fetched_at"])
            keep = pd.Series(True, index=items.index)
            if request.start:
                keep &= when >= pd.Timestamp(request.start - timedelta(days=1), tz=UTC)
            if request.end:
                keep &= when < pd.Timestamp(request.end + timedelta(days=2), tz=UTC)
            items = items[keep].reset_index(drop=True)
        if request.symbols and len(items):
            wanted = set(request.symbols)
            # Per-symbol payloads of other symbols go; feed items are filtered later by linking.
            keep = [not rel or bool(set(rel) & wanted) or src != "yahoo" for rel, src in zip(items["related"], items["source"])]
            items = items[keep].reset_index(drop=True)
        return NewsBatch(self.name, request, items, datetime.now(UTC), [], failures, notes)


def make_news_source(name: str, universe: Universe, data_dir: Path, seed: int | None = None, shock_date: date | None = None) -> NewsSource | None:
    """The news source for `--news-source NAME`; None for `none`. Clear errors for bad setups."""
    if name == "none":
        return None
    if name == "simulated":
        from aimoves.news.simulated import SimulatedNewsSource
        from aimoves.sources.simulated import DEFAULT_SEED, DEFAULT_SHOCK

        return SimulatedNewsSource(universe, DEFAULT_SEED if seed is None else seed, shock_date or DEFAULT_SHOCK)
    if name == "rss":
        if not universe.feeds:
            raise AimovesError("--news-source rss: the universe lists no feeds; add `feeds: [URL or path, ...]` to the universe file")
        return RssNewsSource(tuple(universe.feeds))
    if name == "replay":
        from aimoves.catalog import as_catalog

        catalog = as_catalog(data_dir)
        if not catalog.fs.isdir(catalog.raw_dir("news")):
            raise AimovesError(f"--news-source replay: {catalog.raw_dir('news')} does not exist; no news was fetched into this data dir yet")
        return ReplayNewsSource(catalog)
    if name == "yahoo":
        from aimoves.sources.yahoo import YahooNewsSource

        return YahooNewsSource()
    raise AimovesError(f"unknown news source {name!r}; choose one of {', '.join(NEWS_SOURCES)}")


def news_request(universe: Universe, start: date | None = None, end: date | None = None, markets: tuple[str, ...] | list[str] | None = None) -> NewsRequest:
    """A request for the universe's stocks (benchmarks excluded) in `markets` (default: all)."""
    stocks = universe.stocks_in(tuple(markets)) if markets else universe.stocks
    return NewsRequest(tuple(s.symbol for s in stocks), start, end)
