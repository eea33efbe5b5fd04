"""Prefect tasks: one per stage, each a plain function with its policy (retries, timeout, tags) on top.

A task's body is one call of a plain function (run with the cyclic GC paused, see aimoves.gcpause);
NO_CACHE everywhere: the default cache policy hashes inputs, and hashing a frame of millions of rows
costs more than the work itself.
"""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

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
