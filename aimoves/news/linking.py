"""Which universe stocks a headline names: the linking rule.

An item is linked to a stock when its title or summary (plain text) names it:

1. **Name or alias**, case-insensitive, on word boundaries (no letter or digit right before or
   after; `Nvidia's` matches `Nvidia`, `Nvidiaverse` does not). Parenthesised qualifiers in
   universe names are dropped (`Alibaba Group (ADR)` → `Alibaba Group`). Exception: an alias or
   name of at most 4 characters written all in capitals (an acronym: `AMD`, `AWS`, `SMIC`,
   `TSMC`) must appear in capitals (`aws` or `Smic` do not count).
2. **Symbol**, case-sensitive, as a standalone token: not preceded by a letter, digit, `.`,
   `-`, `^` or `/`, not followed by a letter, digit, `-` or `.` + letter/digit (`NVDA` matches,
   `NVDAX`, `nvda`, `NVDA.O` do not). HK and A-share symbols also match in their local forms:
   `9988.HK`, `988.HK`, `HKG: 9988`, `HKEX: 9988`, `SEHK:9988`; `688981.SS`, `SHA: 688981`,
   `SSE: 688981`, `002230.SZ`, `SHE: 002230`, `SZSE: 002230`.
3. **Ambiguous symbols** (two letters or fewer, or a common word or acronym: `AI`, `ARM`, `MU`,
   `META`, `NOW`, `ON`, `IT`, ... see `AMBIGUOUS_SYMBOLS`) count only with a ticker cue: `$AI`,
   or an exchange prefix `NYSE: AI`, `(NASDAQ: MU)`, `Nasdaq:ARM`, `NYSE American: X`.
   "AI stocks rally" names nobody; "C3.ai (NYSE: AI) jumps" names C3.ai twice.
4. A text that is mostly capitals (a shouted headline: more than 60% of its letters upper-case)
   gets no bare-symbol matches (rule 2), since every word there is a standalone capital token;
   names, aliases and cued symbols still count.

Items that name no stock keep an empty `symbols` list (market-wide news). Yahoo items are also
linked to the ticker they were fetched for and to the tickers Yahoo lists with them, when those
are universe stocks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from aimoves.universe import Stock

AMBIGUOUS_SYMBOLS = frozenset(
    {
        "AI", "ARM", "MU", "META", "NOW", "ON", "IT", "ALL", "ONE", "ARE", "CAN", "BIG", "FOR", "KEY",
        "OPEN", "PATH", "TEAM", "CASH", "FAST", "LOW", "HIGH", "GO", "SO", "BE", "CEO", "CFO", "IPO",
        "USA", "UK", "EU", "GDP", "CPI", "ETF", "EPS", "API", "GPU", "CPU", "TV", "PC", "IBM",
    }
)
_EXCHANGE_CUE = r"(?:NYSE(?:\s+American|\s+Arca)?|NASDAQ(?:GS|GM|CM)?|Nasdaq(?:GS|GM|CM)?|AMEX|BATS|OTC)"
_LEFT = r"(?<![A-Za-z0-9.\-^/$])"
_RIGHT = r"(?![A-Za-z0-9\-]|\.[A-Za-z0-9])"
_HK_CUE = r"(?:HKG|HKEX|SEHK|HK)"
_SS_CUE = r"(?:SHA|SSE|SH)"
_SZ_CUE = r"(?:SHE|SZSE|SZ)"


def _clean_name(name: str) -> str:
    return " ".join(re.sub(r"\([^)]*\)", " ", name).split())


def _phrase(text: str) -> str:
    """A name as a regex: words separated by any whitespace."""
    return r"\s+".join(re.escape(w) for w in text.split())


def _is_acronym(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return len(text) <= 4 and bool(letters) and all(c.isupper() for c in letters)


def _mostly_upper(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return len(letters) >= 12 and sum(c.isupper() for c in letters) > 0.6 * len(letters)


class SymbolMatcher:
    """Finds the universe stocks a text names (see the module docstring for the rule)."""

    def __init__(self, stocks: Iterable[Stock]) -> None:
        self._named: list[tuple[re.Pattern[str], str]] = []  # names and aliases
        self._bare: list[tuple[re.Pattern[str], str]] = []  # bare symbols (rule 2)
        self._cued: list[tuple[re.Pattern[str], str]] = []  # $SYM, EXCHANGE: SYM, local forms
        self.sector_of: dict[str, str] = {}
        for stock in stocks:
            symbol = stock.symbol
            self.sector_of[symbol] = stock.sector
            for name in {_clean_name(stock.name), *(_clean_name(a) for a in stock.aliases)}:
                if not name:
                    continue
                flags = 0 if _is_acronym(name) else re.IGNORECASE
                self._named.append((re.compile(rf"(?<![^\W_]){_phrase(name)}(?![^\W_])", flags), symbol))
            code, _, suffix = symbol.partition(".")
            if suffix in ("HK", "SS", "SZ") and code.isdigit():
                digits = rf"0*{int(code)}" if suffix == "HK" else re.escape(code)
                cue = {"HK": _HK_CUE, "SS": _SS_CUE, "SZ": _SZ_CUE}[suffix]
                self._cued.append((re.compile(rf"(?<![A-Za-z0-9.]){digits}\.{suffix}(?![A-Za-z0-9])", re.IGNORECASE), symbol))
                self._cued.append((re.compile(rf"(?<![A-Za-z0-9]){cue}\s*[:：]\s*{digits}(?![0-9])", re.IGNORECASE), symbol))
                continue
            escaped = re.escape(symbol)
            self._cued.append((re.compile(rf"(?<![A-Za-z0-9])\${escaped}{_RIGHT}"), symbol))
            self._cued.append((re.compile(rf"(?i:{_EXCHANGE_CUE})\s*:\s*{escaped}{_RIGHT}"), symbol))
            if len(symbol) > 2 and symbol not in AMBIGUOUS_SYMBOLS and symbol.isascii():
                self._bare.append((re.compile(rf"{_LEFT}{escaped}{_RIGHT}"), symbol))

    def match(self, *texts: str | None) -> set[str]:
        found: set[str] = set()
        for text in texts:
            if not text:
                continue
            for pattern, symbol in self._named:
                if symbol not in found and pattern.search(text):
                    found.add(symbol)
            for pattern, symbol in self._cued:
                if symbol not in found and pattern.search(text):
                    found.add(symbol)
            if not _mostly_upper(text):
                for pattern, symbol in self._bare:
                    if symbol not in found and pattern.search(text):
                        found.add(symbol)
        return found
