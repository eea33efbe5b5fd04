"""Tasks after prices: FX rates, stock moves, sector moves (one run each, all markets at once)."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from aimoves import derive as d
from aimoves.fx import update_fx
from aimoves.gcpause import gc_paused
from aimoves.sources.base import PriceSource
from aimoves.universe import Universe


@task(name="update-fx", task_run_name="update-fx-{start}-to-{end}", cache_policy=NO_CACHE)
def fx(source: PriceSource, universe: Universe, start: date, end: date, data_dir: Path, run_id: str, now: datetime) -> dict:
    with gc_paused():
        return update_fx(source, universe, start, end, data_dir, run_id, now)


@task(name="update-news", task_run_name="update-news-{name}-{start}-to-{end}", cache_policy=NO_CACHE)
def news(
    name: str, universe: Universe, markets: list[str], start: date, end: date, data_dir: Path, run_id: str, now: datetime,
    seed: int | None, shock_date: date | None,
) -> dict | None:
    with gc_paused():
        from aimoves.news.stage import update_news

        return update_news(name, universe, markets, start, end, data_dir, run_id, now, seed, shock_date)


@task(name="derive-stock-moves", cache_policy=NO_CACHE)
def stock_moves(data_dir: Path, universe: Universe, windows: list[d.DeriveWindow], run_id: str, now: datetime) -> d.DeriveReport:
    with gc_paused():
        return d.derive_stock_moves(data_dir, universe, windows, run_id, now)


@task(name="derive-sector-moves", cache_policy=NO_CACHE)
def sector_moves(
    data_dir: Path, universe: Universe, windows: list[d.DeriveWindow], blocked: set[tuple[str, date]], run_id: str, now: datetime
) -> d.DeriveReport:
    with gc_paused():
        return d.derive_sector_moves(data_dir, universe, windows, blocked, run_id, now)


@task(name="derive-divergence", cache_policy=NO_CACHE)
def divergence(data_dir: Path, universe: Universe, start: date, end: date, blocked: set[tuple[str, date]], run_id: str, now: datetime) -> d.DeriveReport:
    from aimoves.divergence import derive_divergence

    with gc_paused():
        return derive_divergence(data_dir, universe, start, end, run_id, now, blocked)
