"""Planning a run: which markets, which sessions each market fetches and writes.

A backfill reads WARMUP_SESSIONS before its start and a daily run DAILY_CONTEXT_SESSIONS before its
day, so that the first requested day has the same context as any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import pandas as pd

from aimoves.calendars import sessions, sessions_back
from aimoves.errors import AimovesError
from aimoves.markets import MARKET_INFO
from aimoves.sources.base import PriceRequest
from aimoves.universe import Universe

# A backfill reads this many sessions before --start: the first requested day then has the same
# context (previous close, neighbouring bars, trailing volatility) as any other day.

WARMUP_SESSIONS = 70
# A daily run re-reads this many sessions before its date, for the same reason.
DAILY_CONTEXT_SESSIONS = 15


@dataclass
class MarketPlan:
    """What one market's run fetches and writes."""

    market: str
    request: PriceRequest  # includes the warm-up / context sessions
    write_start: date
    write_end: date
    closed_reason: str | None = None  # set when there is nothing to do (holiday)
    provisional: bool = False


def plan_backfill(universe: Universe, market: str, start: date, end: date) -> MarketPlan:
    extra = universe.extra_holidays.get(market, ())  # type: ignore[call-overload]
    fetch_start = sessions_back(market, start, WARMUP_SESSIONS, extra)
    symbols = tuple(universe.symbols_by_market([market]).get(market, ()))
    s = sessions(market, start, end, extra)
    plan = MarketPlan(market, PriceRequest(market, symbols, fetch_start, end), start, end, provisional=s.any_provisional)
    if len(s.dates) == 0:
        plan.closed_reason = f"{market} has no trading session from {start} to {end}"
    return plan


def plan_daily(universe: Universe, market: str, day: date) -> MarketPlan:
    extra = universe.extra_holidays.get(market, ())  # type: ignore[call-overload]
    symbols = tuple(universe.symbols_by_market([market]).get(market, ()))
    s = sessions(market, day, day, extra)
    fetch_start = sessions_back(market, day, DAILY_CONTEXT_SESSIONS, extra)
    plan = MarketPlan(market, PriceRequest(market, symbols, fetch_start, day), day, day, provisional=s.any_provisional)
    if len(s.dates) == 0:
        plan.closed_reason = f"{market} market closed on {day} ({MARKET_INFO[market].calendar} has no session that day)"
    return plan


def latest_settled_session(market: str, now: datetime, buffer_minutes: int = 30) -> date:
    """The latest session of `market` whose close (+ buffer) is before `now`."""
    from aimoves.calendars import exchange_calendar

    cal = exchange_calendar(market)
    local_today = pd.Timestamp(now).tz_convert(MARKET_INFO[market].timezone).date()
    recent = sessions(market, local_today - pd.Timedelta(days=15), local_today)
    for day in reversed(recent.dates):
        if day <= cal.last_session:
            close = cal.session_close(day)
        else:
            close = pd.Timestamp.combine(day.date(), MARKET_INFO[market].close).tz_localize(MARKET_INFO[market].timezone)
        if close + pd.Timedelta(minutes=buffer_minutes) <= pd.Timestamp(now):
            return day.date()
    raise AimovesError(f"no settled {market} session in the 15 days before {now}")


def next_session(market: str, day: date) -> date:
    """The first session strictly after `day`."""
    s = sessions(market, day + pd.Timedelta(days=1), day + pd.Timedelta(days=20))
    return s.dates[0].date()


def exchange_today(market: str, now: datetime | None = None) -> date:
    now = now or datetime.now(UTC)
    return pd.Timestamp(now).tz_convert(MARKET_INFO[market].timezone).date()


def in_window(frame: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """The rows of `frame` dated start..end."""
    d = frame["date"]
    return frame[(d >= pd.Timestamp(start)) & (d <= pd.Timestamp(end))]
