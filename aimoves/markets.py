"""Markets, their exchanges, currencies and time zones, and Yahoo symbol normalization."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time
from typing import Literal

Market = Literal["US", "HK", "CN"]
MARKETS: tuple[Market, ...] = ("US", "HK", "CN")


@dataclass(frozen=True)
class MarketInfo:
    code: Market
    calendar: str  # exchange_calendars name
    currency: str
    timezone: str
    close: time  # regular close, exchange local


MARKET_INFO: dict[str, MarketInfo] = {
    "US": MarketInfo("US", "XNYS", "USD", "America/New_York", time(16, 0)),
    "HK": MarketInfo("HK", "XHKG", "HKD", "Asia/Hong_Kong", time(16, 0)),
    # NOTE: Shanghai and Shenzhen share one holiday schedule; XSHG stands for both.
    "CN": MarketInfo("CN", "XSHG", "CNY", "Asia/Shanghai", time(15, 0)),
}

# Yahoo syntax: letters, digits, and . - ^ = (e.g. NVDA, BRK-B, 0981.HK, 688981.SS, ^HSI, HKDUSD=X).
_SYMBOL_RE = re.compile(r"^\^?[A-Z0-9][A-Z0-9.\-=]{0,23}$")


def symbol_problem(symbol: str) -> str | None:
    """Why `symbol` is not an acceptable Yahoo symbol, or None when it is."""
    if "/" in symbol or "\\" in symbol or ".." in symbol:
        return "must not contain a path separator or '..'"
    if not _SYMBOL_RE.match(symbol):
        return "is not a Yahoo symbol (letters, digits and . - ^ = only, e.g. NVDA, 0981.HK, ^HSI)"
    return None


def normalize_symbol(symbol: str) -> str:
    """Canonical Yahoo form: upper case, HK codes as 4 digits + .HK, A-shares as .SS / .SZ."""
    s = symbol.strip().upper()
    if s.endswith(".HK"):
        code = s[:-3]
        if code.isdigit():
            return f"{int(code):04d}.HK"
    if s.endswith(".SH"):  # NOTE: some vendors write Shanghai as .SH; Yahoo uses .SS
        s = s[:-3] + ".SS"
    return s


def market_of_symbol(symbol: str) -> Market:
    """The market a Yahoo symbol trades in, from its suffix (no suffix: US)."""
    if symbol.endswith(".HK"):
        return "HK"
    if symbol.endswith((".SS", ".SZ")):
        return "CN"
    return "US"
