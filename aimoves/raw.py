"""The append-only replay log under `<data-dir>/raw/`.

Each fetch is one folder, `raw/prices/<source>/<YYYY-MM-DD>/<fetch_id>/`, holding the payloads as
the source returned them (CSV bytes verbatim, library frames as Parquet) and `manifest.json`:
source, request, fetch time, failures and library versions. A folder is assembled under
`_staging/` and published with one `os.replace`, so it is either complete or absent. Nothing
under `raw/` is ever rewritten.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from aimoves.catalog import MANIFEST, Catalog, as_catalog, fsync_dir
from aimoves.sources.base import PriceBatch

__all__ = ["MANIFEST", "RawRecord", "clean_staging", "fsync_dir", "library_versions", "list_manifests", "publish_fetch", "write_raw"]
_LIBRARIES = ("aimoves", "yfinance", "pandas", "pyarrow", "exchange-calendars", "great-expectations", "prefect")


def library_versions() -> dict[str, str]:
    out = {}
    for name in _LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


@dataclass(frozen=True)
class RawRecord:
    fetch_id: str
    path: Path
    fetched_at: datetime


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_raw(batch: PriceBatch, data_dir: Catalog | str | os.PathLike, dataset: str = "prices", fetched_at: datetime | None = None) -> RawRecord:
    """Store one fetch append-only; returns where it went."""
    catalog = as_catalog(data_dir)
    fetched_at = fetched_at or datetime.now(UTC)
    fetch_id = f"{fetched_at:%Y%m%dT%H%M%S%f}Z-{batch.request.market}-{uuid.uuid4().hex[:8]}"
    staging = Path(catalog.new_staging_folder(f"raw-{fetch_id}"))
    payload_index = []
    for payload in batch.payloads:
        target = staging / payload.name
        if payload.kind == "table":
            assert isinstance(payload.data, pa.Table)
            pq.write_table(payload.data, target)
            rows = payload.data.num_rows
        else:
            assert isinstance(payload.data, bytes)
            _write_bytes(target, payload.data)
            rows = None
        payload_index.append({"name": payload.name, "kind": payload.kind, "rows": rows})
    manifest = {
        "fetch_id": fetch_id,
        "dataset": dataset,
        "source": batch.source,
        "request": batch.request.as_dict(),
        "fetched_at": fetched_at.isoformat(),
        "payloads": payload_index,
        "failures": [{"symbol": f.symbol, "reason": f.reason} for f in batch.failures],
        "notes": batch.notes,
        "versions": library_versions(),
    }
    return publish_fetch(staging, manifest, catalog)


def publish_fetch(staging: Path, manifest: dict, data_dir: Catalog | str | os.PathLike) -> RawRecord:
    """Write the manifest into a complete staging folder and move it under raw/ in one rename."""
    catalog = as_catalog(data_dir)
    _write_bytes(staging / MANIFEST, json.dumps(manifest, indent=2).encode())
    fetched_at = datetime.fromisoformat(manifest["fetched_at"])
    final = catalog.raw_fetch_dir(manifest["dataset"], manifest["source"], f"{fetched_at:%Y-%m-%d}", manifest["fetch_id"])
    catalog.publish_folder(str(staging), final)
    return RawRecord(manifest["fetch_id"], Path(final), fetched_at)


def list_manifests(data_dir: Catalog | str | os.PathLike, dataset: str = "prices") -> list[dict]:
    """Every complete fetch of `dataset`, oldest first, each manifest with its folder as `_path`."""
    catalog = as_catalog(data_dir)
    out = []
    for path in catalog.raw_manifests(dataset):
        manifest = json.loads(catalog.read_text(path))
        manifest["_path"] = path.rsplit("/", 1)[0]
        out.append(manifest)
    out.sort(key=lambda m: (m["fetched_at"], m["fetch_id"]))
    return out


def clean_staging(data_dir: Catalog | str | os.PathLike, older_than_hours: float = 6.0) -> int:
    """Remove what killed runs left under `_staging/` (see Catalog.clean_staging)."""
    return as_catalog(data_dir).clean_staging(older_than_hours)
