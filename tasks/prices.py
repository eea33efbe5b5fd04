"""Tasks of the prices pipeline, one per market and stage (never one per symbol)."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from aimoves import pipeline
from aimoves.gcpause import gc_paused
from aimoves.normalize import NormalizedPrices, normalize_prices
from aimoves.raw import RawRecord, write_raw
from aimoves.sources.base import PriceBatch, PriceRequest, PriceSource
from aimoves.store import WriteResult
from aimoves.validate import ValidationResult, validate_prices

# NOTE: NO_CACHE everywhere: the default cache policy hashes inputs, and hashing a frame of
# millions of rows costs more than the work itself. Each body runs with the cyclic GC paused
# (aimoves.gcpause): measured, it is most of the difference between 56 s and 34 s at 2.5M rows.


@task(name="fetch-prices", task_run_name="fetch-prices-{request.market}", cache_policy=NO_CACHE)
def fetch_prices(source: PriceSource, request: PriceRequest) -> PriceBatch:
    with gc_paused():
        # Sources retry rate limits and transient errors themselves, per batch of symbols.
        return source.fetch_prices(request)


@task(name="store-raw", task_run_name="store-raw-{batch.request.market}", cache_policy=NO_CACHE)
def store_raw(batch: PriceBatch, data_dir: Path) -> RawRecord:
    with gc_paused():
        return write_raw(batch, data_dir)


@task(name="normalize-prices", task_run_name="normalize-prices-{market}", cache_policy=NO_CACHE)
def normalize(batch: PriceBatch, market: str, settled_through: date, today: date) -> NormalizedPrices:
    with gc_paused():
        return normalize_prices(batch, market, settled_through, today)


@task(name="validate-prices", task_run_name="validate-prices-{market}", cache_policy=NO_CACHE)
def validate(normalized: NormalizedPrices, market: str, symbols: list[str], today: date, extra_holidays: tuple[date, ...]) -> ValidationResult:
    with gc_paused():
        return validate_prices(normalized.prices, market, symbols, today, extra_holidays)


@task(name="write-prices", task_run_name="write-prices-{plan.market}", cache_policy=NO_CACHE)
def write(
    validation: ValidationResult,
    normalized: NormalizedPrices,
    batch: PriceBatch,
    plan: pipeline.MarketPlan,
    data_dir: Path,
    run_id: str,
    now: datetime,
) -> tuple[WriteResult, int, int]:
    """Write passed rows to prices/, quarantined rows to quarantine/prices/, restated bars to _restatements/.

    Returns the write result, the number of quarantined rows and of restated bars."""
    with gc_paused():
        quarantine = pipeline.quarantine_for_write(validation, normalized, batch, plan, run_id, now)
        pipeline.write_quarantine(quarantine, data_dir)
        rows = pipeline.prices_for_write(validation, plan, now)
        written = pipeline.write_prices(rows, data_dir)
        restated = pipeline.restatements(written, rows)
        pipeline.write_restatements(restated, data_dir, run_id, plan.market)
        return written, len(quarantine), len(restated)
