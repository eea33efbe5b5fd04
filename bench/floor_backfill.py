"""The floor for bench/backfill.py: the `backfill` flow's work as a bare pandas + pyarrow script.

Same inputs (the same `SimulatedSource` requests, warm-up included), same stages, same output
files (dataset, partitioning, file schema, row groups, zstd, fsync per file), no framework:

    prices, per market: fetch → raw Parquet + manifest → normalize → derived check columns → the
        `prices` suite as vectorized masks → good / quarantine split, dq_flags → one file per
        market/year partition (+ quarantine rows)
    fx: fetch → raw → normalize → the `fx` suite → write
    stock moves: returns, trailing volatility, z-scores, USD returns, gap / FX flags → the
        `stock_moves` suite → write
    sector moves: per region (markets + ALL) and sector: equal / cap-weighted returns,
        advancers, top / bottom, members → the `sector_moves` suite → write

The suites are read from expectations/*.json and evaluated by `evaluate_suite`, which refuses an
expectation type it has no vectorized form for, so the floor cannot silently skip a new check.
Where the pipeline re-reads what it stored (stock moves read prices, sector moves read stock
moves) the floor keeps the rows in memory: re-reading is a cost of the pipeline's design, not of
the work. bench/backfill.py checks with DuckDB that both write the same rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections import defaultdict
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from aimoves.calendars import sessions
from aimoves.expectations import default_parameters, suite_definition
from aimoves.markets import MARKET_INFO, MARKETS, normalize_symbol
from aimoves.planning import next_session, plan_backfill
from aimoves.schema import (
    DIVERGENCE,
    FX,
    PRICES,
    QUARANTINE_DIVERGENCE,
    QUARANTINE_FX,
    QUARANTINE_PRICES,
    QUARANTINE_SECTOR_MOVES,
    QUARANTINE_STOCK_MOVES,
    SECTOR_MOVES,
    STOCK_MOVES,
)
from aimoves.sources.simulated import DEFAULT_SEED, DEFAULT_SHOCK, SimulatedSource
from aimoves.universe import SECTORS, Universe

UNIX = date(1970, 1, 1).toordinal()
ROW_GROUP_SIZE = 32_768
PRICE_COLS = ["open", "high", "low", "close", "adj_close", "volume"]
YAHOO = {"open": "Open", "high": "High", "low": "Low", "close": "Close", "adj_close": "Adj Close", "volume": "Volume"}
BLOCK_QUARANTINE_SHARE = 0.2  # as aimoves.derive
VOL_WINDOW, VOL_MIN_PERIODS, BIG_MOVE_Z = 60, 20, 3.0  # as aimoves.derive


def day_of(d: date) -> int:
    return d.toordinal() - UNIX


def date_of(day: int) -> date:
    return date.fromordinal(int(day) + UNIX)


class Stages:
    """Accumulated wall time per stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0


# ------------------------------------------------------------------------------------------
# suites as vectorized masks


def _isnull(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind == "f":
        return np.isnan(x)
    if x.dtype.kind == "M":
        return np.isnat(x)
    if x.dtype == object:
        return pd.isna(x)
    return np.zeros(len(x), bool)


def _row_condition(condition: str, get) -> np.ndarray:
    """The rows a pandas `row_condition` of the form `<column> <op> <literal>` selects."""
    import operator
    import re

    column, op, literal = re.fullmatch(r"\s*(\w+)\s*(==|!=|>=|<=|>|<)\s*(\S+)\s*", condition).groups()
    value = {"True": True, "False": False}.get(literal, None)
    if value is None:
        value = literal[1:-1] if literal[:1] in "\"'" and literal[-1:] == literal[:1] else float(literal)
    ops = {"==": operator.eq, "!=": operator.ne, ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
    return np.asarray(ops[op](get(column), value), bool)


def evaluate_suite(name: str, get, n: int, parameters: dict | None = None, special: dict | None = None) -> list[tuple]:
    """(expectation name, severity, reason template, failing-rows mask) for every expectation of suite `name`.

    GX semantics: null values pass column checks (except not_null); pair checks ignore rows with
    a missing side; compound uniqueness fails every row of a repeated key. `special` supplies
    masks the caller computes faster itself (by expectation name).
    """
    suite = suite_definition(name)
    params = {**default_parameters(name), **(parameters or {})}
    special = special or {}

    def param(v):
        return params[v["$PARAMETER"]] if isinstance(v, dict) and "$PARAMETER" in v else v

    out = []
    for e in suite["expectations"]:
        kind, kw, meta = e["type"], e["kwargs"], e["meta"]
        label = meta.get("name", kind)
        with np.errstate(invalid="ignore"):
            if label in special:
                mask = special[label]
            elif kind == "expect_column_values_to_not_be_null":
                mask = _isnull(get(kw["column"]))
            elif kind == "expect_column_values_to_be_null":
                mask = ~_isnull(get(kw["column"]))
            elif kind == "expect_column_values_to_be_in_set":
                x = get(kw["column"])
                mask = ~_isnull(x) & ~np.isin(x, list(param(kw["value_set"])))
            elif kind == "expect_compound_columns_to_be_unique":
                mask = pd.DataFrame({c: get(c) for c in kw["column_list"]}).duplicated(keep=False).to_numpy()
            elif kind == "expect_column_values_to_be_between":
                x = get(kw["column"]).astype("float64")
                lo, hi = param(kw.get("min_value")), param(kw.get("max_value"))
                ok = np.ones(n, bool)
                if lo is not None:
                    ok &= (x > lo) if kw.get("strict_min") else (x >= lo)
                if hi is not None:
                    ok &= (x < hi) if kw.get("strict_max") else (x <= hi)
                mask = ~np.isnan(x) & ~ok
            elif kind == "expect_column_pair_values_a_to_be_greater_than_b" and kw.get("ignore_row_if") == "either_value_is_missing":
                a, b = get(kw["column_A"]).astype("float64"), get(kw["column_B"]).astype("float64")
                mask = (a < b) if kw.get("or_equal") else (a <= b)  # NaN on either side compares False: ignored
            else:
                raise NotImplementedError(f"the floor has no vectorized form of {kind} {kw} (suite {name}); add one")
            if kw.get("row_condition"):  # GX checks only the rows the condition selects
                mask = mask & _row_condition(kw["row_condition"], get)
        out.append((label, e["severity"], meta.get("reason", label), np.asarray(mask, bool)))
    return out


def flags_array(masks: dict[str, np.ndarray], rows: np.ndarray) -> tuple[pa.ListArray, int]:
    """list<string> per row of `rows`: the names whose mask is set, sorted; and how many rows have any."""
    names = sorted(masks)
    if not names or len(rows) == 0:
        return pa.ListArray.from_arrays(pa.array(np.zeros(len(rows) + 1, np.int32)), pa.array([], pa.string())), 0
    matrix = np.stack([masks[k][rows] for k in names], axis=1)
    r, which = np.nonzero(matrix)  # row-major: per row, names in sorted order
    counts = np.bincount(r, minlength=len(rows))
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(names, pa.string()).take(pa.array(which))), int((counts > 0).sum())


def empty_lists(n: int) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), pa.array([], pa.string()))


def reasons(checks: list[tuple], rows: np.ndarray, row_of) -> tuple[list[str], list[str]]:
    """For each bad row: the failed critical expectations (suite order) and their formatted reasons."""
    critical = [c for c in checks if c[1] == "critical"]
    expectations, texts = [], []
    for i in rows:
        row = row_of(i)
        failed = [(label, template) for label, _, template, mask in critical if mask[i]]
        out = []
        for _, template in failed:
            try:
                out.append(template.format(**row))
            except (KeyError, ValueError, TypeError):
                out.append(template)
        expectations.append(",".join(label for label, _ in failed))
        texts.append("; ".join(out))
    return expectations, texts


def strings(codes: np.ndarray, names: np.ndarray) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(names, pa.string())).dictionary_decode()


def const(value: str, n: int) -> pa.Array:
    return strings(np.zeros(n, np.int32), np.array([value], dtype=object))


def dates32(days: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    arr = pa.array(days.astype(np.int32), pa.int32(), mask=None if valid is None else ~valid)
    return arr.view(pa.date32())


def floats(x: np.ndarray) -> pa.Array:
    return pa.array(x, pa.float64(), from_pandas=True)


def table_from_frame(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """Small frames (FX, sector moves, quarantine rows) → `schema`; missing columns become nulls."""
    arrays = []
    for f in schema:
        if f.name not in frame:
            arrays.append(pa.nulls(len(frame), f.type))
            continue
        col = frame[f.name]
        if pa.types.is_date32(f.type):
            col = pd.to_datetime(col).dt.date
        elif pa.types.is_integer(f.type) and col.dtype.kind == "f":
            col = col.round().astype("Int64")
        arrays.append(pa.array(col, type=f.type, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_file(table: pa.Table, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as sink:
        pq.write_table(table, sink, row_group_size=ROW_GROUP_SIZE, compression="zstd")
        sink.flush()
        os.fsync(sink.fileno())


def write_partitioned(table: pa.Table, keys: dict[str, np.ndarray], dataset: str, data_dir: Path) -> int:
    """One file per partition; rows keep their order inside a partition (callers sort by the dataset's sort_by)."""
    if table.num_rows == 0:
        return 0
    columns = list(keys.values())
    codes = [pd.factorize(c, sort=True)[0] for c in columns]
    order = np.lexsort(codes[::-1])
    table = table.take(pa.array(order))
    sorted_codes = [c[order] for c in codes]
    change = np.zeros(len(order) - 1, bool)
    for c in sorted_codes:
        change |= c[1:] != c[:-1]
    bounds = np.flatnonzero(change) + 1
    files = 0
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(order)]):
        folder = "/".join(f"{k}={v[order[lo]]}" for k, v in keys.items())
        write_file(table.slice(lo, hi - lo), data_dir / dataset / folder / "part-0.parquet")
        files += 1
    return files


def write_raw(batch, data_dir: Path, dataset: str, now: datetime) -> None:
    folder = data_dir / "raw" / dataset / batch.source / f"{now:%Y-%m-%d}" / f"{now:%Y%m%dT%H%M%S%f}Z-{batch.request.market}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    for payload in batch.payloads:
        if payload.kind == "table":
            pq.write_table(payload.data, folder / payload.name)
        else:
            (folder / payload.name).write_bytes(payload.data)
    manifest = {"dataset": dataset, "source": batch.source, "request": batch.request.as_dict(), "fetched_at": now.isoformat(),
                "failures": [{"symbol": f.symbol, "reason": f.reason} for f in batch.failures]}
    with open(folder / "manifest.json", "w") as f:
        json.dump(manifest, f)
        f.flush()
        os.fsync(f.fileno())


def quarantine_frame(records: list[dict] | pd.DataFrame, run_id: str, now: datetime, row_id_cols: list[str] | None = None) -> pd.DataFrame:
    qf = pd.DataFrame(records)
    qf["date"] = pd.to_datetime(qf["date"])
    if row_id_cols:  # prices: a hash of the bar's values, as pipeline._row_ids
        text = qf[row_id_cols].astype(str).agg("|".join, axis=1)
        qf["row_id"] = [hashlib.blake2b(t.encode(), digest_size=10).hexdigest() for t in text]
    qf["quarantined_at"] = pd.Timestamp(now)
    qf["run_id"] = run_id
    return qf


# ------------------------------------------------------------------------------------------
# prices


def prices_market(market: str, universe, source, start: date, end: date, data_dir: Path, now: datetime, run_id: str, stage: Stages) -> dict:
    plan = plan_backfill(universe, market, start, end)
    if plan.closed_reason:
        return {}
    info = MARKET_INFO[market]
    extra = tuple(universe.extra_holidays.get(market, ()))
    with stage("fetch"):
        batch = source.fetch_prices(plan.request)
    with stage("raw"):
        write_raw(batch, data_dir, "prices", now)

    with stage("normalize"):
        bars = batch.bars
        raw_codes, raw_names = pd.factorize(bars["Ticker"])
        canonical = np.array([normalize_symbol(str(s)) for s in raw_names], dtype=object)  # per distinct symbol, not per row
        names, inverse = np.unique(canonical, return_inverse=True)
        code = np.where(raw_codes >= 0, inverse[np.maximum(raw_codes, 0)] if len(inverse) else -1, -1)
        dates = bars["Date"]
        if pd.api.types.is_datetime64_any_dtype(dates):
            if getattr(dates.dt, "tz", None) is not None:
                dates = dates.dt.tz_convert(info.timezone).dt.tz_localize(None)
        else:
            dates = pd.to_datetime(dates, errors="coerce", format="mixed", utc=True).dt.tz_convert(info.timezone).dt.tz_localize(None)
        day64 = pd.DatetimeIndex(dates).normalize().to_numpy().astype("datetime64[D]")
        no_date = np.isnat(day64)
        day = day64.view("int64")
        values = {c: pd.to_numeric(bars[YAHOO[c]], errors="coerce").to_numpy("float64") if YAHOO[c] in bars else np.full(len(bars), np.nan)
                  for c in PRICE_COLS}
        if "Adj Close" not in bars:
            values["adj_close"] = values["close"]
        empty = np.all([np.isnan(values[c]) for c in PRICE_COLS], axis=0)
        unreadable = no_date & ~empty
        keep = np.flatnonzero(~empty & ~unreadable)
        keep = keep[np.lexsort((day[keep], code[keep]))]  # by (symbol, date), stable
        same_key = (code[keep][1:] == code[keep][:-1]) & (day[keep][1:] == day[keep][:-1])
        if same_key.any():  # identical rows share a key: compare whole rows only there
            rows = np.flatnonzero(np.r_[same_key, False] | np.r_[False, same_key])
            sub = pd.DataFrame({"code": code[keep[rows]], "day": day[keep[rows]], **{c: values[c][keep[rows]] for c in PRICE_COLS}})
            keep = np.delete(keep, rows[sub.duplicated(keep="first").to_numpy()])
        code, day = code[keep], day[keep]
        col = {c: values[c][keep] for c in PRICE_COLS}
        n = len(keep)

    with stage("validate"):
        if n:
            s = sessions(market, date_of(day.min()), date_of(day.max()), extra)
            session_days = s.dates.to_numpy().astype("datetime64[D]").view("int64")
            col["is_exchange_session"] = np.isin(day, session_days)
            col["is_provisional_session"] = np.isin(day, session_days[s.provisional])
        else:
            col["is_exchange_session"] = col["is_provisional_session"] = np.zeros(0, bool)
        col["is_future"] = day > day_of(pd.Timestamp(now).tz_convert(info.timezone).date())
        params = default_parameters("prices")
        adj = np.where(col["adj_close"] > 0, col["adj_close"], np.nan)
        median = pd.Series(adj).groupby(code, sort=False).rolling(11, center=True, min_periods=1).median()
        ratio = adj / median.droplevel(0).reindex(range(n)).to_numpy()
        col["adj_close_vs_local_median"] = ratio
        with np.errstate(invalid="ignore"):
            clean = np.flatnonzero((ratio >= params["glitch_ratio_min"]) & (ratio <= params["glitch_ratio_max"]))
        previous = np.r_[np.nan, adj[clean][:-1]]
        previous[np.r_[True, code[clean][1:] != code[clean][:-1]]] = np.nan
        col["daily_return"] = np.full(n, np.nan)
        col["daily_return"][clean] = adj[clean] / previous - 1
        same = (code[1:] == code[:-1]) & (day[1:] == day[:-1])
        universe_codes = np.flatnonzero(np.isin(names, list(plan.request.symbols)))
        special = {
            "symbol_present": code < 0,
            "date_present": np.zeros(n, bool),
            "symbol_in_universe": (code >= 0) & ~np.isin(code, universe_codes),
            "one_bar_per_symbol_and_date": np.r_[same, False] | np.r_[False, same],
            "date_not_in_future": col["is_future"],  # the suite compares date with today: same result on day numbers
        }
        col["market"] = np.full(n, market)  # the suite states the universe and future-date checks per market
        checks = evaluate_suite("prices", col.__getitem__, n, special=special)
        bad = np.any([m for _, sev, _, m in checks if sev == "critical"], axis=0) if n else np.zeros(0, bool)
        in_window = (day >= day_of(plan.request.start)) & (day <= day_of(plan.write_end))  # warm-up rows are written too
        sel = np.flatnonzero(~bad & in_window)
        dq_flags, flagged = flags_array({label: m for label, sev, _, m in checks if sev != "critical"}, sel)
        # market-dates whose batch failed (no valid row, or too many quarantined): sector moves skip them
        window_days = sessions(market, plan.request.start, plan.write_end).dates.to_numpy().astype("datetime64[D]").view("int64")
        ok_count = pd.Series(day[~bad]).value_counts().reindex(window_days, fill_value=0).to_numpy()
        bad_count = pd.Series(day[bad]).value_counts().reindex(window_days, fill_value=0).to_numpy()
        blocked = window_days[(ok_count == 0) | (bad_count / np.maximum(ok_count + bad_count, 1) > BLOCK_QUARANTINE_SHARE)]

    with stage("write"):
        m = len(sel)
        arrays = {
            "date": dates32(day[sel]),
            "symbol": strings(code[sel], names),
            "market": const(market, m),
            "currency": const(info.currency, m),
            **{c: floats(col[c][sel]) for c in ("open", "high", "low", "close", "adj_close")},
            "volume": pa.array(np.round(col["volume"][sel]), from_pandas=True).cast(pa.int64()),
            "source": const(batch.source, m),
            "ingested_at": pa.array(np.full(m, np.datetime64(now.replace(tzinfo=None), "us"))).cast(pa.timestamp("us", tz="UTC")),
            "dq_flags": dq_flags,
        }
        table = pa.Table.from_arrays([arrays[f.name] for f in PRICES.file_schema], schema=PRICES.file_schema)
        years = day[sel].astype("datetime64[D]").astype("datetime64[Y]").astype(int) + 1970
        files = write_partitioned(table, {"market": pd.Categorical.from_codes(np.zeros(m, np.int8), [market]), "year": years}, "prices", data_dir)

        records = []
        if bad.any():
            q = np.flatnonzero(bad & in_window)
            context = {"calendar": info.calendar}

            def row_of(i: int) -> dict:
                return {**context, "date": date_of(day[i]), "symbol": names[code[i]] if code[i] >= 0 else None, **{c: v[i] for c, v in col.items()}}

            exps, texts = reasons(checks, q, row_of)
            records = [{**row_of(i), "expectation": e, "reason": r} for i, e, r in zip(q, exps, texts)]
        for i in np.flatnonzero(unreadable):
            records.append({"date": None, "symbol": str(bars["Ticker"].iloc[i]), **{c: values[c][i] for c in PRICE_COLS},
                            "expectation": "row_readable", "reason": f"date {bars['Date'].iloc[i]!r} is not a date"})
        quarantined = 0
        if records:
            qf = pd.DataFrame(records).assign(market=market, currency=info.currency, source=batch.source)
            qf = quarantine_frame(qf, run_id, now, ["symbol", "date", "open", "high", "low", "close", "adj_close", "volume", "source"])
            qf = qf.drop_duplicates(["row_id", "expectation"]).sort_values(["symbol", "date", "row_id"], kind="stable")
            qyears = qf["date"].dt.year.fillna(now.year).astype(int).to_numpy()
            write_partitioned(table_from_frame(qf, QUARANTINE_PRICES.file_schema), {"market": np.full(len(qf), market, dtype=object), "year": qyears},
                              "quarantine/prices", data_dir)
            quarantined = len(qf)

    passed = {"names": names, "code": code[sel], "day": day[sel], "close": col["close"][sel], "adj_close": col["adj_close"][sel],
              "market": market, "currency": info.currency}
    return {"plan": plan, "rows": m, "flagged": flagged, "quarantined": quarantined, "bars": len(bars), "files": files,
            "blocked": [date_of(d) for d in blocked], "passed": passed}


# ------------------------------------------------------------------------------------------
# fx


def fx_stage(universe, source, start: date, end: date, data_dir: Path, now: datetime, run_id: str) -> pd.DataFrame:
    """Fetch, log, check and write FX; returns the passed rates (date, currency, usd_rate)."""
    from aimoves.sources.base import PriceRequest

    symbols = tuple(universe.fx.values())
    if not symbols:
        return pd.DataFrame(columns=["date", "currency", "usd_rate"])
    batch = source.fetch_prices(PriceRequest("FX", symbols, start, end))
    write_raw(batch, data_dir, "fx", now)
    currency_of = {sym: cur for cur, sym in universe.fx.items()}
    bars = batch.bars[batch.bars["Ticker"].isin(currency_of)]
    if pd.api.types.is_datetime64_any_dtype(bars["Date"]) and getattr(bars["Date"].dt, "tz", None) is None:
        day = bars["Date"].dt.normalize()
    else:
        day = pd.to_datetime(bars["Date"].astype("string").str.slice(0, 10), errors="coerce")  # the bar's own wall date
    close = pd.to_numeric(bars["Close"], errors="coerce").astype("float64")
    currency = bars["Ticker"].map(currency_of)
    inverted_of = {s: s.startswith(f"USD{c}") or s == f"{c}=X" for s, c in currency_of.items()}
    inverted = bars["Ticker"].map(inverted_of).to_numpy(bool)
    rate = np.where(inverted, 1.0 / close.where(close != 0), close)
    fx = pd.DataFrame({"date": day, "currency": currency, "usd_rate": rate, "symbol": bars["Ticker"], "source": batch.source})
    fx = fx.dropna(subset=["usd_rate"]).drop_duplicates().sort_values(["currency", "date"], kind="stable").reset_index(drop=True)

    params = default_parameters("fx")
    frame = {c: fx[c].to_numpy() for c in fx.columns}
    frame["date"] = fx["date"].to_numpy("datetime64[ns]")
    frame["is_future"] = (fx["date"] > pd.Timestamp(now.date())).to_numpy()
    frame["is_weekend"] = (fx["date"].dt.dayofweek >= 5).to_numpy()
    r = fx["usd_rate"].where(fx["usd_rate"] > 0)
    median = r.groupby(fx["currency"], sort=False).rolling(11, center=True, min_periods=1).median().reset_index(level=0, drop=True)
    ratio = (r / median.reindex(fx.index)).to_numpy()
    frame["rate_vs_local_median"] = ratio
    with np.errstate(invalid="ignore"):
        ok = (ratio >= params["glitch_ratio_min"]) & (ratio <= params["glitch_ratio_max"])
    clean = r[ok]
    frame["daily_change"] = (clean / clean.groupby(fx.loc[clean.index, "currency"]).shift(1) - 1).reindex(fx.index).to_numpy()
    n = len(fx)
    checks = evaluate_suite("fx", frame.__getitem__, n, special={"date_not_in_future": frame["is_future"]})
    bad = np.any([m for _, sev, _, m in checks if sev == "critical"], axis=0) if n else np.zeros(0, bool)
    sel = np.flatnonzero(~bad)
    dq_flags, _ = flags_array({label: m for label, sev, _, m in checks if sev != "critical"}, sel)
    good = fx.iloc[sel]
    table = pa.Table.from_arrays(
        [dates32(good["date"].to_numpy().astype("datetime64[D]").view("int64")), pa.array(good["currency"], pa.string()), floats(good["usd_rate"].to_numpy()),
         pa.array(good["symbol"], pa.string()), pa.array(good["source"], pa.string()),
         pa.array(np.full(len(good), np.datetime64(now.replace(tzinfo=None), "us"))).cast(pa.timestamp("us", tz="UTC")), dq_flags],
        schema=FX.file_schema,
    )
    write_partitioned(table, {"year": good["date"].dt.year.to_numpy()}, "fx", data_dir)
    q = np.flatnonzero(bad)
    if len(q):
        exps, texts = reasons(checks, q, lambda i: {**{c: v[i] for c, v in frame.items()}, "date": fx["date"].iloc[i].date()})
        warn = {label: m for label, sev, _, m in checks if sev != "critical"}
        qf = fx.iloc[q].assign(expectation=exps, reason=texts, quarantined_at=pd.Timestamp(now), run_id=run_id,
                               dq_flags=[[label for label in sorted(warn) if warn[label][i]] for i in q])
        write_partitioned(table_from_frame(qf, QUARANTINE_FX.file_schema), {"year": qf["date"].dt.year.to_numpy()}, "quarantine/fx", data_dir)
    return good[["date", "currency", "usd_rate"]]


# ------------------------------------------------------------------------------------------
# stock moves


def stock_moves_stage(parts: list[dict], fx: pd.DataFrame, universe, windows: list[tuple[str, int, int]], data_dir: Path, now: datetime, run_id: str) -> dict:
    names = np.unique(np.concatenate([p["names"] for p in parts]))  # distinct symbols only, sorted
    gcode = np.concatenate([np.searchsorted(names, p["names"])[p["code"]] for p in parts])
    day = np.concatenate([p["day"] for p in parts])
    close = np.concatenate([p["close"] for p in parts])
    adj = np.concatenate([p["adj_close"] for p in parts])
    market = np.concatenate([np.full(len(p["day"]), MARKETS.index(p["market"]), np.int8) for p in parts])  # codes into MARKETS
    order = np.lexsort((day, gcode))
    gcode, day, close, adj, market = gcode[order], day[order], close[order], adj[order], market[order]
    first = np.r_[True, gcode[1:] != gcode[:-1]]

    def shifted(x: np.ndarray) -> np.ndarray:
        out = np.r_[np.nan, x[:-1]]
        out[first] = np.nan
        return out

    prev_adj, prev_close = shifted(adj), shifted(close)
    has_prev = ~first
    prev_day = np.r_[0, day[:-1]]
    ret = adj / prev_adj - 1
    vol = pd.Series(ret).groupby(gcode, sort=False).rolling(VOL_WINDOW, min_periods=VOL_MIN_PERIODS).std().droplevel(0).reindex(range(len(ret))).to_numpy()
    vol = shifted(vol)  # trailing: today's return is not in its own yardstick

    in_window = np.zeros(len(day), bool)
    for m, lo, hi in windows:
        in_window |= (market == MARKETS.index(m)) & (day >= lo) & (day <= hi)
    w = np.flatnonzero(in_window)
    gcode, day, prev_day, has_prev, market = gcode[w], day[w], prev_day[w], has_prev[w], market[w]
    ret, vol, prev_close = ret[w], vol[w], prev_close[w]
    n = len(w)

    def rates(days: np.ndarray, valid: np.ndarray) -> np.ndarray:
        out = np.full(n, np.nan)
        for k, m in enumerate(MARKETS):
            cur = MARKET_INFO[m].currency
            if cur == "USD":
                out[market == k] = 1.0
                continue
            g = fx[fx["currency"] == cur]
            fx_days = g["date"].to_numpy().astype("datetime64[D]").view("int64")
            fx_rate = g["usd_rate"].to_numpy()
            mask = (market == k) & valid
            pos = np.searchsorted(fx_days, days[mask])
            hit = pos < len(fx_days)
            hit[hit] = fx_days[pos[hit]] == days[mask][hit]
            vals = np.full(mask.sum(), np.nan)
            vals[hit] = fx_rate[pos[hit]]
            out[mask] = vals
        return out

    fx_t, fx_prev = rates(day, np.ones(n, bool)), rates(prev_day, has_prev)
    with np.errstate(invalid="ignore", divide="ignore"):
        ret_usd = (1 + ret) * fx_t / fx_prev - 1
        zscore = ret / np.where(vol > 0, vol, np.nan)
        big_move = np.abs(zscore) >= BIG_MOVE_Z
    stocks = {s.symbol: s for s in universe.stocks}
    sector_names = np.array(sorted(SECTORS) + [None], dtype=object)
    sector_idx = np.array([sorted(SECTORS).index(stocks[s].sector) if s in stocks else len(SECTORS) for s in names])[gcode]
    company_names, company_code = np.unique(np.array([stocks[s].company_key if s in stocks else s for s in names], dtype=object), return_inverse=True)
    company = company_code[gcode]
    is_benchmark = np.isin(names, list(universe.benchmarks.values()))[gcode]
    shares = np.array([float(stocks[s].shares_outstanding) if s in stocks and stocks[s].shares_outstanding else np.nan for s in names])[gcode]
    mcap = shares * prev_close * fx_prev

    expected = np.full(n, -1, np.int64)
    for k in np.unique(market):
        mask = market == k
        s = sessions(MARKETS[k], date_of(day[mask].min()) - timedelta(days=20), date_of(day[mask].max())).dates
        s_days = s.to_numpy().astype("datetime64[D]").view("int64")
        pos = np.searchsorted(s_days, day[mask])
        expected[mask] = np.where(pos > 0, s_days[np.maximum(pos - 1, 0)], -1)
    gap = has_prev & (prev_day != expected)
    fx_missing = ~np.isnan(ret) & np.isnan(ret_usd)
    frame = {"market": market, "ret": ret, "ret_usd": ret_usd, "zscore": zscore, "big_move": big_move}
    same = (gcode[1:] == gcode[:-1]) & (day[1:] == day[:-1])
    checks = evaluate_suite("stock_moves", frame.__getitem__, n, special={"one_move_per_symbol_and_date": np.r_[same, False] | np.r_[False, same]})
    bad = np.any([m for _, sev, _, m in checks if sev == "critical"], axis=0) if n else np.zeros(0, bool)
    sel = np.flatnonzero(~bad)
    flag_masks = {label: m for label, sev, _, m in checks if sev != "critical"}
    flag_masks["return_spans_gap"] = flag_masks.get("return_spans_gap", np.zeros(n, bool)) | gap
    flag_masks["fx_missing"] = flag_masks.get("fx_missing", np.zeros(n, bool)) | fx_missing
    dq_flags, flagged = flags_array(flag_masks, sel)
    k = len(sel)
    arrays = {
        "date": dates32(day[sel]),
        "symbol": strings(gcode[sel], names),
        "sector": strings(sector_idx[sel], sector_names),
        "ret": floats(ret[sel]),
        "ret_usd": floats(ret_usd[sel]),
        "zscore": floats(zscore[sel]),
        "big_move": pa.array(big_move[sel]),
        "news_ids": empty_lists(k),
        "prev_date": dates32(prev_day[sel], has_prev[sel]),
        "company": strings(company[sel], company_names),
        "mcap_usd_prev": floats(mcap[sel]),
        "is_benchmark": pa.array(is_benchmark[sel]),
        "dq_flags": dq_flags,
    }
    table = pa.Table.from_arrays([arrays[f.name] for f in STOCK_MOVES.file_schema], schema=STOCK_MOVES.file_schema)
    years = day[sel].astype("datetime64[D]").astype("datetime64[Y]").astype(int) + 1970
    write_partitioned(table, {"market": pd.Categorical.from_codes(market[sel], MARKETS), "year": years}, "stock_moves", data_dir)
    q = np.flatnonzero(bad)
    if len(q):
        def row_of(i: int) -> dict:
            return {"date": date_of(day[i]), "symbol": names[gcode[i]], "market": MARKETS[market[i]], "sector": sector_names[sector_idx[i]],
                    "ret": ret[i], "ret_usd": ret_usd[i], "zscore": zscore[i], "big_move": big_move[i], "news_ids": [],
                    "prev_date": date_of(prev_day[i]) if has_prev[i] else None, "company": company_names[company[i]],
                    "mcap_usd_prev": mcap[i], "is_benchmark": is_benchmark[i],
                    "dq_flags": [label for label in sorted(flag_masks) if flag_masks[label][i]]}

        exps, texts = reasons(checks, q, row_of)
        qf = quarantine_frame([{**row_of(i), "expectation": e, "reason": r} for i, e, r in zip(q, exps, texts)], run_id, now)
        write_partitioned(table_from_frame(qf, QUARANTINE_STOCK_MOVES.file_schema), {"market": qf["market"].to_numpy(), "year": qf["date"].dt.year.to_numpy()},
                          "quarantine/stock_moves", data_dir)
    return {"rows": k, "flagged": flagged, "quarantined": len(q),
            "passed": {"gcode": gcode[sel], "names": names, "day": day[sel], "market": market[sel], "ret": ret[sel], "ret_usd": ret_usd[sel],
                       "mcap": mcap[sel], "is_benchmark": is_benchmark[sel]}}


# ------------------------------------------------------------------------------------------
# sector moves


def _aggregate(traded: pd.DataFrame, ret: str, ret_usd: str) -> pd.DataFrame:
    """Per (date, sector) aggregates; `traded` sorted by (date, sector, symbol). Pandas' grouped sums
    (compensated) on the same rows in the same order as aimoves.derive, so results match to the bit."""
    traded = traded[traded[ret].notna()].reset_index(drop=True)
    w = traded["mcap"]
    has_w = w.notna()
    traded = traded.assign(
        _w=w.where(has_w), _wr=(w * traded[ret]).where(has_w), _wr_usd=(w * traded[ret_usd]).where(has_w),
        _usd_missing=traded[ret_usd].isna(), _adv=traded[ret] > 0, _dec=traded[ret] < 0,
    )
    g = traded.groupby(["date", "sector"], sort=True)
    agg = g.agg(n_traded=(ret, "count"), ret_ew=(ret, "mean"), ret_ew_usd=(ret_usd, "mean"), usd_missing=("_usd_missing", "sum"),
                w_sum=("_w", "sum"), w_count=("_w", "count"), wr=("_wr", "sum"), wr_usd=("_wr_usd", "sum"),
                advancers=("_adv", "sum"), decliners=("_dec", "sum"))
    top, bottom = traded.loc[g[ret].idxmax().to_numpy()], traded.loc[g[ret].idxmin().to_numpy()]
    agg["top_symbol"], agg["top_ret"] = top["symbol"].to_numpy(), top[ret].to_numpy()
    agg["bottom_symbol"], agg["bottom_ret"] = bottom["symbol"].to_numpy(), bottom[ret].to_numpy()
    full_w = agg["w_count"] == agg["n_traded"]
    agg["ret_cw"] = (agg["wr"] / agg["w_sum"]).where(full_w & (agg["w_sum"] > 0))
    agg["ret_cw_usd"] = (agg["wr_usd"] / agg["w_sum"]).where(full_w & (agg["w_sum"] > 0) & (agg["usd_missing"] == 0))
    agg["ret_ew_usd"] = agg["ret_ew_usd"].where(agg["usd_missing"] == 0)
    return agg


def sector_moves_stage(moves: dict, universe, regions: list[str], lo: date, hi: date, blocked: set[tuple[str, date]],
                       data_dir: Path, now: datetime, run_id: str) -> dict:
    open_by_market = {m: sessions(m, lo, hi, universe.extra_holidays.get(m, ())).dates.to_numpy().astype("datetime64[D]").view("int64") for m in MARKETS}
    all_days = np.unique(np.concatenate(list(open_by_market.values())))
    stocks = list(universe.stocks)
    names = moves["names"]
    index_of = {s.symbol: i for i, s in enumerate(stocks)}
    stock_idx = np.array([index_of.get(s, -1) for s in names])[moves["gcode"]]  # -1: not a stock (benchmark)
    since = np.array([day_of(s.since) if s.since else -10**9 for s in stocks] + [0])
    until = np.array([day_of(s.until) if s.until else 10**9 for s in stocks] + [0])
    day, market, ret = moves["day"], moves["market"], moves["ret"]
    blocked_keys = {(m, day_of(d)) for m, d in blocked}
    is_blocked = np.zeros(len(day), bool)
    for m, d in blocked_keys:
        is_blocked |= (market == MARKETS.index(m)) & (day == d)
    listed = np.isin(day, all_days) & (stock_idx >= 0) & ~np.isnan(ret) & ~is_blocked
    listed &= (since[stock_idx] <= day) & (day <= until[stock_idx])
    idx = np.flatnonzero(listed)
    sector_sorted = sorted(SECTORS)
    sector_of_stock = np.array([sector_sorted.index(s.sector) for s in stocks])
    company_keys = [s.company_key for s in stocks]
    company_names, company_of_stock = np.unique(np.array(company_keys, dtype=object), return_inverse=True)
    frame = pd.DataFrame({
        "date": day[idx], "sector": sector_of_stock[stock_idx[idx]], "symbol": moves["gcode"][idx], "_order": stock_idx[idx],
        "company": company_of_stock[stock_idx[idx]], "market": market[idx], "ret": ret[idx], "ret_usd": moves["ret_usd"][idx], "mcap": moves["mcap"][idx],
    })
    bench = {(MARKETS[m], d): r for m, d, r in zip(market[moves["is_benchmark"]], day[moves["is_benchmark"]], ret[moves["is_benchmark"]])}

    member = (all_days[:, None] >= since[None, :-1]) & (all_days[:, None] <= until[None, :-1])  # dates x stocks
    grid_days = np.repeat(all_days, len(SECTORS))
    grid_sectors = np.tile(np.array([sector_sorted.index(s) for s in SECTORS]), len(all_days))
    out_frames = []
    for region in regions:
        if region == "ALL":
            traded = frame.sort_values(["date", "_order"], kind="stable").drop_duplicates(["date", "company"])
            agg = _aggregate(traded.sort_values(["date", "sector", "symbol"], kind="stable").reset_index(drop=True), "ret_usd", "ret_usd")
            first_sector = {}
            for i, s in enumerate(stocks):
                first_sector.setdefault(company_of_stock[i], sector_of_stock[i])
            company_member = np.zeros((len(all_days), len(company_names)), bool)
            for i in range(len(stocks)):
                company_member[:, company_of_stock[i]] |= member[:, i]
            onehot = np.zeros((len(company_names), len(SECTORS)), int)
            for c, s in first_sector.items():
                onehot[c, s] = 1
            counts = company_member.astype(int) @ onehot
            is_open = np.ones(len(all_days), bool)
            for_m = np.zeros(len(all_days), bool)
            for m in MARKETS:
                for_m |= np.isin(all_days, open_by_market[m])
            is_open &= for_m
        else:
            traded = frame[frame["market"] == MARKETS.index(region)]
            agg = _aggregate(traded.sort_values(["date", "sector", "symbol"], kind="stable").reset_index(drop=True), "ret", "ret_usd")
            in_region = np.array([s.market == region for s in stocks])
            onehot = np.zeros((len(stocks), len(SECTORS)), int)
            onehot[np.flatnonzero(in_region), sector_of_stock[in_region]] = 1
            counts = member.astype(int) @ onehot
            is_open = np.isin(all_days, open_by_market[region])
        out = agg.reindex(pd.MultiIndex.from_arrays([grid_days, grid_sectors], names=["date", "sector"])).reset_index()
        out["n_members"] = counts[np.repeat(np.arange(len(all_days)), len(SECTORS)), grid_sectors]
        out["market_open"] = np.repeat(is_open, len(SECTORS))
        out["region"] = region
        if region == "ALL":
            flags = [[f"blocked:{m}" for m in MARKETS if (m, d) in blocked_keys] for d in all_days] if blocked_keys else None
            out["dq_flags"] = [f for f in flags for _ in SECTORS] if flags else [[] for _ in range(len(out))]
            out["benchmark_ret"] = np.nan
        else:
            out = out[~np.isin(out["date"].to_numpy(), [d for m, d in blocked_keys if m == region])]
            out["dq_flags"] = [[] for _ in range(len(out))]
            out["benchmark_ret"] = [bench.get((region, d), np.nan) for d in out["date"]] if bench else np.nan
        out_frames.append(out[out["n_members"] > 0])
    result = pd.concat(out_frames, ignore_index=True)
    for c in ("n_traded", "advancers", "decliners"):
        result[c] = result[c].fillna(0).astype(int)
    result["excess_vs_benchmark"] = result["ret_ew"] - result["benchmark_ret"]
    result["news_count"] = 0
    result["sentiment_mean"] = np.nan
    result["advancers_plus_decliners"] = result["advancers"] + result["decliners"]
    result["top_symbol"] = [names[int(c)] if c == c else None for c in result["top_symbol"]]
    result["bottom_symbol"] = [names[int(c)] if c == c else None for c in result["bottom_symbol"]]
    result["sector"] = np.array(sector_sorted, dtype=object)[result["sector"].to_numpy()]
    result["year"] = result["date"].to_numpy().astype("datetime64[D]").astype("datetime64[Y]").astype(int) + 1970
    result["date"] = result["date"].to_numpy().astype("datetime64[D]").astype("datetime64[ns]")
    result = result.sort_values(["region", "date", "sector"], kind="stable").reset_index(drop=True)

    n = len(result)
    checks = evaluate_suite("sector_moves", lambda c: result[c].to_numpy(), n)
    bad = np.any([m for _, sev, _, m in checks if sev == "critical"], axis=0) if n else np.zeros(0, bool)
    warn = {label: m for label, sev, _, m in checks if sev != "critical"}
    good = result[~bad].reset_index(drop=True)
    if warn:
        extra = [[label for label in sorted(warn) if warn[label][i]] for i in np.flatnonzero(~bad)]
        good["dq_flags"] = [sorted(set(a) | set(b)) for a, b in zip(good["dq_flags"], extra)]
    write_partitioned(table_from_frame(good, SECTOR_MOVES.file_schema), {"region": good["region"].to_numpy(), "year": good["year"].to_numpy()},
                      "sector_moves", data_dir)
    q = np.flatnonzero(bad)
    if len(q):
        exps, texts = reasons(checks, q, lambda i: {**result.iloc[i].to_dict(), "date": result["date"].iloc[i].date()})
        qf = result.iloc[q].assign(expectation=exps, reason=texts, quarantined_at=pd.Timestamp(now), run_id=run_id)
        write_partitioned(table_from_frame(qf, QUARANTINE_SECTOR_MOVES.file_schema), {"region": qf["region"].to_numpy(), "year": qf["year"].to_numpy()},
                          "quarantine/sector_moves", data_dir)
    return {"rows": len(good), "quarantined": len(q)}


# ------------------------------------------------------------------------------------------
# divergence (US against HK+CN, per sector)


def divergence_stage(moves: dict, universe, start: date, end: date, blocked: set[tuple[str, date]], data_dir: Path, now: datetime,
                     run_id: str) -> dict:
    """The pipeline's divergence computation (aimoves.divergence: plain pandas, no GX, no I/O) on the stock
    moves in memory; the suite as vectorized masks; the floor's own writer. NOTE: the compute is shared,
    not re-implemented, so this stage's floor time includes the same pandas work as the pipeline's."""
    from aimoves.divergence import compute_divergence, suite_frame

    names = np.asarray(moves["names"], dtype=object)
    company_of = {s.symbol: s.company_key for s in universe.stocks}
    symbols = names[moves["gcode"]]
    frame = pd.DataFrame({
        "date": moves["day"].astype("datetime64[D]").astype("datetime64[ns]"),
        "symbol": symbols,
        "market": np.array(MARKETS, dtype=object)[moves["market"]],
        "ret": moves["ret"], "ret_usd": moves["ret_usd"], "mcap_usd_prev": moves["mcap"],
        "company": np.array([company_of.get(n, n) for n in names], dtype=object)[moves["gcode"]],
        "is_benchmark": moves["is_benchmark"],
    })
    rows = suite_frame(compute_divergence(frame, universe, start, end, None, blocked))
    n = len(rows)
    checks = evaluate_suite("divergence", lambda c: rows[c].to_numpy(), n)
    bad = np.any([m for _, sev, _, m in checks if sev == "critical"], axis=0) if n else np.zeros(0, bool)
    warn = {label: m for label, sev, _, m in checks if sev != "critical"}
    good = rows[~bad].reset_index(drop=True)
    if warn:  # as the pipeline's split: only rows with a warning get their flags re-sorted
        sel = np.flatnonzero(~bad)
        good["dq_flags"] = [sorted(set(a) | set(extra)) if extra else a
                            for a, extra in zip(good["dq_flags"], ([label for label in sorted(warn) if warn[label][i]] for i in sel))]
    good = good.sort_values(["date", "sector"], kind="stable").reset_index(drop=True)
    write_partitioned(table_from_frame(good, DIVERGENCE.file_schema), {"year": good["year"].to_numpy()}, "divergence", data_dir)
    q = np.flatnonzero(bad)
    if len(q):
        exps, texts = reasons(checks, q, lambda i: {**rows.iloc[i].to_dict(), "date": rows["date"].iloc[i].date()})
        qf = rows.iloc[q].assign(expectation=exps, reason=texts, quarantined_at=pd.Timestamp(now), run_id=run_id)
        qf = qf.sort_values(["date", "sector"], kind="stable")
        write_partitioned(table_from_frame(qf, QUARANTINE_DIVERGENCE.file_schema), {"year": qf["year"].to_numpy()}, "quarantine/divergence", data_dir)
    return {"rows": len(good), "quarantined": len(q)}


# ------------------------------------------------------------------------------------------


def load_universe(path: str) -> Universe:
    """The same validated Universe as aimoves.universe.load_universe, parsed once with libyaml
    (the project's loader also composes the YAML in pure Python for error line numbers)."""
    import yaml

    text = Path(path).read_text(encoding="utf-8")
    return Universe.model_validate(yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))


def floor_backfill(universe_path: str, start: date, end: date, markets: list[str], data_dir: Path, inject_defects: bool = False) -> dict:
    """The whole backfill; returns row counts and seconds per stage."""
    stage = Stages()
    universe = load_universe(universe_path)
    source = SimulatedSource(sectors={s.symbol: s.sector for s in universe.stocks}, seed=DEFAULT_SEED, shock_date=DEFAULT_SHOCK,
                             inject_defects=inject_defects)
    now = datetime.now(UTC)
    run_id = f"{now:%Y%m%dT%H%M%SZ}-{os.getpid()}"
    data_dir.mkdir(parents=True, exist_ok=True)
    results = [r for r in (prices_market(m, universe, source, start, end, data_dir, now, run_id, stage) for m in markets) if r]
    totals = {k: sum(r[k] for r in results) for k in ("rows", "flagged", "quarantined", "bars")}
    if results:
        fx_start = min(r["plan"].request.start for r in results)
        fx_end = max(r["plan"].write_end for r in results)
        with stage("fx"):
            fx = fx_stage(universe, source, fx_start, fx_end, data_dir, now, run_id)
        windows = [(r["plan"].market, day_of(next_session(r["plan"].market, r["plan"].request.start)), day_of(r["plan"].write_end)) for r in results]
        with stage("stock_moves"):
            sm = stock_moves_stage([r["passed"] for r in results], fx, universe, windows, data_dir, now, run_id)
        with stage("sector_moves"):
            lo, hi = date_of(min(w[1] for w in windows)), date_of(max(w[2] for w in windows))
            blocked = {(r["plan"].market, d) for r in results for d in r["blocked"]}
            regions = [m for m in MARKETS if any(w[0] == m for w in windows)] + ["ALL"]
            sec = sector_moves_stage(sm["passed"], universe, regions, lo, hi, blocked, data_dir, now, run_id)
        with stage("divergence"):
            start_all = min(r["plan"].write_start for r in results)
            div = divergence_stage(sm["passed"], universe, start_all, fx_end, blocked, data_dir, now, run_id)
        totals.update(stock_moves=sm["rows"], sector_moves=sec["rows"], divergence=div["rows"])
    return {**totals, "stages": dict(stage.seconds)}
