"""The dataset writer: hive-partitioned Parquet, atomic per partition, idempotent by key.

Contract:

* One file per partition, `<dataset>/<key>=<value>/.../part-0.parquet`, with the dataset's explicit
  Arrow schema and its schema version in the file metadata. Where each file lives, how it is
  published and how writers are serialized is the Catalog's (aimoves.catalog); this module decides
  what goes into the files.
* **Atomic**: the new file is written and fsynced under `<data-dir>/_staging/`, then published with
  `os.replace` (`Catalog.publish`). A reader sees the old file or the new one, never half of one; a crash at any point
  leaves the old file in place (a killed run's staging files are invisible to readers and cleaned
  up by the next run).
* **Idempotent**: rows are upserted by the dataset's key. Rows of the partition whose key the new
  batch does not carry are kept; a row whose values are unchanged keeps its `*_at` stamps, so a
  re-run of the same input leaves the files byte-for-byte alone.
* **Serialized**: writers of one dataset take an OS file lock (`_locks/`), which a killed process
  releases at once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import pandas as pd
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from aimoves.catalog import PART_FILE, Catalog, as_catalog, partition_path
from aimoves.schema import DatasetSpec

log = logging.getLogger(__name__)

__all__ = ["PART_FILE", "WriteResult", "delete_keys", "partition_path", "read_frame", "to_table", "upsert"]

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


def to_table(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """A frame as a table of exactly `schema` (column order, types, metadata)."""
    arrays = []
    for f in schema:
        col = frame[f.name]
        if pa.types.is_date32(f.type):
            # NOTE: via datetime64[D], not Python date objects (millions of them are slow)
            arrays.append(pa.array(pd.to_datetime(col).to_numpy().astype("datetime64[D]"), type=f.type))
            continue
        if pa.types.is_integer(f.type) and col.dtype.kind == "f":
            col = col.round().astype("Int64")
        arrays.append(pa.array(col, type=f.type, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=schema)


def _comparable(table: pa.Table, columns: list[str]) -> pd.DataFrame:
    """Columns as pandas, for comparing rows: list cells joined into one string, dates as datetime64."""
    data = {}
    for name in columns:
        column = table.column(name)
        if pa.types.is_list(column.type):
            column = pc.binary_join(column, "\x1f")
        data[name] = column
    return pa.table(data).to_pandas(date_as_object=False)


def _merge(old: pa.Table, new: pa.Table, spec: DatasetSpec, replaced: list[pd.DataFrame] | None = None) -> pa.Table:
    """Upsert `new` into `old` by key; unchanged rows keep their old stamps (`spec.stamps`).

    Old rows that the new ones change are appended to `replaced` (when given). Values are compared
    only for keys in both: a batch of new symbols appended to a large partition (a chunk of a
    backfill) converts the old partition's key columns, not all of it.
    """
    key = list(spec.key)
    values = [c for c in new.column_names if c not in key and c not in spec.stamps]
    old_keys, new_keys = pd.MultiIndex.from_frame(_comparable(old, key)), pd.MultiIndex.from_frame(_comparable(new, key))
    position = old_keys.get_indexer(new_keys)  # the old row of each new key, -1 if none (keys are unique)
    existed = position >= 0
    same = np.zeros(len(new), dtype=bool)
    if existed.any():
        before = _comparable(old.take(pa.array(position[existed])), values)
        after = _comparable(new.filter(pa.array(existed)), values)
        equal = np.ones(len(after), dtype=bool)
        for name in values:
            a, b = before[name], after[name]
            equal &= (a == b).fillna(False).to_numpy(dtype=bool) | (a.isna() & b.isna()).to_numpy(dtype=bool)
        same[existed] = equal
    if same.any():
        take = pa.array(np.where(same, position, 0))
        for stamp in spec.stamps:
            kept = pc.if_else(pa.array(same), old.column(stamp).take(take), new.column(stamp))
            new = new.set_column(new.schema.get_field_index(stamp), new.schema.field(stamp), kept)
    if replaced is not None and (existed & ~same).any():
        replaced.append(old.take(pa.array(position[existed & ~same])).to_pandas(date_as_object=False))
    keep_old = np.ones(len(old), dtype=bool)
    keep_old[position[existed]] = False  # keys are unique: each old row is replaced by at most one new row
    merged = pa.concat_tables([old.filter(pa.array(keep_old)), new]) if keep_old.any() else new
    return merged.sort_by([(c, "ascending") for c in spec.sort_by])


def _publish(table: pa.Table, target: str, catalog: Catalog) -> None:
    catalog.publish(target, lambda sink: pq.write_table(table, sink, row_group_size=ROW_GROUP_SIZE, compression="zstd"))


def upsert(frame: pd.DataFrame, spec: DatasetSpec, data_dir: Catalog | str | os.PathLike) -> WriteResult:
    """Write `frame` (every column of `spec.schema`) into the dataset; see the module docstring."""
    result = WriteResult(spec.name, rows_in=len(frame))
    if frame.empty:
        return result
    catalog = as_catalog(data_dir)
    file_schema = spec.file_schema
    with catalog.lock(spec.name):
        for values, group in frame.groupby(list(spec.partition_by), sort=True):
            values = values if isinstance(values, tuple) else (values,)
            part = partition_path(spec, values)
            target = catalog.partition_file(spec, values)
            group = group.sort_values(list(spec.sort_by), kind="stable")
            dupes = group.duplicated(list(spec.key))
            if dupes.any():
                raise ValueError(f"{spec.name}/{part}: {int(dupes.sum())} rows share a key {spec.key}; refusing to write")
            new = to_table(group, file_schema)
            old = catalog.read_partition(spec, values)
            if old is not None:
                old = old.cast(file_schema) if old.schema != file_schema else old
                merged = _merge(old, new, spec, result.replaced)
                if merged.equals(old):
                    result.partitions_unchanged.append(part)
                    continue
            else:
                merged = new
            _publish(merged, target, catalog)
            result.partitions_written.append(part)
            result.rows_changed += len(group)
    return result


def delete_keys(keys: pd.DataFrame, spec: DatasetSpec, data_dir: Catalog | str | os.PathLike) -> int:
    """Remove the rows whose key (and partition values) appear in `keys`; atomic per partition."""
    catalog = as_catalog(data_dir)
    removed = 0
    if keys.empty or not catalog.has_dataset(spec):
        return 0
    with catalog.lock(spec.name):
        for values, group in keys.groupby(list(spec.partition_by), sort=True):
            values = values if isinstance(values, tuple) else (values,)
            old = catalog.read_partition(spec, values)
            if old is None:
                continue
            old_df = old.to_pandas()
            wanted = group[list(spec.key)].copy()
            for column in spec.key:
                if pa.types.is_date32(spec.schema.field(column).type):
                    wanted[column] = pd.to_datetime(wanted[column]).dt.date
            drop = pd.MultiIndex.from_frame(old_df[list(spec.key)]).isin(pd.MultiIndex.from_frame(wanted))
            if drop.any():
                removed += int(drop.sum())
                _publish(to_table(old_df[~drop], spec.file_schema), catalog.partition_file(spec, values), catalog)
    return removed


def read_frame(
    spec: DatasetSpec, data_dir: Catalog | str | os.PathLike, start: object = None, end: object = None, columns: list[str] | None = None,
    **equals: list[str] | None,
) -> pd.DataFrame:
    """Rows of a dataset as pandas (date as datetime64, partition keys as plain values); empty if absent.

    `equals` filters a column to a list of values (e.g. market=["US", "HK"]); None means no filter.
    """
    catalog = as_catalog(data_dir)
    columns = columns or [f.name for f in spec.schema]
    if not catalog.dataset_files(spec):
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
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
    frame = catalog.read_table(spec, expr, columns).to_pandas(date_as_object=False)
    if "date" in frame:
        frame["date"] = frame["date"].astype("datetime64[ns]")
    for key in spec.partition_by:
        if key in frame and isinstance(frame[key].dtype, pd.CategoricalDtype):
            frame[key] = frame[key].astype(frame[key].cat.categories.dtype)
    return frame
