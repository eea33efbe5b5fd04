"""The universe file: which stocks, benchmarks and FX symbols aimoves tracks."""

from __future__ import annotations

import os
import re
from datetime import date
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

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

    @model_validator(mode="after")
    def _one_sector_per_company(self) -> Universe:
        first: dict[str, int] = {}
        for i, stock in enumerate(self.stocks):
            if stock.company is None:
                continue
            j = first.setdefault(stock.company, i)
            other = self.stocks[j]
            if other.sector != stock.sector:
                raise ValueError(
                    f"stocks[{i}].sector: {stock.symbol} is in {stock.sector} but {other.symbol} (stocks[{j}]) of the same "
                    f"company {stock.company!r} is in {other.sector}; a company has one sector"
                )
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
# A universe may use anchors and aliases, but what they expand to is bounded: at most this many
# nodes beyond ten times the document's own (an alias bomb of 9 levels expands to 9^9).
ALIAS_EXPANSION_BUDGET = 10_000
_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # NOTE: the C loader is ~15x faster on a large universe


class _Loader(_BASE_LOADER):  # type: ignore[misc, valid-type]
    """The safe loader, except that a date YAML cannot build (2025-13-01) stays text for the model to report."""


def _timestamp_or_text(loader: yaml.constructor.SafeConstructor, node: yaml.ScalarNode) -> object:
    try:
        return yaml.constructor.SafeConstructor.construct_yaml_timestamp(loader, node)
    except ValueError:  # NOTE: PyYAML raises ValueError, not a YAMLError, for an impossible date
        return loader.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_or_text)


def _expanded_size(root: yaml.Node) -> tuple[int, int]:
    """(distinct nodes, nodes once every alias is expanded), in one pass over the distinct nodes."""
    expanded: dict[int, int] = {}  # id(node) -> nodes it stands for
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in expanded:
            continue
        value = node.value if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) else ()
        children = [n for pair in value for n in pair] if isinstance(node, yaml.MappingNode) else list(value)
        if done:
            expanded[id(node)] = 1 + sum(expanded[id(c)] for c in children)
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in expanded)
    return len(expanded), expanded[id(root)]


def _duplicate_keys(root: yaml.Node, source: str) -> list[str]:
    """A message per key given twice in one mapping (merge keys `<<` aside), in line order."""
    found: list[tuple[int, str]] = []
    visited: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in visited or isinstance(node, yaml.ScalarNode):
            continue
        visited.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
            continue
        first: dict[object, yaml.Node] = {}
        for key, value in node.value:
            stack.append(value)
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            if key.value in first:
                line, before = key.start_mark.line + 1, first[key.value].start_mark.line + 1
                found.append((line, f"{source}, line {line}: key {key.value!r} is given twice (first at line {before}); the second would silently replace the first"))
            else:
                first[key.value] = key
    return [message for _, message in sorted(found)]


def _check_nodes(root: yaml.Node, text: str, source: str) -> None:
    """Refuse alias bombs and duplicate keys; linear in the document's distinct nodes."""
    if "&" in text:  # NOTE: no anchor, no alias: the expansion is the document itself
        distinct, total = _expanded_size(root)
        limit = 10 * distinct + ALIAS_EXPANSION_BUDGET
        if total > limit:
            raise ConfigError(
                f"{source}: YAML aliases expand {distinct:,} nodes to {total:,}, over the limit of {limit:,}; "
                "write the entries out instead of nesting aliases"
            )
    duplicates = _duplicate_keys(root, source)
    if duplicates:
        raise ConfigError("invalid universe file:\n  " + "\n  ".join(duplicates))


def _line_index(node: yaml.Node, path: tuple = ()) -> dict[tuple, int]:
    """Map each path in a composed YAML document to its 1-based line (aliases bounded by `_check_nodes`)."""
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


def _load(text: str, source: str) -> tuple[object, yaml.Node | None]:
    """The document's data and its node tree, refused when malformed, an alias bomb or with duplicate keys."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_nodes(node, text, source)
        return loader.construct_document(node), node
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}, line {mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be a universe file") from None
    finally:
        loader.dispose()


# A model check that names a stock ("stocks[3].sector: ...") is reported at that stock's line.
_STOCK_PREFIX = re.compile(r"^(?:Value error, )?stocks\[(\d+)\](?:\.(\w+))?: ")


@lru_cache(maxsize=8)
def parse_universe(text: str, source: str) -> Universe:
    """Parse and validate universe YAML; errors name the file, line and field.

    Cached by (text, source): a chunked backfill loads the same file once per chunk, and PyYAML takes
    ~3 s for 10,000 stocks. The model is frozen, so the one instance is shared safely."""
    data, node = _load(text, source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with 'stocks', 'benchmarks', 'fx'")
    try:
        return Universe.model_validate(data)
    except ValidationError as exc:
        lines = _line_index(node) if node is not None else {}
        messages = []
        errors = exc.errors()
        for err in errors:
            loc = tuple(err["loc"])
            msg = err["msg"]
            named = _STOCK_PREFIX.match(msg) if not loc else None
            if named:
                loc = ("stocks", int(named.group(1)), *((named.group(2),) if named.group(2) else ()))
                msg = msg[named.end():]
            if any(len(o["loc"]) > len(loc) and tuple(o["loc"][: len(loc)]) == loc for o in errors):
                continue  # a deeper error explains this one
            line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), None)
            where = f"{source}, line {line}" if line else source
            field = _describe(loc, data) or "(top level)"
            messages.append(f"{where}: {field}: {msg}")
        raise ConfigError("invalid universe file:\n  " + "\n  ".join(messages)) from None


def _resolve_feed(feed: str, folder: Path) -> str:
    """A local feed path relative to the universe file's folder, made absolute; URLs unchanged."""
    if urlsplit(feed).scheme in ("http", "https", "file"):
        return feed
    path = Path(feed).expanduser()
    return feed if path.is_absolute() else os.path.normpath(folder / path)


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
    universe = parse_universe(text, str(p))
    if not universe.feeds:
        return universe
    folder = p.parent.resolve()
    return universe.model_copy(update={"feeds": tuple(_resolve_feed(f, folder) for f in universe.feeds)})
