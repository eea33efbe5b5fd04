"""CSV files as people have them, and hostile ones (issues 9 and 10, CSV parts).

Most tests call the reader or the plain pipeline steps; one runs the real `aimoves backfill` CLI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aimoves.planning import plan_backfill
from aimoves.quarantine import quarantine_for_write, write_quarantine
from aimoves.run import prices_for_write, run_prices, write_prices
from aimoves.sources.factory import SourceSettings
from aimoves.calendars import sessions
from aimoves.errors import InputFileError
from aimoves.normalize import normalize_prices
from aimoves.raw import write_raw
from aimoves.sources.base import PriceRequest
from aimoves.sources.csv import ADJ_FROM_CLOSE, CsvSource, max_bytes_setting, read_price_csv
from aimoves.universe import parse_universe
from aimoves.validate import validate_prices

START, END = date(2025, 1, 27), date(2025, 2, 7)
CLASSIC = "Date,Open,High,Low,Close,Adj Close,Volume"


def _bars(market: str, seed: int, start: date = START, end: date = END) -> list[tuple[str, float, float, float, float, float, int]]:
    """Plausible daily bars on the market's sessions: (date, open, high, low, close, adj_close, volume)."""
    rng = np.random.default_rng(seed)
    out, price = [], 100.0 + seed
    for day in sessions(market, start, end).dates:
        close = price * (1 + rng.normal(0, 0.02))
        high, low = max(price, close) * 1.01, min(price, close) * 0.99
        out.append((f"{day.date()}", round(price, 2), round(high, 2), round(low, 2), round(close, 2), round(close * 0.99, 2), 1_000_000 + seed))
        price = close
    return out


def classic_csv(market: str, seed: int, adj_header: str = "Adj Close") -> str:
    rows = [",".join(map(str, r)) for r in _bars(market, seed)]
    return "\n".join([CLASSIC.replace("Adj Close", adj_header), *rows]) + "\n"


def yfinance_3_line_csv(symbol: str, market: str, seed: int) -> str:
    """What yfinance's download(...).to_csv() writes (auto_adjust=True: no Adj Close)."""
    rows = [f"{d},{c},{h},{lo},{o},{v}" for d, o, h, lo, c, _, v in _bars(market, seed)]
    return "\n".join(["Price,Close,High,Low,Open,Volume", "Ticker" + f",{symbol}" * 5, "Date,,,,,", *rows]) + "\n"


def one_line_any_order_csv(market: str, seed: int) -> str:
    rows = [f"{d},{c},{h},{lo},{o},{v}" for d, o, h, lo, c, _, v in _bars(market, seed)]
    return "\n".join(["Date,Close,High,Low,Open,Volume", *rows]) + "\n"


def _req(market: str, symbols: tuple[str, ...], start: date = START, end: date = END) -> PriceRequest:
    return PriceRequest(market, symbols, start, end)


# --- shapes and adjusted-close spellings (issue 9.2) ------------------------------------------


@pytest.mark.parametrize("spelling", ["Adj Close", "Adj. Close", "adj_close", "Adjusted Close", "ADJ CLOSE", "adjusted_close", "Adj Close**"])
def test_adjusted_close_spellings_are_recognised(spelling: str) -> None:
    bars, rejected = read_price_csv(classic_csv("US", 1, spelling).encode(), "NVDA.csv", "NVDA")
    assert rejected.empty and len(bars) == 10
    assert (bars["Adj Close"] == pd.Series([r[5] for r in _bars("US", 1)])).all()
    assert not bars["Flags"].map(len).any()


@pytest.mark.parametrize("column", ["Close (adj)", "Adj Close (USD)", "adj_close_2"])
def test_a_column_that_looks_adjusted_is_never_ignored(column: str) -> None:
    text = classic_csv("US", 1).replace("Adj Close", column)
    with pytest.raises(InputFileError, match=r"NVDA\.csv, line 1: column .* looks like an adjusted close") as info:
        read_price_csv(text.encode(), "NVDA.csv", "NVDA")
    assert column in str(info.value)


@pytest.mark.parametrize("shape", ["3-line", "one-line-any-order"])
def test_files_without_adjusted_close_are_taken_as_adjusted_and_say_so(shape: str) -> None:
    text = yfinance_3_line_csv("0981.HK", "HK", 2) if shape == "3-line" else one_line_any_order_csv("HK", 2)
    bars, rejected = read_price_csv(text.encode(), "0981.HK.csv", "0981.HK")
    assert rejected.empty and len(bars) == len(_bars("HK", 2))
    assert (bars["Adj Close"] == bars["Close"]).all()
    assert bars["Flags"].map(lambda f: ADJ_FROM_CLOSE in f).all()


# --- dates as written (issue 9.4) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("dates", "expected"),
    [
        (["11/12/2024", "13/12/2024"], ["2024-12-11", "2024-12-13"]),  # a day above 12 decides: day first
        (["12/11/2024", "12/13/2024"], ["2024-12-11", "2024-12-13"]),  # month first
        (["11.12.2024", "13.12.2024"], ["2024-12-11", "2024-12-13"]),
        (["2024/12/11", "20241213"], ["2024-12-11", "2024-12-13"]),
        (["11-Dec-2024", "Dec 13, 2024"], ["2024-12-11", "2024-12-13"]),
        (["2024-12-11 00:00:00-05:00", "2024-12-13"], ["2024-12-11 00:00:00-05:00", "2024-12-13"]),
    ],
)
def test_dates_are_read_as_written(dates: list[str], expected: list[str]) -> None:
    text = CLASSIC + "\n" + "".join(f'"{d}",10,11,9,10,10,100\n' for d in dates)
    bars, rejected = read_price_csv(text.encode(), "X.csv", "X")
    assert rejected.empty, rejected.reason.tolist()
    assert bars["Date"].tolist() == expected


def test_day_first_file_is_stored_under_the_day_it_means() -> None:
    text = CLASSIC + "\n11/12/2024,10,11,9,10,10,100\n13/12/2024,10,11,9,10,10,100\n"
    bars, _ = read_price_csv(text.encode(), "X.csv", "X")
    from aimoves.sources.base import PriceBatch

    norm = normalize_prices(PriceBatch("csv", _req("US", ("X",)), bars), "US").prices
    assert [d.date() for d in norm["date"]] == [date(2024, 12, 11), date(2024, 12, 13)]


@pytest.mark.parametrize(
    ("dates", "message"),
    [
        (["03/02/2025", "04/02/2025"], "X.csv, line 2: date '03/02/2025' may be day/month or month/day"),
        (["13/01/2025", "01/14/2025"], "X.csv: dates mix day/month (line 2: '13/01/2025') and month/day (line 3: '01/14/2025')"),
    ],
)
def test_an_undecidable_numeric_date_order_refuses_the_file_naming_the_line(dates: list[str], message: str) -> None:
    text = CLASSIC + "\n" + "".join(f"{d},10,11,9,10,10,100\n" for d in dates)
    with pytest.raises(InputFileError) as info:
        read_price_csv(text.encode(), "X.csv", "X")
    assert message in str(info.value)


# --- one bad line costs one row (issue 9.5, 10.7) ---------------------------------------------


def test_an_unclosed_quote_costs_only_its_own_line() -> None:
    rows = classic_csv("US", 3).splitlines()
    rows[3] = rows[3].replace(",", ',"', 1)  # line 4 opens a quote it never closes
    bars, rejected = read_price_csv("\n".join(rows).encode(), "NVDA.csv", "NVDA")
    assert len(bars) == 9 and len(rejected) == 1
    assert rejected["reason"].iat[0] == "NVDA.csv, line 4: a quote opens at field 2 and is not closed on this line"
    assert bars["Date"].tolist() == [r[0] for i, r in enumerate(_bars("US", 3)) if i != 2]


def test_a_rejected_value_is_echoed_only_as_a_short_escaped_excerpt() -> None:
    rows = classic_csv("US", 3).splitlines()
    fields = rows[2].split(",")
    fields[1] = "\x1b[31m" + "A" * 5000  # a terminal escape and a long value in Open
    rows[2] = ",".join(fields)
    bars, rejected = read_price_csv("\n".join(rows).encode(), "NVDA.csv", "NVDA")
    assert len(rejected) == 1
    reason = rejected["reason"].iat[0]
    assert len(reason) < 300 and "\x1b" not in reason and "\\x1b" in reason, reason


# --- bounded reads, nothing local leaks (issue 10.2, 10.4) ------------------------------------


def test_fifo_device_and_symlinks_leaving_the_folder_are_refused_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "csv"
    folder.mkdir()
    os.mkfifo(folder / "NVDA.csv")  # would block a plain open() forever
    (folder / "AMD.csv").symlink_to("/etc/passwd")
    (folder / "TSM.csv").symlink_to("/dev/zero")
    (folder / "MSFT.csv").write_text(classic_csv("US", 4))
    (folder / "data").mkdir()
    (folder / "data" / "avgo.csv").write_text(classic_csv("US", 5))
    (folder / "AVGO.csv").symlink_to(folder / "data" / "avgo.csv")  # inside the folder: fine
    request = _req("US", ("NVDA", "AMD", "TSM", "MSFT", "AVGO"))
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(batch=CsvSource(folder).fetch_prices(request)), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "reading the CSV folder blocked"
    batch = result["batch"]
    reasons = {f.symbol: f.reason for f in batch.failures}
    assert reasons["NVDA"] == f"{folder / 'NVDA.csv'}: refused, not a regular file (a FIFO, device or socket)"
    assert "AMD.csv: refused, it is a link to /etc/passwd, outside the CSV folder" in reasons["AMD"]
    assert "TSM.csv: refused, it is a link to /dev/zero, outside the CSV folder" in reasons["TSM"]
    assert set(batch.bars["Ticker"]) == {"MSFT", "AVGO"}
    assert [p.name for p in batch.payloads] == ["MSFT.csv", "AVGO.csv"]
    record = write_raw(batch, tmp_path / "data")
    stored = b"".join(p.read_bytes() for p in record.path.iterdir())
    assert b"root:" not in stored and "root:" not in " ".join(reasons.values())


def test_csv_reads_are_bounded_by_a_size_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "NVDA.csv").write_text(classic_csv("US", 1))
    batch = CsvSource(tmp_path, max_bytes=200).fetch_prices(_req("US", ("NVDA",)))
    assert "over the CSV size limit of 200 (AIMOVES_CSV_MAX_MB)" in batch.failures[0].reason and batch.bars.empty
    assert max_bytes_setting() == 200 * 1024 * 1024
    monkeypatch.setenv("AIMOVES_CSV_MAX_MB", "0.5")
    assert CsvSource(tmp_path).max_bytes == 512 * 1024


# --- the pipeline: mixed adjusted/unadjusted files, FX without its file (issue 9.2, 9.3) ------

UNIVERSE_US = parse_universe(
    """
fx: {HKD: "HKDUSD=X"}
stocks:
  - {symbol: NVDA, name: NVIDIA, market: US, sector: semiconductors}
  - {symbol: AMD, name: AMD, market: US, sector: semiconductors}
  - {symbol: AVGO, name: Broadcom, market: US, sector: semiconductors}
""",
    "us-universe",
)


def test_a_market_mixing_files_with_and_without_adj_close_writes_every_row_and_fx_says_what_is_missing(tmp_path: Path) -> None:
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    (csv_dir / "NVDA.csv").write_text(classic_csv("US", 1))
    (csv_dir / "AMD.csv").write_text(one_line_any_order_csv("US", 2))  # no Adj Close; no HKDUSD=X.csv either
    plan = plan_backfill(UNIVERSE_US, "US", START, END)
    summary = run_prices("backfill", [plan], SourceSettings("csv", csv_dir), UNIVERSE_US, tmp_path / "data")
    prices = pd.read_parquet(tmp_path / "data" / "prices")
    assert prices.groupby("symbol").size().to_dict() == {"AMD": 10, "NVDA": 10}
    flagged = prices.set_index("symbol")["dq_flags"].map(lambda f: ADJ_FROM_CLOSE in list(f))
    assert flagged["AMD"].all() and not flagged["NVDA"].any()
    amd = prices[prices.symbol == "AMD"]
    assert (amd["adj_close"] == amd["close"]).all()
    assert summary.markets[0].quarantined == 0
    assert summary.fx["error"] == f"no FX rates for HKD (no file {csv_dir / 'HKDUSD=X.csv'})", summary.fx


# --- property: one fuzzed row of one file never costs another symbol a row (issue 9.5) --------

HOSTILE = ["inf", "-inf", "nan", "1e308", "-1e308", "1e400", "99999999999999999999", "1.5", "-1", "0", "", '"', '"x', 'x"y',
           "1000-01-29", "99999-01-29", "2025-02-30", "01/02/2025", "13/13/2025", "\x00", "x" * 140_000, "1e-320", "0x1p3", "١٢٣"]


FUZZED = ("AMD", "MSFT", "TSM", "META")
UNIVERSE_FUZZ = parse_universe(
    "stocks:\n" + "".join(f"  - {{symbol: {s}, name: {s}, market: US, sector: semiconductors}}\n" for s in ("NVDA", "AVGO", *FUZZED)), "fuzz"
)
DEFECT = st.tuples(
    st.integers(0, 9),  # row
    st.integers(0, 7),  # column
    st.one_of(st.sampled_from(HOSTILE), st.text(max_size=20)),
    st.sampled_from(["replace", "append", "truncate"]),
)


def _fuzzed(text: str, row: int, column: int, value: str, mode: str) -> str:
    lines = text.splitlines()
    fields = lines[row + 1].split(",")
    if mode == "replace":
        fields[min(column, 6)] = value
    elif mode == "append":
        fields.append(value)
    else:
        fields = fields[: max(1, min(column, 6))]  # a line cut short (an empty line is no row)
    lines[row + 1] = ",".join(fields)
    return "\n".join(lines) + "\n"


# NOTE: each example fuzzes one row in each of up to four files, so one validation run (the
# expensive step) covers several fuzzed files.
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(defects=st.lists(DEFECT, min_size=1, max_size=len(FUZZED)))
def test_one_fuzzed_row_never_costs_another_symbol_a_row(tmp_path_factory: pytest.TempPathFactory, defects: list) -> None:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "csv").mkdir()
    (root / "csv" / "NVDA.csv").write_text(classic_csv("US", 1))
    (root / "csv" / "AVGO.csv").write_text(one_line_any_order_csv("US", 3))
    for i, (symbol, defect) in enumerate(zip(FUZZED, defects)):
        (root / "csv" / f"{symbol}.csv").write_text(_fuzzed(classic_csv("US", 10 + i), *defect))
    now = datetime(2026, 1, 5, tzinfo=UTC)
    plan = plan_backfill(UNIVERSE_FUZZ, "US", START, END)
    batch = CsvSource(root / "csv").fetch_prices(plan.request)
    normalized = normalize_prices(batch, "US", date(2026, 1, 2), date(2026, 1, 5))
    checked = validate_prices(normalized.prices, "US", list(plan.request.symbols), date(2026, 1, 5))
    quarantine = quarantine_for_write(checked, normalized, batch, plan, "fuzz", now)
    write_quarantine(quarantine, root / "data")
    write_prices(prices_for_write(checked, plan, now), root / "data")
    written = pd.read_parquet(root / "data" / "prices").groupby("symbol").size().to_dict()
    assert written.get("NVDA") == 10 and written.get("AVGO") == 10, (written, batch.failures)
    # and no fuzzed file lost a row: each is written, quarantined, or the file failed as a whole
    failed = {f.symbol for f in batch.failures}
    for symbol in FUZZED[: len(defects)]:
        if symbol not in failed:
            landed = written.get(symbol, 0) + (int((quarantine["symbol"] == symbol).sum()) if len(quarantine) else 0)
            assert landed + normalized.empty_bars + normalized.duplicates_collapsed >= 10, (symbol, landed)


# --- issue 9 "done when": the user's own universe, real-shaped files, the real CLI ------------

USER_UNIVERSE = """
fx: {HKD: "HKDUSD=X"}
stocks:
  - {symbol: NVDA, name: NVIDIA, market: US, sector: semiconductors}
  - {symbol: AMD, name: AMD, market: US, sector: semiconductors}
  - {symbol: 0981.HK, name: SMIC, market: HK, sector: semiconductors}
  - {symbol: 3896.HK, name: Kingsoft Cloud, market: HK, sector: cloud}
"""


@pytest.mark.flow
def test_user_universe_with_real_shaped_csv_files_backfills_with_exit_0(tmp_path: Path) -> None:
    csv_dir = tmp_path / "prices-csv"
    csv_dir.mkdir()
    files = {
        "NVDA": classic_csv("US", 1),
        "AMD": one_line_any_order_csv("US", 2),
        "0981.HK": yfinance_3_line_csv("0981.HK", "HK", 3),
        "3896.HK": classic_csv("HK", 4, "Adj. Close"),
    }
    for symbol, text in files.items():
        (csv_dir / f"{symbol}.csv").write_text(text)
    (tmp_path / "universe.yaml").write_text(USER_UNIVERSE)
    aimoves = Path(sys.executable).parent / "aimoves"
    # no --markets: a US+HK universe runs US and HK only (the default follows the universe)
    result = subprocess.run(
        [str(aimoves), "backfill", "--source", "csv", "--csv-dir", str(csv_dir), "--universe", str(tmp_path / "universe.yaml"),
         "--start", str(START), "--end", str(END), "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "AIMOVES_DATA_DOCS": "0", "PREFECT_HOME": str(tmp_path / "prefect"),
             "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"},  # NOTE: own server; a busy machine starts it slowly
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Traceback" not in output and "AttributeError" not in output, output[-3000:]
    assert "HKDUSD=X.csv" in output  # the missing FX file is named
    prices = pd.read_parquet(tmp_path / "data" / "prices")
    stored = {(s, d) for s, d in zip(prices["symbol"], pd.to_datetime(prices["date"]).dt.date.astype(str))}
    for symbol, text in files.items():
        market = "HK" if symbol.endswith(".HK") else "US"
        expected = {(symbol, r[0]) for r in _bars(market, 0)}
        assert expected <= stored, (symbol, sorted(expected - stored))
        assert len(text.strip().splitlines()) - (3 if text.startswith("Price") else 1) == len(expected)


@pytest.mark.realdata
def test_realdata_files_are_read_where_they_lie(tmp_path: Path, realdata_dir: Path) -> None:
    universe = parse_universe(
        "stocks:\n"
        "  - {symbol: NVDA, name: NVIDIA, market: US, sector: semiconductors}\n"
        "  - {symbol: AVGO, name: Broadcom, market: US, sector: semiconductors}\n"
        "  - {symbol: 0981.HK, name: SMIC, market: HK, sector: semiconductors}\n",
        "realdata-universe",
    )
    start, end = date(2025, 1, 2), date(2025, 2, 28)
    plans = [plan_backfill(universe, m, start, end) for m in ("US", "HK")]
    run_prices("backfill", plans, SourceSettings("csv", realdata_dir), universe, tmp_path / "data")
    prices = pd.read_parquet(tmp_path / "data" / "prices")
    for symbol, plan in (("NVDA", plans[0]), ("AVGO", plans[0]), ("0981.HK", plans[1])):
        text = (realdata_dir / f"{symbol}.csv").read_text().splitlines()
        days = {line.split(",")[0] for line in text if line[:4].isdigit()}
        wanted = {d for d in days if str(plan.request.start) <= d <= str(end)}
        got = set(pd.to_datetime(prices.loc[prices.symbol == symbol, "date"]).dt.date.astype(str))
        assert wanted == got, (symbol, sorted(wanted ^ got)[:5])
    nvda = prices[prices.symbol == "NVDA"].set_index(pd.to_datetime(prices.loc[prices.symbol == "NVDA", "date"]).dt.date)
    assert nvda.loc[date(2025, 1, 27), "close"] == pytest.approx(118.42, abs=0.01)
    smic = prices[prices.symbol == "0981.HK"]
    assert smic["dq_flags"].map(lambda f: ADJ_FROM_CLOSE in list(f)).all()
    assert not nvda["dq_flags"].map(lambda f: ADJ_FROM_CLOSE in list(f)).any()
