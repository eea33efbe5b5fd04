"""The one owner of a data location: every path, every read and every write go through a Catalog.

    catalog = Catalog("data")                   # or any location fsspec understands
    catalog.read_frame(PRICES, "2025-01-02", "2025-01-31", market=["US"])
    catalog.write(frame, PRICES)                # store.upsert: atomic per partition, idempotent by key

Layout (relative to the location; it is the layout every reader already knows):

* `<dataset>/<key>=<value>/.../part-0.parquet`: the curated datasets and `quarantine/<dataset>/`.
  Only files of that pattern are read; anything else in a dataset folder is a stray
  (`strays()`), reported by `aimoves status`, never read.
* `raw/<dataset>/<source>/<YYYY-MM-DD>/<fetch_id>/`: the append-only replay log.
* `_staging/` (files in the making), `_locks/` (writer locks), `_runs/<run_id>.json` (run
  records), `_restatements/<dataset>/<run_id>-<market>.parquet`, `_gx/` (Data Docs).

The seams for object storage are three methods: `fs` (an fsspec filesystem; every listing and read
goes through it), `publish` (one whole file made visible at once: here staged, fsynced and renamed)
and `lock` (writers of one dataset serialized: here an OS file lock a killed holder releases at
once). An object store replaces `publish` by one PUT and `lock` by a conditional write or a lock
object; nothing else changes.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

import fsspec
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from aimoves.schema import DatasetSpec

if TYPE_CHECKING:
    import pandas as pd

    from aimoves.store import WriteResult

PART_FILE = "part-0.parquet"
MANIFEST = "manifest.json"


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def partition_path(spec: DatasetSpec, values: tuple) -> str:
    return "/".join(f"{k}={v}" for k, v in zip(spec.partition_by, values))


class Catalog:
    """A data location (a local folder or an fsspec URL) and everything under it."""

    def __new__(cls, location: str | os.PathLike) -> Catalog:
        """An `s3://bucket/prefix` location gets the object-store Catalog (aimoves.s3catalog): same layout, its own seams."""
        if cls is Catalog and str(location).startswith("s3://"):
            from aimoves.s3catalog import S3Catalog

            return super().__new__(S3Catalog)
        return super().__new__(cls)

    def __init__(self, location: str | os.PathLike) -> None:
        self.location = str(location)
        self.fs: fsspec.AbstractFileSystem
        self.fs, root = fsspec.core.url_to_fs(self.location)
        self.root: str = root.rstrip("/") or "/"

    def __str__(self) -> str:
        return self.location

    def __repr__(self) -> str:
        return f"Catalog({self.location!r})"

    @property
    def is_local(self) -> bool:
        return "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    # -- paths ------------------------------------------------------------------------------------
    def dataset_dir(self, spec: DatasetSpec | str) -> str:
        return self.path(spec if isinstance(spec, str) else spec.name)

    def partition_file(self, spec: DatasetSpec, values: tuple) -> str:
        return self.path(spec.name, partition_path(spec, values), PART_FILE)

    def raw_dir(self, dataset: str) -> str:
        return self.path("raw", dataset)

    def raw_fetch_dir(self, dataset: str, source: str, day: str, fetch_id: str) -> str:
        return self.path("raw", dataset, source, day, fetch_id)

    def staging_dir(self) -> str:
        return self.path("_staging")

    def staging_path(self, name: str) -> str:
        return self.path("_staging", name)

    def run_record_path(self, run_id: str) -> str:
        return self.path("_runs", f"{run_id}.json")

    def restatement_path(self, dataset: str, run_id: str, market: str) -> str:
        return self.path("_restatements", dataset, f"{run_id}-{market}.parquet")

    def gx_dir(self) -> str:
        return self.path("_gx")

    def data_docs_built(self) -> None:
        """Called after Data Docs were built under `gx_dir()` (an object store uploads the site then)."""

    def data_docs_index(self) -> str:
        return self.path("_gx", "gx", "uncommitted", "data_docs", "local_site", "index.html")

    def lock_path(self, dataset: str) -> str:
        return self.path("_locks", f"{dataset.replace('/', '__')}.lock")

    # -- what is there ----------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.fs.isdir(self.root)

    def has_dataset(self, spec: DatasetSpec | str) -> bool:
        return self.fs.isdir(self.dataset_dir(spec))

    def dataset_files(self, spec: DatasetSpec) -> list[str]:
        """The files the store wrote for `spec` (its naming pattern only), sorted."""
        root = self.dataset_dir(spec)
        if not self.fs.isdir(root):
            return []
        pattern = _file_pattern(spec)
        return sorted(p for p in self.fs.find(root) if pattern.fullmatch(p[len(root) + 1:]))

    def strays(self, specs: list[DatasetSpec]) -> list[str]:
        """Files inside the datasets' folders that the store did not write (never read)."""
        out = []
        for spec in specs:
            root = self.dataset_dir(spec)
            if not self.fs.isdir(root):
                continue
            pattern = _file_pattern(spec)
            nested = [s.name for s in specs if s.name.startswith(f"{spec.name}/")]
            for p in self.fs.find(root):
                rel = p[len(root) + 1:]
                if not pattern.fullmatch(rel) and not any(p.startswith(self.dataset_dir(n) + "/") for n in nested):
                    out.append(p)
        return sorted(out)

    def run_records(self) -> list[str]:
        """Paths of the run records, oldest first."""
        return sorted(self.fs.glob(self.path("_runs", "*.json")))

    def raw_manifests(self, dataset: str) -> list[str]:
        return self.fs.glob(self.path("raw", dataset, "*", "*", "*", MANIFEST))

    def raw_payload(self, manifest: dict, name: str) -> str:
        """Where a payload of a stored fetch lives (`manifest` as raw.list_manifests returns it)."""
        return f"{manifest['_path']}/{name}"

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open(path, "rb") as f:
            return f.read()

    def read_text(self, path: str) -> str:
        return self.read_bytes(path).decode()

    def count_rows(self, spec: DatasetSpec) -> int:
        total = 0
        for path in self.dataset_files(spec):
            with self.fs.open(path, "rb") as f:
                total += pq.ParquetFile(f).metadata.num_rows
        return total

    # -- reading ----------------------------------------------------------------------------------
    def dataset(self, spec: DatasetSpec) -> ds.Dataset | None:
        """The dataset over the store's own files (explicit schema: a column added later reads as null); None if none."""
        files = self.dataset_files(spec)
        if not files:
            return None
        return ds.dataset(
            files, schema=spec.schema, format="parquet", filesystem=self.fs, partition_base_dir=self.dataset_dir(spec),
            partitioning=ds.partitioning(spec.partitioning_schema, flavor="hive"),
        )

    def read_table(self, spec: DatasetSpec, where: ds.Expression | None = None, columns: list[str] | None = None) -> pa.Table:
        """Rows of a dataset as Arrow (filters pushed down); an empty table of the schema when nothing is stored."""
        dataset = self.dataset(spec)
        if dataset is None:
            empty = spec.schema.empty_table()
            return empty.select(columns) if columns else empty
        return dataset.to_table(filter=where, columns=columns)

    def read_partition(self, spec: DatasetSpec, values: tuple, columns: list[str] | None = None) -> pa.Table | None:
        """One partition file (only `columns` when given); None when it is not stored."""
        path = self.partition_file(spec, values)
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "rb") as f:
            return pq.read_table(f, columns=columns)

    def read_frame(self, spec: DatasetSpec, start: object = None, end: object = None, columns: list[str] | None = None,
                   **equals: list[str] | None) -> pd.DataFrame:
        from aimoves.store import read_frame

        return read_frame(spec, self, start, end, columns, **equals)

    # -- writing ----------------------------------------------------------------------------------
    def write(self, frame: pd.DataFrame, spec: DatasetSpec) -> WriteResult:
        """Upsert `frame` into the dataset (aimoves.store's atomic, idempotent write)."""
        from aimoves.store import upsert

        return upsert(frame, spec, self)

    def delete_keys(self, keys: pd.DataFrame, spec: DatasetSpec) -> int:
        from aimoves.store import delete_keys

        return delete_keys(keys, spec, self)

    def publish(self, target: str, write: Callable[[IO[bytes]], None]) -> None:
        """Make one whole file visible at `target`: readers see the old one or the new one, never half."""
        staging = self.staging_dir()
        os.makedirs(staging, exist_ok=True)
        tmp = self.staging_path(f"{uuid.uuid4().hex}{Path(target).suffix}")
        try:
            with open(tmp, "wb") as sink:
                write(sink)
                sink.flush()
                os.fsync(sink.fileno())
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(tmp, target)
            fsync_dir(os.path.dirname(target))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def publish_folder(self, staging: str, target: str) -> None:
        """Move a complete folder assembled under `_staging/` to `target` in one rename."""
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(staging, target)
        fsync_dir(os.path.dirname(target))

    def new_staging_folder(self, name: str) -> str:
        path = self.staging_path(name)
        os.makedirs(path, exist_ok=False)
        return path

    @contextmanager
    def lock(self, dataset: str) -> Iterator[None]:
        """Exclusive lock for writers of `dataset`; released when the holder dies."""
        path = self.lock_path(dataset)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def write_json(self, path: str, data: dict | str) -> str:
        text = data if isinstance(data, str) else json.dumps(data, indent=2, default=str)
        self.publish(path, lambda sink: sink.write(text.encode()))
        return path

    def clean_staging(self, older_than_hours: float = 6.0) -> int:
        """Remove what killed runs left under `_staging/` (never visible to readers).

        Only entries older than `older_than_hours` go, so a concurrent run's files in progress stay.
        """
        staging = Path(self.staging_dir())
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


def _file_pattern(spec: DatasetSpec) -> re.Pattern[str]:
    """`<key>=<value>/.../part-0.parquet`, each value of its key's type (a `year=2025 (1)` folder is not ours)."""
    values = {k: r"-?\d+" if pa.types.is_integer(spec.schema.field(k).type) else r"[^/]+" for k in spec.partition_by}
    return re.compile("".join(f"{re.escape(k)}={values[k]}/" for k in spec.partition_by) + re.escape(PART_FILE))


def as_catalog(location: Catalog | str | os.PathLike) -> Catalog:
    """A Catalog for `location` (itself when it is one)."""
    return location if isinstance(location, Catalog) else Catalog(str(location))
