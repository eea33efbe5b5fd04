"""A fake Yahoo Finance on 127.0.0.1, so the real yfinance code runs against fixtures.

Nothing of yfinance is patched: the test hands yfinance a `requests.Session` (via `session=`)
whose transport sends every `*.yahoo.com` request to this server instead.

What yfinance 1.7 requests for `yf.download(..., start=, end=, interval="1d")`, per symbol
(read from `yfinance/data.py`, `base.py`, `scrapers/history.py`):

* cookie and crumb: `GET https://fc.yahoo.com` (any answer will do; real Yahoo answers 404 plus
  a cookie; asked again before each request while yfinance holds no Yahoo cookie), then, once
  per process (the `YfData` singleton keeps it), `GET
  https://query1.finance.yahoo.com/v1/test/getcrumb` (the crumb, as plain text). After any
  HTTP status >= 400 yfinance switches to its "csrf" cookie strategy and back, which reads
  `https://guce.yahoo.com/consent` (here: a page without a csrfToken, so it gives up at once) and
  `https://query2.finance.yahoo.com/v1/test/getcrumb`, then repeats the request once.
* the symbol's time zone: `GET https://query2.finance.yahoo.com/v8/finance/chart/{SYMBOL}`
  with `range=1d&interval=1d` (only `meta.exchangeTimezoneName` is read; cached on disk after);
* the bars: the same chart URL with `period1`, `period2` (epoch seconds, the exchange-local
  midnights of start and of the exclusive end), `interval=1d`, `events=div,splits,capitalGains`;
* for a symbol whose time zone lookup fails, at most twice per process:
  `GET .../v10/finance/quoteSummary/{SYMBOL}` (answered 404 here, like any unknown path).

The session
-----------
yfinance 1.7 accepts either a curl_cffi Session or a plain `requests.Session`
(`yfinance/_http.py: is_supported_session`); it only refuses caching sessions. So no curl_cffi
proxy is needed: `FakeYahoo.session()` returns a `requests.Session` with `_LoopbackAdapter`
mounted on `https://` and `http://`. The adapter rewrites `https://<host>.yahoo.com/<path>?<query>`
to `http://127.0.0.1:<port>/<path>?<query>`, passes the original host in `X-Fake-Host`, and
refuses every other host, so a test can never reach the real network. `trust_env` is off so an
`HTTP(S)_PROXY` in the environment cannot capture loopback traffic. Cookies are still filed
under the original Yahoo URL (requests extracts them from the unmodified request).

Fixtures
--------
`FakeYahoo(fixtures)` takes `{symbol: FakeSymbol}`; a `FakeSymbol` holds the exchange time zone,
currency, the local time stamped on each daily bar (Yahoo stamps daily bars at the regular
open, e.g. 09:30 New York) and `bars`, a list of `FakeBar(day, open, high, low, close,
adj_close, volume)`. A field may be None (Yahoo sends null for a bar without trades). The chart
answer is the v8 shape:

    {"chart": {"result": [{"meta": {"currency", "symbol", "exchangeName", "instrumentType",
        "exchangeTimezoneName", "timezone", "gmtoffset", "validRanges", ...},
        "timestamp": [...],
        "indicators": {"quote": [{"open", "high", "low", "close", "volume"}],
                       "adjclose": [{"adjclose": [...]}]}}], "error": null}}

Bars are filtered to `period1 <= t < period2` as Yahoo does; `range=1d` gets the last bar.
A symbol not in the fixtures gets Yahoo's answer for an unknown symbol: HTTP 404 with
`{"chart": {"result": null, "error": {"code": "Not Found",
"description": "No data found, symbol may be delisted"}}}`.

Misbehaving on purpose
----------------------
`fake.misbehave(symbol, status=None, times=None, *, retry_after=None, delay=0, fault=None,
answer_as=None)` makes the next `times` requests naming that symbol (chart or quoteSummary;
`times=None`: for ever) misbehave; a later call for the same symbol replaces the earlier one.
Each request naming the symbol uses up one of the `times`, whatever it was. In order:

* `delay=3.0`: wait that many seconds before answering (a client with a shorter timeout gives up
  first: "timeout"); then answer as below (normally, if nothing else is set). The wait ends early
  when the server stops.
* `status=429`: HTTP 429 "Too Many Requests" (plain text, as Yahoo does), with a
  `Retry-After: <retry_after>` header when `retry_after` is given (seconds, or any string).
* `status=500`, `503`, any other: that status with Yahoo's JSON error shape,
  `{"chart": {"result": null, "error": {"code": "Internal Server Error",
  "description": "HTTP 503 Service Unavailable"}}}`.
* `fault=` (chart requests only; quoteSummary answers as usual), HTTP 200 each:
  - `"truncated"`: the normal chart JSON cut in the middle (`Content-Length` of the cut body,
    so the client reads it whole: the JSON itself is broken);
  - `"cut"`: the connection is closed half way through the body (`Content-Length` announces the
    whole body: the client sees an incomplete read);
  - `"not_json"`: an HTML page where JSON should be (`Content-Type: text/html`);
  - `"no_indicators"`: valid JSON of the wrong structure, `chart.result[0]` without
    `indicators`;
  - `"empty"`: an empty result: `meta` for the symbol, no `timestamp`, `indicators` with empty
    `quote` and `adjclose` (what Yahoo sends for a range without bars);
  - `"wrong_symbol"`: the chart of `answer_as` (another fixture symbol, its `meta.symbol` and its
    bars; by default the first other fixture symbol) answered to the request for `symbol`.

For news (`FakeYahooNews` below) only `status` applies; a delay or a fault is used up there
without effect.

Note that one `yf.download` attempt can make two chart requests per symbol (time zone,
then bars) and repeats any request once after a status >= 400. `fake.seen` records
`(host, path, query)` of every request, `fake.chart_calls[symbol]` counts chart requests and
`fake.bars_calls[symbol]` the chart requests for bars (those with `period1`).

One difference from production: yfinance catches `HTTPError` as imported from its backend
(curl_cffi when installed), so with a `requests.Session` the quoteSummary 404 for an unknown
symbol escapes as `HTTPError('404 Client Error: Not Found ...')` where a curl_cffi session gets
it logged and ends with "possibly delisted; no timezone found". Tests should accept both.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import requests
from requests.adapters import HTTPAdapter

CRUMB = "fakecrumb0123"


@dataclass(frozen=True)
class FakeBar:
    day: date
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    adj_close: float | None
    volume: int | None


@dataclass
class FakeSymbol:
    bars: list[FakeBar]
    timezone: str = "America/New_York"
    currency: str = "USD"
    exchange: str = "NMS"
    instrument: str = "EQUITY"
    stamp: time = time(9, 30)  # local time Yahoo puts on a daily bar (the regular open)

    def timestamp(self, day: date) -> int:
        return int(datetime.combine(day, self.stamp, ZoneInfo(self.timezone)).timestamp())


FAULTS = ("truncated", "cut", "not_json", "no_indicators", "empty", "wrong_symbol")


@dataclass
class _Misbehaviour:
    status: int | None
    times: int | None  # None: for ever
    retry_after: str | None = None  # Retry-After header of a 429
    delay: float = 0.0  # seconds to wait before answering
    fault: str | None = None  # one of FAULTS (a 200 with a broken body)
    answer_as: str | None = None  # the symbol whose chart a "wrong_symbol" fault answers with


@dataclass
class FakeYahoo:
    fixtures: dict[str, FakeSymbol]
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (host, path, query) of each request
    chart_calls: Counter = field(default_factory=Counter)
    bars_calls: Counter = field(default_factory=Counter)  # chart requests with period1 (the bars)
    _misbehave: dict[str, _Misbehaviour] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> FakeYahoo:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._stopping.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fakeyahoo", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # ends the waits of `delay` misbehaviours
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeYahoo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "FakeYahoo not started"
        return self._server.server_address[1]

    def session(self) -> requests.Session:
        """A requests.Session that sends every *.yahoo.com request to this server."""
        return session_to("127.0.0.1", self.port)

    # -- misbehaviour ----------------------------------------------------------------------
    def misbehave(
        self, symbol: str, status: int | None = None, times: int | None = None, *,
        retry_after: float | str | None = None, delay: float = 0.0, fault: str | None = None, answer_as: str | None = None,
    ) -> None:
        """See "Misbehaving on purpose" in the module docstring."""
        if status is None and not delay and fault is None:
            raise ValueError("misbehave: give a status, a delay or a fault")
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"misbehave: unknown fault {fault!r}, expected one of {FAULTS}")
        if status is not None and fault is not None:
            raise ValueError("misbehave: a status or a fault, not both")
        symbol = symbol.upper()
        if fault == "wrong_symbol" and answer_as is None:
            others = [s for s in self.fixtures if s.upper() != symbol]
            if not others:
                raise ValueError("misbehave: wrong_symbol needs answer_as (no other fixture symbol)")
            answer_as = others[0]
        ra = None if retry_after is None else (f"{retry_after:g}" if isinstance(retry_after, (int, float)) else str(retry_after))
        with self._lock:
            self._misbehave[symbol] = _Misbehaviour(status, times, ra, float(delay), fault, answer_as.upper() if answer_as else None)

    def _take_fault(self, symbol: str, chart: bool, bars: bool = False) -> _Misbehaviour | None:
        """Count the request and use up one of the symbol's misbehaviours (a copy, or None)."""
        with self._lock:
            if chart:
                self.chart_calls[symbol] += 1
                if bars:
                    self.bars_calls[symbol] += 1
            m = self._misbehave.get(symbol)
            if m is None:
                return None
            if m.times is not None:
                if m.times <= 0:
                    return None
                m.times -= 1
            return replace(m)

    def _take_misbehaviour(self, symbol: str, chart: bool) -> int | None:
        """The status of the symbol's next misbehaviour (None: answer normally). Kept for callers
        that only know statuses (the news handler): a delay or a body fault is not applied there."""
        m = self._take_fault(symbol, chart)
        return None if m is None else m.status

    # -- answers ---------------------------------------------------------------------------
    def chart(self, symbol: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        fx = self.fixtures.get(symbol)
        if fx is None:
            return 404, {"chart": {"result": None, "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"}}}
        stamped = sorted((fx.timestamp(b.day), b) for b in fx.bars)
        if "period1" in query or "period2" in query:
            p1 = int(query.get("period1", ["0"])[0])
            p2 = int(query.get("period2", [str(2**40)])[0])
            stamped = [(t, b) for t, b in stamped if p1 <= t < p2]
        else:  # range=1d (the time zone lookup) or another range: the last bar will do
            stamped = stamped[-1:]
        tz = ZoneInfo(fx.timezone)
        now = datetime.now(tz)
        offset = int(now.utcoffset().total_seconds())  # type: ignore[union-attr]
        meta = {
            "currency": fx.currency,
            "symbol": symbol,
            "exchangeName": fx.exchange,
            "fullExchangeName": fx.exchange,
            "instrumentType": fx.instrument,
            "firstTradeDate": stamped[0][0] if stamped else None,
            "regularMarketTime": stamped[-1][0] if stamped else None,
            "hasPrePostMarketData": True,
            "gmtoffset": offset,
            "timezone": now.tzname(),
            "exchangeTimezoneName": fx.timezone,
            "regularMarketPrice": stamped[-1][1].close if stamped else None,
            "priceHint": 2,
            "dataGranularity": query.get("interval", ["1d"])[0],
            "range": query.get("range", [""])[0],
            "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"],
        }
        bars = [b for _, b in stamped]
        result: dict[str, Any] = {"meta": meta}
        if bars:
            result["timestamp"] = [t for t, _ in stamped]
            result["indicators"] = {
                "quote": [
                    {
                        "open": [b.open for b in bars],
                        "high": [b.high for b in bars],
                        "low": [b.low for b in bars],
                        "close": [b.close for b in bars],
                        "volume": [b.volume for b in bars],
                    }
                ],
                "adjclose": [{"adjclose": [b.adj_close for b in bars]}],
            }
        else:  # NOTE: Yahoo omits `timestamp` for an empty range and sends empty quote lists
            result["indicators"] = {"quote": [{}], "adjclose": [{}]}
        return 200, {"chart": {"result": [result], "error": None}}


    def faulty_chart(self, symbol: str, query: dict[str, list[str]], fault: str, answer_as: str | None) -> tuple[int, bytes, str]:
        """(status, body, content type) of a chart answer broken as `fault` says (see FAULTS)."""
        if fault == "not_json":
            return 200, b"<!DOCTYPE html><html><head><title>Yahoo</title></head><body>Oops, something went wrong.</body></html>", "text/html;charset=utf-8"
        if fault == "wrong_symbol":
            assert answer_as is not None
            status, payload = self.chart(answer_as, query)
            if answer_as not in self.fixtures:  # no such fixture: our own bars under the other name
                status, payload = self.chart(symbol, query)
                if payload["chart"]["result"]:
                    payload["chart"]["result"][0]["meta"]["symbol"] = answer_as
            return status, json.dumps(payload).encode(), "application/json;charset=utf-8"
        status, payload = self.chart(symbol, query)
        result = (payload["chart"]["result"] or [None])[0]
        if fault == "no_indicators" and result is not None:
            result.pop("indicators", None)
        elif fault == "empty" and result is not None:
            result.pop("timestamp", None)
            result["indicators"] = {"quote": [{}], "adjclose": [{}]}
        body = json.dumps(payload).encode()
        if fault == "truncated":
            body = body[: len(body) // 2]
        return status, body, "application/json;charset=utf-8"


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeYahoo
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # NOTE: else headers and body in two writes cost 40 ms a response

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timed out) first
            pass

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_cut(self, status: int, body: bytes, content_type: str) -> None:
        """Announce the whole body, send half of it, close the connection."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json;charset=utf-8")

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._send(404, b"<html><body>not here</body></html>", "text/html")

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        fake = self.server_fake
        host = self.headers.get("X-Fake-Host", "")
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        with fake._lock:
            fake.seen.append((host, path, parts.query))
        if host == "fc.yahoo.com":
            self._send(404, b"<html><body>404 Not Found</body></html>", "text/html")
        elif path == "/v1/test/getcrumb":
            self._send(200, CRUMB.encode(), "text/plain;charset=utf-8")
        elif host.endswith("guce.yahoo.com") or host.endswith("consent.yahoo.com"):
            self._send(200, b"<html><body>no consent form here</body></html>", "text/html")
        elif path.startswith(("/v8/finance/chart/", "/v10/finance/quoteSummary/")):
            symbol = unquote(path.rsplit("/", 1)[1]).upper()
            chart = path.startswith("/v8/")
            m = fake._take_fault(symbol, chart=chart, bars=chart and "period1" in query)
            if m is not None and m.delay and fake._stopping.wait(m.delay):
                self.close_connection = True  # the server is stopping: no answer
                return
            status = None if m is None else m.status
            if status == 429:
                headers = {"Retry-After": m.retry_after} if m is not None and m.retry_after is not None else {}
                self._send(429, b"Too Many Requests\r\n", "text/plain;charset=utf-8", headers)
            elif status is not None:
                phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
                self._json(status, {"chart": {"result": None, "error": {"code": "Internal Server Error", "description": f"HTTP {status} {phrase}"}}})
            elif chart and m is not None and m.fault is not None:
                code, body, content_type = fake.faulty_chart(symbol, query, m.fault, m.answer_as)
                if m.fault == "cut":
                    self._send_cut(code, body, content_type)
                else:
                    self._send(code, body, content_type)
            elif chart:
                self._json(*fake.chart(symbol, query))
            else:  # yfinance asks quoteSummary only when the time zone lookup failed
                self._json(404, {"quoteSummary": {"result": None, "error": {"code": "Not Found", "description": f"Quote not found for symbol: {symbol}"}}})
        else:
            self._json(404, {"finance": {"result": None, "error": {"code": "Not Found", "description": "HTTP 404 Not Found"}}})


def session_to(host: str, port: int, scheme: str = "http") -> requests.Session:
    """A requests.Session that sends every *.yahoo.com request to `scheme://host:port` instead.

    Besides the fake server: a closed port (connection refused), a host that does not resolve
    (a name under `.invalid`, with the test's resolver failing it), or the fake server spoken to
    over `https` while it answers plain HTTP (the TLS handshake fails)."""
    s = requests.Session()
    s.trust_env = False
    adapter = _LoopbackAdapter(port, host, scheme)
    s.mount("https://", adapter)
    s.mount("http://", adapter)
    return s


def closed_port() -> int:
    """A local port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _LoopbackAdapter(HTTPAdapter):
    """Sends *.yahoo.com to the fake server (same path and query); refuses any other host."""

    def __init__(self, port: int, host: str = "127.0.0.1", scheme: str = "http") -> None:
        super().__init__()
        self._port, self._host, self._scheme = port, host, scheme

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        parts = urlsplit(request.url or "")
        host = (parts.hostname or "").lower()
        if host != "yahoo.com" and not host.endswith(".yahoo.com"):
            raise requests.ConnectionError(f"fakeyahoo: refusing to contact {host!r} (only *.yahoo.com is faked)")
        loop = request.copy()  # NOTE: keep the original so cookies are filed under the Yahoo URL
        loop.url = urlunsplit((self._scheme, f"{self._host}:{self._port}", parts.path or "/", parts.query, ""))
        loop.headers["Host"] = f"{self._host}:{self._port}"
        loop.headers["X-Fake-Host"] = host
        kwargs["proxies"] = {}
        return super().send(loop, **kwargs)


def daily_bars(days: list[date], start_price: float, volume: int = 1_000_000) -> list[FakeBar]:
    """Simple deterministic bars: price rises by 1 each day, Adj Close 1% below Close."""
    out = []
    for i, d in enumerate(days):
        c = round(start_price + i, 4)
        out.append(FakeBar(d, c - 0.5, c + 1.0, c - 1.0, c, round(c * 0.99, 4), volume + i))
    return out


# -- news (appended): POST /xhr/ncp, what yfinance's Ticker.get_news() asks -------------------------
#
# `FakeYahooNews(fixtures, news={"NVDA": [item, ...]})` answers
# `POST https://finance.yahoo.com/xhr/ncp?queryRef=latestNews&serviceKey=ncp_fin` with body
# `{"serviceConfig": {"snippetCount": N, "s": ["NVDA"]}}` as Yahoo does:
# `{"data": {"tickerStream": {"stream": [...first N items...]}}}`. `misbehave(symbol, 429)` works
# for news too. `news_nested(...)` / `news_flat(...)` build items in Yahoo's 2025 nested shape and
# in the older flat shape. Everything else behaves as FakeYahoo.


class _NewsHandler(_Handler):
    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        fake = self.server_fake
        assert isinstance(fake, FakeYahooNews)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        host = self.headers.get("X-Fake-Host", "")
        parts = urlsplit(self.path)
        with fake._lock:
            fake.seen.append((host, parts.path, parts.query))
        if parts.path != "/xhr/ncp":
            self._send(404, b"<html><body>not here</body></html>", "text/html")
            return
        try:
            config = json.loads(body or b"{}").get("serviceConfig", {})
        except ValueError:
            self._send(400, b"bad request", "text/plain")
            return
        symbols = [str(s).upper() for s in config.get("s", [])]
        count = int(config.get("snippetCount", 10))
        for symbol in symbols:
            fake.news_calls[symbol] += 1
            status = fake._take_misbehaviour(symbol, chart=False)
            if status == 429:
                self._send(429, b"Too Many Requests\r\n", "text/plain;charset=utf-8")
                return
            if status is not None:
                self._send(status, b"<html><body>Will be right back...</body></html>", "text/html")
                return
        stream = [item for symbol in symbols for item in fake.news.get(symbol, [])][:count]
        self._json(200, {"data": {"tickerStream": {"stream": stream, "pagination": {"uuids": ""}}}})


@dataclass
class FakeYahooNews(FakeYahoo):
    news: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    news_calls: Counter = field(default_factory=Counter)

    def start(self) -> FakeYahooNews:
        fake = self

        class Handler(_NewsHandler):
            server_fake = fake

        self._stopping.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fakeyahoo-news", daemon=True)
        self._thread.start()
        return self


def news_nested(
    uuid: str, title: str | None, published: datetime, url: str | None, publisher: str = "Reuters",
    summary: str | None = None, tickers: list[str] | None = None,
) -> dict[str, Any]:
    """A news item in Yahoo's 2025 nested shape (`content.pubDate` ISO 8601 in UTC with Z)."""
    content: dict[str, Any] = {
        "id": uuid,
        "contentType": "STORY",
        "title": title,
        "description": "",
        "summary": summary or "",
        "pubDate": published.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "displayTime": published.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "isHosted": True,
        "thumbnail": None,
        "provider": {"displayName": publisher, "url": "https://www.example.com/"},
        "canonicalUrl": {"url": url, "site": "finance", "region": "US", "lang": "en-US"} if url else None,
        "clickThroughUrl": {"url": url, "site": "finance", "region": "US", "lang": "en-US"} if url else None,
        "metadata": {"editorsPick": False},
        "finance": {"premiumFinance": {"isPremiumNews": False}, "stockTickers": [{"symbol": t} for t in tickers or []]},
        "storyline": None,
    }
    return {"id": uuid, "content": content}


def news_flat(
    uuid: str, title: str | None, published: datetime, url: str | None, publisher: str = "Reuters",
    tickers: list[str] | None = None,
) -> dict[str, Any]:
    """A news item in Yahoo's older flat shape (`providerPublishTime` in epoch seconds)."""
    item: dict[str, Any] = {
        "uuid": uuid,
        "title": title,
        "publisher": publisher,
        "link": url,
        "providerPublishTime": int(published.timestamp()),
        "type": "STORY",
    }
    if tickers:
        item["relatedTickers"] = tickers
    return item
