"""YahooSource against a misbehaving fake Yahoo: rate limits, 5xx, timeouts, broken bodies.

The real yfinance code talks to tests/fakeyahoo.py (nothing of yfinance is patched; see its
docstring for the fixture format and for `misbehave`). Each test asserts what
`YahooSource.fetch_prices` returns: bars for the healthy symbols, a `FetchFailure` that says what
happened for the broken one, retries bounded by `max_attempts` (counted as the requests the fake
saw), and, where it matters, what `write_raw` keeps under `raw/`. Waits between attempts go
through YahooSource's `sleep` hook, recorded and not slept, so the file runs in seconds.

Request bounds: yfinance repeats a request once after any HTTP status >= 400, so a symbol that
gets 429 or 5xx costs two bars requests per attempt; a timeout or an HTTP 200 with a broken body
costs one. The time zone of every symbol is put in yfinance's cache first (as after any earlier
run), so no time zone lookup (fixed 10 s timeout in yfinance) runs.

Set AIMOVES_RELIABILITY_OUT=FILE to collect one JSON line per fault (docs/make_reliability.py).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yfinance.cache as yf_cache

from aimoves.raw import MANIFEST, write_raw
from aimoves.retry import RetryPolicy
from aimoves.sources.base import PriceBatch, PriceRequest
from aimoves.sources.yahoo import YahooNewsSource, YahooSource, YahooUnreachable
from aimoves.news import NewsRequest
from fakeyahoo import FakeSymbol, FakeYahoo, closed_port, daily_bars, session_to

# NYSE sessions 2025-01-21..31 (2025-01-20 is Martin Luther King Jr. Day).
US_DAYS = [date(2025, 1, d) for d in (21, 22, 23, 24, 27, 28, 29, 30, 31)]
START, END = date(2025, 1, 20), date(2025, 1, 31)
SYMBOLS = ("AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG")
TIMEOUT = 0.5  # YahooSource.timeout_seconds in the timeout tests
DELAY = 3.0  # how long the fake keeps a "slow" symbol waiting (far beyond TIMEOUT)


def _record(point: str, outcome: str) -> None:
    out = os.environ.get("AIMOVES_RELIABILITY_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"kind": "fake Yahoo fault", "point": point, "outcome": outcome, "verdict": "ok"}) + "\n")


def fixtures() -> dict[str, FakeSymbol]:
    # Each symbol its own price level, so another symbol's bars are recognisable.
    return {s: FakeSymbol(daily_bars(US_DAYS, 100.0 * (i + 1))) for i, s in enumerate(SYMBOLS)}


@pytest.fixture()
def fake(yf_cache_dir: Path) -> Iterator[FakeYahoo]:
    tz_cache = yf_cache.get_tz_cache()
    for symbol, fx in fixtures().items():
        tz_cache.store(symbol, fx.timezone)  # known time zones: only bars requests go out
    tz_cache.store("NOPE", None)
    with FakeYahoo(fixtures()) as server:
        yield server


class Sleeps(list):
    """YahooSource's `sleep` hook: records each backoff delay instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def source(
    fake: FakeYahoo, sleeps: Sleeps, *, max_attempts: int = 4, backoff_seconds: float = 1.0, max_retry_after_seconds: float = 60.0,
    timeout_seconds: float = 5,
) -> YahooSource:
    retry = RetryPolicy(max_attempts, backoff_seconds, max_retry_after_seconds, sleep=sleeps)
    return YahooSource(session=fake.session(), retry=retry, timeout_seconds=timeout_seconds)


def us(*symbols: str) -> PriceRequest:
    return PriceRequest("US", symbols, START, END)


def rows(batch: PriceBatch) -> dict[str, int]:
    return batch.bars.groupby("Ticker").size().to_dict() if len(batch.bars) else {}


def reasons(batch: PriceBatch) -> dict[str, str]:
    return {f.symbol: f.reason for f in batch.failures}


def stored(batch: PriceBatch, data_dir: Path) -> tuple[dict, dict[str, int]]:
    """write_raw the batch; (its manifest, rows per Ticker over its Parquet payloads)."""
    record = write_raw(batch, data_dir)
    manifest = json.loads((record.path / MANIFEST).read_text())
    counts: dict[str, int] = {}
    for payload in manifest["payloads"]:
        table = pq.read_table(record.path / payload["name"]).to_pandas()
        for ticker, n in table.groupby("Ticker").size().items():
            counts[ticker] = counts.get(ticker, 0) + int(n)
    return manifest, counts


def short(text: str, width: int = 150) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


# -- rate limits -------------------------------------------------------------------------------
def test_rate_limit_without_retry_after_backs_off_with_jitter_then_fails(fake: FakeYahoo, tmp_path: Path) -> None:
    fake.misbehave("BBB", status=429, times=None)
    sleeps = Sleeps()
    batch = source(fake, sleeps, max_attempts=4, backoff_seconds=1.0).fetch_prices(us("AAA", "BBB"))

    assert rows(batch) == {"AAA": 9}
    reason = reasons(batch)["BBB"]
    assert "rate limit" in reason and "4 attempts" in reason and "Too Many Requests" in reason and "no Retry-After" in reason
    # Bounded: 4 attempts, each a request plus yfinance's one repeat after the 429.
    assert 4 <= fake.bars_calls["BBB"] <= 2 * 4
    assert fake.bars_calls["AAA"] == 1  # AAA was not retried
    # Exponential backoff with jitter: attempt k waits backoff * 2**(k-1) * U(0.5, 1.5).
    assert len(sleeps) == 3
    factors = [d / 2**k for k, d in enumerate(sleeps)]
    assert all(0.5 <= f <= 1.5 for f in factors), sleeps
    assert len(set(factors)) > 1, f"no jitter: {sleeps}"
    assert sleeps[2] > sleeps[0]  # grows: >= 2.0 s against <= 1.5 s
    # The rest of the batch is still written, the failure with it.
    manifest, counts = stored(batch, tmp_path)
    assert counts == {"AAA": 9}
    assert [f["symbol"] for f in manifest["failures"]] == ["BBB"]
    _record(
        "HTTP 429 for ever, no Retry-After (max_attempts=4)",
        f"BBB failed after {fake.bars_calls['BBB']} requests (4 attempts x 2: yfinance repeats a 429 once), backoff "
        f"{', '.join(f'{d:.2f}' for d in sleeps)} s (1 s x 2^k x U(0.5,1.5)); AAA's 9 bars written; reason: {short(reason)}",
    )


def test_rate_limit_retry_after_is_honoured(fake: FakeYahoo) -> None:
    # Seconds: the first attempt (a request and yfinance's repeat) gets 429 + Retry-After: 7.
    fake.misbehave("BBB", status=429, times=2, retry_after=7)
    sleeps = Sleeps()
    batch = source(fake, sleeps, backoff_seconds=0.01).fetch_prices(us("AAA", "BBB"))
    assert batch.failures == [] and rows(batch) == {"AAA": 9, "BBB": 9}
    assert len(sleeps) == 1 and 7.0 <= sleeps[0] <= 7.0 * 1.2, sleeps  # not the 0.01 s backoff
    assert fake.bars_calls["BBB"] == 3

    # An HTTP date 10 s ahead.
    fake.misbehave("BBB", status=429, times=2, retry_after=format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True))
    dated = Sleeps()
    batch = source(fake, dated, backoff_seconds=0.01).fetch_prices(us("BBB"))
    assert batch.failures == [] and len(dated) == 1 and 8.0 <= dated[0] <= 12.5, dated

    # A Retry-After beyond max_retry_after_seconds is waited for that long only; still bounded.
    fake.misbehave("BBB", status=429, times=None, retry_after=3600)
    capped = Sleeps()
    batch = source(fake, capped, backoff_seconds=0.01, max_attempts=3, max_retry_after_seconds=5).fetch_prices(us("BBB"))
    assert capped == [5, 5]
    reason = reasons(batch)["BBB"]
    assert "rate limit" in reason and "3 attempts" in reason and "Retry-After: 3600" in reason
    _record(
        "HTTP 429 with Retry-After (7 s; an HTTP date 10 s ahead; 3600 s)",
        f"waited {sleeps[0]:.2f} s (Retry-After x U(1,1.2), not the 0.01 s backoff), then BBB's 9 bars came; "
        f"HTTP date: waited {dated[0]:.1f} s; 3600 s: capped at max_retry_after_seconds=5 ({capped}), BBB failed after 3 attempts",
    )


# -- server errors -----------------------------------------------------------------------------
def test_server_errors_are_retried_then_recorded(fake: FakeYahoo) -> None:
    fake.misbehave("BBB", status=503, times=2)  # the first attempt (request + repeat), then fine
    fake.misbehave("CCC", status=500, times=None)
    sleeps = Sleeps()
    batch = source(fake, sleeps, max_attempts=3, backoff_seconds=0.5).fetch_prices(us("AAA", "BBB", "CCC"))

    assert rows(batch) == {"AAA": 9, "BBB": 9}
    reason = reasons(batch)["CCC"]
    assert list(reasons(batch)) == ["CCC"]
    assert "transient error on all 3 attempts" in reason and "HTTP 500 Internal Server Error" in reason
    assert fake.bars_calls["BBB"] == 3 and 3 <= fake.bars_calls["CCC"] <= 2 * 3
    assert len(sleeps) == 2 and 0.25 <= sleeps[0] <= 0.75 and 0.5 <= sleeps[1] <= 1.5
    assert batch.notes == ["2 symbols retried after a transient error"]

    fake.misbehave("BBB", status=503, times=None)
    batch = source(fake, Sleeps(), max_attempts=2).fetch_prices(us("BBB"))
    assert "transient error on all 2 attempts" in reasons(batch)["BBB"] and "HTTP 503 Service Unavailable" in reasons(batch)["BBB"]
    _record("HTTP 503 twice, then fine", "retried after the backoff: BBB's 9 bars came on attempt 2 (3 requests)")
    _record("HTTP 500 / 503 for ever (max_attempts=3 / 2)", f"failed as transient after the attempts, AAA's bars kept; reason: {short(reason)}")


# -- timeouts ----------------------------------------------------------------------------------
def test_timeout_ends_within_the_configured_limit(fake: FakeYahoo, tmp_path: Path) -> None:
    fake.misbehave("BBB", delay=DELAY, times=None)
    sleeps = Sleeps()
    attempts = 3
    started = time.perf_counter()
    batch = source(fake, sleeps, timeout_seconds=TIMEOUT, max_attempts=attempts, backoff_seconds=0.2).fetch_prices(us("AAA", "BBB"))
    elapsed = time.perf_counter() - started

    # Each attempt waits timeout_seconds for BBB, never the fake's 3 s; backoffs are recorded.
    assert TIMEOUT * attempts * 0.9 <= elapsed <= TIMEOUT * attempts + 1.5, elapsed
    assert rows(batch) == {"AAA": 9}
    reason = reasons(batch)["BBB"]
    assert "timed out" in reason and f"{attempts} attempts" in reason and "ReadTimeout" in reason
    assert fake.bars_calls["BBB"] == attempts  # yfinance does not repeat a timed-out request
    assert len(sleeps) == attempts - 1
    manifest, counts = stored(batch, tmp_path)
    assert counts == {"AAA": 9} and manifest["failures"][0]["symbol"] == "BBB"
    _record(
        f"answer delayed {DELAY:g} s, timeout_seconds={TIMEOUT}, max_attempts={attempts}",
        f"returned in {elapsed:.2f} s (bound {TIMEOUT} s x {attempts} attempts + 1.5 s; backoffs recorded, not slept): "
        f"BBB failed as 'timed out' after {attempts} requests, AAA's 9 bars written",
    )


# -- broken bodies -----------------------------------------------------------------------------
def test_truncated_json_is_a_malformed_failure_kept_in_raw(fake: FakeYahoo, tmp_path: Path) -> None:
    fake.misbehave("BBB", fault="truncated", times=None)
    batch = source(fake, Sleeps()).fetch_prices(us("AAA", "BBB"))

    assert rows(batch) == {"AAA": 9}
    reason = reasons(batch)["BBB"]
    assert "malformed response" in reason and "not valid JSON" in reason and "HTTP 200" in reason
    assert "body began '{\"chart\"" in reason and "ended '" in reason  # what was seen, for raw/
    assert fake.bars_calls["BBB"] == 2  # retried once
    assert batch.notes == ["1 symbols retried once after a malformed response"]
    manifest, counts = stored(batch, tmp_path)
    assert counts == {"AAA": 9}
    assert manifest["failures"] == [{"symbol": "BBB", "reason": reason}]
    _record(
        "HTTP 200, JSON cut in the middle",
        f"BBB failed after 2 attempts; raw/ kept AAA's 9 bars and, in manifest.json, the reason with the body's ends: {short(reason, 170)}",
    )


def test_connection_cut_mid_body_is_transient(fake: FakeYahoo) -> None:
    fake.misbehave("BBB", fault="cut", times=None)
    batch = source(fake, Sleeps(), max_attempts=3).fetch_prices(us("AAA", "BBB"))

    assert rows(batch) == {"AAA": 9}
    reason = reasons(batch)["BBB"]
    assert "transient error on all 3 attempts" in reason and "IncompleteRead" in reason
    assert fake.bars_calls["BBB"] == 3
    _record("connection closed half way through the body", f"retried as transient, then failed after 3 attempts: {short(reason)}")


def test_not_json_is_malformed(fake: FakeYahoo) -> None:
    fake.misbehave("BBB", fault="not_json", times=None)
    batch = source(fake, Sleeps()).fetch_prices(us("AAA", "BBB"))

    assert rows(batch) == {"AAA": 9}
    reason = reasons(batch)["BBB"]
    assert "malformed response" in reason and "not valid JSON" in reason and "<!DOCTYPE html>" in reason
    assert fake.bars_calls["BBB"] == 2
    _record("HTTP 200 with an HTML page instead of JSON", f"BBB failed after 2 attempts with the page in the reason: {short(reason)}")


def test_wrong_structure_is_malformed(fake: FakeYahoo) -> None:
    fake.misbehave("BBB", fault="no_indicators", times=None)
    batch = source(fake, Sleeps()).fetch_prices(us("AAA", "BBB"))

    assert rows(batch) == {"AAA": 9}
    reason = reasons(batch)["BBB"]
    assert "malformed response" in reason and "wrong structure" in reason and "no indicators" in reason
    assert "KeyError" not in reason  # yfinance's own message was a bare KeyError('indicators')
    assert fake.bars_calls["BBB"] == 2
    _record("valid JSON, chart.result[0] without indicators", f"BBB failed after 2 attempts (no KeyError escaped): {short(reason)}")


def test_empty_result_is_no_bars(fake: FakeYahoo) -> None:
    fake.misbehave("BBB", fault="empty", times=None)
    batch = source(fake, Sleeps()).fetch_prices(us("AAA", "BBB"))

    assert rows(batch) == {"AAA": 9}
    reason = reasons(batch)["BBB"]
    assert reason.startswith("no bars for 2025-01-20..2025-01-31") and "empty result" in reason
    assert fake.bars_calls["BBB"] == 1  # a well-formed answer: not retried
    assert batch.notes == []
    _record("chart.result with meta and no timestamps", f"BBB failed at once (a real answer, not retried): {reason}")


def test_wrong_symbol_is_not_stored_under_the_requested_one(fake: FakeYahoo, tmp_path: Path) -> None:
    fake.misbehave("BBB", fault="wrong_symbol", answer_as="CCC", times=None)
    batch = source(fake, Sleeps()).fetch_prices(us("AAA", "BBB", "CCC"))

    assert rows(batch) == {"AAA": 9, "CCC": 9}
    reason = reasons(batch)["BBB"]
    assert "wrong symbol" in reason and "CCC" in reason and "no bars kept" in reason
    # CCC's own bars are CCC's (level 300), once; none went in as BBB.
    assert batch.bars[batch.bars["Ticker"] == "CCC"]["Close"].min() == 300.0
    assert fake.bars_calls["BBB"] == 2
    manifest, counts = stored(batch, tmp_path)
    assert counts == {"AAA": 9, "CCC": 9} and [f["symbol"] for f in manifest["failures"]] == ["BBB"]
    _record(
        "the answer to BBB is CCC's chart (meta.symbol CCC)",
        f"CCC's bars were dropped, not stored as BBB (yfinance alone returned them as BBB); BBB failed after 2 attempts: {short(reason)}",
    )


# -- all at once -------------------------------------------------------------------------------
def test_mixed_batch_keeps_the_healthy_and_lists_the_failed(fake: FakeYahoo, tmp_path: Path) -> None:
    fake.misbehave("BBB", status=429, times=None)
    fake.misbehave("CCC", fault="truncated", times=None)
    fake.misbehave("DDD", fault="wrong_symbol", answer_as="AAA", times=None)
    fake.misbehave("EEE", fault="empty", times=None)
    fake.misbehave("FFF", delay=DELAY, times=None)
    fake.misbehave("GGG", status=503, times=2)  # recovers
    sleeps = Sleeps()
    attempts = 3
    started = time.perf_counter()
    batch = source(fake, sleeps, max_attempts=attempts, timeout_seconds=TIMEOUT, backoff_seconds=0.5).fetch_prices(
        us("AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG", "NOPE")
    )
    elapsed = time.perf_counter() - started

    assert rows(batch) == {"AAA": 9, "GGG": 9}
    failed = reasons(batch)
    assert sorted(failed) == ["BBB", "CCC", "DDD", "EEE", "FFF", "NOPE"]
    assert "rate limit" in failed["BBB"]
    assert "malformed" in failed["CCC"]
    assert "wrong symbol" in failed["DDD"] and "AAA" in failed["DDD"]
    assert "no bars" in failed["EEE"] and "empty result" in failed["EEE"]
    assert "timed out" in failed["FFF"]
    assert "unknown to Yahoo" in failed["NOPE"] or "delisted" in failed["NOPE"]
    assert all(fake.bars_calls[s] <= 2 * attempts for s in SYMBOLS)
    assert elapsed <= TIMEOUT * attempts + 3.0, elapsed  # FFF's timeouts; the backoffs are recorded
    # AAA once, not also as DDD.
    assert batch.bars[batch.bars["Ticker"] == "AAA"]["Close"].tolist() == [100.0 + i for i in range(9)]
    manifest, counts = stored(batch, tmp_path)
    assert counts == {"AAA": 9, "GGG": 9}
    assert sorted(f["symbol"] for f in manifest["failures"]) == sorted(failed)
    _record(
        "one batch: healthy, 429, truncated, wrong symbol, empty, timeout, 503 then fine, unknown",
        f"AAA and GGG written (9 bars each), the 6 others listed as failed with their reasons in {elapsed:.1f} s; "
        f"notes: {'; '.join(batch.notes)}",
    )


# -- Yahoo out of reach ------------------------------------------------------------------------
@pytest.fixture()
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """The resolver fails every name under .invalid, as with no network (no query leaves the machine)."""
    real = socket.getaddrinfo

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if isinstance(host, str) and host.endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def unreachable(how: str, fake: FakeYahoo) -> object:
    if how == "connection refused":
        return session_to("127.0.0.1", closed_port())
    if how == "DNS":
        return session_to("query2.yahoo.invalid", 80)
    return session_to("127.0.0.1", fake.port, scheme="https")  # "TLS": the fake answers plain HTTP


@pytest.mark.parametrize(("how", "said"), [("connection refused", "Connection refused"), ("DNS", "(DNS)"), ("TLS", "TLS")])
def test_yahoo_out_of_reach_is_one_error_not_a_failure_per_symbol(fake: FakeYahoo, no_dns: None, how: str, said: str) -> None:
    sleeps = Sleeps()
    src = YahooSource(session=unreachable(how, fake), retry=RetryPolicy(4, 1.0, sleep=sleeps), timeout_seconds=2)
    started = time.perf_counter()
    with pytest.raises(YahooUnreachable) as raised:
        src.fetch_prices(us(*SYMBOLS))
    message = str(raised.value)
    assert message.startswith("Yahoo Finance unreachable: ") and said in message, message
    assert "delisted" not in message and "timezone" not in message
    assert len(sleeps) == 1  # the first symbol tried twice, the other six not at all
    assert time.perf_counter() - started < 3
    assert sum(fake.chart_calls.values()) == 0
    # The next market of the run fails at once, with the same reason.
    with pytest.raises(YahooUnreachable, match="Yahoo Finance unreachable"):
        src.fetch_prices(PriceRequest("HK", ("0700.HK",), START, END))
    assert len(sleeps) == 1
    # News says it once too.
    news = YahooNewsSource(session=unreachable(how, fake), retry=RetryPolicy(2, 0.001))
    with pytest.raises(YahooUnreachable, match=f"Yahoo Finance unreachable: .*{said}"):
        news.fetch_news(NewsRequest(SYMBOLS))
    _record(f"Yahoo out of reach ({how})", f"one error for the whole fetch after 2 tries of the first symbol: {short(message)}")


def test_a_connection_error_after_yahoo_answered_is_that_symbol_s(fake: FakeYahoo) -> None:
    """Once Yahoo has answered in a fetch, a network error is retried and blamed on its symbol only."""
    session = fake.session()
    # requests picks the adapter of the longest matching prefix: BBB's charts go to a closed port.
    session.mount("https://query2.finance.yahoo.com/v8/finance/chart/BBB", session_to("127.0.0.1", closed_port()).get_adapter("https://x"))
    sleeps = Sleeps()
    batch = YahooSource(session=session, retry=RetryPolicy(4, 1.0, sleep=sleeps)).fetch_prices(us("AAA", "BBB"))
    assert rows(batch) == {"AAA": 9}
    reason = reasons(batch)["BBB"]
    assert reason.startswith("network error on all 2 attempts: the connection failed") and "Connection refused" in reason, reason
    assert len(sleeps) == 1 and batch.notes == ["1 symbols retried once after a network error"]
    _record("connection refused for one symbol after Yahoo answered another", f"AAA's 9 bars kept, BBB failed: {short(reason)}")


@pytest.mark.flow
def test_aimoves_daily_offline_says_yahoo_is_unreachable_once(tmp_path: Path, small_universe_file: Path) -> None:
    """The real command with Yahoo out of reach: every request goes to a proxy on a closed local
    port (curl_cffi honours HTTPS_PROXY), so the connection is refused and nothing leaves the machine."""
    import subprocess
    import sys

    proxy = f"http://127.0.0.1:{closed_port()}"
    env = {**os.environ, "HTTPS_PROXY": proxy, "https_proxy": proxy, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
           "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180", "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "aimoves", "daily", "--universe", str(small_universe_file), "--data-dir", str(tmp_path / "data")],
                            capture_output=True, text=True, env=env, timeout=400)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Yahoo Finance unreachable: the connection failed") and lines[0].endswith("; nothing was written"), lines[:3]
    assert len(lines) < 20 and result.stdout.count("Yahoo Finance unreachable") == 1
    everything = result.stdout + result.stderr
    assert "delisted" not in everything and "no timezone found" not in everything and " failed symbol " not in everything
    assert everything.count("no global concurrency limit 'yahoo-api'") == 1 and "prefect gcl create yahoo-api" in everything
    assert not list((tmp_path / "data").glob("prices/**/*.parquet"))
    _record("aimoves daily with Yahoo out of reach (connection refused)", f"exit 1 in {len(lines)} summary lines, the first: {short(lines[0])}")
