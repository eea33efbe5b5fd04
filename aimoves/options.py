"""A run's options, declared once: the CLI parses into these models and the flows validate through them.

Every field is JSON-friendly (strings, dates, ints, bools, lists of strings), so a Prefect
deployment's `parameters:` and a command line give the same model. `options_error` turns a pydantic
error into one line naming the command-line option. `check_*` are the configuration checks that run
before the Prefect engine starts (they exit 2 in the CLI): each raises `ConfigError` with what to change.
"""

from __future__ import annotations

import os
import tempfile
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator

from aimoves.catalog import Catalog
from aimoves.errors import ConfigError
from aimoves.markets import MARKETS

Source = Literal["yahoo", "csv", "simulated", "replay"]
NewsSource = Literal["yahoo", "rss", "simulated", "replay", "none"]


def _iso_date(value: object) -> object:
    """Dates as written on a command line or in prefect.yaml: YYYY-MM-DD only."""
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a date (YYYY-MM-DD)") from None
    return value


def _market_list(value: object) -> object:
    """`US,HK` or `["US", "HK"]` → ["US", "HK"]; unknown names are refused."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    markets = [str(m).strip().upper() for m in items if str(m).strip()]
    unknown = [m for m in markets if m not in MARKETS]
    if unknown or not markets:
        raise ValueError(f"unknown market(s) {', '.join(unknown) or '(none)'}; choose from {','.join(MARKETS)}")
    return list(dict.fromkeys(markets))


IsoDate = Annotated[date, BeforeValidator(_iso_date)]
Markets = Annotated[list[str] | None, BeforeValidator(_market_list)]


class DataOptions(BaseModel):
    """Where the data lives and what it covers: the options every run shares."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: str = "data"
    universe: str | None = None  # None: the universe shipped with aimoves
    markets: Markets = None  # None: the markets the universe lists


class RunOptions(DataOptions):
    """A prices run (backfill or daily): the source and its settings."""

    source: Source = "yahoo"
    csv_dir: str | None = None
    news_source: NewsSource | None = None  # None: follows source
    seed: int | None = None
    shock_date: IsoDate | None = None
    inject_defects: bool = False


class BackfillOptions(RunOptions):
    start: IsoDate
    end: IsoDate

    @model_validator(mode="after")
    def _ordered(self) -> BackfillOptions:
        if self.end < self.start:
            raise ValueError(f"--end {self.end} is before --start {self.start}")
        return self


class DailyOptions(RunOptions):
    day: IsoDate | None = None  # None: each market's latest settled session


class DeriveOptions(DataOptions):
    start: IsoDate | None = None  # None: yesterday UTC
    end: IsoDate | None = None  # None: start

    @model_validator(mode="after")
    def _ordered(self) -> DeriveOptions:
        if self.start and self.end and self.end < self.start:
            raise ValueError(f"--end {self.end} is before --start {self.start}")
        return self


def option_name(field: str) -> str:
    """`shock_date` → `--shock-date` (`day` is `--date` on the command line)."""
    return "--date" if field == "day" else "--" + field.replace("_", "-")


def options_error(exc: ValidationError) -> ConfigError:
    """One line per bad option, named as on the command line."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not str(p).isdigit()]
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "literal_error":
            msg = f"{err['input']!r}: choose one of {err['ctx']['expected'].replace(chr(39), '')}"
        elif err["type"] == "extra_forbidden":
            msg = "not an option of this run"
        lines.append(f"{option_name(loc[0])}: {msg}" if loc and not msg.startswith("--") else msg)
    return ConfigError("; ".join(dict.fromkeys(lines)))


def parse(model: type[DataOptions], **values: Any) -> Any:
    """`model(**values)`, with a `ConfigError` naming the option instead of pydantic's report."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise options_error(exc) from None


def flow_parameters(options: DataOptions) -> dict[str, Any]:
    """The flow's keyword arguments (its parameters are the model's fields)."""
    return options.model_dump()


# --- configuration checks (before the engine starts) ----------------------------------------------


_UNIVERSES: dict[tuple[str | None, int, int], Any] = {}


def load_universe(path: str | Path | None) -> Any:
    """The universe at `path` (None: the shipped one), parsed once per process while the file is unchanged."""
    from aimoves.universe import load_universe as parse_file

    key: tuple[str | None, int, int] = (None, 0, 0)
    if path is not None:
        try:
            st = Path(path).stat()
            key = (str(Path(path).resolve()), st.st_mtime_ns, st.st_size)
        except OSError:
            return parse_file(path)  # its own clear error
    if key not in _UNIVERSES:
        _UNIVERSES.clear()
        _UNIVERSES[key] = parse_file(path)
    return _UNIVERSES[key]


def markets_of(options: DataOptions, universe: Any) -> list[str]:
    """`options.markets`, or the markets the universe lists; a named market without stocks is refused."""
    listed = [m for m in MARKETS if universe.symbols_by_market([m]).get(m)]
    if options.markets is None:
        if not listed:
            raise ConfigError("the universe lists no stock: nothing to run")
        return listed
    empty = [m for m in options.markets if m not in listed]
    if empty:
        raise ConfigError(f"--markets: the universe has no stock in {', '.join(empty)} (it lists {', '.join(listed) or 'none'}); "
                          "drop it from --markets or add its stocks to the universe file")
    return list(options.markets)


def check_data_dir(data_dir: str | Path, must_exist: bool = False, writable: bool = True) -> None:
    """A folder (not a file) that exists when `must_exist`, and that we can write to (or create) when `writable`."""
    path = Path(data_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--data-dir {path}: is a file, not a folder; pass a folder (it is created if missing)")
    if not path.exists():
        if must_exist:
            raise ConfigError(f"--data-dir {path}: no data dir here (run a backfill first, or pass --data-dir)")
        parent = next((p for p in path.absolute().parents if p.exists()), None)
        if parent is None or not parent.is_dir():
            raise ConfigError(f"--data-dir {path}: cannot be created ({parent} is not a folder)")
        _check_writable(parent, f"--data-dir {path}: cannot be created in {parent}")
        return
    if writable:
        _check_writable(path, f"--data-dir {path}")


def _check_writable(folder: Path, what: str) -> None:
    # NOTE: os.access says yes to root on a read-only mount; creating a file is the real test.
    try:
        fd, name = tempfile.mkstemp(prefix="_probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise ConfigError(f"{what}: not writable ({exc.strerror}); pass a folder you can write to") from None


def check_window(markets: list[str], start: date, end: date, option: str = "--start") -> None:
    """The window lies where the markets' calendars (and their provisional tails) reach.

    Cheap bounds first: a date before CALENDAR_START, or past every calendar's reach, is refused
    without building a calendar (that takes seconds)."""
    from aimoves.calendars import CALENDAR_START, PROVISIONAL_DAYS, first_known_session, last_known_session, last_usable_session

    end_option = "--end" if option == "--start" else option
    if start < CALENDAR_START.date():
        raise ConfigError(f"{option} {start}: before {CALENDAR_START.date()}, where aimoves' exchange calendars start; "
                          f"use {CALENDAR_START.date()} or later")
    # exchange_calendars knows at most about a year ahead; past that a run would plan years of guessed sessions
    reach = date.today() + timedelta(days=366 + PROVISIONAL_DAYS)
    if end > reach:
        raise ConfigError(f"{end_option} {end}: past {reach}, the last date aimoves can plan (exchange calendars end about a year "
                          f"ahead, plus {PROVISIONAL_DAYS} days of provisional weekdays); use an earlier date")
    for market in markets:
        first = first_known_session(market)
        if start < first:
            raise ConfigError(f"{option} {start}: before the first {market} session aimoves knows ({first}); use {first} or later")
        last = last_usable_session(market)
        if end > last:
            raise ConfigError(f"{end_option} {end}: past {last}, the last {market} date aimoves can plan (its exchange calendar "
                              f"ends {last_known_session(market)}, then {PROVISIONAL_DAYS} days of provisional weekdays); use an earlier date")


def run_markets(options: DataOptions, universe: Any) -> list[str]:
    """The markets a flow runs (`markets_of`), after checking its window against their calendars."""
    markets = markets_of(options, universe)
    if isinstance(options, DailyOptions):
        if options.day is not None:
            check_window(markets, options.day, options.day, "--date")
    elif isinstance(options, BackfillOptions | DeriveOptions) and options.start is not None:
        check_window(markets, options.start, options.end or options.start)
    return markets


def check_run(options: RunOptions) -> tuple[Any, list[str]]:
    """Every check of a prices run that needs no engine: universe, markets and window, data dir, source settings."""
    universe = load_universe(options.universe)
    markets = run_markets(options, universe)
    check_data_dir(options.data_dir, must_exist=options.source == "replay")
    if options.source == "csv" and not options.csv_dir:
        raise ConfigError("--source csv needs --csv-dir DIR (a folder of <SYMBOL>.csv files)")
    if options.csv_dir and not Path(options.csv_dir).is_dir():
        raise ConfigError(f"--csv-dir {options.csv_dir}: not a directory")
    raw = Catalog(options.data_dir).raw_dir("prices")
    if options.source == "replay" and not Catalog(options.data_dir).fs.isdir(raw):
        raise ConfigError(f"--source replay: {raw} does not exist; nothing was fetched into this data dir yet")
    if options.news_source is not None:
        from aimoves.news.sources import make_news_source

        make_news_source(options.news_source, universe, Path(options.data_dir))  # its clear errors now
    return universe, markets


def check_derive(options: DeriveOptions) -> tuple[Any, list[str]]:
    """The checks of a derive run: universe, markets and window, an existing data dir."""
    universe = load_universe(options.universe)
    markets = run_markets(options, universe)
    check_data_dir(options.data_dir, must_exist=True)
    return universe, markets


__all__ = [
    "BackfillOptions",
    "DailyOptions",
    "DataOptions",
    "DeriveOptions",
    "RunOptions",
    "check_data_dir",
    "check_derive",
    "check_run",
    "check_window",
    "flow_parameters",
    "load_universe",
    "markets_of",
    "option_name",
    "options_error",
    "parse",
    "run_markets",
]
