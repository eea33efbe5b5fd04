"""Trading calendars per market (exchange_calendars), with a provisional tail past their end.

exchange_calendars only knows holidays that exchanges have announced: XSHG stops at the end of the
year China last published. Past a calendar's last session, weekdays count as *provisional*
sessions, minus any holidays the universe file adds for that market (`extra_holidays:`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from aimoves.markets import MARKET_INFO

if TYPE_CHECKING:
    import exchange_calendars as xcals

log = logging.getLogger(__name__)

CALENDAR_START = pd.Timestamp("2000-01-03")


@lru_cache(maxsize=None)
def exchange_calendar(market: str) -> xcals.ExchangeCalendar:
    import exchange_calendars as xcals  # imported when first needed: config checks run without it

    return xcals.get_calendar(MARKET_INFO[market].calendar, start=CALENDAR_START)


@lru_cache(maxsize=None)
def _known_sessions(market: str) -> pd.DatetimeIndex:
    return exchange_calendar(market).sessions


# Past its calendar's end a market's weekdays are provisional sessions for at most this long: further
# out nothing is known (and derived windows past it would mean years of guessed sessions).
PROVISIONAL_DAYS = 366


def first_known_session(market: str) -> date:
    """The first session aimoves plans with (its calendars start at CALENDAR_START)."""
    return _known_sessions(market)[0].date()


def last_usable_session(market: str) -> date:
    """The last date a run may ask for: the calendar's end plus the provisional tail."""
    return last_known_session(market) + timedelta(days=PROVISIONAL_DAYS)


def last_known_session(market: str) -> date:
    """The last session the exchange calendar knows; later sessions are provisional."""
    return _known_sessions(market)[-1].date()


@dataclass(frozen=True)
class Sessions:
    """Trading sessions of one market over a date range."""

    market: str
    dates: pd.DatetimeIndex  # naive, midnight, ascending
    provisional: np.ndarray  # bool per date: past the calendar's known schedule

    @property
    def any_provisional(self) -> bool:
        return bool(self.provisional.any())


def sessions(market: str, start: date, end: date, extra_holidays: Iterable[date] = ()) -> Sessions:
    """Sessions of `market` from `start` to `end` inclusive."""
    known = _known_sessions(market)
    start_ts, end_ts = pd.Timestamp(start), pd.Timestamp(end)
    in_range = known[(known >= start_ts) & (known <= end_ts)]
    last = known[-1]
    if end_ts <= last:
        return Sessions(market, in_range, np.zeros(len(in_range), dtype=bool))
    tail = pd.bdate_range(max(start_ts, last + pd.Timedelta(days=1)), end_ts)
    holidays = pd.DatetimeIndex([pd.Timestamp(d) for d in extra_holidays])
    tail = tail[~tail.isin(holidays)]
    dates = in_range.append(tail)
    provisional = np.r_[np.zeros(len(in_range), dtype=bool), np.ones(len(tail), dtype=bool)]
    return Sessions(market, dates, provisional)


def session_flags(market: str, dates: pd.Series, extra_holidays: Iterable[date] = ()) -> tuple[np.ndarray, np.ndarray]:
    """For each date: (is a session of the market, is that session provisional)."""
    ts = pd.to_datetime(dates)
    if len(ts) == 0:
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
    lo, hi = ts.min(), ts.max()
    s = sessions(market, lo.date(), hi.date(), extra_holidays)
    is_session = ts.isin(s.dates)
    provisional_dates = s.dates[s.provisional]
    provisional = ts.isin(provisional_dates) if len(provisional_dates) else np.zeros(len(ts), dtype=bool)
    return np.asarray(is_session), np.asarray(provisional)


def previous_session(market: str, day: date, extra_holidays: Iterable[date] = ()) -> date:
    """The last session strictly before `day`."""
    s = sessions(market, day - pd.Timedelta(days=20), day - pd.Timedelta(days=1), extra_holidays)
    return s.dates[-1].date()


def sessions_back(market: str, end: date, n: int, extra_holidays: Iterable[date] = ()) -> date:
    """The date of the n-th session before `end` (for warm-up windows)."""
    days = int(n * 1.6) + 30
    s = sessions(market, end - pd.Timedelta(days=days), end, extra_holidays)
    before = s.dates[s.dates < pd.Timestamp(end)]
    if len(before) >= n:
        return before[-n].date()
    return before[0].date() if len(before) else end  # at the calendar's start: as far back as it goes
