"""YahooSource against a fake Yahoo on 127.0.0.1: the real yfinance code parses the fixtures.

See tests/fakeyahoo.py for how the session reaches the fake server and for the fixture format.
Nothing here contacts the network except the `live` test (deselected by default).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import date, time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import requests
import yfinance.cache as yf_cache
from curl_cffi.requests import exceptions as curl_exc
from yfinance.exceptions import YFPricesMissingError, YFRateLimitError, YFTzMissingError

from aimoves.normalize import normalize_prices
from aimoves.sources.base import YAHOO_COLUMNS, PriceRequest
from aimoves.retry import RetryPolicy
from aimoves.sources.yahoo import YahooSource, classify, long_form
from fakeyahoo import FakeYahoo, FakeSymbol, daily_bars

# NYSE sessions 2025-01-21..31 (2025-01-20 is Martin Luther King Jr. Day).
US_DAYS = [date(2025, 1, d) for d in (21, 22, 23, 24, 27, 28, 29, 30, 31)]
# HKEX sessions: 2025-01-28 is a half day, 29..31 closed for the Lunar New Year.
HK_DAYS = [date(2025, 1, d) for d in (20, 21, 22, 23, 24, 27, 28)]
START, END = date(2025, 1, 20), date(2025, 1, 31)


def fixtures() -> dict[str, FakeSymbol]:
    return {
        "AAA": FakeSymbol(daily_bars(US_DAYS, 100.0, volume=1_000_000)),
        "BBB": FakeSymbol(daily_bars(US_DAYS, 50.0, volume=2_000_000)),
        # NOTE: stamped at local midnight, i.e. 16:00 UTC of the *previous* day: the bar must
        # still land on the Hong Kong trading day.
        "0700.HK": FakeSymbol(daily_bars(HK_DAYS, 400.0), timezone="Asia/Hong_Kong", currency="HKD", exchange="HKG", stamp=time(0, 0)),
    }


UNKNOWN = ("NOPE", "NADA")


@pytest.fixture()
def fake(yf_cache_dir: Path) -> Iterator[FakeYahoo]:
    # Forget the fixture symbols' time zones, so every test sees the same request sequence.
    tz_cache = yf_cache.get_tz_cache()
    for symbol in [*fixtures(), *UNKNOWN]:
        tz_cache.store(symbol, None)
    with FakeYahoo(fixtures()) as server:
        yield server


def source(fake: FakeYahoo, max_attempts: int = 4, **kw: object) -> YahooSource:
    return YahooSource(session=fake.session(), retry=RetryPolicy(max_attempts, backoff_seconds=0.001), timeout_seconds=5, **kw)  # type: ignore[arg-type]


def us(*symbols: str) -> PriceRequest:
    return PriceRequest("US", symbols, START, END)


def test_two_symbols_parse_to_long_form(fake: FakeYahoo) -> None:
    batch = source(fake).fetch_prices(us("AAA", "BBB"))

    assert list(batch.bars.columns) == YAHOO_COLUMNS
    assert batch.failures == []
    assert batch.source == "yahoo"
    assert batch.bars.groupby("Ticker").size().to_dict() == {"AAA": 9, "BBB": 9}
    assert not batch.bars[["Open", "High", "Low", "Close", "Adj Close", "Volume"]].isna().any().any()
    # A bar stamped 2025-01-27 09:30 America/New_York is the 27th.
    aaa = batch.bars[batch.bars["Ticker"] == "AAA"].set_index("Date")
    assert [d.date() for d in pd.to_datetime(aaa.index)] == US_DAYS
    bar = aaa.loc[pd.Timestamp("2025-01-27")]
    assert (bar["Open"], bar["High"], bar["Low"], bar["Close"], bar["Adj Close"], bar["Volume"]) == (103.5, 105.0, 103.0, 104.0, 102.96, 1_000_004)
    bbb = batch.bars[batch.bars["Ticker"] == "BBB"].set_index("Date")
    assert bbb.loc[pd.Timestamp("2025-01-31"), "Close"] == 58.0
    assert bbb.loc[pd.Timestamp("2025-01-31"), "Volume"] == 2_000_008
    # yfinance asked for [start, end + 1 day) in exchange-local midnights.
    chart = [q for host, path, q in fake.seen if path == "/v8/finance/chart/AAA" and "period1" in q]
    p1 = int(pd.Timestamp("2025-01-20", tz="America/New_York").timestamp())
    p2 = int(pd.Timestamp("2025-02-01", tz="America/New_York").timestamp())
    assert chart and f"period1={p1}&period2={p2}" in chart[0]


def test_dates_normalize_to_exchange_days(fake: FakeYahoo) -> None:
    us_batch = source(fake).fetch_prices(us("AAA", "BBB"))
    norm = normalize_prices(us_batch, "US")
    assert len(norm.prices) == 18 and norm.rejected.empty
    assert sorted({d.date() for d in norm.prices["date"]}) == US_DAYS
    assert norm.prices.loc[norm.prices["date"] == pd.Timestamp("2025-01-27"), "close"].tolist() == [104.0, 54.0]

    hk_batch = source(fake).fetch_prices(PriceRequest("HK", ("0700.HK",), START, END))
    assert hk_batch.failures == []
    assert [pd.Timestamp(d).date() for d in hk_batch.bars["Date"]] == HK_DAYS
    hk = normalize_prices(hk_batch, "HK").prices
    assert [d.date() for d in hk["date"]] == HK_DAYS
    assert hk.loc[hk["date"] == pd.Timestamp("2025-01-27"), "close"].item() == 405.0


def test_unknown_symbol_is_a_failure_and_others_still_return(fake: FakeYahoo) -> None:
    batch = source(fake).fetch_prices(us("AAA", "NOPE"))

    assert batch.symbols_returned == {"AAA"}
    assert len(batch.bars) == 9
    assert [f.symbol for f in batch.failures] == ["NOPE"]
    reason = batch.failures[0].reason
    assert "no bars for 2025-01-20..2025-01-31" in reason
    # yfinance 1.7 reports an unknown symbol as a quoteSummary 404 (first two per process) or
    # as "possibly delisted; no timezone found" (after that): either way the reason says so.
    assert "unknown to Yahoo" in reason or "delisted" in reason
    assert "crumb=" not in reason  # the URL's query (with the crumb) is cut from the message


def test_a_batch_where_nothing_returns_is_empty_with_failures(fake: FakeYahoo) -> None:
    batch = source(fake).fetch_prices(us("NOPE", "NADA"))
    assert batch.bars.empty and list(batch.bars.columns) == YAHOO_COLUMNS
    assert sorted(f.symbol for f in batch.failures) == ["NADA", "NOPE"]
    assert len(batch.payloads) == 1 and batch.payloads[0].data.num_rows == 0


def test_rate_limited_twice_then_ok_is_retried(fake: FakeYahoo) -> None:
    fake.misbehave("BBB", status=429, times=2)
    batch = source(fake).fetch_prices(us("AAA", "BBB"))

    assert batch.failures == []
    assert batch.bars.groupby("Ticker").size().to_dict() == {"AAA": 9, "BBB": 9}
    assert batch.notes == ["1 symbols retried after rate limit"]
    assert fake.bars_calls["AAA"] == 1  # AAA was not retried
    assert fake.chart_calls["BBB"] >= 3  # two 429s (yfinance's time zone lookup and its repeat), then the bars


def test_always_rate_limited_ends_as_failure(fake: FakeYahoo) -> None:
    fake.misbehave("BBB", status=429, times=None)
    batch = source(fake, max_attempts=3).fetch_prices(us("AAA", "BBB"))

    assert batch.symbols_returned == {"AAA"}
    assert [f.symbol for f in batch.failures] == ["BBB"]
    reason = batch.failures[0].reason
    assert "rate limit" in reason and "3 attempts" in reason and "Too Many Requests" in reason
    assert fake.chart_calls["BBB"] >= 3


def test_server_error_is_retried_once_the_time_zone_is_known(fake: FakeYahoo) -> None:
    src = source(fake)
    src.fetch_prices(us("AAA"))  # yfinance now has AAA's time zone (as after any earlier run)
    fake.misbehave("AAA", status=500, times=2)
    batch = src.fetch_prices(us("AAA"))
    assert batch.failures == [] and len(batch.bars) == 9
    assert batch.notes == ["1 symbols retried after a transient error"]

    fake.misbehave("AAA", status=500, times=None)
    batch = source(fake, max_attempts=2).fetch_prices(us("AAA"))
    assert batch.bars.empty
    assert batch.failures[0].symbol == "AAA" and "transient error on all 2 attempts" in batch.failures[0].reason


def test_payloads_hold_each_batch_frame(fake: FakeYahoo, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="aimoves.sources.yahoo"):
        batch = source(fake, batch_size=1).fetch_prices(us("AAA", "BBB"))

    assert [p.name for p in batch.payloads] == ["US-batch001.parquet", "US-batch002.parquet"]
    assert all(p.kind == "table" and isinstance(p.data, pa.Table) for p in batch.payloads)
    for payload, symbol in zip(batch.payloads, ["AAA", "BBB"]):
        table = payload.data.to_pandas()
        assert list(table.columns) == YAHOO_COLUMNS
        expected = batch.bars[batch.bars["Ticker"] == symbol].reset_index(drop=True)
        pd.testing.assert_frame_equal(table, expected, check_dtype=False)
    assert "US batch 2/2: 1 symbols" in caplog.text
    # yfinance's own "1 Failed download" noise is taken out of the log (the failure records say it)
    assert "Failed download" not in caplog.text


def test_every_request_batch_passes_the_throttle(fake: FakeYahoo) -> None:
    calls: list[int] = []
    batch = source(fake, batch_size=1, throttle=lambda: calls.append(1)).fetch_prices(us("AAA", "BBB"))
    assert not batch.failures and len(calls) == 2  # one download per batch of one symbol


def test_long_form_keeps_the_exchange_day_and_drops_empty_rows() -> None:
    idx = pd.DatetimeIndex(["2025-01-27", "2025-01-28", "2025-01-29"], tz="Asia/Hong_Kong", name="Date")
    frame = pd.DataFrame(np.arange(18, dtype=float).reshape(3, 6), index=idx, columns=["Open", "High", "Low", "Close", "Adj Close", "Volume"])
    frame.iloc[1] = np.nan  # a bar Yahoo sent as nulls
    long = long_form(frame, "0700.HK")
    assert list(long.columns) == YAHOO_COLUMNS
    assert long[["Date", "Ticker", "Close", "Volume"]].values.tolist() == [
        [pd.Timestamp("2025-01-27"), "0700.HK", 3.0, 5.0],
        [pd.Timestamp("2025-01-29"), "0700.HK", 15.0, 17.0],
    ]
    assert long_form(pd.DataFrame(), "X").empty


def _requests_dns_error() -> Exception:
    """What requests raises when the name lookup fails (urllib3's NameResolutionError inside)."""
    import socket

    import urllib3.exceptions

    try:
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except socket.gaierror as gai:
            raise urllib3.exceptions.NameResolutionError("yahoo.invalid", None, gai) from gai  # type: ignore[arg-type]
    except urllib3.exceptions.NameResolutionError as exc:
        return requests.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/v8/finance/chart/X", exc))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (YFRateLimitError(), 429, "rate_limit"),
        (YFPricesMissingError("X", "", yahoo_reason="HTTP 503 Service Unavailable"), 503, "transient"),
        (requests.ReadTimeout("Read timed out. (read timeout=30)"), None, "transient"),
        (requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead(10 bytes read)"), None, "transient"),
        (curl_exc.ReadTimeout("Operation timed out after 30001 milliseconds"), None, "transient"),
        (requests.ConnectionError("Failed to establish a new connection: [Errno 111] Connection refused"), None, "network"),
        (requests.exceptions.SSLError("[SSL: WRONG_VERSION_NUMBER] wrong version number"), None, "network"),
        (requests.ConnectTimeout("Connection to query2.finance.yahoo.com timed out"), None, "network"),
        (curl_exc.DNSError("Could not resolve host: query2.finance.yahoo.com"), None, "network"),
        (_requests_dns_error(), None, "network"),
        (json.JSONDecodeError("Expecting value", "<html>", 0), 200, "malformed"),
        (KeyError("indicators"), 200, "malformed"),
        (YFPricesMissingError("X", " (1d 2025-01-20 -> 2025-02-01)"), 200, "empty"),
        (YFTzMissingError("X"), None, "unknown"),
        (YFPricesMissingError("X", "", yahoo_reason="No data found, symbol may be delisted"), 404, "unknown"),
        (ValueError("something else"), 200, "other"),
    ],
)
def test_classify(error: Exception, status: int | None, kind: str) -> None:
    assert classify(error, status).kind == kind


def test_dns_and_tls_failures_say_so() -> None:
    assert "(DNS)" in classify(_requests_dns_error()).message and "yahoo.invalid" in classify(_requests_dns_error()).message
    assert "(DNS)" in classify(curl_exc.DNSError("Could not resolve host: query2.finance.yahoo.com")).message
    assert "TLS" in classify(requests.exceptions.SSLError("wrong version number")).message


@pytest.mark.live
def test_live_nvda_one_week() -> None:
    """Real Yahoo: NVDA in the DeepSeek week (run with `pytest -m live`)."""
    batch = YahooSource(retry=RetryPolicy(backoff_seconds=5)).fetch_prices(PriceRequest("US", ("NVDA",), date(2025, 1, 27), date(2025, 1, 31)))
    assert batch.failures == [], batch.failures
    assert [pd.Timestamp(d).date() for d in batch.bars["Date"]] == [date(2025, 1, d) for d in (27, 28, 29, 30, 31)]
    assert (batch.bars[["Open", "High", "Low", "Close", "Adj Close"]] > 0).all().all()
    closes = batch.bars.set_index("Date")["Close"]
    assert 100 < closes.iloc[0] < 140  # NVDA closed about 118.4 on 2025-01-27, down 17%


def test_the_default_session_notes_status_and_retry_after(fake: FakeYahoo) -> None:
    """Production's session (curl_cffi, as yfinance makes it) keeps what yfinance drops: a 429's Retry-After."""
    from aimoves.sources import yahoo

    session = yahoo.new_session()
    fake.misbehave("BBB", status=429, times=1, retry_after=7)
    response = session.get(f"http://127.0.0.1:{fake.port}/v8/finance/chart/BBB", params={"range": "1d"})
    assert response.status_code == 429 and (yahoo._seen.status, yahoo._seen.retry_after) == (429, "7")
    session.get(f"http://127.0.0.1:{fake.port}/v8/finance/chart/BBB", params={"range": "1d"})
    assert (yahoo._seen.status, yahoo._seen.retry_after) == (200, None)
