"""Live daily prices from Yahoo Finance through yfinance (the only module that imports yfinance).

`YahooSource.fetch_prices(request)` splits the symbols into batches of `batch_size` and calls
`yf.download(batch, start, end + 1 day, interval="1d", auto_adjust=False, actions=False,
group_by="column", multi_level_index=True, progress=False, ...)` for each: `end` is exclusive
in yfinance, inclusive in a `PriceRequest`.

The frame yfinance returns (one row per date, columns `(Price, Ticker)`, selected by level
*name*) becomes Yahoo long form: one row per (Date, Ticker), columns exactly
`Date, Ticker, Open, High, Low, Close, Adj Close, Volume`. `Date` keeps the index values
yfinance gives (for daily bars: naive midnight timestamps of the exchange-local trading day).
Rows whose price fields are all NaN are dropped: yfinance pads every symbol to the union of all
dates of the batch, and a symbol without data comes back as an all-NaN column.

Errors. `yf.download` never raises for one bad symbol: it logs the error and returns NaN for it.
yfinance 1.7 keeps those errors in a per-call context that `download()` discards
(`yfinance.shared._ERRORS`, which older versions filled in, is no longer written). The only
place they surface is the summary `download()` logs on the `yfinance` logger at its end,
`"['SYM1', 'SYM2']: <message>"`; this module reads that summary with a logging filter bound to
the calling thread and takes those records out of the log (the failure records carry them; it
still looks at `shared._ERRORS` for older versions).

What the transport saw. yfinance swallows most of what went wrong on the wire: a read timeout, a
body that is not JSON (an HTML page, a truncated answer) and an empty result all end as the same
"possibly delisted; no price data found"; a 429's `Retry-After` header is dropped; and a chart
answered for *another* symbol (`chart.result[0].meta.symbol`) is parsed and returned under the
requested one. So, for the duration of each `yf.download`, this module watches the chart
requests of its symbols on the session it hands yfinance (the session's `get` is wrapped once, a
pass-through for everything else; the watch is bound to the calling thread unless `threads > 1`)
and keeps, per symbol, the last answer or exception. With `session=None` it makes the session
itself, the way yfinance would (`yfinance._http.new_session()`), one per `fetch_prices` call.
Then, per symbol of the batch:

* bars whose answer names another symbol are dropped (never stored under the requested one) and
  the symbol fails as "wrong symbol" (retried once);
* a rate limit (HTTP 429, "Too Many Requests", `YFRateLimitError`) or a transient error
  (timeout, connection error or a body cut off by the connection, HTTP 5xx) is retried, for
  those symbols only, with exponential backoff and jitter
  (`backoff_seconds * 2**(attempt-1) * U(0.5, 1.5)`; at least the largest `Retry-After` of the
  retried symbols times U(1.0, 1.2), capped at `max_retry_after_seconds`), up to `max_attempts`
  attempts in all; if it persists, the failure reason says so ("rate limit" / "transient ...
  timed out ..."); `sleep` does the waiting (tests record it);
* a malformed answer (HTTP 200 whose body is not JSON, e.g. truncated, or JSON without
  `chart.result[0].indicators.quote`) is retried once, then fails as "malformed response" with
  what was seen: status, size, the JSON error and the first and last characters of the body (the
  failure reasons go to `raw/.../manifest.json`; the body itself is not a payload, because
  `raw/` payloads are price tables that `replay` reads back);
* an empty result (`meta` but no `timestamp`: no trading in the range) fails at once as
  "no bars ... empty result";
* "possibly delisted; no timezone found" / "no price data found" without any of the above is
  retried once: yfinance says it for a symbol Yahoo does not know, but also when its time zone
  lookup got an HTTP 5xx or the chart request got an HTML error page (it cannot tell them apart);
* any other error becomes `FetchFailure(symbol, reason)` with yfinance's message in the reason
  (URL queries cut, they carry the crumb);
* no bars and no error: `FetchFailure(symbol, "no bars returned for START..END")`.

So every requested symbol ends with bars or with a failure record, never silently empty.

Timeouts. `timeout_seconds` bounds each chart request for bars (yfinance's own network retries
are off by default, so one attempt waits at most that long per symbol). yfinance's time zone
lookup, made once per symbol and then cached on disk, uses its own fixed 10 s timeout.

`payloads` hold one `RawPayload("<market>-batchNNN.parquet", "table", ...)` per batch: the long-form
bars of that batch as an Arrow table (the library's frame is the closest form yfinance exposes).
`notes` say how many symbols needed a retry. yfinance upper-cases tickers; `Ticker` is mapped
back to the symbol as requested.

`session` is handed to yfinance's `session=` (a `requests.Session` or a curl_cffi Session;
None: yfinance makes its default curl_cffi session). NOTE: yfinance keeps one process-wide
`YfData` singleton: passing a session replaces the session (and keeps the cookie and crumb) for
every later yfinance call in the process, not just this one.
"""

from __future__ import annotations

import ast
import json
import logging
import random
import re
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import pandas as pd
import pyarrow as pa
import yfinance as yf
import yfinance.shared as yf_shared
from yfinance.data import YfData

try:  # NOTE: private; what yf.download() itself calls when given no session
    from yfinance._http import new_session as _yf_new_session
except ImportError:  # pragma: no cover - another yfinance layout: let yfinance make its own
    _yf_new_session = None

from aimoves.sources.base import (
    PRICE_FIELDS,
    YAHOO_COLUMNS,
    FetchFailure,
    PriceBatch,
    PriceRequest,
    RawPayload,
    empty_bars,
)

log = logging.getLogger(__name__)

ErrorKind = Literal["rate_limit", "transient", "ambiguous", "unknown", "permanent"]
# What a failed symbol is retried and reported as: classify_error's kinds plus what only the
# transport shows (see "What the transport saw" above).
_Kind = Literal["rate_limit", "transient", "ambiguous", "unknown", "permanent", "malformed", "wrong_symbol", "empty"]

_RATE_LIMIT = re.compile(r"\b429\b|too many requests|rate[ -]?limit|YFRateLimitError", re.IGNORECASE)
_TRANSIENT = re.compile(
    r"timed? ?out|timeout|connection ?(?:error|reset|refused|aborted)|RemoteDisconnected|ChunkedEncodingError"
    r"|\b5\d\d (?:Server Error|Internal)|HTTP 5\d\d|status_code = 5\d\d"
    r"|internal server error|bad gateway|service unavailable|gateway time-?out|currently down",
    re.IGNORECASE,
)
# NOTE: for a symbol Yahoo does not know, yfinance's time zone lookup fails and it then asks
# quoteSummary (only for the first two such symbols of the process), so the message is
# "HTTPError('404 Client Error: Not Found for url: .../quoteSummary/SYM')" or, later,
# "possibly delisted; no timezone found". yfinance says the latter too when the time zone lookup
# got an HTTP 5xx, and "possibly delisted; no price data found" when the chart request got a
# non-JSON 5xx page or the range has no bar (a suspended stock): ambiguous, retried once.
_UNKNOWN = re.compile(r"404 Client Error|\bNot Found\b|symbol may be delisted|Quote not found", re.IGNORECASE)
_AMBIGUOUS = re.compile(r"no timezone found|no price data found", re.IGNORECASE)
# download()'s end-of-call summary line: "['AAA', 'BBB']: message".
_SUMMARY = re.compile(r"^(\[[^\]]*\]):\s(.*)$", re.DOTALL)
_FAILED_HEADER = re.compile(r"^\d+ Failed downloads?:$")
# NOTE: yfinance's HTTPError text carries the whole URL, crumb included: keep the path only.
_URL_QUERY = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\")]*")


def classify_error(message: str) -> ErrorKind:
    """Whether a yfinance error message is worth retrying, and why."""
    if _RATE_LIMIT.search(message):
        return "rate_limit"
    if _TRANSIENT.search(message):
        return "transient"
    if _AMBIGUOUS.search(message):
        return "ambiguous"
    if _UNKNOWN.search(message):
        return "unknown"
    return "permanent"


def _failure_reason(kind: _Kind, message: str, span: str, attempts: int) -> str:
    tries = f"{attempts} attempt" + ("s" if attempts != 1 else "")
    if kind == "rate_limit":
        return f"Yahoo rate limit (HTTP 429) on all {tries}: {message}"
    if kind == "transient":
        return f"transient error on all {tries} (timeout, connection or HTTP 5xx): {message}"
    if kind == "unknown":
        return f"no bars for {span}: symbol unknown to Yahoo (delisted or misspelt?): {message}"
    if kind == "ambiguous":
        return f"no bars for {span} after {tries} (delisted or suspended symbol, or a Yahoo error yfinance could not tell apart): {message}"
    if kind == "malformed":
        return f"malformed response from Yahoo on all {tries}, no bars for {span}: {message}"
    if kind == "wrong_symbol":
        return f"wrong symbol on all {tries}, no bars kept for {span}: {message}"
    return f"no bars for {span}: {message}"


def _clean(message: str) -> str:
    return _URL_QUERY.sub(r"\1", " ".join(message.split()))


class _DownloadErrors(logging.Filter):
    """Reads (and takes out of the log) the per-symbol errors yf.download() logs in this thread.

    Installed as a filter on the `yfinance` logger for the duration of one call; records from
    other threads (another fetch running concurrently) pass untouched.
    """

    def __init__(self, symbols: Sequence[str]) -> None:
        super().__init__()
        self.thread = threading.get_ident()
        self.symbols = {s.upper() for s in symbols}
        self.errors: dict[str, str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        try:
            text = record.getMessage().strip()
        except Exception:  # a record we cannot format is not ours to judge
            return True
        # The same error as in the summary, logged once more per symbol as "$SYM: message",
        # from a download worker thread when threads > 1.
        if text.startswith("$") and text[1:].split(":", 1)[0].upper() in self.symbols:
            return False
        if record.thread != self.thread:
            return True
        if _FAILED_HEADER.match(text):
            return False
        summary = _SUMMARY.match(text)
        if summary:
            try:
                syms = ast.literal_eval(summary.group(1))
            except (ValueError, SyntaxError):
                return True
            for sym in syms:
                self.errors[str(sym).upper()] = summary.group(2).strip()
            return False
        return True


# -- what the transport saw ----------------------------------------------------------------------
_CHART_PATH = re.compile(r"/v8/finance/chart/([^/?#]+)")
_TIMEOUT_TYPES = {"Timeout", "TimeoutError", "ReadTimeout", "ConnectTimeout", "ReadTimeoutError", "timeout"}


@dataclass(frozen=True)
class _Exchange:
    """One chart request of a watched symbol: the answer, or the exception instead of one."""

    bars: bool  # the bars request (with period1), else the time zone lookup (range=1d)
    status: int | None = None
    retry_after: str | None = None  # the Retry-After header, as sent
    body: bytes = b""
    error: BaseException | None = None
    elapsed: float = 0.0


@dataclass(frozen=True)
class _Error:
    """Why a symbol came back without bars, as _fetch_batch retries and reports it."""

    kind: _Kind
    message: str
    retry_after: float | None = None  # seconds Yahoo asked to wait (Retry-After)


class _Recorder:
    """The chart exchanges of one yf.download() call's symbols (see `_observe`)."""

    def __init__(self, symbols: Sequence[str], any_thread: bool) -> None:
        self.thread = threading.get_ident()
        self.any_thread = any_thread
        self.symbols = {s.upper() for s in symbols}
        self.exchanges: dict[str, list[_Exchange]] = {}
        self._lock = threading.Lock()

    def wants(self, symbol: str) -> bool:
        return symbol in self.symbols and (self.any_thread or threading.get_ident() == self.thread)

    def add(self, symbol: str, exchange: _Exchange) -> None:
        with self._lock:
            self.exchanges.setdefault(symbol, []).append(exchange)

    def last(self, symbol: str) -> _Exchange | None:
        """The last bars exchange of the symbol, else its last time zone lookup."""
        with self._lock:
            seen = list(self.exchanges.get(symbol, []))
        bars = [e for e in seen if e.bars]
        return (bars or seen or [None])[-1]


_RECORDERS: list[_Recorder] = []
_RECORDERS_LOCK = threading.Lock()


def _observe(session: object | None) -> bool:
    """Wrap `session.get` (once per session) so chart requests reach the active recorders.

    A pass-through for every other URL and whenever no recorder wants the symbol; works for
    requests and curl_cffi sessions alike (yfinance calls `session.get` for every GET). False when
    the session cannot be wrapped (the fetch then goes on with yfinance's messages only).
    """
    if session is None:
        return False
    if getattr(session, "_aimoves_observed", False):
        return True
    original = session.get  # type: ignore[attr-defined]

    def get(*args: Any, **kwargs: Any) -> Any:
        url = args[0] if args else kwargs.get("url")
        match = _CHART_PATH.search(url) if isinstance(url, str) else None
        if match is None:
            return original(*args, **kwargs)
        symbol = unquote(match.group(1)).upper()
        with _RECORDERS_LOCK:
            recorders = [r for r in _RECORDERS if r.wants(symbol)]
        if not recorders:
            return original(*args, **kwargs)
        params = kwargs.get("params") or {}
        bars = "period1" in params or "period1" in parse_qs(urlsplit(url).query)
        started = time.monotonic()
        try:
            response = original(*args, **kwargs)
        except BaseException as exc:
            exchange = _Exchange(bars, error=exc, elapsed=time.monotonic() - started)
            for r in recorders:
                r.add(symbol, exchange)
            raise
        try:
            headers = getattr(response, "headers", None) or {}
            exchange = _Exchange(
                bars,
                status=getattr(response, "status_code", None),
                retry_after=headers.get("Retry-After"),
                body=bytes(getattr(response, "content", b"") or b""),
                elapsed=time.monotonic() - started,
            )
        except Exception as exc:  # noqa: BLE001 - reading the body failed (a cut connection)
            exchange = _Exchange(bars, error=exc, elapsed=time.monotonic() - started)
        for r in recorders:
            r.add(symbol, exchange)
        return response

    with _RECORDERS_LOCK:  # NOTE: two fetches starting at once on one session wrap it once
        if getattr(session, "_aimoves_observed", False):
            return True
        try:
            session.get = get  # type: ignore[attr-defined]
            session._aimoves_observed = True  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            return False
    return True


class _Watch:
    """Registers a recorder for the duration of a `with` block."""

    def __init__(self, recorder: _Recorder, active: bool) -> None:
        self.recorder, self.active = recorder, active

    def __enter__(self) -> _Recorder:
        if self.active:
            with _RECORDERS_LOCK:
                _RECORDERS.append(self.recorder)
        return self.recorder

    def __exit__(self, *exc: object) -> None:
        if self.active:
            with _RECORDERS_LOCK:
                _RECORDERS.remove(self.recorder)


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
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _excerpt(body: bytes, width: int = 60) -> str:
    text = body.decode("utf-8", "replace")
    if len(text) <= 2 * width:
        return f"body {text!r}"
    return f"body began {text[:width]!r}, ended {text[-width:]!r}"


def _inspect(symbol: str, ex: _Exchange) -> _Error | None:
    """What the exchange says beyond yfinance's message; None when it adds nothing."""
    if ex.error is not None:
        names = {c.__name__ for c in type(ex.error).__mro__}
        if names & _TIMEOUT_TYPES:
            return _Error("transient", f"timed out: no answer from Yahoo within {ex.elapsed:.1f} s ({type(ex.error).__name__})")
        message = _clean(f"{type(ex.error).__name__}: {ex.error}")
        kind = classify_error(message)
        return _Error(kind, message) if kind in ("rate_limit", "transient") else None
    if ex.status == 429:
        seconds = _retry_after_seconds(ex.retry_after)
        said = f"; Retry-After: {ex.retry_after}" if ex.retry_after is not None else "; no Retry-After"
        return _Error("rate_limit", f"HTTP 429 Too Many Requests{said}", seconds)
    if ex.status is None or not 200 <= ex.status < 300:
        return None  # yfinance reports other statuses well enough (404: unknown, 5xx: transient)
    seen = f"HTTP {ex.status}, {len(ex.body)} bytes"
    try:
        data = json.loads(ex.body)
    except ValueError as exc:
        return _Error("malformed", f"not valid JSON ({exc}; truncated, or not JSON at all): {seen}, {_excerpt(ex.body)}")
    chart = data.get("chart") if isinstance(data, dict) else None
    if not isinstance(chart, dict):
        return _Error("malformed", f"JSON without a 'chart' object: {seen}, {_excerpt(ex.body)}")
    if chart.get("error"):
        return None  # Yahoo said why; yfinance's message carries it
    result = chart.get("result")
    first = result[0] if isinstance(result, list) and result else None
    if not isinstance(first, dict):
        return _Error("malformed", f"JSON without chart.result[0]: {seen}, {_excerpt(ex.body)}")
    meta = first.get("meta")
    answered = meta.get("symbol") if isinstance(meta, dict) else None
    if isinstance(answered, str) and answered.upper() != symbol:
        return _Error("wrong_symbol", f"Yahoo answered the request for {symbol} with the chart of {answered} (chart.result[0].meta.symbol)")
    if not ex.bars:
        return None  # the time zone lookup: yfinance reads only meta
    indicators = first.get("indicators")
    quote = indicators.get("quote") if isinstance(indicators, dict) else None
    if not isinstance(quote, list) or not quote or not isinstance(quote[0], dict):
        missing = "indicators" if not isinstance(indicators, dict) else "indicators.quote"
        return _Error("malformed", f"JSON of the wrong structure, chart.result[0] has no {missing}: {seen}, {_excerpt(ex.body)}")
    stamps = first.get("timestamp")
    if not stamps:
        return _Error("empty", f"Yahoo answered with an empty result for {symbol} (meta, no timestamps: no trading in the range)")
    closes = quote[0].get("close")
    if not isinstance(closes, list) or len(closes) != len(stamps):
        return _Error("malformed", f"JSON of the wrong structure, {len(stamps)} timestamps but close is {type(closes).__name__} "
                      f"of {len(closes) if isinstance(closes, list) else 'no'} values: {seen}")
    return None


def _clear_response_cache() -> None:
    # NOTE: yfinance memoizes chart responses for past date ranges (and the time zone lookup) in a
    # process-wide lru_cache on YfData.cache_get, error responses (404, 5xx) included: without
    # clearing it a retry would be answered from the cache. Best effort: private API.
    clear = getattr(getattr(YfData, "cache_get", None), "cache_clear", None)
    if callable(clear):
        clear()


def to_long_form(frame: pd.DataFrame | None, names: dict[str, str] | None = None) -> pd.DataFrame:
    """yf.download()'s (Price, Ticker) frame → Yahoo long form, all-NaN rows dropped.

    `names` maps yfinance's (upper-cased) ticker back to the symbol as requested.
    """
    if frame is None or frame.empty:
        return empty_bars()
    columns = frame.columns
    if not isinstance(columns, pd.MultiIndex) or "Ticker" not in columns.names or "Price" not in columns.names:
        raise ValueError(f"unexpected yfinance frame: columns {list(columns)[:6]} (levels {columns.names}), expected (Price, Ticker)")
    names = names or {}
    parts = []
    for ticker in columns.get_level_values("Ticker").unique():
        sub = frame.xs(ticker, axis=1, level="Ticker")
        sub = sub.reindex(columns=PRICE_FIELDS).astype("float64")
        sub = sub[sub.notna().any(axis=1)]
        if sub.empty:
            continue
        part = pd.DataFrame({"Date": sub.index.to_numpy(), "Ticker": names.get(str(ticker), str(ticker))})
        for col in PRICE_FIELDS:
            part[col] = sub[col].to_numpy()
        parts.append(part)
    if not parts:
        return empty_bars()
    return pd.concat(parts, ignore_index=True)[YAHOO_COLUMNS]


@dataclass(frozen=True)
class YahooSource:
    """Daily bars from Yahoo Finance via yfinance; see the module docstring."""

    name: str = "yahoo"
    batch_size: int = 50
    max_attempts: int = 4
    backoff_seconds: float = 2.0  # first retry waits about this long, then doubles (with jitter)
    timeout_seconds: float = 30
    session: object | None = None  # requests.Session or curl_cffi Session; None: yfinance's own
    threads: int = 1  # yfinance download threads per batch; 1 = sequential (kindest to rate limits)
    # Called before every request to Yahoo; the flows pass one that takes a slot of a Prefect
    # global rate limit, so that every flow on one server shares one Yahoo request rate.
    throttle: Callable[[], None] | None = None
    # Waits between attempts (None: time.sleep); tests pass one that records the delays.
    sleep: Callable[[float], None] | None = field(default=None, compare=False)
    # A Retry-After longer than this is waited for this long only (then the retry may fail again).
    max_retry_after_seconds: float = 60.0

    def fetch_prices(self, request: PriceRequest) -> PriceBatch:
        symbols = list(dict.fromkeys(request.symbols))
        size = max(1, self.batch_size)
        batches = [symbols[i : i + size] for i in range(0, len(symbols), size)]
        frames: list[pd.DataFrame] = []
        payloads: list[RawPayload] = []
        failures: list[FetchFailure] = []
        retried: dict[str, set[str]] = {"rate_limit": set(), "transient": set(), "ambiguous": set(), "malformed": set(), "wrong_symbol": set()}
        # NOTE: with no session given, make the one yf.download() would make (one per call) here,
        # once per fetch, so that its chart requests can be watched (see the module docstring).
        session = self.session if self.session is not None or _yf_new_session is None else _yf_new_session()
        for i, batch in enumerate(batches, start=1):
            log.info("%s batch %d/%d: %d symbols", request.market, i, len(batches), len(batch))
            bars, batch_failures = self._fetch_batch(batch, request, retried, f"{request.market} batch {i}/{len(batches)}", session)
            frames.append(bars)
            failures.extend(batch_failures)
            payloads.append(RawPayload(f"{request.market}-batch{i:03d}.parquet", "table", pa.Table.from_pandas(bars, preserve_index=False)))
        nonempty = [f for f in frames if len(f)]
        bars = pd.concat(nonempty, ignore_index=True) if nonempty else empty_bars()
        notes = []
        if retried["rate_limit"]:
            notes.append(f"{len(retried['rate_limit'])} symbols retried after rate limit")
        if retried["transient"]:
            notes.append(f"{len(retried['transient'])} symbols retried after a transient error")
        if retried["ambiguous"]:
            notes.append(f"{len(retried['ambiguous'])} symbols retried once after yfinance found no time zone or no data")
        if retried["malformed"]:
            notes.append(f"{len(retried['malformed'])} symbols retried once after a malformed response")
        if retried["wrong_symbol"]:
            notes.append(f"{len(retried['wrong_symbol'])} symbols retried once after a response for another symbol")
        if failures:
            log.warning("%s: %d of %d symbols returned no bars", request.market, len(failures), len(symbols))
        return PriceBatch(source=self.name, request=request, bars=bars, payloads=payloads, failures=failures, notes=notes)

    def _fetch_batch(
        self, batch: list[str], request: PriceRequest, retried: dict[str, set[str]], label: str, session: object | None = None
    ) -> tuple[pd.DataFrame, list[FetchFailure]]:
        span = f"{request.start}..{request.end}"
        frames: list[pd.DataFrame] = []
        failures: list[FetchFailure] = []
        pending = batch
        attempt = 0
        while pending:
            attempt += 1
            bars, errors = self._download(pending, request, session)
            frames.append(bars)
            got = set(bars["Ticker"]) if len(bars) else set()
            retry: list[str] = []
            wait_for = 0.0  # the largest Retry-After of the symbols retried
            for sym in pending:
                if sym in got:
                    continue
                error = errors.get(sym.upper())
                if error is None:
                    failures.append(FetchFailure(sym, f"no bars returned for {span}"))
                    continue
                kind = error.kind
                once = kind in ("ambiguous", "malformed", "wrong_symbol") and attempt == 1
                if attempt < self.max_attempts and (kind in ("rate_limit", "transient") or once):
                    retry.append(sym)
                    retried.setdefault(kind, set()).add(sym)
                    wait_for = max(wait_for, error.retry_after or 0.0)
                else:
                    failures.append(FetchFailure(sym, _failure_reason(kind, error.message, span, attempt)))
            if retry:
                delay = self.backoff_seconds * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
                if wait_for:
                    delay = max(delay, min(wait_for * random.uniform(1.0, 1.2), self.max_retry_after_seconds))
                log.warning(
                    "%s: retrying %d symbols (%s) after attempt %d/%d in %.1f s%s",
                    label, len(retry), ", ".join(retry[:5]) + (" ..." if len(retry) > 5 else ""),
                    attempt, self.max_attempts, delay, f" (Retry-After {wait_for:g} s)" if wait_for else "",
                )
                (time.sleep if self.sleep is None else self.sleep)(delay)
            pending = retry
        nonempty = [f for f in frames if len(f)]
        bars = pd.concat(nonempty, ignore_index=True) if nonempty else empty_bars()
        return bars, failures

    def _download(self, symbols: list[str], request: PriceRequest, session: object | None = None) -> tuple[pd.DataFrame, dict[str, _Error]]:
        """One yf.download() call: (long-form bars, {UPPER symbol: why it has none})."""
        if self.throttle is not None:
            self.throttle()
        session = self.session if session is None else session
        names = {s.upper(): s for s in symbols}  # NOTE: yfinance upper-cases every ticker
        capture = _DownloadErrors(symbols)
        yf_log = logging.getLogger("yfinance")
        _clear_response_cache()
        watch = _Watch(_Recorder(symbols, any_thread=self.threads > 1), _observe(session))
        yf_log.addFilter(capture)
        try:
            with watch:
                frame = self._yf_download(symbols, request, session)
        except Exception as exc:  # the whole call failed (no network at all, say)
            message = f"{type(exc).__name__}: {exc}"
            kind = classify_error(message)
            if kind == "permanent":
                raise
            return empty_bars(), {s.upper(): _Error(kind, _clean(message)) for s in symbols}
        finally:
            yf_log.removeFilter(capture)
        said = {sym: _clean(msg) for sym, msg in capture.errors.items()}
        # NOTE: older yfinance recorded per-symbol errors in shared._ERRORS; 1.7 no longer does.
        legacy = getattr(yf_shared, "_ERRORS", None) or {}
        for sym in names:
            if sym not in said and sym in legacy:
                said[sym] = _clean(str(legacy[sym]))
        bars = to_long_form(frame, names)
        got = set(bars["Ticker"]) if len(bars) else set()
        errors: dict[str, _Error] = {}
        for sym, name in names.items():
            exchange = watch.recorder.last(sym)
            seen = _inspect(sym, exchange) if exchange is not None else None
            if name in got:
                if seen is not None and seen.kind == "wrong_symbol":  # another symbol's bars: drop them
                    bars = bars[bars["Ticker"] != name].reset_index(drop=True)
                    errors[sym] = seen
                continue
            message = said.get(sym)
            if seen is not None and seen.kind == "rate_limit" and message is not None:
                errors[sym] = _Error("rate_limit", f"{message} ({seen.message})", seen.retry_after)
            elif seen is not None:
                errors[sym] = seen
            elif message is not None:
                errors[sym] = _Error(classify_error(message), message)
        return bars, errors

    def _yf_download(self, symbols: list[str], request: PriceRequest, session: object | None) -> pd.DataFrame | None:
        # NOTE: under pandas 3 yfinance 1.7 emits Pandas4Warning (a DeprecationWarning) about
        # `inplace=` and FutureWarnings; they are noise for us. catch_warnings is process-wide.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            return yf.download(
                symbols,
                start=request.start,
                end=request.end + timedelta(days=1),  # NOTE: yfinance's end is exclusive
                interval="1d",
                auto_adjust=False,  # NOTE: the default (True) drops Adj Close and adjusts OHLC
                actions=False,
                group_by="column",
                progress=False,
                threads=self.threads if self.threads > 1 else False,
                timeout=self.timeout_seconds,
                session=session,
                multi_level_index=True,  # NOTE: else a single symbol comes back with flat columns
            )


# -- news ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class YahooNewsSource:
    """Per-symbol news from Yahoo Finance via yfinance's `Ticker(symbol).get_news()`.

    One request per symbol (`count` items, the "news" tab). Yahoo keeps no news history: it
    answers with the latest items only, so aimoves' own archive (`news/`, `raw/news/`) is the
    history. Each symbol's list is kept as JSON bytes (`<SYMBOL>.json`, kind `yahoo_news_json`)
    for `raw/news/` and replay; parsing (both the 2025 nested shape and the older flat one) is
    `aimoves.news.parse.parse_yahoo_news`. Rate limits and transient errors are retried with
    exponential backoff and jitter, for that symbol only, up to `max_attempts`; a non-JSON answer
    is retried once; anything else becomes a `NewsFailure` with the message.
    """

    name: str = "yahoo"
    count: int = 20
    max_attempts: int = 4
    backoff_seconds: float = 2.0
    session: object | None = None  # see YahooSource.session (the same process-wide caveat)
    pause_seconds: float = 0.0  # between symbols, to be kind to Yahoo on large universes
    # Called before every request, like YahooSource.throttle (the flows' shared Yahoo rate limit).
    throttle: Callable[[], None] | None = None

    def fetch_news(self, request):  # type: ignore[no-untyped-def] - NewsRequest -> NewsBatch
        import json
        from datetime import UTC, datetime

        from aimoves.news.base import NewsBatch, NewsFailure, NewsPayload, items_frame
        from aimoves.news.parse import parse_yahoo_news

        fetched_at = datetime.now(UTC)
        records: list[dict] = []
        payloads = []
        failures = []
        retried: set[str] = set()
        for i, symbol in enumerate(dict.fromkeys(request.symbols)):
            if i and self.pause_seconds:
                time.sleep(self.pause_seconds)
            items, error = self._get_news(symbol, retried)
            if error is not None:
                failures.append(NewsFailure(symbol, error))
                continue
            data = json.dumps(items, ensure_ascii=False, default=str).encode("utf-8")
            payloads.append(NewsPayload(f"{symbol}.json", "yahoo_news_json", data, {"symbol": symbol}))
            records.extend(parse_yahoo_news(items, symbol, fetched_at))
        notes = [f"{len(retried)} symbols retried after a rate limit or transient error"] if retried else []
        if failures:
            log.warning("news: %d of %d symbols failed", len(failures), len(request.symbols))
        return NewsBatch(self.name, request, items_frame(records), fetched_at, payloads, failures, notes)

    def _get_news(self, symbol: str, retried: set[str]) -> tuple[list, str | None]:
        attempt = 0
        while True:
            attempt += 1
            if self.throttle is not None:
                self.throttle()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    warnings.simplefilter("ignore", FutureWarning)
                    ticker = yf.Ticker(symbol, session=self.session) if self.session is not None else yf.Ticker(symbol)
                    items = ticker.get_news(count=self.count, tab="news")
                return list(items or []), None
            except Exception as exc:  # noqa: BLE001 - yfinance raises many kinds; classified below
                message = _clean(f"{type(exc).__name__}: {exc}")
                kind = classify_error(message)
                non_json = "JSONDecodeError" in message or "Expecting value" in message
                if attempt < self.max_attempts and (kind in ("rate_limit", "transient") or (non_json and attempt == 1)):
                    retried.add(symbol)
                    time.sleep(self.backoff_seconds * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))
                    continue
                tries = f"{attempt} attempt" + ("s" if attempt != 1 else "")
                if kind == "rate_limit":
                    return [], f"Yahoo rate limit (HTTP 429) on all {tries}: {message}"
                if kind == "transient":
                    return [], f"transient error on all {tries} (timeout, connection or HTTP 5xx): {message}"
                return [], f"no news after {tries}: {message}"
