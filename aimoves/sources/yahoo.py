"""Live daily prices and news from Yahoo Finance through yfinance's public API (the only module
that imports yfinance).

Prices: `YahooSource.fetch_prices(request)` asks `yf.Ticker(symbol, session=...).history(start,
end + 1 day, interval="1d", auto_adjust=False, actions=False, timeout=...)` for each symbol, in
batches of `batch_size` (one `throttle` call, i.e. one slot of the shared `yahoo-api` rate limit,
per batch and attempt). Each answer becomes Yahoo long form (`Date, Ticker, Open, High, Low,
Close, Adj Close, Volume`; `Date` the naive exchange-local trading day). `payloads` hold one
`RawPayload("<market>-batchNNN.parquet", "table", ...)` per batch: the long-form bars of that batch.

Errors. With `yf.config.debug.hide_exceptions = False` (set here) yfinance raises what went wrong
instead of logging it, and each symbol's error is classified from what was raised, plus the HTTP
status and Retry-After of the last chart answer this thread saw (see "The session"):

* rate limit: `YFRateLimitError` (HTTP 429): retried, waiting at least Retry-After;
* transient: a read timeout, a connection cut mid-answer, HTTP 5xx: retried;
* network: DNS, TLS, connection refused, connect timeout: retried once; when nothing in this
  fetch has answered yet, Yahoo is out of reach and `fetch_prices` raises `YahooUnreachable` ("Yahoo
  Finance unreachable: ...") instead of blaming every symbol; later fetches of this source fail
  at once with the same reason;
* malformed: an HTTP 200 whose body is not JSON, or JSON of the wrong structure: retried once;
* wrong symbol: the answer's `history_metadata["symbol"]` names another symbol: its bars are never
  kept under the requested one; retried once;
* no data: `YFPricesMissingError` (an empty result), `YFTzMissingError`, HTTP 404: not retried.

Retries follow `aimoves.retry` (one policy for prices, news and feeds): failed symbols of a batch
are retried together, with exponential backoff and jitter, up to `retry.max_attempts`. Every
symbol ends with bars or a `FetchFailure` whose reason says which of the above it was.

The session. `session` is handed to yfinance's `session=` (a requests or curl_cffi Session; None:
a curl_cffi Session impersonating Chrome, as yfinance makes). yfinance drops a 429's Retry-After,
so the session notes each chart and news answer's status and Retry-After for the calling thread:
by a response hook on a requests Session, by `_YahooSession.request` on ours. NOTE: yfinance keeps
one process-wide session: passing one replaces it for every later yfinance call in the process.

News: `YahooNewsSource` asks `yf.Ticker(symbol).get_news(count, tab="news")` per symbol, with the
same throttle, retry policy and error classes.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import socket
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import requests
import yfinance as yf
from yfinance.exceptions import YFPricesMissingError, YFRateLimitError, YFTickerMissingError

from aimoves.errors import AimovesError
from aimoves.retry import RetryPolicy, retry_call, yahoo_rate_limit
from aimoves.sources.base import PRICE_FIELDS, YAHOO_COLUMNS, FetchFailure, PriceBatch, PriceRequest, RawPayload, empty_bars

try:
    from curl_cffi import requests as curl_requests
except ImportError:  # pragma: no cover - yfinance then falls back to requests too
    curl_requests = None

log = logging.getLogger(__name__)

# NOTE: yfinance's documented switch (its `raise_errors=` is deprecated for it): errors are raised
# to us, not logged; without it a failed time zone lookup (no network) becomes "no timezone found".
yf.config.debug.hide_exceptions = False

Kind = Literal["rate_limit", "transient", "network", "malformed", "wrong_symbol", "empty", "unknown", "other"]
RETRY_ONCE: set[str] = {"network", "malformed", "wrong_symbol"}
RETRY_ALWAYS: set[str] = {"rate_limit", "transient"}
NOTES = {
    "rate_limit": "symbols retried after rate limit",
    "transient": "symbols retried after a transient error",
    "network": "symbols retried once after a network error",
    "malformed": "symbols retried once after a malformed response",
    "wrong_symbol": "symbols retried once after a response for another symbol",
}


class YahooUnreachable(AimovesError):
    """Yahoo Finance could not be reached at all (DNS, TLS, connection): no symbol is to blame."""


@dataclass(frozen=True)
class YahooError:
    """Why a symbol came back without data, as retried and reported."""

    kind: Kind
    message: str
    retry_after: float | None = None  # seconds Yahoo asked to wait (Retry-After)

    def retryable(self, attempt: int) -> bool:
        return self.kind in RETRY_ALWAYS or (self.kind in RETRY_ONCE and attempt == 1)


class _WrongSymbol(Exception):
    pass


# -- what the session saw ---------------------------------------------------------------------------
_seen = threading.local()  # status, retry_after of the last chart / news answer in this thread


def _note(response: Any, *args: Any, **kwargs: Any) -> Any:
    """Response hook: remember a Yahoo data answer's status and Retry-After for this thread."""
    url = str(getattr(response, "url", ""))
    if "/v8/finance/chart/" in url or "/xhr/ncp" in url:
        _seen.status = getattr(response, "status_code", None)
        _seen.retry_after = (getattr(response, "headers", None) or {}).get("Retry-After")
    return response


if curl_requests is not None:

    class _YahooSession(curl_requests.Session):
        """yfinance's default session (curl_cffi, impersonating Chrome) that notes each answer."""

        def request(self, *args: Any, **kwargs: Any) -> Any:
            return _note(super().request(*args, **kwargs))


def new_session() -> object:
    """The session used when none is given."""
    if curl_requests is None:  # pragma: no cover
        return _watched(requests.Session())
    return _YahooSession(impersonate="chrome")


def _watched(session: object) -> object:
    """Add the response hook to a requests Session (once); other sessions are used as they are."""
    if isinstance(session, requests.Session) and _note not in session.hooks["response"]:
        session.hooks["response"].append(_note)
    return session


# -- classifying what yfinance raised --------------------------------------------------------------
def _transport(name: str) -> tuple[type[BaseException], ...]:
    """The exception class `name` of requests and of curl_cffi (where installed)."""
    found = [getattr(requests.exceptions, name, None)]
    if curl_requests is not None:
        found.append(getattr(curl_requests.exceptions, name, None))
    return tuple(c for c in found if isinstance(c, type))


_CONNECT = _transport("ConnectionError") + _transport("ProxyError")
_TIMEOUT = _transport("Timeout")
_CUT = _transport("ChunkedEncodingError") + _transport("IncompleteRead")
_TLS = _transport("SSLError")
_CONNECT_TIMEOUT = _transport("ConnectTimeout")
_DNS = _transport("DNSError")


def _chain(exc: BaseException) -> list[BaseException]:
    """The error, its causes and the `reason` urllib3 wraps (a few levels)."""
    out: list[BaseException] = []
    todo: list[object] = [exc]
    while todo and len(out) < 12:
        e = todo.pop(0)
        if isinstance(e, BaseException) and all(e is not seen for seen in out):
            out.append(e)
            todo += [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
    return out


def _innermost(exc: BaseException) -> str:
    """The error with the reason requests wraps in it (urllib3's, which names the host)."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return _clean(f"{type(exc).__name__}: {reason or exc}")


def _network(exc: BaseException) -> str | None:
    """What kept the request from reaching Yahoo (DNS, TLS, connection), or None."""
    chain = _chain(exc)
    if any(isinstance(e, _DNS + (socket.gaierror,)) or type(e).__name__ == "NameResolutionError" for e in chain):
        return f"the host name lookup (DNS) failed: {_innermost(exc)}"
    if isinstance(exc, _TLS):
        return f"the TLS handshake failed: {_innermost(exc)}"
    if isinstance(exc, _CONNECT_TIMEOUT):
        return f"no connection within the timeout (no route?): {_innermost(exc)}"
    if isinstance(exc, _CONNECT):
        return f"the connection failed: {_innermost(exc)}"
    return None


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, (when.replace(tzinfo=when.tzinfo or UTC) - datetime.now(UTC)).total_seconds())


def _excerpt(text: str, width: int = 60) -> str:
    return f"body {text!r}" if len(text) <= 2 * width else f"body began {text[:width]!r}, ended {text[-width:]!r}"


def _clean(message: str) -> str:
    """One line; URL queries cut (yfinance's messages carry the crumb), curl's boilerplate too."""
    message = re.sub(r"Failed to perform, |\s*See https://curl\.se/\S+ first for more details\.?", "", " ".join(message.split()))
    return re.sub(r"(https?://[^\s?'\"]+)\?[^\s'\")]*", r"\1", message)


def classify(exc: BaseException, status: int | None = None, retry_after: str | None = None, timeout: float | None = None) -> YahooError:
    """What an error raised by yfinance means; `status`/`retry_after`: the last answer seen."""
    said = _clean(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, YFRateLimitError) or status == 429:
        wait = f"; Retry-After: {retry_after}" if retry_after is not None else "; no Retry-After"
        return YahooError("rate_limit", f"HTTP 429 Too Many Requests{wait}", _retry_after_seconds(retry_after))
    network = _network(exc)
    if network:
        return YahooError("network", network)
    if isinstance(exc, _TIMEOUT + (TimeoutError,)):
        within = f" within {timeout:g} s" if timeout else ""
        return YahooError("transient", f"timed out: no answer from Yahoo{within} ({type(exc).__name__})")
    if isinstance(exc, _CUT):
        return YahooError("transient", f"the connection was cut mid-answer: {said}")
    if status is not None and status >= 500:
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Server Error"
        return YahooError("transient", f"HTTP {status} {phrase}: {said}")
    if isinstance(exc, json.JSONDecodeError):
        doc = exc.doc or ""
        seen = f"HTTP {status}, " if status else ""
        return YahooError("malformed", f"not valid JSON ({exc.msg} at char {exc.pos}; truncated, or not JSON at all): {seen}{len(doc)} characters, {_excerpt(doc)}")
    if isinstance(exc, (KeyError, IndexError, TypeError)):
        what = exc.args[0] if isinstance(exc, KeyError) and exc.args else type(exc).__name__
        return YahooError("malformed", f"JSON of the wrong structure: no {what} where yfinance expects it")
    if isinstance(exc, _WrongSymbol):
        return YahooError("wrong_symbol", str(exc))
    if isinstance(exc, YFPricesMissingError) and exc.yahoo_reason is None:
        return YahooError("empty", f"Yahoo answered with an empty result (no trading in the range?): {said}")
    if isinstance(exc, YFTickerMissingError) or getattr(getattr(exc, "response", None), "status_code", None) == 404:
        return YahooError("unknown", f"symbol unknown to Yahoo (delisted or misspelt?): {said}")
    return YahooError("other", said)


def _reason(error: YahooError, attempts: int, what: str, span: str = "") -> str:
    """A failure record's reason; `what` the symbol is left without ("bars", "news"), over `span`."""
    tries = f"{attempts} attempt" + ("s" if attempts != 1 else "")
    for_span = f" for {span}" if span else ""
    return {
        "rate_limit": f"Yahoo rate limit on all {tries}: {error.message}",
        "transient": f"transient error on all {tries} (timeout, connection or HTTP 5xx): {error.message}",
        "network": f"network error on all {tries}: {error.message}",
        "malformed": f"malformed response from Yahoo on all {tries}, no {what}{for_span}: {error.message}",
        "wrong_symbol": f"wrong symbol on all {tries}, no {what} kept{for_span}: {error.message}",
    }.get(error.kind, f"no {what}{for_span}: {error.message}")


class YahooFailed(Exception):
    """One yfinance call that failed, classified."""

    def __init__(self, error: YahooError, attempt: int) -> None:
        super().__init__(error.message)
        self.error, self.attempt, self.retry_after = error, attempt, error.retry_after


def _call(fn: Callable[[], Any], attempt: int, timeout: float | None = None) -> Any:
    """fn() (one yfinance call); an error is raised as YahooFailed, with what the session saw."""
    _seen.status = _seen.retry_after = None
    try:
        # NOTE: under pandas 3 yfinance 1.7 emits Pandas4Warning/FutureWarning noise about `inplace=`.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            return fn()
    except Exception as exc:  # noqa: BLE001 - yfinance raises many kinds; classified here
        raise YahooFailed(classify(exc, getattr(_seen, "status", None), getattr(_seen, "retry_after", None), timeout), attempt) from exc


# NOTE: yfinance memoizes chart answers for past ranges per (url, params, timeout), failed ones
# included (64 entries): a timeout a few microseconds apart per call makes every attempt ask Yahoo.
# Its time zone lookup (fixed 10 s timeout) stays memoized: a 5xx there is answered from memory
# on the retry, and the symbol then fails as unknown ("no timezone found").
_DISTINCT = itertools.count(1)


def long_form(frame: pd.DataFrame | None, symbol: str) -> pd.DataFrame:
    """One symbol's `Ticker.history()` frame → Yahoo long form; all-NaN rows dropped."""
    if frame is None or frame.empty:
        return empty_bars()
    sub = frame.reindex(columns=PRICE_FIELDS).astype("float64")
    sub = sub[sub.notna().any(axis=1)]
    index = pd.DatetimeIndex(sub.index)
    dates = index.tz_localize(None) if index.tz is not None else index  # the exchange-local day
    out = pd.DataFrame({"Date": dates.to_numpy(), "Ticker": symbol})
    for col in PRICE_FIELDS:
        out[col] = sub[col].to_numpy()
    return out[YAHOO_COLUMNS]


@dataclass
class _Batch:
    """What one batch's attempts found so far."""

    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    errors: dict[str, YahooError] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)


class _Again(Exception):
    """Some symbols of the batch deserve another attempt."""

    def __init__(self, symbols: list[str], retry_after: float | None) -> None:
        super().__init__(f"{len(symbols)} symbols to retry: {', '.join(symbols[:5])}{' ...' if len(symbols) > 5 else ''}")
        self.symbols, self.retry_after = symbols, retry_after


@dataclass(frozen=True)
class YahooSource:
    """Daily bars from Yahoo Finance via yfinance; see the module docstring."""

    name: str = "yahoo"
    batch_size: int = 50
    timeout_seconds: float = 30  # each chart request for bars (yfinance's time zone lookup: its own 10 s)
    retry: RetryPolicy = RetryPolicy()
    session: object | None = None  # requests or curl_cffi Session; None: new_session() per fetch
    # Called before each batch's attempt; the default takes a slot of the flows' `yahoo-api` limit.
    throttle: Callable[[], None] | None = yahoo_rate_limit
    _unreachable: list[str] = field(default_factory=list, init=False, compare=False, repr=False)  # once said, for later fetches

    def fetch_prices(self, request: PriceRequest) -> PriceBatch:
        if self._unreachable:
            raise YahooUnreachable(self._unreachable[0])
        symbols = list(dict.fromkeys(request.symbols))
        size = max(1, self.batch_size)
        batches = [symbols[i : i + size] for i in range(0, len(symbols), size)]
        session = _watched(self.session) if self.session is not None else new_session()
        span = f"{request.start}..{request.end}"
        frames, payloads, failures = [], [], []
        retried: dict[str, set[str]] = {}
        reached: list[bool] = [False]  # whether Yahoo answered anything in this fetch
        for i, batch in enumerate(batches, start=1):
            label = f"{request.market} batch {i}/{len(batches)}"
            log.info("%s: %d symbols", label, len(batch))
            found = self._fetch_batch(batch, request, session, reached, retried, label)
            bars = pd.concat([found.frames[s] for s in batch if s in found.frames] or [empty_bars()], ignore_index=True)
            frames.append(bars)
            payloads.append(RawPayload(f"{request.market}-batch{i:03d}.parquet", "table", pa.Table.from_pandas(bars, preserve_index=False)))
            for sym in batch:
                if sym not in found.frames:
                    error = found.errors.get(sym, YahooError("other", "no bars and no error"))
                    failures.append(FetchFailure(sym, _reason(error, found.attempts.get(sym, 1), "bars", span)))
        nonempty = [f for f in frames if len(f)]
        bars = pd.concat(nonempty, ignore_index=True) if nonempty else empty_bars()
        notes = [f"{len(retried[k])} {text}" for k, text in NOTES.items() if retried.get(k)]
        if failures:
            log.warning("%s: %d of %d symbols returned no bars", request.market, len(failures), len(symbols))
        return PriceBatch(source=self.name, request=request, bars=bars, payloads=payloads, failures=failures, notes=notes)

    def _fetch_batch(
        self, batch: list[str], request: PriceRequest, session: object, reached: list[bool], retried: dict[str, set[str]], label: str
    ) -> _Batch:
        found = _Batch()
        todo = list(batch)

        def attempt(n: int) -> None:
            nonlocal todo
            if self.throttle is not None:
                self.throttle()
            again: list[str] = []
            for k, sym in enumerate(todo):
                found.attempts[sym] = n
                try:
                    frame = _call(lambda: self._history(sym, request, session), n, self.timeout_seconds)
                except YahooFailed as failed:
                    result = failed.error
                    if result.kind == "network" and not reached[0]:
                        self._out_of_reach(result, n)  # raises when it is Yahoo, not this symbol
                        rest = todo[k:]  # the others would only repeat it: try them all again
                        found.errors.update(dict.fromkeys(rest, result))
                        retried.setdefault("network", set()).update(rest)
                        todo = rest
                        raise _Again(rest, None)
                    reached[0] = True
                    found.errors[sym] = result
                    if result.retryable(n):
                        again.append(sym)
                        retried.setdefault(result.kind, set()).add(sym)
                else:
                    reached[0] = True
                    found.errors.pop(sym, None)
                    found.frames[sym] = long_form(frame, sym)
            todo = again
            if again:
                raise _Again(again, max((found.errors[s].retry_after or 0.0 for s in again), default=0.0) or None)

        try:
            retry_call(attempt, self.retry, lambda exc, n: isinstance(exc, _Again), label)
        except _Again:  # the last attempt: what is left keeps its error
            pass
        return found

    def _out_of_reach(self, error: YahooError, attempt: int) -> None:
        """Raise YahooUnreachable once a network error on the first request has been retried."""
        if attempt >= 2 or self.retry.max_attempts <= 1:
            message = f"Yahoo Finance unreachable: {error.message}"
            self._unreachable.append(message)
            raise YahooUnreachable(message)

    def _history(self, symbol: str, request: PriceRequest, session: object) -> pd.DataFrame:
        ticker = yf.Ticker(symbol, session=session)
        frame = ticker.history(
            start=request.start,
            end=request.end + timedelta(days=1),  # NOTE: yfinance's end is exclusive
            interval="1d",
            auto_adjust=False,  # NOTE: the default (True) drops Adj Close and adjusts OHLC
            actions=False,
            timeout=self.timeout_seconds + (next(_DISTINCT) % 10_000) * 1e-6,
        )
        answered = ticker.history_metadata.get("symbol")
        if isinstance(answered, str) and answered.upper() != symbol.upper():
            raise _WrongSymbol(f"Yahoo answered the request for {symbol} with the chart of {answered} (history_metadata symbol)")
        return frame


# -- news ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class YahooNewsSource:
    """Per-symbol news from Yahoo Finance via yfinance's `Ticker(symbol).get_news()`.

    One request per symbol (`count` items, the "news" tab), each taking a slot of the `yahoo-api`
    rate limit. Yahoo keeps no news history: it answers with the latest items only, so aimoves' own
    archive (`news/`, `raw/news/`) is the history. Each symbol's list is kept as JSON bytes
    (`<SYMBOL>.json`, kind `yahoo_news_json`) for `raw/news/` and replay; parsing is
    `aimoves.news.parse.parse_yahoo_news`. Errors are classified and retried as for prices; what
    still fails becomes a `NewsFailure` with the reason.
    """

    name: str = "yahoo"
    count: int = 20
    retry: RetryPolicy = RetryPolicy()
    session: object | None = None  # see YahooSource.session
    throttle: Callable[[], None] | None = yahoo_rate_limit

    def fetch_news(self, request):  # type: ignore[no-untyped-def] - NewsRequest -> NewsBatch
        from aimoves.news.base import NewsBatch, NewsFailure, NewsPayload, items_frame
        from aimoves.news.parse import parse_yahoo_news

        fetched_at = datetime.now(UTC)
        session = _watched(self.session) if self.session is not None else new_session()
        records: list[dict] = []
        payloads, failures = [], []
        retried: set[str] = set()
        reached = False
        for symbol in dict.fromkeys(request.symbols):
            try:
                items = retry_call(lambda n, symbol=symbol: self._news(symbol, session, n, retried), self.retry,
                                   lambda exc, n: isinstance(exc, YahooFailed) and exc.error.retryable(n), f"news {symbol}")
            except YahooFailed as failed:
                if failed.error.kind == "network" and not reached:
                    raise YahooUnreachable(f"Yahoo Finance unreachable: {failed.error.message}") from None
                reached = True
                failures.append(NewsFailure(symbol, _reason(failed.error, failed.attempt, "news")))
                continue
            reached = True
            data = json.dumps(items, ensure_ascii=False, default=str).encode("utf-8")
            payloads.append(NewsPayload(f"{symbol}.json", "yahoo_news_json", data, {"symbol": symbol}))
            records.extend(parse_yahoo_news(items, symbol, fetched_at))
        notes = [f"{len(retried)} symbols retried after a rate limit or transient error"] if retried else []
        if failures:
            log.warning("news: %d of %d symbols failed", len(failures), len(request.symbols))
        return NewsBatch(self.name, request, items_frame(records), fetched_at, payloads, failures, notes)

    def _news(self, symbol: str, session: object, attempt: int, retried: set[str]) -> list:
        if attempt > 1:
            retried.add(symbol)
        if self.throttle is not None:
            self.throttle()
        return list(_call(lambda: yf.Ticker(symbol, session=session).get_news(count=self.count, tab="news"), attempt) or [])
