"""Prefect tasks: one per stage, each a plain function with its policy (retries, timeout) on top.

A task's body is one call of a plain function (run with the cyclic GC paused, see aimoves.gcpause).
Every stage is declared with `stage(...)`, Prefect's `task` with two settings the data needs:

- NO_CACHE: the default cache policy hashes inputs, and hashing a frame of millions of rows costs
  more than the work itself;
- arguments passed `opaque`: Prefect walks every argument of a task call, item by item, to resolve
  futures and draw the run graph. A universe of 50,000 stocks, a plan with its 50,000 symbols or a
  batch with 50,000 failures cost seconds of CPU per call that way (37 s of a 10,000-stock run with
  two CSV files). `opaque` keeps what the graph needs (each argument itself is still resolved and
  linked to the task that produced it) and skips the walk inside it.

No task tags: Prefect acquires a concurrency slot on the server for every tag of every task run,
even when no tag limit exists. On a SQLite-backed server (the local and test servers) that write
often meets the server's own writes and gets a 503, which the client retries after 2 s: 2 s per
task, most of a daily run (36 s against 11 s without tags, bench/backfill.py's daily). Yahoo's
rate limit is a global concurrency limit taken around the requests (aimoves.retry), not a tag.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.tasks import Task, exponential_backoff
from prefect.utilities.annotations import opaque

# Network stages: a retry after the source's own per-request retries gave up (a whole batch
# failed: the network or the service was down), 10 s then 20 s, ±50% jitter so that runs do not
# retry in step.
NETWORK_RETRIES = 2
NETWORK_BACKOFF = exponential_backoff(backoff_factor=10)
JITTER = 0.5
# Timeouts: generous bounds for a 10,000-symbol backfill; they stop a hung stage, not a slow one.
FETCH_TIMEOUT_S = 3600
STAGE_TIMEOUT_S = 3600


def transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what may pass on a second try (connection, timeout, I/O trouble); never a bug or a bad input."""
    try:
        state.result()
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError):
        return False
    except (ConnectionError, TimeoutError, OSError):
        return True
    except BaseException:
        return False
    return False


class Stage(Task):
    """A Prefect task whose arguments Prefect resolves but does not walk into (see the module's doc)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return super().__call__(*(opaque(a) for a in args), **{k: opaque(v) for k, v in kwargs.items()})


def stage(**policy: Any) -> Callable[[Callable[..., Any]], Stage]:
    """`@stage(name=..., retries=..., ...)`: Prefect's `@task` with the same keywords (tags aside), NO_CACHE and opaque arguments."""
    if policy.get("tags"):
        raise ValueError("stages take no tags: each tag costs a concurrency-slot request per task run (see tasks/__init__.py)")
    return lambda fn: Stage(fn=fn, **{"cache_policy": NO_CACHE, **policy})
