"""Tasks of the prices stages, one per market and stage (never one per symbol)."""

from __future__ import annotations

from datetime import datetime

from aimoves import run as r
from aimoves.catalog import Catalog
from aimoves.gcpause import gc_paused
from aimoves.normalize import NormalizedPrices
from aimoves.planning import MarketPlan
from aimoves.raw import RawRecord, write_raw
from aimoves.sources.base import PriceBatch, PriceRequest, PriceSource
from aimoves.store import WriteResult
from aimoves.universe import Universe
from aimoves.validate import ValidationResult

from . import FETCH_TIMEOUT_S, JITTER, NETWORK_BACKOFF, NETWORK_RETRIES, STAGE_TIMEOUT_S, stage, transient


@stage(name="fetch-prices", task_run_name="fetch-prices-{request.market}",
      retries=NETWORK_RETRIES, retry_delay_seconds=NETWORK_BACKOFF, retry_jitter_factor=JITTER, retry_condition_fn=transient, timeout_seconds=FETCH_TIMEOUT_S)
def fetch_prices(source: PriceSource, request: PriceRequest) -> PriceBatch:
    with gc_paused():
        return source.fetch_prices(request)


@stage(name="store-raw", task_run_name="store-raw-{batch.request.market}",
      retries=1, retry_delay_seconds=5, retry_jitter_factor=JITTER, retry_condition_fn=transient, timeout_seconds=STAGE_TIMEOUT_S)
def store_raw(batch: PriceBatch, catalog: Catalog) -> RawRecord:
    with gc_paused():
        return write_raw(batch, catalog)


@stage(name="normalize-prices", task_run_name="normalize-prices-{plan.market}",
      retries=0, timeout_seconds=STAGE_TIMEOUT_S)
def normalize(batch: PriceBatch, plan: MarketPlan, now: datetime) -> NormalizedPrices:
    with gc_paused():
        return r.normalize_market(batch, plan, now)


@stage(name="validate-prices", retries=0, timeout_seconds=STAGE_TIMEOUT_S)
def validate(fetched: list[r.Fetched], universe: Universe, now: datetime) -> dict[str, ValidationResult | Exception]:
    """Every market's bars in one validation (GX's cost is per call); a market whose bars break it gets its exception."""
    with gc_paused():
        return r.validate_fetched(fetched, universe, now)


@stage(name="write-prices", task_run_name="write-prices-{plan.market}",
      retries=1, retry_delay_seconds=5, retry_jitter_factor=JITTER, retry_condition_fn=transient, timeout_seconds=STAGE_TIMEOUT_S)
def write(
    validation: ValidationResult, normalized: NormalizedPrices, batch: PriceBatch, plan: MarketPlan, catalog: Catalog, run_id: str, now: datetime,
) -> tuple[WriteResult, int, int]:
    """Passed rows to prices/, quarantined rows to quarantine/prices/, restated bars to _restatements/ (idempotent: safe to retry)."""
    with gc_paused():
        return r.write_market(validation, normalized, batch, plan, catalog, run_id, now)
