"""The one retry policy (aimoves.retry) and the shared `yahoo-api` rate limit; RSS feeds through it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from aimoves.fetch_limits import FetchLimits
from aimoves.news.sources import _read_feed, make_news_source
from aimoves.retry import CREATE_YAHOO_RATE_LIMIT, RetryPolicy, is_transient_request, retry_call, yahoo_rate_limit
from aimoves.sources.yahoo import YahooNewsSource, YahooSource
from aimoves.universe import parse_universe

FEED = b"<?xml version='1.0'?><rss version='2.0'><channel><title>t</title><item><title>Nvidia</title></item></channel></rss>"


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_retry_call_retries_what_it_is_told_and_stops_at_max_attempts() -> None:
    sleeps = Sleeps()
    calls: list[int] = []

    def flaky(attempt: int) -> str:
        calls.append(attempt)
        if attempt < 3:
            raise ConnectionError("down")
        return "ok"

    assert retry_call(flaky, RetryPolicy(4, 1.0, sleep=sleeps), lambda exc, n: isinstance(exc, ConnectionError)) == "ok"
    assert calls == [1, 2, 3] and len(sleeps) == 2
    assert 0.5 <= sleeps[0] <= 1.5 and 1.0 <= sleeps[1] <= 3.0  # backoff x 2**(k-1) x U(0.5, 1.5)

    calls.clear()
    with pytest.raises(ConnectionError):
        retry_call(flaky, RetryPolicy(2, 1.0, sleep=Sleeps()), lambda exc, n: True)
    assert calls == [1, 2]  # the last error is raised after max_attempts

    calls.clear()
    with pytest.raises(ConnectionError):
        retry_call(flaky, RetryPolicy(4, 1.0, sleep=Sleeps()), lambda exc, n: False)
    assert calls == [1]  # not retryable: raised at once


def test_retry_after_is_waited_for_up_to_the_cap() -> None:
    policy = RetryPolicy(backoff_seconds=0.01, max_retry_after_seconds=5)
    assert 7.0 <= RetryPolicy(backoff_seconds=0.01).delay(1, 7.0) <= 8.4
    assert policy.delay(1, 3600) == 5
    assert policy.delay(1, None) <= 0.015


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (requests.ConnectionError("refused"), True),
        (requests.ReadTimeout("slow"), True),
        (requests.HTTPError("503", response=type("R", (), {"status_code": 503})()), True),
        (requests.HTTPError("429", response=type("R", (), {"status_code": 429})()), True),
        (requests.HTTPError("404", response=type("R", (), {"status_code": 404})()), False),
        (ValueError("not a feed"), False),
    ],
)
def test_is_transient_request(error: Exception, transient: bool) -> None:
    assert is_transient_request(error) is transient


@pytest.fixture()
def feed_server() -> Iterator[tuple[str, list[int]]]:
    """A feed on 127.0.0.1 answering the statuses in `script` (then 200 with the feed)."""
    script: list[int] = []
    seen: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            status = script.pop(0) if script else 200
            seen.append(status)
            body = FEED if status == 200 else b"busy"
            self.send_response(status)
            self.send_header("Content-Type", "application/rss+xml" if status == 200 else "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/feed.xml", script  # type: ignore[misc]
    finally:
        server.shutdown()
        server.server_close()


def test_feed_reads_retry_a_503_with_the_shared_policy(feed_server: tuple[str, list[int]]) -> None:
    url, script = feed_server
    sleeps = Sleeps()
    script.extend([503])
    data, content_type = _read_feed(url, FetchLimits(deadline_s=5), RetryPolicy(2, 1.0, sleep=sleeps))
    assert data == FEED and content_type == "application/rss+xml" and len(sleeps) == 1

    script.extend([404])
    with pytest.raises(requests.HTTPError, match="404"):
        _read_feed(url, FetchLimits(deadline_s=5), RetryPolicy(2, 1.0, sleep=sleeps))
    assert len(sleeps) == 1  # a 404 is not retried

    script.extend([503, 503])
    with pytest.raises(requests.HTTPError, match="503"):
        _read_feed(url, FetchLimits(deadline_s=5), RetryPolicy(2, 1.0, sleep=sleeps))
    assert len(sleeps) == 2


def test_yahoo_news_takes_the_same_rate_limit_as_prices(tmp_path) -> None:  # noqa: ANN001
    universe = parse_universe("stocks:\n  - {symbol: NVDA, name: NVIDIA, market: US, sector: semiconductors}\n", "test")
    news = make_news_source("yahoo", universe, tmp_path)
    assert isinstance(news, YahooNewsSource)
    assert news.throttle is yahoo_rate_limit and YahooSource().throttle is yahoo_rate_limit
    yahoo_rate_limit()  # outside a flow run: a no-op, no server asked


@pytest.mark.flow
def test_a_missing_yahoo_api_limit_is_said_once_per_run(prefect_harness: None) -> None:
    from prefect import flow

    @flow
    def six_requests() -> None:
        for _ in range(6):
            yahoo_rate_limit()

    class Records(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    records = Records()  # NOTE: Prefect's logging setup replaces pytest's caplog handler on the root
    logging.getLogger("aimoves.retry").addHandler(records)
    try:
        six_requests()
        six_requests()
    finally:
        logging.getLogger("aimoves.retry").removeHandler(records)
    said = [r for r in records.records if "yahoo-api" in r.getMessage()]
    assert len(said) == 2, [r.getMessage() for r in said]  # once per run, not once per request
    assert CREATE_YAHOO_RATE_LIMIT in said[0].getMessage()
