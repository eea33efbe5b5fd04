"""Chunked backfills: a window split into chunks whose memory is bounded by one chunk, not by the window.

Stage 1, prices: one chunk per (market, calendar year), the market's symbols in batches of at most
`batch_size`; each chunk fetches its own warm-up (the sessions before its start that validation
needs) and upserts only its rows, so chunks of one partition may run side by side.
Stage 2, FX for the whole window (two or three currencies: small).
Stage 3, stock moves: per (market, year, symbol batch), reading only that batch's prices from
130 calendar days (> 60 sessions) before the year (the trailing-volatility warm-up).
Stage 4, sector moves: per year, all markets and ALL, from that year's stock moves.
Then the divergence, in windows of whole months sized to the universe (`divergence_windows`).
A stage starts once every chunk of the previous stage is in. Peak memory of a process is then
that of one chunk: (symbols in a batch) x (one year + warm-up) price rows, or one year of one
universe's stock moves for a sector chunk.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from aimoves.planning import MarketPlan, next_session, plan_backfill
from aimoves.derive import DeriveReport, DeriveWindow, derive_sector_moves, derive_stock_moves
from aimoves.universe import Universe

BATCH_SIZE = 2500  # symbols per chunk: ~2500 x 312 sessions ~ 0.8 M price rows in memory; each chunk run costs ~6 s of process and engine start
DIVERGENCE_ROWS = 2_000_000  # stock-move rows one divergence window reads (10,000 symbols x 1 year + look-back peaked at 1.83 GiB)
LOOKBACK_SESSIONS = 90  # the divergence's 130 calendar days of look-back, in sessions
SESSIONS_PER_MONTH = 21


@dataclass(frozen=True)
class Chunk:
    """One piece of a backfill: a market's symbol batch over one year (`market` "ALL" for a sector chunk)."""

    market: str
    start: date
    end: date
    symbols: tuple[str, ...] = ()
    batch: int = 0
    batches: int = 1

    @property
    def name(self) -> str:
        """US-2016, US-2016-b2of3, ALL-2016."""
        suffix = f"-b{self.batch + 1}of{self.batches}" if self.batches > 1 else ""
        return f"{self.market}-{self.start.year}{suffix}"


def year_windows(start: date, end: date) -> list[tuple[date, date]]:
    """start..end cut at calendar-year boundaries."""
    return [(max(start, date(y, 1, 1)), min(end, date(y, 12, 31))) for y in range(start.year, end.year + 1)]


def divergence_windows(start: date, end: date, n_symbols: int) -> list[tuple[date, date]]:
    """start..end in windows of whole calendar months (a year at most, inside one year) whose stock
    moves, the 130-day look-back included, stay near DIVERGENCE_ROWS rows: a year up to ~5,000
    symbols, 5 months at 10,000, a month from ~18,000 on (the look-back alone is then the bound)."""
    sessions = DIVERGENCE_ROWS / max(n_symbols, 1) - LOOKBACK_SESSIONS
    months = max(1, min(12, int(sessions // SESSIONS_PER_MONTH)))
    windows = []
    for lo, hi in year_windows(start, end):
        first = lo.month
        while first <= hi.month:
            last = min(first + months - 1, hi.month, 12)
            month_end = (date(lo.year, last + 1, 1) if last < 12 else date(lo.year + 1, 1, 1)) - timedelta(days=1)
            windows.append((max(lo, date(lo.year, first, 1)), min(hi, month_end)))
            first = last + 1
    return windows


def symbol_batches(symbols: list[str], size: int) -> list[tuple[str, ...]]:
    """`symbols` in consecutive batches of at most `size` (one batch when they fit)."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    return [tuple(symbols[i : i + size]) for i in range(0, len(symbols), size)] or [()]


def plan_chunks(universe: Universe, markets: list[str], start: date, end: date, batch_size: int = BATCH_SIZE) -> list[Chunk]:
    """Price (and stock-move) chunks: per market, per year, per symbol batch; markets without symbols are left out."""
    by_market = universe.symbols_by_market(markets)
    chunks = []
    for market in markets:
        batches = symbol_batches(by_market.get(market, []), batch_size) if market in by_market else []
        for lo, hi in year_windows(start, end):
            chunks += [Chunk(market, lo, hi, batch, i, len(batches)) for i, batch in enumerate(batches)]
    return chunks


def plan_sector_chunks(start: date, end: date) -> list[Chunk]:
    """One sector-moves chunk per year (every market and ALL)."""
    return [Chunk("ALL", lo, hi) for lo, hi in year_windows(start, end)]


def chunk_plan(chunk: Chunk, universe: Universe) -> MarketPlan:
    """The backfill plan of `chunk`: its market's plan for its year, with its warm-up, limited to its symbols."""
    plan = plan_backfill(universe, chunk.market, chunk.start, chunk.end)
    return dataclasses.replace(plan, request=dataclasses.replace(plan.request, symbols=chunk.symbols))


def derive_start(chunk: Chunk, window_start: date, universe: Universe) -> date:
    """Where a chunk's moves start: as an unchunked backfill, the session after the warm-up's first in the
    window's first year; the year's start after that (its previous sessions are stored by then)."""
    if chunk.start != window_start:
        return chunk.start
    return next_session(chunk.market, chunk_plan(chunk, universe).request.start)


def derive_stock_chunk(chunk: Chunk, window_start: date, universe: Universe, data_dir: Path, run_id: str, now: datetime) -> DeriveReport:
    """Stock moves of one chunk's symbols over its year (reading 130 days of prices before it)."""
    window = DeriveWindow(chunk.market, derive_start(chunk, window_start, universe), chunk.end)
    return derive_stock_moves(data_dir, universe, [window], run_id, now, symbols=list(chunk.symbols))


def derive_sector_chunk(
    chunk: Chunk, window_start: date, markets: list[str], universe: Universe, blocked: set[tuple[str, date]],
    data_dir: Path, run_id: str, now: datetime,
) -> DeriveReport:
    """Sector moves of every market and ALL over one year."""
    windows = [DeriveWindow(m, derive_start(dataclasses.replace(chunk, market=m), window_start, universe), chunk.end) for m in markets]
    return derive_sector_moves(data_dir, universe, windows, {b for b in blocked if chunk.start <= b[1] <= chunk.end}, run_id, now)
