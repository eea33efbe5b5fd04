"""Numeric settings read from the environment (limits, thresholds), checked once, in one place."""

from __future__ import annotations

import os

from aimoves.errors import AimovesError


def positive_setting(name: str, default: float) -> float:
    """`$name` as a positive number, `default` when unset or empty; a clear error otherwise."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise AimovesError(f"{name}={value[:40]!r}: not a number") from None
    if not number > 0:
        raise AimovesError(f"{name}={value[:40]!r}: must be above 0")
    return number
