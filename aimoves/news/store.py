"""Deduplicate, validate and store news; read it back.

Deduplication (`merge_news`) uses exact keys, never fuzzy matching. Two items are the same story
when they share

* the `id`, or
* the canonical URL (`url`), or
* the `title_key` (normalized title) and were published within `TITLE_MATCH_WINDOW` of each
  other (so a recurring headline such as a daily market wrap is not one story forever), unless
  both have URLs on the same host (one site publishing the same templated headline for two
  stories); the same title on two sites, or with and without a link, is syndication: one story.

Matches are transitive (one item mentioning three stocks, fetched for each of them from Yahoo
and seen again in an RSS feed, is one row with the three symbols). A story already stored keeps
its stored `id`, `first_seen_at`, `published_at` (and so its partition), title and URL; it gains
the union of the symbols and sectors and any publisher or summary it lacked. Yahoo keeps no news
history: this archive is the history, so `first_seen_at` never changes once stored.

`write_news` runs the whole store step: in-batch dedup → GX suite `news` (critical → quarantine
with the reason, warning → `dq_flags`) → merge with the stored items of the months concerned →
atomic upsert into `news/year=/month=/`.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from aimoves.catalog import Catalog, as_catalog
from aimoves.news.normalize import CHECK_COLUMNS, NEWS_COLUMNS, empty_news
from aimoves.news.sentiment import score_texts
from aimoves.schema import NEWS, QUARANTINE_NEWS, DatasetSpec
from aimoves.store import upsert

log = logging.getLogger(__name__)

TITLE_MATCH_WINDOW = pd.Timedelta(days=3)
SOURCE_ORDER = {"yahoo": 0, "rss": 1, "simulated": 2}


# Every column of a quarantine dataset is nullable (schema.quarantine_of): an item is
# quarantined precisely when its title or publication time is missing.
QUARANTINE_NEWS_ROWS = QUARANTINE_NEWS


# -- dedup ----------------------------------------------------------------------------------------
class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _as_list(value: object) -> list:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if hasattr(value, "tolist"):
        return list(value.tolist())
    return list(value)  # type: ignore[call-overload]


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or value is pd.NaT or value == ""


def _prepare(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reset_index(drop=True).copy()
    for column in ("published_at", "first_seen_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce").astype("datetime64[us, UTC]")
    for column in ("symbols", "sectors", "dq_flags"):
        if column not in frame:
            frame[column] = [[] for _ in range(len(frame))]
        frame[column] = [sorted(set(_as_list(v))) for v in frame[column]]
    return frame


def _components(frame: pd.DataFrame) -> list[list[int]]:
    """Groups of row positions that are the same story (see the module docstring)."""
    n = len(frame)
    uf = _UnionFind(n)
    for column in ("id", "url"):
        first: dict[object, int] = {}
        for i, value in enumerate(frame[column]):
            if _missing(value):
                continue
            if value in first:
                uf.union(first[value], i)
            else:
                first[value] = i
    keyed = frame[(frame["title_key"].fillna("") != "") & frame["published_at"].notna()]
    keyed = keyed[keyed.duplicated("title_key", keep=False)]
    hosts = [_host(u) for u in frame["url"]]
    for _, group in keyed.groupby("title_key", sort=False):
        if len(group) < 2:
            continue
        positions = group.index.to_list()
        times = group["published_at"].to_list()
        for x in range(len(positions)):
            for y in range(x + 1, len(positions)):
                a, b = positions[x], positions[y]
                if abs(times[y] - times[x]) > TITLE_MATCH_WINDOW:
                    continue
                if hosts[a] is not None and hosts[a] == hosts[b]:
                    continue  # one site, two URLs, one title: two stories (a templated headline)
                uf.union(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(uf.find(i), []).append(i)
    return list(groups.values())


def _host(url: object) -> str | None:
    if _missing(url):
        return None
    return urlsplit(str(url)).hostname


_LATEST = pd.Timestamp.max.tz_localize(UTC)


def _representative(records: list[dict], rows: list[int]) -> int:
    def rank(i: int) -> tuple:
        row = records[i]
        return (
            _LATEST if pd.isna(row["first_seen_at"]) else row["first_seen_at"],
            _missing(row["url"]),
            _LATEST if pd.isna(row["published_at"]) else row["published_at"],
            SOURCE_ORDER.get(row["source"], 9),
            str(row["id"]),
        )

    return min(rows, key=rank)


def merge_news(stored: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """The rows to upsert so that `new` joins `stored` without duplicates.

    Returns one row per story of `new` (duplicates inside `new` collapsed): a story already in
    `stored` comes back as the stored row (its id, first_seen_at, published_at, title, url kept)
    with symbols/sectors/dq_flags unioned and missing publisher/summary filled, and only when
    that changes it; a new story comes back as its representative copy (earliest first_seen_at,
    then one with a URL, earliest published_at, yahoo before rss) with the union of its copies'
    symbols, sectors and flags and its earliest first_seen_at. Columns: those of `new` (news
    columns plus any check columns it carries); year/month follow published_at.
    """
    columns = list(new.columns)
    if new.empty:
        return new.iloc[0:0].copy()
    stored = stored if stored is not None and len(stored) else None
    new = _prepare(new)
    n_stored = 0
    if stored is not None:
        stored = _prepare(stored)
        for column in columns:
            if column not in stored:
                stored[column] = None
        n_stored = len(stored)
        both = pd.concat([stored[columns], new[columns]], ignore_index=True)
    else:
        both = new[columns].copy()
    records = both.to_dict("records")
    out_rows = []
    rescore = []
    for rows in _components(both):
        new_rows = [i for i in rows if i >= n_stored]
        if not new_rows:
            continue
        old_rows = [i for i in rows if i < n_stored]
        if not old_rows and len(new_rows) == 1:
            out_rows.append(records[new_rows[0]])  # a new story seen once: as it is
            rescore.append(False)
            continue
        if old_rows:
            # The stored row that was seen first carries the story; other stored rows that the
            # new copies happen to bridge stay as they are (a stored row is never deleted here).
            base = min(old_rows, key=lambda i: (_LATEST if pd.isna(records[i]["first_seen_at"]) else records[i]["first_seen_at"], str(records[i]["id"])))
            members = [base, *new_rows]
        else:
            base = _representative(records, new_rows)
            members = new_rows
        row = dict(records[base])
        for column in ("symbols", "sectors", "dq_flags"):
            row[column] = sorted({v for i in members for v in _as_list(records[i][column])})
        filled_text = False
        for column in ("publisher", "summary", "url"):
            if column == "url" and old_rows:
                continue  # the stored id derives from the stored URL (or title): keep them together
            if _missing(row[column]):
                donor = next((records[i][column] for i in members if not _missing(records[i][column])), None)
                if donor is not None:
                    row[column] = donor
                    filled_text |= column == "summary"
        if not old_rows:
            seen = [records[i]["first_seen_at"] for i in members if not pd.isna(records[i]["first_seen_at"])]
            row["first_seen_at"] = min(seen) if seen else row["first_seen_at"]
        if old_rows and _same(records[base], row):
            continue  # nothing new about a stored story
        rescore.append(filled_text)
        out_rows.append(row)
    if not out_rows:
        return new.iloc[0:0][columns].copy()
    out = pd.DataFrame(out_rows, columns=columns).reset_index(drop=True)
    if any(rescore):
        mask = np.array(rescore)
        texts = [f"{t} {s}" if not _missing(s) else t for t, s in zip(out.loc[mask, "title"], out.loc[mask, "summary"])]
        out.loc[mask, "sentiment"] = score_texts(texts)
    for column in ("published_at", "first_seen_at"):
        out[column] = pd.to_datetime(out[column], utc=True).astype("datetime64[us, UTC]")
    when = out["published_at"].where(out["published_at"].notna(), out["first_seen_at"])
    out["year"] = when.dt.year.astype("Int64")
    out["month"] = when.dt.month.astype("Int64")
    return out


def _same(a: dict, b: dict) -> bool:
    for column in a:
        x, y = a[column], b[column]
        if isinstance(x, (list, tuple, np.ndarray)) or isinstance(y, (list, tuple, np.ndarray)):
            if _as_list(x) != _as_list(y):
                return False
        elif not ((_missing(x) and _missing(y)) or x == y):
            return False
    return True


# -- validation -----------------------------------------------------------------------------------
def validate_news(frame: pd.DataFrame, now: datetime, max_future_skew_seconds: float | None = None):
    """Run the GX suite `news` on normalized (deduplicated) rows; returns a ValidationResult.

    `frame` carries the news columns and the check columns of `normalize_news`.
    """
    from aimoves.expectations import default_parameters
    from aimoves.validate import ValidationResult, split_by_suite

    if frame.empty:
        empty = frame.assign(dq_flags=[]) if len(frame.columns) else empty_news(True)
        return ValidationResult(empty, empty.assign(expectation=[], reason=[]), batch_error="no news items to validate")
    params = default_parameters("news")
    if max_future_skew_seconds is not None:
        params["max_future_skew_seconds"] = max_future_skew_seconds
    work = frame.reset_index(drop=True).copy()
    for column in CHECK_COLUMNS:
        if column not in work:
            work[column] = False if column == "feed_encoding_fallback" else None
    now_ts = pd.Timestamp(now).tz_convert(UTC) if pd.Timestamp(now).tzinfo else pd.Timestamp(now, tz=UTC)
    published = pd.to_datetime(work["published_at"], utc=True)
    work["published_ahead_seconds"] = (published - now_ts).dt.total_seconds()
    work["published_year"] = published.dt.year
    base = [c for c in work.columns if c not in ("published_ahead_seconds", "published_year")]
    return split_by_suite("news", work, base, params, {"now": now_ts.isoformat(), **params})


# -- reading --------------------------------------------------------------------------------------
def _months(start: pd.Timestamp, end: pd.Timestamp) -> list[tuple[int, int]]:
    months = pd.period_range(start.tz_convert(None).to_period("M"), end.tz_convert(None).to_period("M"), freq="M")
    return [(p.year, p.month) for p in months]


def _utc_bound(value: object, end: bool = False) -> pd.Timestamp | None:
    if value is None:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        ts = pd.Timestamp(value, tz=UTC)
        return ts + pd.Timedelta(days=1) if end else ts
    ts = pd.Timestamp(value)
    return ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)


def load_news(data_dir: Catalog | Path | str, start: object = None, end: object = None, spec: DatasetSpec = NEWS) -> pd.DataFrame:
    """Stored news with `start <= published_at < end` (UTC).

    A `date` bound means the whole UTC day (`end` inclusive: up to the next midnight); a datetime
    or Timestamp is taken as is (naive = UTC). Only the year/month partitions concerned are read.
    `published_at` and `first_seen_at` come back as tz-aware UTC; symbols, sectors, dq_flags as
    lists. Empty frame with the news columns when nothing is stored.
    """
    catalog = as_catalog(data_dir)
    lo, hi = _utc_bound(start), _utc_bound(end, end=True)
    columns = [f.name for f in spec.schema]
    if not catalog.dataset_files(spec):
        return empty_news() if spec is NEWS else pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    expr = None
    if lo is not None or hi is not None:
        first = (lo or pd.Timestamp("1970-01-01", tz=UTC))
        last = (hi or pd.Timestamp("2200-01-01", tz=UTC)) - pd.Timedelta(microseconds=1)
        if last >= first:
            # NOTE: filter on the partition keys first (prunes files), then on published_at.
            ym = ds.field("year").cast(pa.int32()) * 100 + ds.field("month").cast(pa.int32())
            expr = (ym >= first.year * 100 + first.month) & (ym <= last.year * 100 + last.month)
        else:
            return empty_news() if spec is NEWS else pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
        if lo is not None:
            expr &= ds.field("published_at") >= pa.scalar(lo.to_pydatetime(), pa.timestamp("us", tz="UTC"))
        if hi is not None:
            expr &= ds.field("published_at") < pa.scalar(hi.to_pydatetime(), pa.timestamp("us", tz="UTC"))
    table = catalog.read_table(spec, expr)
    frame = table.to_pandas()
    for column in ("symbols", "sectors", "dq_flags"):
        if column in frame:
            frame[column] = [_as_list(v) for v in frame[column]]
    for key in spec.partition_by:
        if key in frame and isinstance(frame[key].dtype, pd.CategoricalDtype):
            frame[key] = frame[key].astype(frame[key].cat.categories.dtype)
    sort = [c for c in ("published_at", "id") if c in frame]
    return frame.sort_values(sort, kind="stable").reset_index(drop=True) if sort else frame


# -- writing --------------------------------------------------------------------------------------
def quarantine_rows(rows: pd.DataFrame, run_id: str, now: datetime) -> pd.DataFrame:
    """Quarantined items with the QUARANTINE_NEWS columns (stamped; year/month from published_at,
    or first_seen_at when the item has no usable date)."""
    out = rows.copy()
    out["quarantined_at"] = pd.Timestamp(now).tz_convert(UTC) if pd.Timestamp(now).tzinfo else pd.Timestamp(now, tz=UTC)
    out["run_id"] = run_id
    published = pd.to_datetime(out["published_at"], utc=True)
    when = published.where(published.notna(), pd.to_datetime(out["first_seen_at"], utc=True))
    when = when.fillna(out["quarantined_at"])
    out["year"] = when.dt.year.astype("int64")
    out["month"] = when.dt.month.astype("int64")
    out["title"] = out["title"].fillna("")
    for column in ("symbols", "sectors", "dq_flags"):
        out[column] = [_as_list(v) for v in out[column]] if column in out else [[] for _ in range(len(out))]
    return out[[f.name for f in QUARANTINE_NEWS_ROWS.schema]]


def write_news(frame: pd.DataFrame, data_dir: Catalog | Path | str, now: datetime, run_id: str | None = None) -> dict:
    """Deduplicate, validate, merge with what is stored, and upsert. Returns a summary dict:

    `items_in`, `duplicates_in_batch`, `passed`, `flagged`, `quarantined`, `new`, `updated`
    (stored stories that gained symbols or text), `rows_written`, `partitions_written`,
    `failed_expectations` ({name: rows}), `quarantine_reasons` (up to 20 strings), `batch_error`.
    """
    data_dir = as_catalog(data_dir)
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    run_id = run_id or f"news-{now:%Y%m%dT%H%M%S}Z"
    summary: dict = {
        "items_in": int(len(frame)), "duplicates_in_batch": 0, "passed": 0, "flagged": 0, "quarantined": 0,
        "new": 0, "updated": 0, "rows_written": 0, "partitions_written": [], "quarantine_partitions_written": [],
        "failed_expectations": {}, "quarantine_reasons": [], "batch_error": None,
    }
    if frame is None or frame.empty:
        summary["batch_error"] = "no news items to write"
        return summary
    deduped = merge_news(None, frame)
    summary["duplicates_in_batch"] = int(len(frame) - len(deduped))
    validation = validate_news(deduped, now)
    summary["suite_runs"] = validation.suite_runs  # GX results as values, for Data Docs
    summary["failed_expectations"] = dict(validation.failed_expectations)
    summary["flagged"] = int(validation.flagged)
    if len(validation.quarantined):
        q = quarantine_rows(validation.quarantined, run_id, now)
        written = upsert(q, QUARANTINE_NEWS_ROWS, data_dir)
        summary["quarantined"] = int(len(q))
        summary["quarantine_partitions_written"] = written.partitions_written
        summary["quarantine_reasons"] = [f"{r.title!r}: {r.reason}" for r in q.head(20).itertuples()]
    passed = validation.passed
    summary["passed"] = int(len(passed))
    if passed.empty:
        return summary
    passed = passed[[c for c in NEWS_COLUMNS if c in passed]]
    lo = passed["published_at"].min() - TITLE_MATCH_WINDOW
    hi = passed["published_at"].max() + TITLE_MATCH_WINDOW
    stored = load_news(data_dir, pd.Timestamp(lo.year, lo.month, 1, tz=UTC), (pd.Timestamp(hi.year, hi.month, 1, tz=UTC) + pd.offsets.MonthBegin(1)))
    rows = merge_news(stored, passed)
    stored_ids = set(stored["id"]) if len(stored) else set()
    summary["updated"] = int(rows["id"].isin(stored_ids).sum())
    summary["new"] = int(len(rows) - summary["updated"])
    if rows.empty:
        return summary
    rows = rows[NEWS_COLUMNS].copy()
    rows["sentiment"] = rows["sentiment"].astype("float64")
    result = upsert(rows, NEWS, data_dir)
    summary["rows_written"] = int(result.rows_changed)
    summary["partitions_written"] = result.partitions_written
    return summary


def news_window(start: date, end: date, before_days: int = 7) -> tuple[date, date]:
    """The publication window (UTC days) to load for joining news to sessions start..end: news
    published up to a week before the first session can belong to it (a long holiday), and news
    on `end` (UTC) can belong to end's session in the Americas."""
    return start - timedelta(days=before_days), end + timedelta(days=1)
