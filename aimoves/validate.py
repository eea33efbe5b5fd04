"""Row-level validation with Great Expectations, and the quarantine split.

GX reports which rows fail each expectation (result_format COMPLETE gives their indices); GX itself
does not quarantine, so this module does: a row failing any `critical` expectation leaves the batch
for `quarantine/` with every failed expectation and a reason; a row failing only `warning`
expectations stays, with the expectations' names in `dq_flags`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from aimoves.store import empty_lists
from aimoves.calendars import session_flags
from aimoves.expectations import default_parameters, suite_definition
from aimoves.markets import MARKET_INFO

log = logging.getLogger(__name__)

GLITCH_WINDOW = 11  # bars around a row whose median adj_close it is compared with


class SuiteRun:
    """One suite's GX result on one batch (for Data Docs); its repr is short, for run records."""

    def __init__(self, suite: str, label: str, result: Any) -> None:
        self.suite, self.label, self.result = suite, label, result

    def __repr__(self) -> str:
        return f"{self.label}: {'passed' if self.result.success else 'failed'}"

    __str__ = __repr__

    def __deepcopy__(self, memo: dict) -> SuiteRun:  # dataclasses.asdict copies reports: the GX result is not copied
        return self


@dataclass
class ValidationResult:
    passed: pd.DataFrame  # canonical columns + dq_flags (list of str)
    quarantined: pd.DataFrame  # canonical columns + dq_flags + expectation, reason
    failed_expectations: dict[str, int] = field(default_factory=dict)  # name → rows
    batch_error: str | None = None  # set when the batch fails as a whole
    suite_runs: list[SuiteRun] = field(default_factory=list)  # GX results, for Data Docs

    @property
    def flagged(self) -> int:
        return int((self.passed["dq_flags"].map(len) > 0).sum()) if len(self.passed) else 0


@lru_cache(maxsize=1)
def _gx_context() -> Any:
    import great_expectations as gx  # NOTE: ~2.5 s to import; only when validation runs
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def for_market(definition: dict, market: str) -> dict:
    """Suite `definition` for a batch of one market's rows: its checks stated per market (a
    `row_condition` on `market`) kept for this market without the condition, the others' dropped.

    NOTE: GX (pandas) filters the whole batch for each expectation with a row_condition: six of them
    on a backfill's 833,000 rows per market cost ~2 s of its prices validation (bench, one repeat)."""
    own = f'market == "{market}"'
    expectations = []
    for e in definition["expectations"]:
        condition = e["kwargs"].get("row_condition", "")
        if condition.startswith("market =="):
            if condition != own:
                continue
            e = {**e, "kwargs": {k: v for k, v in e["kwargs"].items() if k not in ("row_condition", "condition_parser")}}
        expectations.append(e)
    return {**definition, "name": f"{definition['name']}-{market}", "expectations": expectations}


@lru_cache(maxsize=None)
def _batch_definition(name: str, market: str | None = None) -> Any:
    from great_expectations.core.expectation_suite import ExpectationSuite

    context = _gx_context()
    key = f"{name}_{market}" if market else name
    source = context.data_sources.add_pandas(f"aimoves_{key}")
    asset = source.add_dataframe_asset(key)
    definition = asset.add_batch_definition_whole_dataframe("whole")
    suite = context.suites.add(ExpectationSuite(**(for_market(suite_definition(name), market) if market else suite_definition(name))))
    return definition, suite


@lru_cache(maxsize=None)
def suite_columns(name: str) -> tuple[str, ...]:
    """The columns suite `name` reads (its kwargs and row conditions), in first-use order."""
    out: dict[str, None] = {}
    for e in suite_definition(name)["expectations"]:
        kw = e["kwargs"]
        for c in (kw.get("column"), kw.get("column_A"), kw.get("column_B"), *kw.get("column_list", ())):
            if c:
                out[c] = None
        if kw.get("row_condition"):
            out[kw["row_condition"].split()[0]] = None
    return tuple(out)


def run_suite(name: str, frame: pd.DataFrame, parameters: dict, label: str = "", market: str | None = None) -> tuple[list[dict], SuiteRun]:
    """Run suite `name` (its `for_market` form when `market` is given) on every row of `frame`: one dict
    per expectation (name, severity, success, rows, meta), and GX's result."""
    definition, suite = _batch_definition(name, market)
    # NOTE: GX hashes the whole batch frame to name the batch; the suite's columns alone are enough to
    # check every row, and leave out list columns (dq_flags, news_ids) that are slow to hash.
    batch = definition.get_batch(batch_parameters={"dataframe": frame[[c for c in suite_columns(name) if c in frame]]})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = batch.validate(
                suite,
                result_format={"result_format": "COMPLETE", "return_unexpected_index_query": False},
                expectation_parameters={**default_parameters(name), **parameters},
            )
    finally:
        _release(batch)
    out = []
    for r in result.results:
        config = r.expectation_config
        if r.exception_info and r.exception_info.get("raised_exception"):
            raise RuntimeError(f"expectation {config.meta.get('name')} could not run: {r.exception_info.get('exception_message')}")
        out.append(
            {
                "name": config.meta.get("name", config.type),
                "severity": str(getattr(config.severity, "value", config.severity)),
                "success": bool(r.success),
                "rows": list(r.result.get("unexpected_index_list") or []),
                "meta": dict(config.meta),
            }
        )
    return out, SuiteRun(name, label or name, result)


def _release(batch: Any) -> None:
    """Drop the batch from its execution engine's cache: GX keeps each suite's last batch, and a
    10-year stock-moves batch held through the later stages was hundreds of MB of the peak RSS."""
    manager = batch.data.execution_engine.batch_manager
    manager.batch_data_cache.pop(batch.id, None)
    manager.reset_batch_cache()


def add_price_checks(prices: pd.DataFrame, market: str, today: date, extra_holidays: tuple[date, ...] = ()) -> pd.DataFrame:
    """The helper columns the prices suite checks: what needs the trading calendar or neighbouring bars."""
    frame = prices.copy()
    is_session, provisional = session_flags(market, frame["date"], extra_holidays)
    frame["is_exchange_session"] = is_session
    frame["is_provisional_session"] = provisional
    # prices arrive sorted by (symbol, date); grouped by integer codes, not the (Arrow) strings: same groups, faster
    codes = pd.factorize(frame["symbol"])[0]
    group = np.where(codes < 0, np.nan, codes)  # a missing symbol stays out of every group, as groupby by the column leaves it
    adj = frame["adj_close"].where(frame["adj_close"] > 0)
    median = adj.groupby(group, sort=False).rolling(GLITCH_WINDOW, center=True, min_periods=1).median()
    ratio = adj / median.reset_index(level=0, drop=True).reindex(frame.index)
    frame["adj_close_vs_local_median"] = ratio
    # Returns skip rows that are glitches themselves, so the bar after a glitch is not flagged.
    params = default_parameters("prices")
    keep = ((ratio >= params["glitch_ratio_min"]) & (ratio <= params["glitch_ratio_max"])).to_numpy()
    clean = adj[keep]
    previous = clean.groupby(group[keep], sort=False).shift(1)
    frame["daily_return"] = (clean / previous - 1).reindex(frame.index)
    return frame


def _reason(template: str, row: dict) -> str:
    try:
        return template.format(**row)
    except (KeyError, ValueError, TypeError):
        return template


def split_by_suite(
    suite: str, frame: pd.DataFrame, base_columns: list[str], parameters: dict | None = None, context: dict | None = None, label: str = "",
    by: str | None = None, market: str | None = None,
) -> ValidationResult | dict[Any, ValidationResult]:
    """Run `suite` on `frame`; critical failures → quarantined (expectation, reason), warnings → dq_flags.

    `frame` holds `base_columns` plus any derived columns the suite checks; results keep only
    `base_columns` (and `dq_flags` merged with any the frame already has). With `by` (a column),
    one result per value of that column, from the one GX validation (its result goes with the first).
    """
    frame = frame.reset_index(drop=True)
    results, suite_run = run_suite(suite, frame, parameters or {}, label, market)
    critical: dict[int, list[str]] = {}
    reasons: dict[int, list[str]] = {}
    warnings_: dict[int, list[str]] = {}
    for r in results:  # only failing rows are touched: the per-row work is proportional to the failures
        if r["success"] or not r["rows"]:
            continue
        for i in r["rows"]:
            if r["severity"] == "critical":
                row = {**(context or {}), **frame.iloc[i].to_dict()}
                if isinstance(row.get("date"), pd.Timestamp):
                    row["date"] = row["date"].date()
                critical.setdefault(i, []).append(r["name"])
                reasons.setdefault(i, []).append(_reason(r["meta"].get("reason", r["name"]), row))
            else:
                warnings_.setdefault(i, []).append(r["name"])
    bad = np.zeros(len(frame), dtype=bool)
    bad[list(critical)] = True
    base = [c for c in base_columns if c != "dq_flags"]
    existing = frame["dq_flags"] if "dq_flags" in frame else None
    flags = existing.copy() if existing is not None else pd.Series(empty_lists(len(frame)), index=frame.index, dtype=object)
    for i, names in warnings_.items():
        flags.iat[i] = sorted(set(list(flags.iat[i]) + names))

    def split(rows: np.ndarray | None) -> ValidationResult:
        """The result for the rows `rows` selects (every row when None)."""
        ok = ~bad if rows is None else ~bad & rows
        if rows is None and not critical:  # NOTE: nothing quarantined: the columns themselves, not a copy of millions of rows (peak memory)
            passed = frame[base]
            passed["dq_flags"] = flags
        else:
            passed = frame.loc[ok, base].reset_index(drop=True)
            passed["dq_flags"] = flags[ok].reset_index(drop=True)
        order = sorted(i for i in critical if rows is None or rows[i])
        quarantined = frame.loc[order, base].reset_index(drop=True)
        quarantined["dq_flags"] = flags.iloc[order].reset_index(drop=True)
        quarantined["expectation"] = [",".join(critical[i]) for i in order]
        quarantined["reason"] = ["; ".join(reasons[i]) for i in order]
        failed: dict[str, int] = {}  # name → rows failing it (an expectation stated per market counts once per row)
        for r in results:
            n = len(r["rows"]) if rows is None else int(rows[r["rows"]].sum()) if r["rows"] else 0
            if not r["success"] and n:
                failed[r["name"]] = failed.get(r["name"], 0) + n
        return ValidationResult(passed, quarantined, failed)

    if by is None:
        result = split(None)
        result.suite_runs = [suite_run]
        return result
    out = {}
    for value in frame[by].dropna().unique():
        out[value] = split((frame[by] == value).to_numpy())
        out[value].suite_runs = [] if len(out) > 1 else [suite_run]
    return out


@dataclass
class MarketPrices:
    """One market's normalized bars, and what its checks need."""

    prices: pd.DataFrame
    market: str
    symbols: list[str]  # the universe's symbols the run asked for
    today: date  # the exchange's current date
    extra_holidays: tuple[date, ...] = ()


def validate_prices(
    prices: pd.DataFrame,
    market: str,
    universe_symbols: list[str],
    today: date,
    extra_holidays: tuple[date, ...] = (),
) -> ValidationResult:
    """Split one market's normalized prices into passed rows (with dq_flags) and quarantined rows (with reasons)."""
    return validate_markets([MarketPrices(prices, market, universe_symbols, today, extra_holidays)])[market]


def validate_markets(markets: list[MarketPrices]) -> dict[str, ValidationResult]:
    """Each market's prices split into passed and quarantined rows, every market in one GX validation.

    NOTE: GX's cost is mostly per call (it builds every expectation's metric graph: ~0.45 s for the
    prices suite, whatever the rows), so a daily's three markets cost about one call. Every check
    stays its market's own: the calendar and glitch columns are computed per market, and the suite
    states the universe and future-date checks per market (a row_condition on `market`, with
    `symbols_<market>` and `today_<market>`).
    """
    out: dict[str, ValidationResult] = {}
    frames, parameters, calendars = [], {}, {}
    for m in markets:
        if m.prices.empty:
            out[m.market] = ValidationResult(m.prices.assign(dq_flags=[]), m.prices.assign(expectation=[], reason=[]),
                                             batch_error="no rows to validate: nothing usable was fetched")
            continue
        frame = add_price_checks(m.prices.reset_index(drop=True), m.market, m.today, m.extra_holidays)
        frames.append(frame)
        # NOTE: GX copies an expectation's value set many times over (50,000 symbols: minutes); the
        # universe's symbols that occur in the batch decide the same rows.
        parameters[f"symbols_{m.market}"] = sorted(set(m.symbols).intersection(frame["symbol"].dropna().unique()))
        parameters[f"today_{m.market}"] = pd.Timestamp(m.today)
        calendars[m.market] = MARKET_INFO[m.market].calendar
    if not frames:
        return out
    for market in MARKET_INFO:  # a market with no rows here: its checks pass on no rows, but need values
        parameters.setdefault(f"symbols_{market}", [])
        parameters.setdefault(f"today_{market}", pd.Timestamp(markets[0].today))
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    del frames
    base = list(markets[0].prices.columns)
    label = f"prices-{'+'.join(calendars)}"
    if len(calendars) == 1:  # one market: its result whole (no per-market copy of the rows)
        market, calendar = next(iter(calendars.items()))
        return {**out, market: split_by_suite("prices", frame, base, parameters, {"calendar": calendar}, label=label, market=market)}
    frame["calendar"] = frame["market"].map(calendars)  # for the reasons ("... not a session of XNYS")
    return {**out, **split_by_suite("prices", frame, base, parameters, label=label, by="market")}
