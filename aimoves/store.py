"""The dataset writer: hive-partitioned Parquet, atomic per partition, idempotent by key.

Contract:

* One file per partition, `<dataset>/<key>=<value>/.../part-0.parquet`, with the dataset's explicit
  Arrow schema and its schema version in the file metadata.
* **Atomic**: the new file is written and fsynced under `<data-dir>/_staging/`, then published with
  `os.replace`. A reader sees the old file or the new one, never half of one; a crash at any point
  leaves the old file in place (a killed run's staging files are invisible to readers and cleaned
  up by the next run).
* **Idempotent**: rows are upserted by the dataset's key. Rows of the partition whose key the new
  batch does not carry are kept; a row whose values are unchanged keeps its `*_at` stamps, so a
  re-run of the same input leaves the files byte-for-byte alone.
* **Serialized**: writers of one dataset take an OS file lock (`_locks/`), which a killed process
  releases at once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from aimoves.raw import fsync_dir
from aimoves.schema import DatasetSpec

log = logging.getLogger(__name__)

PART_FILE = "part-0.parquet"
ROW_GROUP_SIZE = 32_768


@dataclass
class WriteResult:
    dataset: str
    rows_in: int = 0
    rows_changed: int = 0
    partitions_written: list[str] = field(default_factory=list)
    partitions_unchanged: list[str] = field(default_factory=list)
    # Stored rows whose values this write replaced (old values, key columns first): restatements.
    replaced: list[pd.DataFrame] = field(default_factory=list)


def empty_lists(n: int) -> list[tuple]:
    """n empty list cells for a list column. NOTE: one shared empty tuple, not n new lists: creating
    millions of small containers triggers Python's cyclic GC over the whole heap again and again."""
    return [()] * n


@contextmanager
def dataset_lock(data_dir: Path, dataset: str) -> Iterator[None]:
    """Exclusive OS lock for writers of `dataset`; released when the process dies."""
    lock_dir = data_dir / "_locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{dataset.replace('/', '__')}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def partition_path(spec: DatasetSpec, values: tuple) -> str:
    return "/".join(f"{k}={v}" for k, v in zip(spec.partition_by, values))


def to_table(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """A frame as a table of exactly `schema` (column order, types, metadata)."""
    arrays = []
    for f in schema:
        col = frame[f.name]
        if pa.types.is_date32(f.type):
            col = pd.to_datetime(col).dt.date
        if pa.types.is_integer(f.type) and col.dtype.kind == "f":
            col = col.round().astype("Int64")
        arrays.append(pa.array(col, type=f.type, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=schema)


def _merge(old: pa.Table, new: pa.Table, spec: DatasetSpec, replaced: list[pd.DataFrame] | None = None) -> pa.Table:
    """Upsert `new` into `old` by key; unchanged rows keep their old `*_at` stamps.

    Old rows that the new ones change are appended to `replaced` (when given).
    """
    key = list(spec.key)
    stamps = list(spec.stamps)
    old_df = old.to_pandas()
    new_df = new.to_pandas()
    if stamps and len(old_df):
        before = new_df[key].merge(old_df, how="left", on=key)  # old values aligned to new rows
        same = pd.Series(True, index=new_df.index)
        for column in new_df.columns:
            if column not in key and column not in stamps:
                same &= _equal(new_df[column], before[column])
        for stamp in stamps:
            new_df[stamp] = new_df[stamp].where(~same, before[stamp])
        existed = before[[c for c in before.columns if c not in key]].notna().any(axis=1)
        if replaced is not None and (existed & ~same).any():
            replaced.append(before[(existed & ~same).to_numpy()])
    new_keys = pd.MultiIndex.from_frame(new_df[key])
    kept = old_df[~pd.MultiIndex.from_frame(old_df[key]).isin(new_keys)]
    merged = pd.concat([kept, new_df], ignore_index=True) if len(kept) else new_df
    merged = merged.sort_values(list(spec.sort_by), kind="stable").reset_index(drop=True)
    return to_table(merged, new.schema)


def _equal(a: pd.Series, b: pd.Series) -> pd.Series:
    """Element-wise equality where two missing values are equal and lists compare by content."""
    if a.dtype == object or b.dtype == object:
        return pd.Series([_hashable(x) == _hashable(y) for x, y in zip(a, b)], index=a.index)
    return ((a == b) | (a.isna() & b.isna())).fillna(False).astype(bool)


def _hashable(value: object) -> object:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if hasattr(value, "tolist"):
        return tuple(value.tolist())
    if isinstance(value, list):
        return tuple(value)
    return value


def _publish(table: pa.Table, target: Path, data_dir: Path) -> None:
    staging = data_dir / "_staging"
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / f"{uuid.uuid4().hex}.parquet"
    try:
        with open(tmp, "wb") as sink:
            pq.write_table(table, sink, row_group_size=ROW_GROUP_SIZE, compression="zstd")
            sink.flush()
            os.fsync(sink.fileno())
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def upsert(frame: pd.DataFrame, spec: DatasetSpec, data_dir: Path) -> WriteResult:
    """Write `frame` (every column of `spec.schema`) into the dataset; see the module docstring."""
    result = WriteResult(spec.name, rows_in=len(frame))
    if frame.empty:
        return result
    root = data_dir / spec.name
    file_schema = spec.file_schema
    with dataset_lock(data_dir, spec.name):
        for values, group in frame.groupby(list(spec.partition_by), sort=True):
            values = values if isinstance(values, tuple) else (values,)
            part = partition_path(spec, values)
            target = root / part / PART_FILE
            group = group.sort_values(list(spec.sort_by), kind="stable")
            dupes = group.duplicated(list(spec.key))
            if dupes.any():
                raise ValueError(f"{spec.name}/{part}: {int(dupes.sum())} rows share a key {spec.key}; refusing to write")
            new = to_table(group, file_schema)
            if target.exists():
                old = pq.read_table(target)
                old = old.cast(file_schema) if old.schema != file_schema else old
                merged = _merge(old, new, spec, result.replaced)
                if merged.equals(old):
                    result.partitions_unchanged.append(part)
                    continue
            else:
                merged = new
            _publish(merged, target, data_dir)
            result.partitions_written.append(part)
            result.rows_changed += len(group)
    return result


def delete_keys(keys: pd.DataFrame, spec: DatasetSpec, data_dir: Path) -> int:
    """Remove the rows whose key (and partition values) appear in `keys`; atomic per partition."""
    root = data_dir / spec.name
    removed = 0
    if keys.empty or not root.is_dir():
        return 0
    with dataset_lock(data_dir, spec.name):
        for values, group in keys.groupby(list(spec.partition_by), sort=True):
            values = values if isinstance(values, tuple) else (values,)
            target = root / partition_path(spec, values) / PART_FILE
            if not target.exists():
                continue
            old = pq.read_table(target)
            old_df = old.to_pandas()
            wanted = group[list(spec.key)].copy()
            for column in spec.key:
                if pa.types.is_date32(spec.schema.field(column).type):
                    wanted[column] = pd.to_datetime(wanted[column]).dt.date
            drop = pd.MultiIndex.from_frame(old_df[list(spec.key)]).isin(pd.MultiIndex.from_frame(wanted))
            if drop.any():
                removed += int(drop.sum())
                _publish(to_table(old_df[~drop], spec.file_schema), target, data_dir)
    return removed


def read_frame(
    spec: DatasetSpec, data_dir: Path, start: object = None, end: object = None, columns: list[str] | None = None, **equals: list[str] | None
) -> pd.DataFrame:
    """Rows of a dataset as pandas (date as datetime64, partition keys as plain values); empty if absent.

    `equals` filters a column to a list of values (e.g. market=["US", "HK"]); None means no filter.
    """
    root = data_dir / spec.name
    columns = columns or [f.name for f in spec.schema]
    if not root.is_dir():
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    dataset = ds.dataset(root, format="parquet", partitioning=ds.partitioning(spec.partitioning_schema, flavor="hive"))
    expr = None
    clauses = []
    if start is not None:
        clauses.append(ds.field("date") >= pa.scalar(pd.Timestamp(start).date(), pa.date32()))
    if end is not None:
        clauses.append(ds.field("date") <= pa.scalar(pd.Timestamp(end).date(), pa.date32()))
    for column, values in equals.items():
        if values is not None:
            clauses.append(ds.field(column).isin(list(values)))
    for clause in clauses:
        expr = clause if expr is None else expr & clause
    frame = dataset.to_table(filter=expr, columns=columns).to_pandas()
    if "date" in frame:
        frame["date"] = pd.to_datetime(frame["date"]).astype("datetime64[ns]")
    for key in spec.partition_by:
        if key in frame and isinstance(frame[key].dtype, pd.CategoricalDtype):
            frame[key] = frame[key].astype(frame[key].cat.categories.dtype)
    return frame
