"""HTML pages from the Jinja2 templates in aimoves/templates/, and number formats for people."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import jinja2


def _number(value: object) -> float | None:
    """`value` as a float; None when it is missing, NaN or not a number."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def pct(value: object, digits: int = 2) -> str:
    """+1.23% / −4.50% (a real minus sign); n/a for a missing value."""
    number = _number(value)
    return "n/a" if number is None else f"{number * 100:+.{digits}f}%".replace("-", "−")


def signed(value: object, digits: int = 1) -> str:
    """+3.2 / −0.4; n/a for a missing value."""
    number = _number(value)
    return "n/a" if number is None else f"{number:+.{digits}f}".replace("-", "−")


def thousands(value: object) -> str:
    """12,345; n/a for a missing value."""
    number = _number(value)
    return "n/a" if number is None else f"{round(number):,}"


def tone(value: object) -> str:
    """CSS class of a signed number: up, down, flat or na."""
    number = _number(value)
    if number is None:
        return "na"
    return "up" if number > 0 else "down" if number < 0 else "flat"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("aimoves", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pct=pct, signed=signed, thousands=thousands, tone=tone)
    return env


def render(template: str, **context: Any) -> str:
    """Render aimoves/templates/<template> with `context`."""
    return environment().get_template(template).render(**context)
