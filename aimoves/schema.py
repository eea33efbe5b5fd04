"""Explicit Arrow schemas of the curated datasets, their partition keys and versions.

Column names are a contract with analysts: columns may be added, never renamed or removed.
Each file carries `aimoves.dataset` and `aimoves.schema_version` in its Parquet metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

SCHEMA_VERSION = "1"


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # path under the data dir, e.g. "prices" or "quarantine/prices"
    schema: pa.Schema  # every column, partition keys included
    partition_by: tuple[str, ...]  # hive folders, outermost first
    key: tuple[str, ...]  # a row's identity for idempotent upserts
    sort_by: tuple[str, ...]
    stamps: tuple[str, ...] = ()  # when/which-run columns; an unchanged row keeps its old stamps
    version: str = SCHEMA_VERSION

    @property
    def file_schema(self) -> pa.Schema:
        """The columns stored inside each file (partition keys live in the folder names)."""
        return pa.schema([f for f in self.schema if f.name not in self.partition_by]).with_metadata(
            {"aimoves.dataset": self.name, "aimoves.schema_version": self.version}
        )

    @property
    def partitioning_schema(self) -> pa.Schema:
        return pa.schema([self.schema.field(k) for k in self.partition_by])


_BAR = [
    pa.field("date", pa.date32(), nullable=False),
    pa.field("symbol", pa.string(), nullable=False),
    pa.field("market", pa.string(), nullable=False),
    pa.field("currency", pa.string()),
    pa.field("open", pa.float64()),
    pa.field("high", pa.float64()),
    pa.field("low", pa.float64()),
    pa.field("close", pa.float64()),
    pa.field("adj_close", pa.float64()),
    pa.field("volume", pa.int64()),
    pa.field("source", pa.string()),
]

PRICES = DatasetSpec(
    name="prices",
    schema=pa.schema(
        [
            *_BAR,
            pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
            pa.field("dq_flags", pa.list_(pa.string())),
            pa.field("year", pa.int16(), nullable=False),
        ]
    ),
    partition_by=("market", "year"),
    key=("symbol", "date"),
    sort_by=("symbol", "date"),
    stamps=("ingested_at",),
)

QUARANTINE_PRICES = DatasetSpec(
    name="quarantine/prices",
    schema=pa.schema(
        [
            pa.field("date", pa.date32()),  # null when the date itself could not be read
            *[f for f in _BAR if f.name != "date"],
            pa.field("expectation", pa.string(), nullable=False),
            pa.field("reason", pa.string(), nullable=False),
            pa.field("row_id", pa.string(), nullable=False),  # hash of the bar's values
            pa.field("quarantined_at", pa.timestamp("us", tz="UTC")),
            pa.field("run_id", pa.string()),
            pa.field("year", pa.int16(), nullable=False),
        ]
    ),
    partition_by=("market", "year"),
    key=("row_id", "expectation"),
    sort_by=("symbol", "date", "row_id"),
    stamps=("quarantined_at", "run_id"),
)
