"""Tasks after prices: FX rates, news, stock moves, sector moves (one run each, all markets at once)."""

from __future__ import annotations

from datetime import date, datetime

from aimoves import derive as d
from aimoves.catalog import Catalog
from aimoves.fx import update_fx
from aimoves.gcpause import gc_paused
from aimoves.sources.base import PriceSource
from aimoves.universe import Universe

from . import FETCH_TIMEOUT_S, JITTER, NETWORK_BACKOFF, NETWORK_RETRIES, STAGE_TIMEOUT_S, stage, transient


@stage(name="update-fx", task_run_name="update-fx-{start}-to-{end}",
      retries=NETWORK_RETRIES, retry_delay_seconds=NETWORK_BACKOFF, retry_jitter_factor=JITTER, retry_condition_fn=transient, timeout_seconds=FETCH_TIMEOUT_S)
def fx(source: PriceSource, universe: Universe, start: date, end: date, catalog: Catalog, run_id: str, now: datetime) -> dict:
    with gc_paused():
        return update_fx(source, universe, start, end, catalog, run_id, now)


@stage(name="update-news", task_run_name="update-news-{name}-{start}-to-{end}",
      retries=NETWORK_RETRIES, retry_delay_seconds=NETWORK_BACKOFF, retry_jitter_factor=JITTER, retry_condition_fn=transient, timeout_seconds=FETCH_TIMEOUT_S)
def news(
    name: str, universe: Universe, markets: list[str], start: date, end: date, catalog: Catalog, run_id: str, now: datetime,
    seed: int | None, shock_date: date | None,
) -> dict | None:
    from aimoves.news.stage import update_news

    with gc_paused():
        return update_news(name, universe, markets, start, end, catalog, run_id, now, seed, shock_date)


@stage(name="derive-stock-moves", retries=0, timeout_seconds=STAGE_TIMEOUT_S)
def stock_moves(catalog: Catalog, universe: Universe, windows: list[d.DeriveWindow], run_id: str, now: datetime) -> d.DeriveReport:
    with gc_paused():
        return d.derive_stock_moves(catalog, universe, windows, run_id, now)


@stage(name="derive-sector-moves", retries=0, timeout_seconds=STAGE_TIMEOUT_S)
def sector_moves(
    catalog: Catalog, universe: Universe, windows: list[d.DeriveWindow], blocked: set[tuple[str, date]], run_id: str, now: datetime
) -> d.DeriveReport:
    with gc_paused():
        return d.derive_sector_moves(catalog, universe, windows, blocked, run_id, now)


@stage(name="derive-divergence", retries=0, timeout_seconds=STAGE_TIMEOUT_S)
def divergence(catalog: Catalog, universe: Universe, start: date, end: date, blocked: set[tuple[str, date]], run_id: str, now: datetime) -> d.DeriveReport:
    from aimoves.divergence import derive_divergence

    with gc_paused():
        return derive_divergence(catalog, universe, start, end, run_id, now, blocked)
