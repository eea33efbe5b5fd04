"""The one retry policy for requests to outside services (Yahoo prices and news, RSS feeds), and
the `yahoo-api` rate limit every Yahoo request takes.

`retry_call(fn, policy, retryable)` calls `fn(attempt)` (attempt 1, 2, ...) through tenacity until
it returns, retrying only the errors `retryable(error, attempt)` accepts, at most
`policy.max_attempts` times in all; the last error is raised. Between attempts it waits
`backoff_seconds * 2**(attempt-1) * U(0.5, 1.5)` (exponential backoff with jitter), and at least
an error's `retry_after` seconds (a server's Retry-After) times U(1.0, 1.2), capped at
`max_retry_after_seconds`. Each retry is logged once, with what failed and how long it waits.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import tenacity

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry; `sleep` does the waiting (tests record it)."""

    max_attempts: int = 4
    backoff_seconds: float = 2.0  # the first retry waits about this long, then it doubles
    max_retry_after_seconds: float = 60.0  # a longer Retry-After is waited for this long only
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based)."""
        seconds = self.backoff_seconds * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
        if retry_after:
            seconds = max(seconds, min(retry_after * random.uniform(1.0, 1.2), self.max_retry_after_seconds))
        return seconds


def retry_call(
    fn: Callable[[int], T], policy: RetryPolicy, retryable: Callable[[BaseException, int], bool], label: str = "request"
) -> T:
    """`fn(attempt)` until it returns; see the module docstring."""

    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return policy.delay(state.attempt_number, getattr(error, "retry_after", None))

    def should_retry(state: tenacity.RetryCallState) -> bool:
        return bool(state.outcome and state.outcome.failed and retryable(state.outcome.exception(), state.attempt_number))

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning("%s: attempt %d/%d failed (%s); retrying in %.1f s", label, state.attempt_number, policy.max_attempts,
                    error, state.next_action.sleep if state.next_action else 0.0)

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, policy.max_attempts)), wait=wait, retry=should_retry,
        sleep=policy.sleep, before_sleep=before_sleep, reraise=True,
    )
    for attempt in retrying:
        with attempt:
            result = fn(attempt.retry_state.attempt_number)
    return result


def is_transient_request(error: BaseException) -> bool:
    """A requests error worth retrying: no connection, a timeout, a cut body, HTTP 429 or 5xx."""
    import requests

    if isinstance(error, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)):
        return True
    status = getattr(getattr(error, "response", None), "status_code", None)
    return isinstance(error, requests.HTTPError) and (status == 429 or (status is not None and status >= 500))


# -- the shared Yahoo rate limit --------------------------------------------------------------------
YAHOO_RATE_LIMIT = "yahoo-api"
CREATE_YAHOO_RATE_LIMIT = f"prefect gcl create {YAHOO_RATE_LIMIT} --limit 2 --slot-decay-per-second 0.5"
_limit_exists: dict[str, bool] = {}  # flow run id -> whether the server has the limit (asked once per run)


def yahoo_rate_limit() -> None:
    """Take a slot of the Prefect global rate limit `yahoo-api` before a Yahoo request.

    A no-op outside a flow run (plain calls, tests). Where the server has no such limit, says so
    once per flow run, with the command that creates it, and goes on unthrottled. Create it once
    per server (at most ~2 requests in flight, refilled one every 2 s; every flow shares that rate):
    `prefect gcl create yahoo-api --limit 2 --slot-decay-per-second 0.5`.
    """
    prefect_context = sys.modules.get("prefect.context")
    if prefect_context is None:  # Prefect not even imported: no flow run to throttle
        return
    context = prefect_context.FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    run = str(context.flow_run.id)
    if run not in _limit_exists:
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        try:
            with get_client(sync_client=True) as client:
                client.read_global_concurrency_limit_by_name(YAHOO_RATE_LIMIT)
            _limit_exists[run] = True
        except ObjectNotFound:
            _limit_exists[run] = False
            log.warning("Yahoo requests are not rate limited: this Prefect server has no global concurrency limit %r; "
                        "create it once with `%s`", YAHOO_RATE_LIMIT, CREATE_YAHOO_RATE_LIMIT)
    if _limit_exists[run]:
        from prefect.concurrency.sync import rate_limit

        rate_limit(YAHOO_RATE_LIMIT, occupy=1, timeout_seconds=600, strict=True)
