"""A run's options (aimoves.options): parsing, defaults from the universe, configuration checks."""

from __future__ import annotations

import inspect
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from aimoves.errors import ConfigError
from aimoves.options import (
    BackfillOptions,
    DailyOptions,
    DeriveOptions,
    check_data_dir,
    check_derive,
    check_run,
    check_window,
    flow_parameters,
    markets_of,
    parse,
)
from aimoves.universe import parse_universe

US_HK = parse_universe(
    "stocks:\n  - {symbol: NVDA, name: N, market: US, sector: semiconductors}\n  - {symbol: 0981.HK, name: S, market: HK, sector: semiconductors}\n",
    "us-hk.yaml",
)


def test_command_line_strings_parse_into_the_model() -> None:
    opts = parse(BackfillOptions, start="2025-01-02", end="2025-01-31", markets="hk, us,HK", source="csv", csv_dir="prices", shock_date=None)
    assert opts.start == date(2025, 1, 2) and opts.end == date(2025, 1, 31)
    assert opts.markets == ["HK", "US"]  # upper-cased, de-duplicated, in the order given
    assert parse(BackfillOptions, start="2025-01-02", end="2025-01-02", markets=["CN"]).markets == ["CN"]  # a deployment's list
    assert parse(DailyOptions).day is None and parse(DailyOptions).markets is None


@pytest.mark.parametrize(
    ("model", "values", "message"),
    [
        (BackfillOptions, {"start": "2025-13-01", "end": "2025-01-02"}, "--start: '2025-13-01' is not a date (YYYY-MM-DD)"),
        (BackfillOptions, {"start": "2025-01-03", "end": "2025-01-02"}, "--end 2025-01-02 is before --start 2025-01-03"),
        (BackfillOptions, {"start": "2025-01-02", "end": "2025-01-02", "markets": "US,JP"}, "--markets: unknown market(s) JP; choose from US,HK,CN"),
        (BackfillOptions, {"start": "2025-01-02", "end": "2025-01-02", "markets": " , "}, "--markets: unknown market(s) (none)"),
        (BackfillOptions, {"start": "2025-01-02", "end": "2025-01-02", "source": "bloomberg"}, "--source: 'bloomberg': choose one of yahoo, csv, simulated or replay"),
        (BackfillOptions, {"start": "2025-01-02", "end": "2025-01-02", "news_source": "tv"}, "--news-source: 'tv': choose one of"),
        (BackfillOptions, {"start": "2025-01-02", "end": "2025-01-02", "shock_date": "soon"}, "--shock-date: 'soon' is not a date"),
        (DailyOptions, {"day": "27/01/2025"}, "--date: '27/01/2025' is not a date"),
        (DeriveOptions, {"start": "2025-01-03", "end": "2025-01-02"}, "--end 2025-01-02 is before --start 2025-01-03"),
        (BackfillOptions, {"end": "2025-01-02"}, "--start: Field required"),
    ],
)
def test_bad_values_name_the_option(model: type, values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse(model, **values)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value) and "pydantic" not in str(exc.value)  # one line, no pydantic report


def test_markets_come_from_the_universe() -> None:
    assert markets_of(parse(DailyOptions), US_HK) == ["US", "HK"]  # not CN: the universe has none
    assert markets_of(parse(DailyOptions, markets="HK"), US_HK) == ["HK"]
    with pytest.raises(ConfigError, match=r"--markets: the universe has no stock in CN \(it lists US, HK\)"):
        markets_of(parse(DailyOptions, markets="US,CN"), US_HK)


def test_the_flows_take_the_models_fields() -> None:
    """The flows' parameters are the models' fields, with the same defaults: declared once, mirrored."""
    from aimoves.flows.derive import derive
    from aimoves.flows.prices import backfill, daily

    for flow, model in ((backfill, BackfillOptions), (daily, DailyOptions), (derive, DeriveOptions)):
        params = inspect.signature(flow.fn).parameters
        assert set(params) == set(model.model_fields), flow.name
        for name, field in model.model_fields.items():
            if not field.is_required():
                assert params[name].default == field.default, (flow.name, name)
    opts = parse(BackfillOptions, start="2025-01-02", end="2025-01-03", markets="US", data_dir="d")
    assert flow_parameters(opts) == {**opts.model_dump(), "markets": ["US"], "data_dir": "d"}


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (date(1900, 1, 2), date(1900, 1, 3), "--start 1900-01-02: before 2000-01-03, where aimoves' exchange calendars start"),
        (date(2099, 1, 2), date(2099, 1, 3), "--end 2099-01-03: past "),
    ],
)
def test_windows_outside_the_calendars_are_refused_cheaply(start: date, end: date, message: str) -> None:
    cpu = time.process_time()
    with pytest.raises(ConfigError) as exc:
        check_window(["US", "HK", "CN"], start, end)
    assert message in str(exc.value) and "use " in str(exc.value)
    assert time.process_time() - cpu < 1.0


def test_a_window_past_one_calendar_names_that_market() -> None:
    from aimoves.calendars import last_usable_session

    last = last_usable_session("CN")
    check_window(["CN"], date(2025, 1, 2), last)  # the provisional tail is usable
    with pytest.raises(ConfigError, match=rf"--end {last + timedelta(days=1)}: past {last}, the last CN date"):
        check_window(["CN"], date(2025, 1, 2), last + timedelta(days=1))


def test_the_first_session_of_the_calendar_plans_without_error() -> None:
    """`sessions_back` at the calendar's start used to raise IndexError (a 2000-01-03 backfill)."""
    from aimoves.calendars import sessions_back

    assert sessions_back("US", date(2000, 1, 3), 70) == date(2000, 1, 3)
    assert sessions_back("US", date(2000, 1, 5), 70) == date(2000, 1, 3)


def test_data_dir_checks(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_data_dir(afile)
    with pytest.raises(ConfigError, match="no data dir here"):
        check_data_dir(tmp_path / "missing", must_exist=True)
    check_data_dir(tmp_path / "new" / "data")  # created later by the run
    # NOTE: root writes through chmod 0555; /proc and /sys refuse new files even to root.
    for place in ("/proc/aimoves-data", "/sys/aimoves-data"):
        if Path(place).parent.is_dir():
            with pytest.raises(ConfigError, match="not writable"):
                check_data_dir(place)
    check_data_dir("/proc", must_exist=True, writable=False)  # readers need no write access


def test_run_checks_before_the_engine(tmp_path: Path) -> None:
    universe = tmp_path / "u.yaml"
    universe.write_text("stocks:\n  - {symbol: NVDA, name: N, market: US, sector: semiconductors}\n  - {symbol: 0981.HK, name: S, market: HK, sector: semiconductors}\n")
    base = {"start": "2025-01-02", "end": "2025-01-31", "universe": str(universe), "data_dir": str(tmp_path / "data")}
    _, markets = check_run(parse(BackfillOptions, **base, source="simulated"))
    assert markets == ["US", "HK"]
    cases = [
        ({"source": "csv"}, "--source csv needs --csv-dir"),
        ({"source": "csv", "csv_dir": str(tmp_path / "none")}, "not a directory"),
        ({"source": "replay"}, "no data dir here"),
        ({"source": "simulated", "markets": "CN"}, "the universe has no stock in CN"),
        ({"source": "simulated", "start": "1999-12-31"}, "before 2000-01-03"),
    ]
    for extra, message in cases:
        with pytest.raises(ConfigError, match=message):
            check_run(parse(BackfillOptions, **{**base, **extra}))
    with pytest.raises(ConfigError, match="no data dir here"):
        check_derive(parse(DeriveOptions, start="2025-01-02", data_dir=str(tmp_path / "nothing")))


def test_failed_symbols_table_is_bounded() -> None:
    """Issue 10 item 3: the UI's table of failed symbols stays small; the run record keeps them all."""
    from aimoves.runs import MarketReport, RunSummary
    from aimoves.catalog import Catalog
    from aimoves.publish import failed_symbols_table

    summary = RunSummary("20250101T000000Z-1", "backfill", "data", "2025-01-01T00:00:00+00:00")
    summary.markets.append(MarketReport("US", "csv", "w", failures=[{"symbol": f"Z{i}", "reason": "no file"} for i in range(50_000)]))
    rows = failed_symbols_table(summary, limit=500)
    assert len(rows) == 500 and rows[0] == {"market": "US", "symbol": "Z0", "reason": "no file"}
    record = Catalog("data").run_record_path("20250101T000000Z-1")
    assert record.endswith("/data/_runs/20250101T000000Z-1.json")
    assert rows[-1] == {"market": "", "symbol": "… 49,501 more", "reason": f"all 50,000 are in {record}"}
    assert len(failed_symbols_table(summary, limit=60_000)) == 50_000
