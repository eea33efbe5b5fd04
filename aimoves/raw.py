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
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from aimoves.sources.base import PriceBatch

MANIFEST = "manifest.json"
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


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_raw(batch: PriceBatch, data_dir: Path, dataset: str = "prices", fetched_at: datetime | None = None) -> RawRecord:
    """Store one fetch append-only; returns where it went."""
    fetched_at = fetched_at or datetime.now(UTC)
    fetch_id = f"{fetched_at:%Y%m%dT%H%M%S%f}Z-{batch.request.market}-{uuid.uuid4().hex[:8]}"
    staging = data_dir / "_staging" / f"raw-{fetch_id}"
    staging.mkdir(parents=True, exist_ok=False)
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
    return publish_fetch(staging, manifest, data_dir)


def publish_fetch(staging: Path, manifest: dict, data_dir: Path) -> RawRecord:
    """Write the manifest into a complete staging folder and move it under raw/ in one rename."""
    _write_bytes(staging / MANIFEST, json.dumps(manifest, indent=2).encode())
    fetched_at = datetime.fromisoformat(manifest["fetched_at"])
    final = data_dir / "raw" / manifest["dataset"] / manifest["source"] / f"{fetched_at:%Y-%m-%d}" / manifest["fetch_id"]
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, final)
    fsync_dir(final.parent)
    return RawRecord(manifest["fetch_id"], final, fetched_at)


def list_manifests(data_dir: Path, dataset: str = "prices") -> list[dict]:
    """Every complete fetch of `dataset`, oldest first, each manifest with its folder as `_path`."""
    root = data_dir / "raw" / dataset
    out = []
    for path in root.glob(f"*/*/*/{MANIFEST}"):
        manifest = json.loads(path.read_text())
        manifest["_path"] = str(path.parent)
        out.append(manifest)
    out.sort(key=lambda m: (m["fetched_at"], m["fetch_id"]))
    return out


def clean_staging(data_dir: Path, older_than_hours: float = 6.0) -> int:
    """Remove what killed runs left under `_staging/` (never visible to readers).

    Only entries older than `older_than_hours` go, so a concurrent run's files in progress stay.
    """
    staging = data_dir / "_staging"
    if not staging.is_dir():
        return 0
    cutoff = time.time() - older_than_hours * 3600
    removed = 0
    for child in staging.iterdir():
        try:
            if child.stat().st_mtime >= cutoff:
                continue
            shutil.rmtree(child) if child.is_dir() else child.unlink()
            removed += 1
        except FileNotFoundError:
            continue
    return removed
