from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd

from aimoves.calendars import last_known_session, session_flags, sessions
from aimoves.planning import latest_settled_session, plan_daily
from aimoves.universe import parse_universe


def _days(market: str, start: str, end: str) -> list[str]:
    return [d.date().isoformat() for d in sessions(market, date.fromisoformat(start), date.fromisoformat(end)).dates]


def test_lunar_new_year_2025() -> None:
    # HK: 2025-01-28 is a half-day session; closed 29..31.
    assert _days("HK", "2025-01-27", "2025-02-03") == ["2025-01-27", "2025-01-28", "2025-02-03"]
    # Shanghai: closed 2025-01-28..02-04.
    assert _days("CN", "2025-01-27", "2025-02-05") == ["2025-01-27", "2025-02-05"]


def test_us_closures_in_january_2025() -> None:
    days = _days("US", "2025-01-08", "2025-01-21")
    assert "2025-01-09" not in days  # national day of mourning
    assert "2025-01-20" not in days  # MLK day
    assert "2025-01-21" in days


def test_past_the_calendar_end_weekdays_are_provisional() -> None:
    last = last_known_session("CN")
    assert last == date(2026, 12, 31)
    s = sessions("CN", date(2026, 12, 30), date(2027, 1, 8), extra_holidays=[date(2027, 1, 1)])
    days = [d.date() for d in s.dates]
    assert date(2027, 1, 1) not in days  # the configured holiday
    assert date(2027, 1, 2) not in days  # a Saturday
    assert date(2027, 1, 4) in days
    assert list(s.provisional) == [d > last for d in days]


def test_session_flags() -> None:
    is_session, provisional = session_flags("HK", pd.Series(pd.to_datetime(["2025-01-28", "2025-01-29", "2025-02-03"])))
    assert list(is_session) == [True, False, True]
    assert not provisional.any()


def test_daily_plan_on_a_holiday_says_closed() -> None:
    u = parse_universe("stocks:\n  - {symbol: 0981.HK, name: SMIC, market: HK, sector: semiconductors}\n", "u")
    plan = plan_daily(u, "HK", date(2025, 1, 29))
    assert plan.closed_reason and "closed on 2025-01-29" in plan.closed_reason
    assert plan_daily(u, "HK", date(2025, 1, 28)).closed_reason is None


def test_latest_settled_session_respects_close_and_half_days() -> None:
    # HK closes 16:00 (08:00 UTC); on the 2025-01-28 half-day at 12:00 (04:00 UTC).
    assert latest_settled_session("HK", datetime(2025, 1, 27, 7, 0, tzinfo=UTC)) == date(2025, 1, 24)
    assert latest_settled_session("HK", datetime(2025, 1, 27, 9, 0, tzinfo=UTC)) == date(2025, 1, 27)
    assert latest_settled_session("HK", datetime(2025, 1, 28, 3, 59, tzinfo=UTC)) == date(2025, 1, 27)
    assert latest_settled_session("HK", datetime(2025, 1, 28, 4, 45, tzinfo=UTC)) == date(2025, 1, 28)
    # during the holiday the last settled session is the half day
    assert latest_settled_session("HK", datetime(2025, 1, 30, 12, 0, tzinfo=UTC)) == date(2025, 1, 28)
