"""The universe file: which stocks, benchmarks and FX symbols aimoves tracks."""

from __future__ import annotations

from datetime import date
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aimoves.errors import ConfigError
from aimoves.markets import MARKETS, Market, normalize_symbol, symbol_problem

Sector = Literal["semiconductors", "cloud", "ai_software", "internet_platforms", "hardware"]
SECTORS: tuple[str, ...] = ("semiconductors", "cloud", "ai_software", "internet_platforms", "hardware")


def _check_symbol(value: str) -> str:
    problem = symbol_problem(value.strip().upper())
    if problem:
        raise ValueError(f"symbol {value!r} {problem}")
    return normalize_symbol(value)


class Stock(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol: str
    name: str = Field(min_length=1)
    market: Market
    sector: Sector
    company: str | None = None
    shares_outstanding: int | None = Field(default=None, gt=0)
    aliases: tuple[str, ...] = ()
    since: date | None = None
    until: date | None = None

    _symbol = field_validator("symbol")(classmethod(lambda cls, v: _check_symbol(v)))

    @model_validator(mode="after")
    def _dates_in_order(self) -> Stock:
        if self.since and self.until and self.until < self.since:
            raise ValueError(f"until ({self.until}) is before since ({self.since})")
        return self

    @property
    def company_key(self) -> str:
        """The company a listing belongs to (its symbol when no `company` is given)."""
        return self.company or self.symbol


class Universe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    benchmarks: dict[Market, str] = {}
    fx: dict[str, str] = {}
    feeds: tuple[str, ...] = ()
    stocks: tuple[Stock, ...] = Field(min_length=1)
    # Holidays to apply past the end of an exchange calendar's known schedule, per market.
    extra_holidays: dict[Market, tuple[date, ...]] = {}

    @field_validator("benchmarks", "fx")
    @classmethod
    def _symbols_valid(cls, value: dict[str, str]) -> dict[str, str]:
        return {k: _check_symbol(v) for k, v in value.items()}

    @model_validator(mode="after")
    def _unique_symbols(self) -> Universe:
        seen: dict[str, int] = {}
        for i, stock in enumerate(self.stocks):
            if stock.symbol in seen:
                raise ValueError(
                    f"stocks[{i}]: symbol {stock.symbol} is listed twice (first at stocks[{seen[stock.symbol]}])"
                )
            seen[stock.symbol] = i
        return self

    def stocks_in(self, markets: list[str] | tuple[str, ...] = MARKETS) -> list[Stock]:
        return [s for s in self.stocks if s.market in markets]

    def symbols_by_market(self, markets: list[str] | tuple[str, ...] = MARKETS) -> dict[str, list[str]]:
        """Stocks and benchmark of each market, in universe order."""
        out: dict[str, list[str]] = {}
        for market in markets:
            symbols = [s.symbol for s in self.stocks if s.market == market]
            bench = self.benchmarks.get(market)  # type: ignore[call-overload]
            if bench and bench not in symbols:
                symbols.append(bench)
            if symbols:
                out[market] = symbols
        return out

    def market_of(self) -> dict[str, str]:
        """symbol → market, stocks and benchmarks."""
        out = {s.symbol: s.market for s in self.stocks}
        out.update({sym: m for m, sym in self.benchmarks.items()})
        return out


DEFAULT_UNIVERSE = "the default universe (aimoves/universe.yaml)"


def _line_index(node: yaml.Node, path: tuple = ()) -> dict[tuple, int]:
    """Map each path in a composed YAML document to its 1-based line."""
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            lines.update(_line_index(value, (*path, key.value)))
            lines[(*path, key.value)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.update(_line_index(item, (*path, i)))
    return lines


def _describe(loc: tuple, data: object) -> str:
    """stocks.3.sector → stocks[3] (NVDA).sector"""
    parts: list[str] = []
    cursor = data
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            try:
                cursor = cursor[item]  # type: ignore[index]
                if isinstance(cursor, dict) and "symbol" in cursor:
                    label += f" ({cursor['symbol']})"
            except (IndexError, KeyError, TypeError):
                pass
            parts.append(label)
        else:
            parts.append(("." if parts else "") + str(item))
            cursor = cursor.get(item) if isinstance(cursor, dict) else None
    return "".join(parts)


def parse_universe(text: str, source: str) -> Universe:
    """Parse and validate universe YAML; errors name the file, line and field."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # NOTE: the C loader is ~15x faster on a large universe
    try:
        data = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with 'stocks', 'benchmarks', 'fx'")
    try:
        return Universe.model_validate(data)
    except ValidationError as exc:
        node = yaml.compose(text, Loader=loader)  # line numbers, only when there is an error to point at
        lines = _line_index(node) if node is not None else {}
        messages = []
        errors = exc.errors()
        for err in errors:
            loc = tuple(err["loc"])
            if any(len(o["loc"]) > len(loc) and tuple(o["loc"][: len(loc)]) == loc for o in errors):
                continue  # a deeper error explains this one
            line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), None)
            where = f"{source}, line {line}" if line else source
            field = _describe(loc, data) or "(top level)"
            messages.append(f"{where}: {field}: {err['msg']}")
        raise ConfigError("invalid universe file:\n  " + "\n  ".join(messages)) from None


def load_universe(path: str | Path | None = None) -> Universe:
    """Load the universe from `path`, or the one shipped with aimoves."""
    if path is None:
        text = resources.files("aimoves").joinpath("universe.yaml").read_text(encoding="utf-8")
        return parse_universe(text, DEFAULT_UNIVERSE)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: universe file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_universe(text, str(p))
