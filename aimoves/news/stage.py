"""The news stage of a run, as one plain function: fetch → raw log → normalize → dedup/validate/store."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

from aimoves.news.normalize import normalize_news
from aimoves.news.raw import write_news_raw
from aimoves.news.sources import make_news_source, news_request
from aimoves.news.store import write_news
from aimoves.universe import Universe


def update_news(
    name: str, universe: Universe, markets: list[str], start: date, end: date, data_dir: Path, run_id: str, now: datetime,
    seed: int | None = None, shock_date: date | None = None,
) -> dict | None:
    """News of the universe's stocks in `markets` published start..end; None when the source is `none`."""
    source = make_news_source(name, universe, data_dir, seed, shock_date)
    if source is None:
        return None
    batch = source.fetch_news(news_request(universe, start, end, markets))
    if source.name != "replay":
        write_news_raw(batch, data_dir)
    result = write_news(normalize_news(batch.items, universe), data_dir, now, run_id)
    result["source"] = source.name
    result["window"] = f"{start}..{end}"
    result["failures"] = [{"symbol": f.target, "reason": f.reason} for f in batch.failures]
    result["notes"] = list(batch.notes)
    return result
