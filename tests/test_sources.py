from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aimoves.normalize import normalize_prices
from aimoves.raw import write_raw
from aimoves.sources.base import PriceRequest
from aimoves.sources.csv import CsvSource, read_price_csv
from aimoves.sources.replay import ReplaySource
from aimoves.sources.simulated import SimulatedSource

SECTORS = {"NVDA": "semiconductors", "AMD": "semiconductors", "MSFT": "cloud", "3896.HK": "cloud", "0981.HK": "semiconductors"}


def _req(market: str, symbols: tuple[str, ...], start: str, end: str) -> PriceRequest:
    return PriceRequest(market, symbols, date.fromisoformat(start), date.fromisoformat(end))


# --- simulated -------------------------------------------------------------------------------


def test_simulated_is_deterministic_whatever_the_window_or_universe() -> None:
    src = SimulatedSource(SECTORS)
    a = src.fetch_prices(_req("US", ("NVDA",), "2025-01-02", "2025-01-31")).bars
    b = src.fetch_prices(_req("US", ("AMD", "NVDA"), "2024-12-01", "2025-03-31")).bars
    b = b[(b.Ticker == "NVDA") & (b.Date >= "2025-01-02") & (b.Date <= "2025-01-31")].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    other_seed = SimulatedSource(SECTORS, seed=7).fetch_prices(_req("US", ("NVDA",), "2025-01-02", "2025-01-31")).bars
    assert not np.allclose(a.Close, other_seed.Close)


def test_simulated_follows_each_exchange_calendar() -> None:
    bars = SimulatedSource(SECTORS).fetch_prices(_req("HK", ("3896.HK",), "2025-01-27", "2025-02-04")).bars
    assert [d.date().isoformat() for d in bars.Date] == ["2025-01-27", "2025-01-28", "2025-02-03", "2025-02-04"]


def test_simulated_shock_day_diverges_us_semis_down_hk_up() -> None:
    src = SimulatedSource(SECTORS)
    us = src.fetch_prices(_req("US", ("NVDA", "AMD"), "2025-01-24", "2025-01-27")).bars
    hk = src.fetch_prices(_req("HK", ("3896.HK", "0981.HK"), "2025-01-24", "2025-01-27")).bars
    us_ret = us.groupby("Ticker")["Close"].apply(lambda c: c.iloc[-1] / c.iloc[0] - 1)
    hk_ret = hk.groupby("Ticker")["Close"].apply(lambda c: c.iloc[-1] / c.iloc[0] - 1)
    assert (us_ret < -0.08).all(), us_ret
    assert (hk_ret > 0.02).all(), hk_ret
    assert (src.fetch_prices(_req("US", ("NVDA",), "2025-01-24", "2025-01-27")).bars.Ticker == "NVDA").all()


def test_simulated_shock_date_is_configurable() -> None:
    moved = SimulatedSource(SECTORS, shock_date=date(2024, 6, 3)).fetch_prices(_req("US", ("NVDA",), "2024-05-31", "2024-06-03")).bars
    assert moved.Close.iloc[-1] / moved.Close.iloc[0] - 1 < -0.08


def test_simulated_defects_are_injected() -> None:
    bars = SimulatedSource(SECTORS, inject_defects=True).fetch_prices(_req("US", ("NVDA", "AMD"), "2025-01-02", "2025-02-28")).bars
    nvda = bars[bars.Ticker == "NVDA"]
    assert (nvda.Low < 0).sum() == 1
    assert nvda.duplicated().sum() == 1
    assert (nvda.Volume == 0).sum() == 1
    assert pd.Timestamp("2025-02-17") in set(nvda.Date)  # Presidents' Day
    assert not (bars[bars.Ticker == "AMD"].Low < 0).any()


# --- csv -------------------------------------------------------------------------------------

CLASSIC = "Date,Open,High,Low,Close,Adj Close,Volume\n2025-01-24,148.37,148.97,141.88,142.62,142.57,234657600\n2025-01-27,124.80,128.40,116.70,118.42,118.38,818830900\n"
YF_MULTI = (
    "Price,Close,High,Low,Open,Volume\nTicker,0981.HK,0981.HK,0981.HK,0981.HK,0981.HK\nDate,,,,,\n"
    "2025-01-27,38.15,42.0,37.15,41.95,211536889\n2025-01-28,38.0,38.0,38.0,38.0,0\n"
)
YF_SINGLE = "Date,Volume,Close,Open,High,Low\n2025-01-27 00:00:00-05:00,818830900,118.42,124.80,128.40,116.70\n"


@pytest.mark.parametrize(
    ("text", "symbol", "has_adj"),
    [(CLASSIC, "NVDA", True), (YF_MULTI, "0981.HK", False), (YF_SINGLE, "NVDA", False), ("\ufeff" + CLASSIC, "NVDA", True)],
    ids=["classic", "yfinance-3-line-header", "one-header-any-order-tz", "bom"],
)
def test_csv_formats(text: str, symbol: str, has_adj: bool) -> None:
    bars, rejected = read_price_csv(text.encode(), f"{symbol}.csv", symbol)
    assert rejected.empty
    assert bars["Flags"].map(lambda f: "adj_close_from_close" in f).all() == (not has_adj)
    market = "HK" if symbol.endswith(".HK") else "US"
    from aimoves.sources.base import PriceBatch

    norm = normalize_prices(PriceBatch("csv", _req(market, (symbol,), "2025-01-01", "2025-02-01"), bars), market).prices
    row = norm[norm.date == "2025-01-27"].iloc[0]
    assert row.close == pytest.approx(118.42 if symbol == "NVDA" else 38.15)
    assert row.adj_close == pytest.approx(118.38 if has_adj else row.close)


def test_csv_unreadable_rows_are_rejected_with_file_and_line() -> None:
    text = CLASSIC + "2025-01-28,121,129,116.25,12x9,128.9,579666400\n2025-01-29,126,126.9,120,\"123,7\",123.6,467120600\n"
    bars, rejected = read_price_csv(text.encode(), "NVDA.csv", "NVDA")
    assert len(bars) == 2
    assert list(rejected.reason) == ["NVDA.csv, line 4: Close '12x9' is not a number", "NVDA.csv, line 5: Close '123,7' is not a number"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("Date,Open,High,Low,Adj Close,Volume\n2025-01-27,1,2,0.5,1,10\n", "missing column(s) Close"),
        (b"Date,Open\n\xff\xfe".decode("latin-1"), "missing column"),
    ],
)
def test_csv_bad_files_name_the_problem(text: str, message: str) -> None:
    from aimoves.errors import InputFileError

    with pytest.raises(InputFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_price_csv(text.encode(), "X.csv", "X")


def test_csv_non_utf8_is_named() -> None:
    from aimoves.errors import InputFileError

    with pytest.raises(InputFileError, match="X.csv: not UTF-8"):
        read_price_csv(b"Date,Open,High,Low,Close\n2025-01-27,\xff,1,1,1\n", "X.csv", "X")


def test_csv_source_reports_missing_and_bad_files_and_goes_on(tmp_path: Path) -> None:
    (tmp_path / "NVDA.csv").write_text(CLASSIC)
    (tmp_path / "AMD.csv").write_text("Date,Open\n2025-01-27,1\n")
    batch = CsvSource(tmp_path).fetch_prices(_req("US", ("NVDA", "AMD", "MSFT"), "2025-01-01", "2025-01-31"))
    assert set(batch.bars.Ticker) == {"NVDA"}
    reasons = {f.symbol: f.reason for f in batch.failures}
    assert "missing column" in reasons["AMD"] and "AMD.csv" in reasons["AMD"]
    assert "no file" in reasons["MSFT"]
    assert [p.name for p in batch.payloads] == ["NVDA.csv"]  # raw/ keeps only files that parsed as price CSVs


# --- replay ----------------------------------------------------------------------------------


def test_replay_reads_raw_latest_fetch_wins(tmp_path: Path) -> None:
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    (csv_dir / "NVDA.csv").write_text(CLASSIC)
    req = _req("US", ("NVDA", "AMD"), "2025-01-01", "2025-01-31")
    write_raw(CsvSource(csv_dir).fetch_prices(req), tmp_path / "data")
    sim = SimulatedSource(SECTORS).fetch_prices(_req("US", ("AMD",), "2025-01-20", "2025-01-31"))
    write_raw(sim, tmp_path / "data")
    # a later fetch restates NVDA's 2025-01-27 close
    (csv_dir / "NVDA.csv").write_text(CLASSIC.replace("118.42", "118.50"))
    write_raw(CsvSource(csv_dir).fetch_prices(req), tmp_path / "data")

    batch = ReplaySource(tmp_path / "data").fetch_prices(req)
    norm = normalize_prices(batch, "US").prices
    nvda = norm[norm.symbol == "NVDA"].set_index("date")
    assert nvda.loc["2025-01-27", "close"] == 118.50
    assert len(nvda) == 2
    assert set(norm[norm.symbol == "AMD"].source) == {"simulated"}
    assert set(nvda.source) == {"csv"}
    assert not batch.failures


def test_replay_reports_a_truncated_payload(tmp_path: Path) -> None:
    sim = SimulatedSource(SECTORS).fetch_prices(_req("US", ("AMD",), "2025-01-20", "2025-01-31"))
    record = write_raw(sim, tmp_path)
    payload = record.path / "US.parquet"
    payload.write_bytes(payload.read_bytes()[:100])
    batch = ReplaySource(tmp_path).fetch_prices(_req("US", ("AMD",), "2025-01-20", "2025-01-31"))
    assert any("unreadable raw payload" in n and "US.parquet" in n for n in batch.notes)
    assert [f.symbol for f in batch.failures] == ["AMD"]
