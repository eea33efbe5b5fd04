"""Choosing a price source: the settings a run names and the source they make."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from aimoves.catalog import Catalog
from aimoves.errors import AimovesError
from aimoves.sources.base import PriceSource
from aimoves.universe import Universe

SOURCES = ("yahoo", "csv", "simulated", "replay")


@dataclass(frozen=True)
class SourceSettings:
    name: str = "simulated"
    csv_dir: Path | None = None
    seed: int | None = None
    shock_date: date | None = None
    inject_defects: bool = False
    news: str | None = None  # news source name; None: no news


NEWS_FOLLOWS = {"yahoo": "yahoo", "simulated": "simulated", "replay": "replay", "csv": None}


def news_source_for(price_source: str, news_source: str | None) -> str | None:
    """`--news-source`, or by default the price source where it has news (csv has none)."""
    if news_source is None:
        return NEWS_FOLLOWS.get(price_source)
    return None if news_source == "none" else news_source


def make_source(settings: SourceSettings, universe: Universe, catalog: Catalog) -> PriceSource:
    """The source named in `settings`; a clear error when its options are missing."""
    if settings.name == "simulated":
        from aimoves.sources.simulated import DEFAULT_SEED, DEFAULT_SHOCK, SimulatedSource

        return SimulatedSource(
            sectors={s.symbol: s.sector for s in universe.stocks},
            seed=DEFAULT_SEED if settings.seed is None else settings.seed,
            shock_date=settings.shock_date or DEFAULT_SHOCK,
            inject_defects=settings.inject_defects,
        )
    if settings.name == "csv":
        from aimoves.sources.csv import CsvSource

        if settings.csv_dir is None:
            raise AimovesError("--source csv needs --csv-dir DIR (a folder of <SYMBOL>.csv files)")
        return CsvSource(Path(settings.csv_dir))
    if settings.name == "replay":
        from aimoves.sources.replay import ReplaySource

        if not catalog.fs.isdir(catalog.raw_dir("prices")):
            raise AimovesError(f"--source replay: {catalog.raw_dir('prices')} does not exist; nothing was fetched into this data dir yet")
        return ReplaySource(catalog)
    if settings.name == "yahoo":
        from aimoves.sources.yahoo import YahooSource

        return YahooSource()
    raise AimovesError(f"unknown source {settings.name!r}; choose one of {', '.join(SOURCES)}")
