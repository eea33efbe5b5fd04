"""The Catalog on object storage: `s3://bucket/prefix`, the same layout as a local data dir.

Only the Catalog's seams change (see aimoves/catalog.py):

* `fs`: pyarrow's S3 filesystem (`pyarrow.fs.S3FileSystem`, wrapped for fsspec), so every listing
  of the Catalog works unchanged;
* reads: each file is read whole, in one GET (`read_partition`, `read_table`, `read_bytes`, `count_rows`). A file
  read by ranged GETs (footer, then pages) while a writer replaces it would mix two versions
  ("Page was smaller than expected"); a local file replaced by rename cannot, as a reader holds the
  old one open;
* `publish`: one PUT of the whole object (aimoves/objectstore.py), so a reader sees the old object
  or the new one. A partition read under the lock remembers its ETag, and its publish is a
  conditional PUT on it (`If-Match`, or `If-None-Match: *` for a new one): if another writer got
  in anyway (our lock expired while we stalled), the write is refused and nothing is lost;
* `lock`: a lock object taken by a conditional write, with a 30 s lease refreshed while held; a
  holder killed with SIGKILL blocks the others for at most that.

A raw fetch is assembled in a local temporary folder and uploaded file by file, its manifest last:
a fetch is listed by its manifest, so a reader sees it whole or not at all. Data Docs are built
in a local GX project and uploaded under `_gx/` (`data_docs_built`). Nothing is ever staged in the bucket.

Credentials, endpoint and region come from the standard AWS settings (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION); the first Catalog of a location in a
process checks them once (`ObjectStore.check`) and fails with one line naming what to fix.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from fsspec.implementations.arrow import ArrowFSWrapper

from aimoves.catalog import MANIFEST, Catalog
from aimoves.objectstore import ObjectStore, ObjectStoreConflict, S3Url
from aimoves.schema import DatasetSpec

logger = logging.getLogger(__name__)

_checked: set[str] = set()  # locations whose settings were checked in this process
_local_gx: dict[str, str] = {}  # location -> this process's local GX project for its Data Docs
_uploaded: dict[Path, int] = {}  # Data Docs files uploaded: their mtime then
_checked_lock = threading.Lock()


class S3FileSystem(ArrowFSWrapper):
    """pyarrow's S3 filesystem as an fsspec filesystem whose protocol is `s3` (DuckDB's register_filesystem routes by it)."""

    protocol = "s3"  # type: ignore[assignment]
    root_marker = ""

    @classmethod
    def _strip_protocol(cls, path: str | list[str]) -> str | list[str]:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]  # type: ignore[misc]
        return path.removeprefix("s3://").rstrip("/")


def s3_filesystem() -> S3FileSystem:
    """pyarrow's S3 filesystem from the standard AWS settings, as fsspec."""
    from pyarrow import fs as pafs

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    kwargs: dict[str, object] = {"region": region, "connect_timeout": 5, "request_timeout": 60}
    if endpoint:
        parts = urlparse(endpoint)
        kwargs.update(endpoint_override=parts.netloc or parts.path, scheme=parts.scheme or "https")
    return S3FileSystem(pafs.S3FileSystem(**kwargs))


def check_location(location: str) -> None:
    """Credentials, endpoint, bucket and the right to write, checked once per process (one clear line if not)."""
    with _checked_lock:
        if location in _checked:
            return
        ObjectStore(location).check()
        _checked.add(location)


class S3Catalog(Catalog):
    """A Catalog whose location is `s3://bucket/prefix` (built by `Catalog(...)` for such a location)."""

    def __init__(self, location: str | os.PathLike) -> None:
        self.location = str(location).rstrip("/")
        url = S3Url.parse(self.location)
        check_location(self.location)
        self.store = ObjectStore(self.location)
        self.fs = s3_filesystem()
        self.root = f"{url.bucket}/{url.prefix}" if url.prefix else url.bucket
        self._etags: dict[str, str | None] = {}  # partition files read under the lock: their ETag (None: absent)

    @property
    def is_local(self) -> bool:
        return False

    def _key(self, path: str) -> str:
        """`path` (bucket/prefix/...) relative to the location, as ObjectStore takes it."""
        return path.removeprefix(self.root).lstrip("/")

    # -- the seams ---------------------------------------------------------------------------------
    def read_partition(self, spec: DatasetSpec, values: tuple, columns: list[str] | None = None) -> pa.Table | None:
        """The partition's file (one GET of the object), remembering its ETag so that its publish is conditional on it."""
        path = self.partition_file(spec, values)
        got = self.store.get(self._key(path))
        self._etags[path] = got[1] if got else None
        return pq.read_table(io.BytesIO(got[0]), columns=columns) if got else None

    def read_table(self, spec: DatasetSpec, where: ds.Expression | None = None, columns: list[str] | None = None) -> pa.Table:
        """Rows of a dataset as Arrow, each file the filter keeps read whole in one GET (one version of it, whatever writers do)."""
        dataset, parquet, tables = self.dataset(spec), ds.ParquetFileFormat(), []
        for listed in dataset.get_fragments(filter=where) if dataset is not None else ():
            got = self.store.get(self._key(listed.path))
            if got is not None:  # None: removed since it was listed
                fragment = parquet.make_fragment(pa.BufferReader(got[0]), partition_expression=listed.partition_expression)
                tables.append(fragment.to_table(schema=spec.schema, filter=where, columns=columns))
        if tables:
            return pa.concat_tables(tables)
        empty = spec.schema.empty_table()
        return empty.select(columns) if columns else empty

    def count_rows(self, spec: DatasetSpec) -> int:
        return sum(pq.ParquetFile(pa.BufferReader(self.read_bytes(path))).metadata.num_rows for path in self.dataset_files(spec))

    def read_bytes(self, path: str) -> bytes:
        got = self.store.get(self._key(path))
        if got is None:
            raise FileNotFoundError(path)
        return got[0]

    def publish(self, target: str, write: Callable[[IO[bytes]], None]) -> None:
        """One PUT of the whole object; conditional on the ETag `read_partition` saw, when it read this file."""
        buffer = io.BytesIO()
        write(buffer)
        key = self._key(target)
        if target not in self._etags:
            self.store.publish(key, buffer.getvalue())
            return
        etag = self._etags.pop(target)
        try:
            self.store.publish(key, buffer.getvalue(), if_match=etag, if_absent=etag is None)
        except Exception as exc:
            raise ObjectStoreConflict(f"{self.location}/{key}: changed by another writer since we read it (our lock had expired); "
                                      "nothing was overwritten: re-run") from exc

    @contextmanager
    def lock(self, dataset: str) -> Iterator[None]:
        """The lock object `_locks/<dataset>.lock` (30 s lease, refreshed while held)."""
        with self.store.lock(dataset.replace("/", "__")):
            yield

    def new_staging_folder(self, name: str) -> str:
        """A local temporary folder (nothing is staged in the bucket)."""
        return tempfile.mkdtemp(prefix=f"aimoves-{name}-")

    def publish_folder(self, staging: str, target: str) -> None:
        """Upload a complete local folder to `target`, its manifest last (a fetch is listed by its manifest); then remove it."""
        files = sorted((p for p in Path(staging).rglob("*") if p.is_file()), key=lambda p: p.name == MANIFEST)
        for path in files:
            self.store.publish(self._key(f"{target}/{path.relative_to(staging).as_posix()}"), path.read_bytes())
        shutil.rmtree(staging, ignore_errors=True)

    def clean_staging(self, older_than_hours: float = 6.0) -> int:
        return 0  # nothing is staged in the bucket

    def gx_dir(self) -> str:
        """A local GX project for this process's Data Docs builds of this location (`data_docs_built` uploads them)."""
        with _checked_lock:
            if self.location not in _local_gx:
                _local_gx[self.location] = tempfile.mkdtemp(prefix="aimoves-gx-")
            return _local_gx[self.location]

    def data_docs_built(self) -> None:
        """Upload what changed in the local GX project since the last upload to `_gx/` (the layout of a local data dir)."""
        local = Path(self.gx_dir())
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            stamp = path.stat().st_mtime_ns
            if _uploaded.get(path) != stamp:
                self.store.publish(self._key(self.path("_gx", path.relative_to(local).as_posix())), path.read_bytes())
                _uploaded[path] = stamp
