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
    would, but in any process: CLI, served deployment or worker). A logger without a level of its own
    logs at PREFECT_LOGGING_LEVEL (INFO by default) for the run, as the run's own logger does."""
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import PREFECT_LOGGING_LEVEL

    logger = logging.getLogger(name)
    level = logger.level
    if level == logging.NOTSET:
        logger.setLevel(PREFECT_LOGGING_LEVEL.value())
    handler = None
    if not any(isinstance(h, APILogHandler) for h in logger.handlers):  # PREFECT_LOGGING_EXTRA_LOGGERS may have attached one
        handler = APILogHandler()
        handler.addFilter(_in_a_run)
        logger.addHandler(handler)
    try:
        yield
    finally:
        if handler is not None:
            logger.removeHandler(handler)
        logger.setLevel(level)
