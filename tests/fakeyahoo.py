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

Misbehaving on purpose: `fake.misbehave(symbol, status=429, times=2)` answers the next two
requests naming that symbol (chart or quoteSummary) with HTTP 429 ("Too Many Requests", plain
text, as Yahoo does), `times=None` for ever; `status=500` answers HTTP 500 with Yahoo's JSON error
shape. Note that one `yf.download` attempt can make two chart requests per symbol (time zone,
then bars) and repeats any request once after a status >= 400. `fake.seen` records
`(host, path, query)` of every request, `fake.chart_calls[symbol]` counts chart requests.

One difference from production: yfinance catches `HTTPError` as imported from its backend
(curl_cffi when installed), so with a `requests.Session` the quoteSummary 404 for an unknown
symbol escapes as `HTTPError('404 Client Error: Not Found ...')` where a curl_cffi session gets
it logged and ends with "possibly delisted; no timezone found". Tests should accept both.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time
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


@dataclass
class _Misbehaviour:
    status: int
    times: int | None  # None: for ever


@dataclass
class FakeYahoo:
    fixtures: dict[str, FakeSymbol]
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (host, path, query) of each request
    chart_calls: Counter = field(default_factory=Counter)
    _misbehave: dict[str, _Misbehaviour] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> FakeYahoo:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fakeyahoo", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
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
        s = requests.Session()
        s.trust_env = False
        adapter = _LoopbackAdapter(self.port)
        s.mount("https://", adapter)
        s.mount("http://", adapter)
        return s

    # -- misbehaviour ----------------------------------------------------------------------
    def misbehave(self, symbol: str, status: int, times: int | None = None) -> None:
        with self._lock:
            self._misbehave[symbol.upper()] = _Misbehaviour(status, times)

    def _take_misbehaviour(self, symbol: str, chart: bool) -> int | None:
        with self._lock:
            if chart:
                self.chart_calls[symbol] += 1
            m = self._misbehave.get(symbol)
            if m is None:
                return None
            if m.times is not None:
                if m.times <= 0:
                    return None
                m.times -= 1
            return m.status

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


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeYahoo
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # NOTE: else headers and body in two writes cost 40 ms a response

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

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
            status = fake._take_misbehaviour(symbol, chart=path.startswith("/v8/"))
            if status == 429:
                self._send(429, b"Too Many Requests\r\n", "text/plain;charset=utf-8")
            elif status is not None:
                self._json(status, {"chart": {"result": None, "error": {"code": "Internal Server Error", "description": f"HTTP {status} Internal Server Error"}}})
            elif path.startswith("/v8/"):
                self._json(*fake.chart(symbol, query))
            else:  # yfinance asks quoteSummary only when the time zone lookup failed
                self._json(404, {"quoteSummary": {"result": None, "error": {"code": "Not Found", "description": f"Quote not found for symbol: {symbol}"}}})
        else:
            self._json(404, {"finance": {"result": None, "error": {"code": "Not Found", "description": "HTTP 404 Not Found"}}})


class _LoopbackAdapter(HTTPAdapter):
    """Sends *.yahoo.com to the fake server (same path and query); refuses any other host."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self._port = port

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        parts = urlsplit(request.url or "")
        host = (parts.hostname or "").lower()
        if host != "yahoo.com" and not host.endswith(".yahoo.com"):
            raise requests.ConnectionError(f"fakeyahoo: refusing to contact {host!r} (only *.yahoo.com is faked)")
        loop = request.copy()  # NOTE: keep the original so cookies are filed under the Yahoo URL
        loop.url = urlunsplit(("http", f"127.0.0.1:{self._port}", parts.path or "/", parts.query, ""))
        loop.headers["Host"] = f"127.0.0.1:{self._port}"
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
