"""Library logs in the Prefect UI: what aimoves' modules log during a flow run joins that run's logs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


def _in_a_run(record: logging.LogRecord) -> bool:
    """Only records made inside a flow or task run (a pool thread without the run's context is skipped)."""
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


@contextmanager
def library_logs_to_run(name: str = "aimoves") -> Iterator[None]:
    """Attach Prefect's API log handler to the `name` logger for the run (as PREFECT_LOGGING_EXTRA_LOGGERS
    would, but in any process: CLI, served deployment or worker). The logger's level is left as configured
    (warnings and errors by default); the console output is unchanged."""
    from prefect.logging.handlers import APILogHandler

    logger = logging.getLogger(name)
    if any(isinstance(h, APILogHandler) for h in logger.handlers):  # PREFECT_LOGGING_EXTRA_LOGGERS already did
        yield
        return
    handler = APILogHandler()
    handler.addFilter(_in_a_run)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
