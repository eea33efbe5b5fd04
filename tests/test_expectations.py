"""Each expectation of the prices suite: a good frame passes, a frame broken in one way fails it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aimoves.expectations import suite_definition
from aimoves.normalize import normalize_prices
from aimoves.sources.base import PriceRequest
from aimoves.sources.simulated import SimulatedSource
from aimoves.validate import validate_prices

TODAY = date(2026, 1, 1)
ROW = 7  # the row each case breaks (symbol AMD in the middle of its history)


def good_frame(market: str = "US", start: str = "2025-03-03", end: str = "2025-03-28") -> pd.DataFrame:
    symbols = ("AMD", "NVDA") if market == "US" else ("688256.SS", "688981.SS")
    batch = SimulatedSource({}).fetch_prices(PriceRequest(market, symbols, date.fromisoformat(start), date.fromisoformat(end)))
    return normalize_prices(batch, market).prices


def _set(column: str, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(f: pd.DataFrame) -> pd.DataFrame:
        f.loc[ROW, column] = value
        return f

    return mutate


def _scale(columns: list[str], factor: float) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(f: pd.DataFrame) -> pd.DataFrame:
        f.loc[ROW, columns] = f.loc[ROW, columns] * factor
        return f

    return mutate


def _swap_high_low(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[ROW, ["high", "low"]] = f.loc[ROW, ["low", "high"]].to_numpy().copy()
    return f


def _pair(column: str, anchor: str, factor: float) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(f: pd.DataFrame) -> pd.DataFrame:
        f.loc[ROW, column] = f.loc[ROW, anchor] * factor
        return f

    return mutate


def _conflicting_duplicate(f: pd.DataFrame) -> pd.DataFrame:
    dup = f.loc[[ROW]].copy()
    dup["close"] = dup["close"] * 1.01
    return pd.concat([f, dup], ignore_index=True).sort_values(["symbol", "date"], kind="stable").reset_index(drop=True)


CASES: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    "symbol_present": _set("symbol", None),
    "date_present": _set("date", pd.NaT),
    "symbol_in_universe": _set("symbol", "ZZZZ"),
    "one_bar_per_symbol_and_date": _conflicting_duplicate,
    "close_present": _set("close", np.nan),
    "adj_close_present": _set("adj_close", np.nan),
    "open_positive": _set("open", -1.0),
    "high_positive": _set("high", 0.0),
    "low_positive": _set("low", -1.0),
    "close_positive": _set("close", -1.0),
    "adj_close_positive": _set("adj_close", -1.0),
    "high_ge_low": _swap_high_low,
    "high_ge_open": _pair("open", "high", 1.01),
    "high_ge_close": _pair("close", "high", 1.01),
    "open_ge_low": _pair("open", "low", 0.99),
    "close_ge_low": _pair("close", "low", 0.99),
    "volume_not_negative": _set("volume", -5.0),
    "date_is_exchange_session": _set("date", pd.Timestamp("2025-03-08")),  # a Saturday
    "no_unit_glitch": _scale(["open", "high", "low", "close", "adj_close"], 100),
    "zero_volume": _set("volume", 0.0),
    "volume_missing": _set("volume", np.nan),
    "open_missing": _set("open", np.nan),
    "large_daily_move": _scale(["high", "close", "adj_close"], 1.4),
}


def test_every_expectation_has_a_case() -> None:
    names = {e["meta"]["name"] for e in suite_definition("prices")["expectations"]}
    assert names == set(CASES) | {"date_not_in_future", "provisional_session"}


def test_good_frame_passes_every_expectation() -> None:
    frame = good_frame()
    result = validate_prices(frame, "US", ["AMD", "NVDA"], TODAY)
    assert result.failed_expectations == {}
    assert len(result.passed) == len(frame) and result.quarantined.empty
    assert result.passed["dq_flags"].map(len).sum() == 0


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_bad_frame_fails_the_intended_expectation(name: str) -> None:
    frame = CASES[name](good_frame())
    result = validate_prices(frame, "US", ["AMD", "NVDA"], TODAY)
    assert name in result.failed_expectations, result.failed_expectations
    severity = {e["meta"]["name"]: e["severity"] for e in suite_definition("prices")["expectations"]}[name]
    if severity == "critical":
        hit = result.quarantined[result.quarantined["expectation"].str.split(",").map(lambda names: name in names)]
        assert len(hit) >= 1
        assert hit["reason"].str.len().min() > 5
    else:
        assert result.passed["dq_flags"].map(lambda flags: name in flags).sum() >= 1
        assert result.quarantined.empty


def test_future_dates_are_quarantined() -> None:
    result = validate_prices(good_frame(), "US", ["AMD", "NVDA"], date(2025, 3, 20))
    assert "date_not_in_future" in result.failed_expectations
    assert (result.quarantined["date"] > pd.Timestamp("2025-03-20")).all()
    assert (result.passed["date"] <= pd.Timestamp("2025-03-20")).all()


def test_sessions_past_the_calendar_end_are_flagged_provisional() -> None:
    frame = good_frame("CN", "2026-12-21", "2027-01-08")
    result = validate_prices(frame, "CN", ["688256.SS", "688981.SS"], date(2027, 2, 1))
    provisional = result.passed[result.passed["dq_flags"].map(lambda f: "provisional_session" in f)]
    assert len(provisional) > 0 and (provisional["date"] > pd.Timestamp("2026-12-31")).all()
    assert result.quarantined.empty


def test_real_big_moves_are_kept() -> None:
    # NVDA -17% (2025-01-27) and 3896.HK +31% (2025-02-03) happened: at most a flag, never quarantine.
    frame = good_frame()
    frame.loc[ROW:, ["open", "high", "low", "close", "adj_close"]] *= 0.83
    frame.loc[ROW + 3 :, ["open", "high", "low", "close", "adj_close"]] *= 1.31
    amd = frame["symbol"] == frame.loc[ROW, "symbol"]
    frame.loc[~amd, ["open", "high", "low", "close", "adj_close"]] = good_frame().loc[~amd, ["open", "high", "low", "close", "adj_close"]]
    result = validate_prices(frame, "US", ["AMD", "NVDA"], TODAY)
    assert result.quarantined.empty


def test_validation_returns_its_gx_results_as_values() -> None:
    us = validate_prices(good_frame(), "US", ["AMD", "NVDA"], TODAY)
    cn = validate_prices(good_frame("CN"), "CN", ["688256.SS", "688981.SS"], TODAY)
    assert [(r.suite, r.label) for r in us.suite_runs] == [("prices", "prices-US")]
    assert [(r.suite, r.label) for r in cn.suite_runs] == [("prices", "prices-CN")]
    assert us.suite_runs[0].result is not cn.suite_runs[0].result and us.suite_runs[0].result.success


@pytest.mark.parametrize("run_id", ["20260101T093000Z-5885", "20260101T093000Z-12"])
def test_data_docs_are_built_for_run_ids_gx_cannot_parse(tmp_path, run_id: str) -> None:  # noqa: ANN001
    from datetime import UTC, datetime

    from aimoves import datadocs

    started = datetime(2026, 1, 1, 9, 30, tzinfo=UTC)
    broken = CASES["high_ge_low"](good_frame())
    runs = validate_prices(broken, "US", ["AMD", "NVDA"], TODAY).suite_runs
    built = datadocs.build(tmp_path, run_id, started, runs)
    assert built is not None
    index = Path(built)
    assert index.is_file()
    pages = list((index.parent / "validations" / "prices").rglob("*.html"))
    assert len(pages) == 1
    assert run_id in pages[0].parts and "20260101T093000.000000Z" in pages[0].parts  # the run's real time, not parsed from its name
    assert "Failed" in pages[0].read_text()  # the page shows the failed expectation


def test_the_run_gathers_every_stages_gx_results_from_their_return_values() -> None:
    from aimoves.derive import DeriveReport
    from aimoves.run import Run, suite_runs_of
    from aimoves.runs import RunSummary

    prices = validate_prices(good_frame(), "US", ["AMD", "NVDA"], TODAY).suite_runs
    fx, stock, sector, news, divergence = (object() for _ in range(5))
    summary = RunSummary("20260101T093000Z-5885", "backfill", "d", "2026-01-01T09:30:00+00:00")
    summary.fx, summary.news = {"suite_runs": [fx]}, {"suite_runs": [news]}
    summary.stock_moves, summary.sector_moves = DeriveReport("stock_moves", "w", suite_runs=[stock]), DeriveReport("sector_moves", "w", suite_runs=[sector])
    summary.divergence = DeriveReport("divergence", "w", suite_runs=[divergence])
    run = Run(None, None, None, None, summary, None, suite_runs=list(prices))  # type: ignore[arg-type]  # only the results matter here
    assert suite_runs_of(run) == [*prices, fx, news, stock, sector, divergence]


def test_gx_keeps_no_batch_after_validating_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """GX caches each suite's last batch in its execution engine: a 10-year batch held on was hundreds of MB of peak RSS."""
    import gc
    import weakref

    import aimoves.validate as validate

    given: list[weakref.ref] = []
    real = validate._batch_definition

    class Recording:
        def __init__(self, definition) -> None:  # noqa: ANN001
            self.definition = definition

        def get_batch(self, batch_parameters: dict):  # noqa: ANN201
            given.append(weakref.ref(batch_parameters["dataframe"]))
            return self.definition.get_batch(batch_parameters=batch_parameters)

    def recording(name: str, market: str | None = None):  # noqa: ANN202
        definition, suite = real(name, market)
        return Recording(definition), suite

    monkeypatch.setattr(validate, "_batch_definition", recording)
    result = validate_prices(good_frame(), "US", ["AMD", "NVDA"], TODAY)
    assert len(result.passed) and given
    gc.collect()
    assert [ref() is None for ref in given] == [True] * len(given)


def _frames_equal(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False)


def test_markets_validated_together_decide_each_row_as_alone() -> None:
    """One GX call for every market (a daily's three cost about one): each market's rows get exactly the
    results, reasons and failure counts they get validated alone, the per-market checks included."""
    from aimoves.validate import MarketPrices, validate_markets

    def broken(market: str, symbols: tuple[str, ...]) -> pd.DataFrame:
        batch = SimulatedSource({}, inject_defects=True).fetch_prices(PriceRequest(market, symbols, date(2025, 3, 3), date(2025, 4, 30)))
        frame = normalize_prices(batch, market).prices
        stray = frame.iloc[[3]].assign(symbol="0700.HK" if market != "HK" else "NVDA")  # another market's symbol in this batch
        future = frame.iloc[[4]].assign(date=pd.Timestamp("2025-05-02"))  # after this market's today, before the others'
        return pd.concat([frame, stray, future], ignore_index=True)

    todays = {"US": date(2025, 5, 1), "HK": date(2025, 5, 2), "CN": date(2025, 5, 2)}
    parts = [MarketPrices(broken("US", ("AMD", "NVDA")), "US", ["AMD", "NVDA"], todays["US"]),
             MarketPrices(broken("HK", ("0700.HK", "0981.HK")), "HK", ["0700.HK", "0981.HK"], todays["HK"]),
             MarketPrices(broken("CN", ("688256.SS",)), "CN", ["688256.SS"], todays["CN"])]
    together = validate_markets(parts)
    assert sorted(together) == ["CN", "HK", "US"]
    for part in parts:
        alone = validate_markets([part])[part.market]
        both = together[part.market]
        _frames_equal(both.passed, alone.passed)
        _frames_equal(both.quarantined, alone.quarantined)
        assert both.failed_expectations == alone.failed_expectations, part.market
        assert {"symbol_in_universe", "low_positive"} <= set(alone.failed_expectations), alone.failed_expectations
        assert ("date_not_in_future" in alone.failed_expectations) == (part.market == "US"), part.market
    assert [len(together[m].suite_runs) for m in ("US", "HK", "CN")] == [1, 0, 0]  # one GX result, for Data Docs
    assert together["US"].suite_runs[0].label == "prices-US+HK+CN"
    reasons = " ".join(together["US"].quarantined["reason"])
    assert "0700.HK is not in the universe for US" in reasons and "2025-05-02 is after the exchange's current date" in reasons


def test_a_market_whose_bars_break_gx_costs_the_others_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime

    import aimoves.validate as validate
    from aimoves.planning import plan_backfill
    from aimoves.run import Fetched, validate_fetched
    from aimoves.universe import parse_universe

    universe = parse_universe("stocks:\n  - {symbol: NVDA, name: NVIDIA, market: US, sector: semiconductors}\n"
                              "  - {symbol: 0981.HK, name: SMIC, market: HK, sector: semiconductors}\n", "u")
    fetched = []
    for market in ("US", "HK"):
        plan = plan_backfill(universe, market, date(2025, 3, 3), date(2025, 3, 28))
        batch = SimulatedSource({}).fetch_prices(plan.request)
        normalized = normalize_prices(batch, market)
        fetched.append(Fetched(plan, batch, None, normalized))
    real = validate.run_suite

    def breaks_on_hk(name: str, frame: pd.DataFrame, *args: object):  # noqa: ANN202  # as GX raises on a batch it cannot check
        if (frame["market"] == "HK").any():
            raise RuntimeError("expectation volume_not_negative could not run: '>=' not supported between 'str' and 'int'")
        return real(name, frame, *args)

    monkeypatch.setattr(validate, "run_suite", breaks_on_hk)
    checked = validate_fetched(fetched, universe, datetime(2026, 1, 1, tzinfo=UTC))
    assert len(checked["US"].passed) > 0 and checked["US"].quarantined.empty
    assert isinstance(checked["HK"], Exception)


def test_the_data_docs_index_lists_only_the_newest_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GX reads every stored result to build the index: unbounded, a daily run's Data Docs grow slower with every run before it."""
    from datetime import UTC, datetime, timedelta

    from aimoves import datadocs

    monkeypatch.setattr(datadocs, "INDEX_LIMIT", 2)
    runs = validate_prices(good_frame(), "US", ["AMD", "NVDA"], TODAY).suite_runs
    started = datetime(2026, 1, 1, 9, 30, tzinfo=UTC)
    for i in range(4):
        index = datadocs.build(tmp_path, f"20260101T093000Z-run{i}", started + timedelta(days=i), runs)
    page = Path(index).read_text()
    assert [f"run{i}" in page for i in range(4)] == [False, False, True, True]
    assert len(list((Path(index).parent / "validations" / "prices").rglob("*.html"))) == 4  # every run keeps its page
