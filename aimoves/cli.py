"""The `aimoves` command line."""

from __future__ import annotations

import os
import sys
import time
from datetime import date
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aimoves.errors import AimovesError
from aimoves.location import ENV_VAR as DATA_DIR_ENV

# NOTE: Typer's rich help prints `<bool>` after every flag (even --help); click's plain help does not.
app = typer.Typer(
    rich_markup_mode=None,
    help="Daily prices of US, Hong Kong and mainland China AI stocks: fetch → validate → partitioned Parquet, under Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# NOTE: rich wraps at 80 columns when stdout is not a terminal (CI logs, pipes); tables need more.
# NOTE: emoji=False and escape() on text from inputs: a ":x:" or "[bold]" in a feed, file or reason prints as written.
out = Console(width=None if sys.stdout.isatty() else 160, emoji=False)  # the run summary: stdout
err = Console(stderr=True, emoji=False, soft_wrap=True)  # progress and errors: stderr, never wrapped inside a path

SourceOpt = Annotated[str, typer.Option("--source", help="yahoo | csv | simulated | replay")]
CsvDirOpt = Annotated[Optional[Path], typer.Option("--csv-dir", help="With --source csv: folder of <SYMBOL>.csv files.")]
UniverseOpt = Annotated[Optional[Path], typer.Option("--universe", help="Universe YAML file (default: the one shipped with aimoves).")]


def _data_location(value: str | Path) -> Path:
    """A folder as a Path; an `s3://bucket/prefix` URL kept as written (a Path would fold its `//`)."""
    return str(value) if str(value).startswith("s3://") else Path(value)  # type: ignore[return-value]


DataDirOpt = Annotated[Path, typer.Option("--data-dir", envvar=DATA_DIR_ENV, parser=_data_location,
                                          help="Where datasets, raw/ and quarantine/ live: a folder or s3://bucket/prefix (default: $AIMOVES_DATA_DIR, else ./data).")]
MarketsOpt = Annotated[Optional[str], typer.Option("--markets", help="Comma-separated markets: US,HK,CN (default: the markets the universe lists).")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Exit non-zero when rows were quarantined or symbols failed.")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="With --source simulated: random seed.")]
ShockOpt = Annotated[Optional[str], typer.Option("--shock-date", help="With --source simulated: the shock day (default 2025-01-27).")]
DefectsOpt = Annotated[bool, typer.Option("--inject-defects", help="With --source simulated: add bad rows to exercise quarantine.")]
NewsOpt = Annotated[
    Optional[str],
    typer.Option("--news-source", help="yahoo | rss | simulated | replay | none (default: follows --source; csv has no news)."),
]


def _date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise AimovesError(f"{option}: {value!r} is not a date (YYYY-MM-DD)") from None


def _existing_data_dir(data_dir: Path) -> None:
    """Commands that read the data dir all refuse a missing one the same way (exit 2)."""
    from aimoves.options import check_data_dir

    check_data_dir(data_dir, must_exist=True, writable=False)


def _quiet_engine() -> None:
    """Defaults for a local, offline run (each can be overridden in the environment)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


FAILURES_SHOWN = 5  # per market; the run record under _runs/ has them all


def _print_failures(market: str, failures: list[dict], summary) -> None:  # noqa: ANN001 - RunSummary
    """A market's failed symbols: all of a few, or the count, the first FAILURES_SHOWN and where the rest are."""
    for f in failures[:FAILURES_SHOWN] if len(failures) > FAILURES_SHOWN + 1 else failures:
        out.print(escape(f"{market} failed symbol {f['symbol']}: {f['reason']}"), highlight=False)
    if len(failures) > FAILURES_SHOWN + 1:
        from aimoves.catalog import Catalog

        record = Catalog(summary.data_dir).run_record_path(summary.run_id)
        out.print(escape(f"{market}: {len(failures):,} symbols failed in all; {len(failures) - FAILURES_SHOWN:,} more in {record}"), highlight=False)


def _print_summary(summary, strict: bool, elapsed: float) -> int:  # noqa: ANN001 - RunSummary, imported lazily
    ran = [m for m in summary.markets if not m.closed]
    shared = ran[0].error if ran and all(m.error == ran[0].error for m in ran) else None  # e.g. "Yahoo Finance unreachable: ..."
    if shared:
        out.print(f"[bold red]{escape(shared)}{'; nothing was written' if summary.wrote_nothing else ''}[/]", highlight=False, soft_wrap=True)
    table = Table(title=f"aimoves {summary.flow} — run {summary.run_id}", title_justify="left")
    for col in ("market", "window", "passed", "flagged", "quarantined", "dups collapsed", "failed symbols", "partitions"):
        table.add_column(col, justify="right" if col not in ("market", "window") else "left")
    for m in summary.markets:
        if m.closed:
            table.add_row(m.market, m.window, "-", "-", "-", "-", "-", f"closed: {m.closed}")
            continue
        parts = f"{len(m.partitions_written)} written, {len(m.partitions_unchanged)} unchanged"
        table.add_row(m.market, m.window, f"{m.passed:,}", f"{m.flagged:,}", f"{m.quarantined:,}", f"{m.duplicates_collapsed:,}", str(len(m.failures)), parts if not m.error else "[red]failed (see above)[/]" if shared else f"[red]{escape(m.error)}[/]")
    out.print(table)
    for m in summary.markets:
        if m.failed_expectations:
            checks = ", ".join(f"{k} ({v})" for k, v in sorted(m.failed_expectations.items()))
            out.print(f"{m.market} checks that failed (rows, incl. warm-up): {checks}", highlight=False)
        _print_failures(m.market, m.failures, summary)
        for note in m.notes:
            out.print(escape(f"{m.market} note: {note}"), highlight=False)
        if m.restated:
            out.print(f"{m.market}: {m.restated} stored bars were restated by the source (old and new values in _restatements/prices/)", highlight=False)
        if m.unsettled_dropped:
            out.print(f"{m.market}: {m.unsettled_dropped} live bars of a session not closed yet were not stored", highlight=False)
    if summary.fx:
        fx = summary.fx
        line = f"fx {fx.get('window', '')}: {fx.get('passed', 0):,} rates, {fx.get('quarantined', 0)} quarantined"
        if fx.get("failures"):
            line += "; failed: " + escape(", ".join(f"{f['symbol']} ({f['reason']})" for f in fx["failures"]))
        if fx.get("error"):
            line += f"; [yellow]{escape(fx['error'])}: USD columns stay empty for those dates[/]"
        out.print(line, highlight=False)
    if summary.news:
        news = summary.news
        if news.get("error"):
            out.print(f"[yellow]news failed: {escape(news['error'])}[/] (prices and moves were written)", highlight=False)
        else:
            out.print(f"news {news.get('window', '')} ({news.get('source')}): {news.get('passed', 0):,} items, {news.get('new', 0):,} new, "
                      f"{news.get('duplicates_in_batch', 0):,} duplicates merged, {news.get('quarantined', 0)} quarantined", highlight=False)
            for f in news.get("failures", []):
                out.print(escape(f"news failed for {f['symbol']}: {f['reason']}"), highlight=False)
    for report in (summary.stock_moves, summary.sector_moves, summary.divergence):
        if report and report.window:
            out.print(f"{report.dataset} {report.window}: {report.passed:,} rows ({report.flagged:,} flagged), {report.quarantined} quarantined", highlight=False)
    if summary.sector_moves and summary.sector_moves.blocked:
        out.print(f"[yellow]sector moves not computed (prices batch failed):[/] {', '.join(summary.sector_moves.blocked)}", highlight=False)
    data = str(summary.data_dir).rstrip("/")  # a folder or s3://bucket/prefix (a Path would fold the `//`)
    wrote = [
        f"{what} to {data}/{path}"
        for what, path, count in (
            ("prices", "prices", sum(m.passed for m in summary.markets)),
            ("quarantined rows", "quarantine/prices", sum(m.quarantined for m in summary.markets)),
            ("raw fetches", "raw/", sum(1 for m in summary.markets if m.raw_path)),
            ("fx", "fx", (summary.fx or {}).get("passed", 0)),
            ("news", "news", (summary.news or {}).get("passed", 0)),
            ("stock moves", "stock_moves", getattr(summary.stock_moves, "passed", 0)),
            ("sector moves", "sector_moves", getattr(summary.sector_moves, "passed", 0)),
            ("divergence", "divergence", getattr(summary.divergence, "passed", 0)),
        )
        if count
    ]
    wrote.append(f"the run record to {data}/_runs/{summary.run_id}.json")
    out.print(f"Finished in {elapsed:.1f} s. Wrote {', '.join(wrote)}.", highlight=False)
    if strict and summary.needs_attention:
        err.print("[yellow]--strict: rows were quarantined or symbols failed; exiting 1[/]")
        return 1
    return 0


def _options(model: type, **values: object) -> object:
    """The command line's values parsed into `model` (exit 2 with the option named when one is bad)."""
    from aimoves.options import parse

    try:
        return parse(model, **{k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()})  # type: ignore[arg-type]
    except AimovesError as exc:
        _fail(str(exc))
        raise  # unreachable: _fail exits


def _run(flow_name: str, options: object, strict: bool) -> None:
    from aimoves.options import check_run, flow_parameters

    try:
        check_run(options)  # type: ignore[arg-type]  # fail fast, before the engine starts
    except AimovesError as exc:
        _fail(str(exc))
    _quiet_engine()
    err.print(f"[dim]Starting Prefect flow '{flow_name}' ({os.environ.get('PREFECT_API_URL') or 'embedded ephemeral server'})…[/]")
    started = time.perf_counter()
    from aimoves.flows import prices as flows

    try:
        summary = getattr(flows, flow_name)(**flow_parameters(options))  # type: ignore[arg-type]
    except flows.RunFailed as exc:
        _print_summary(exc.summary, strict, time.perf_counter() - started)
        _fail(str(exc), 1)
    except AimovesError as exc:
        _fail(str(exc), 1)
    raise typer.Exit(_print_summary(summary, strict, time.perf_counter() - started))


@app.command()
def backfill(
    start: Annotated[str, typer.Option("--start", help="First session to write (YYYY-MM-DD).")],
    end: Annotated[str, typer.Option("--end", help="Last session to write (YYYY-MM-DD).")],
    source: SourceOpt = "yahoo",
    csv_dir: CsvDirOpt = None,
    universe: UniverseOpt = None,
    data_dir: DataDirOpt = Path("data"),
    markets: MarketsOpt = None,
    strict: StrictOpt = False,
    seed: SeedOpt = None,
    shock_date: ShockOpt = None,
    inject_defects: DefectsOpt = False,
    news_source: NewsOpt = None,
) -> None:
    """Fetch, validate and write prices for every session from --start to --end, then news and moves."""
    from aimoves.options import BackfillOptions

    options = _options(BackfillOptions, start=start, end=end, source=source, csv_dir=csv_dir, universe=universe, data_dir=data_dir,
                       markets=markets, seed=seed, shock_date=shock_date, inject_defects=inject_defects, news_source=news_source)
    _run("backfill", options, strict)


@app.command()
def daily(
    day: Annotated[Optional[str], typer.Option("--date", help="Session to fetch (default: each market's latest settled session).")] = None,
    source: SourceOpt = "yahoo",
    csv_dir: CsvDirOpt = None,
    universe: UniverseOpt = None,
    data_dir: DataDirOpt = Path("data"),
    markets: MarketsOpt = None,
    strict: StrictOpt = False,
    seed: SeedOpt = None,
    shock_date: ShockOpt = None,
    inject_defects: DefectsOpt = False,
    news_source: NewsOpt = None,
) -> None:
    """Fetch, validate and write one session per market (re-reading a few sessions before it), then news and moves."""
    from aimoves.options import DailyOptions

    options = _options(DailyOptions, day=day, source=source, csv_dir=csv_dir, universe=universe, data_dir=data_dir,
                       markets=markets, seed=seed, shock_date=shock_date, inject_defects=inject_defects, news_source=news_source)
    _run("daily", options, strict)


@app.command("universe")
def universe_cmd(universe: UniverseOpt = None) -> None:
    """Check a universe file and list its stocks per market and sector."""
    from aimoves.universe import load_universe

    try:
        u = load_universe(universe)
    except AimovesError as exc:
        _fail(str(exc))
    table = Table(title=f"universe: {universe or 'default'}", title_justify="left")
    for col in ("market", "sector", "symbols"):
        table.add_column(col)
    groups: dict[tuple[str, str], list[str]] = {}
    for s in u.stocks:
        groups.setdefault((s.market, s.sector), []).append(s.symbol)
    for (market, sector), symbols in sorted(groups.items()):
        table.add_row(market, sector, " ".join(symbols))
    out.print(table)
    out.print(f"{len(u.stocks)} stocks; benchmarks: {dict(u.benchmarks)}; fx: {dict(u.fx)}", highlight=False)


@app.command()
def report(
    event: Annotated[Optional[str], typer.Option("--event", help="Event date (YYYY-MM-DD): moves from the session before it to --after sessions after.")] = None,
    before: Annotated[Optional[int], typer.Option("--before", help="With --event: sessions before the event to show (default 5).")] = None,
    after: Annotated[Optional[int], typer.Option("--after", help="With --event: sessions after the event to show (default 10).")] = None,
    start: Annotated[Optional[str], typer.Option("--start", help="Instead of --event: first date of a window (YYYY-MM-DD).")] = None,
    end: Annotated[Optional[str], typer.Option("--end", help="With --start: last date of the window (YYYY-MM-DD).")] = None,
    data_dir: DataDirOpt = Path("data"),
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the report's PNG, markdown and HTML.")] = Path("reports"),
) -> None:
    """Chart and tables of sector moves per region around --event, or from --start to --end (no Prefect needed)."""
    try:
        event_d, start_d, end_d = _date(event, "--event"), _date(start, "--start"), _date(end, "--end")
        if event_d is None and start_d is None and end_d is None:
            raise AimovesError("give --event DATE, or --start DATE --end DATE")
        if event_d is not None and (start_d is not None or end_d is not None):
            raise AimovesError("give either --event or --start/--end, not both")
        if event_d is None and (start_d is None or end_d is None):
            raise AimovesError("a window needs both --start and --end")
        if event_d is None and (before is not None or after is not None):
            raise AimovesError("--before/--after go with --event, not with --start/--end")
        if end_d is not None and start_d is not None and end_d < start_d:
            raise AimovesError(f"--end {end} is before --start {start}")
        if (before is not None and before < 0) or (after is not None and after < 0):
            raise AimovesError("--before and --after are numbers of sessions, 0 or more")
        _existing_data_dir(data_dir)
    except AimovesError as exc:
        _fail(str(exc))
    from aimoves.report import write_report

    try:
        files = write_report(data_dir, out_dir, event=event_d, before=5 if before is None else before,
                             after=10 if after is None else after, start=start_d, end=end_d)
    except AimovesError as exc:
        _fail(str(exc), 1)
    out.print(f"Wrote the report: {files.png}, {files.markdown}, {files.html}", highlight=False)


@app.command()
def digest(
    day: Annotated[Optional[str], typer.Option("--date", help="Calendar date (YYYY-MM-DD; default: the latest stored date).")] = None,
    data_dir: DataDirOpt = Path("data"),
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for digest-<date>.html and .png.")] = Path("reports"),
) -> None:
    """The daily digest: heat map, US/China divergence, biggest movers with headlines, data quality (no Prefect needed).

    Exit 0 when the page was written (with a warning naming what is missing), 1 when nothing could be shown."""
    from aimoves.digest import write_digest

    try:
        day_d = _date(day, "--date")
    except AimovesError as exc:
        _fail(str(exc))
    try:
        result = write_digest(data_dir, out_dir, day_d)
    except AimovesError as exc:
        _fail(str(exc), 1)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    out.print(f"Wrote the digest of {result.day}: {result.html}, {result.png}", highlight=False)


quarantine_app = typer.Typer(help="Review quarantined rows and release reviewed ones.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(quarantine_app, name="quarantine")


@app.command()
def status(data_dir: DataDirOpt = Path("data")) -> None:
    """Latest stored session per market and dataset, freshness, the last run's summary, quarantine counts."""
    from aimoves.ops import status as get_status

    try:
        _existing_data_dir(data_dir)
        st = get_status(data_dir)
    except AimovesError as exc:
        _fail(str(exc))
    table = Table(title=f"aimoves status — {data_dir}", title_justify="left")
    for col in ("dataset", "market", "latest session", "expected", "fresh"):
        table.add_column(col)
    for r in st.rows:
        fresh = "[green]yes[/]" if r["fresh"] else ("[red]no data[/]" if r["latest"] is None else "[yellow]STALE[/]")
        table.add_row(r["dataset"], r["market"], str(r["latest"] or "–"), str(r["expected"]), fresh)
    out.print(table)
    if st.last_run:
        run = st.last_run
        parts = [
            f"{m['market']}: closed" if m.get("closed")
            else f"{m['market']}: {m['passed']:,} passed, {m['flagged']:,} flagged, {m['quarantined']:,} quarantined, {len(m['failures'])} failed symbols"
            for m in run["markets"]
        ]
        out.print(f"last run {run['run_id']} ({run['flow']}, finished {run.get('finished_at') or 'never'}): " + "; ".join(parts), highlight=False)
    out.print("quarantine: " + ", ".join(f"{k} {v:,}" for k, v in st.quarantine.items()), highlight=False)
    for path in st.strays:
        out.print(f"[yellow]not written by aimoves (never read; move it out of the dataset folder):[/] {path}", highlight=False, soft_wrap=True)
    stale = [r for r in st.rows if not r["fresh"] and r["latest"] is not None]
    if stale:
        out.print(f"[yellow]{len(stale)} dataset(s) older than the latest settled session[/]")


@quarantine_app.command("list")
def quarantine_list(
    data_dir: DataDirOpt = Path("data"),
    start: Annotated[Optional[str], typer.Option("--start", help="First date (YYYY-MM-DD).")] = None,
    end: Annotated[Optional[str], typer.Option("--end", help="Last date (YYYY-MM-DD).")] = None,
    symbol: Annotated[Optional[list[str]], typer.Option("--symbol", help="Only these symbols (repeatable).")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Rows to show.")] = 50,
) -> None:
    """Quarantined price rows with their expectations and reasons (row_id is what `release` takes)."""
    from aimoves.ops import quarantined_prices

    try:
        _existing_data_dir(data_dir)
        rows = quarantined_prices(data_dir, _date(start, "--start"), _date(end, "--end"), symbol)
    except AimovesError as exc:
        _fail(str(exc))
    table = Table(title=f"quarantine/prices — {len(rows):,} rows", title_justify="left")
    for col in ("row_id", "date", "symbol", "expectation", "reason"):
        table.add_column(col, overflow="fold")
    for _, r in rows.head(limit).iterrows():
        table.add_row(r["row_id"], str(r["date"].date()) if pd_notna(r["date"]) else "–", r["symbol"], r["expectation"], escape(str(r["reason"])))
    out.print(table)
    if len(rows) > limit:
        out.print(f"({len(rows) - limit:,} more; use --limit, --start/--end or --symbol)")


@quarantine_app.command("release")
def quarantine_release(
    row_id: Annotated[list[str], typer.Option("--row-id", help="A reviewed row to release (repeatable).")],
    accept: Annotated[Optional[list[str]], typer.Option("--accept", help="An expectation you reviewed and accept for these rows (repeatable).")] = None,
    data_dir: DataDirOpt = Path("data"),
    universe: UniverseOpt = None,
) -> None:
    """Re-validate reviewed rows and write those that pass (or fail only --accept'ed checks) to prices/."""
    from aimoves.ops import release_prices
    from aimoves.universe import load_universe

    try:
        result = release_prices(data_dir, load_universe(universe), row_id, accept or [])
    except AimovesError as exc:
        _fail(str(exc))
    for _, r in result.released.iterrows():
        out.print(f"released {r['row_id']} {r['symbol']} {r['date'].date()} flags={list(r['dq_flags'])}", highlight=False)
    for _, r in result.kept.iterrows():
        out.print(f"[yellow]kept[/] {r['row_id']} {r['symbol']} {r['date'].date()}: {escape(str(r['reason']))} (accept with --accept {r['expectation'].replace(',', ' --accept ')})", highlight=False)
    if len(result.released):
        days = result.released["date"]
        out.print(f"Refresh the moves of those days: aimoves derive --start {days.min().date()} --end {days.max().date()} --data-dir {data_dir}", highlight=False)
    if len(result.kept):
        raise typer.Exit(1)


@app.command()
def derive(
    start: Annotated[str, typer.Option("--start", help="First date (YYYY-MM-DD).")],
    end: Annotated[Optional[str], typer.Option("--end", help="Last date (default: --start).")] = None,
    universe: UniverseOpt = None,
    data_dir: DataDirOpt = Path("data"),
    markets: MarketsOpt = None,
) -> None:
    """Recompute stock and sector moves (incl. ALL) from stored prices and FX, without fetching."""
    from aimoves.options import DeriveOptions, check_derive, flow_parameters

    options = _options(DeriveOptions, start=start, end=end or start, universe=universe, data_dir=data_dir, markets=markets)
    try:
        check_derive(options)  # type: ignore[arg-type]
    except AimovesError as exc:
        _fail(str(exc))
    _quiet_engine()
    from aimoves.flows.derive import derive as derive_flow

    summary = derive_flow(**flow_parameters(options))  # type: ignore[arg-type]
    for report in (summary.stock_moves, summary.sector_moves, summary.divergence):
        out.print(f"{report.dataset} {report.window}: {report.passed:,} rows ({report.flagged:,} flagged), {report.quarantined} quarantined", highlight=False)


def pd_notna(value: object) -> bool:
    import pandas as pd

    return bool(pd.notna(value))

@app.command()
def serve(
    port: Annotated[int, typer.Option("--port", help="Port of the Prefect server (API and UI) started on 127.0.0.1.")] = 4200,
    source: Annotated[Optional[str], typer.Option("--source", help="Override the deployments' source (prefect.yaml: yahoo); simulated for an offline demo.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Override the deployments' data dir (prefect.yaml: ./data).")] = None,
    universe: UniverseOpt = None,
    prefect_yaml: Annotated[Optional[Path], typer.Option("--prefect-yaml", help="Deployments and schedules (default: ./prefect.yaml).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the server to report healthy.")] = 120.0,
) -> None:
    """Start a local Prefect server and serve prefect.yaml's deployments, with their schedules, until Ctrl-C."""
    from aimoves.universe import load_universe

    try:
        if source is not None and source not in ("yahoo", "csv", "simulated", "replay"):
            raise AimovesError(f"--source {source!r}: use yahoo, csv, simulated or replay")
        if universe is not None:
            load_universe(universe)
    except AimovesError as exc:
        _fail(str(exc))
    _quiet_engine()
    from aimoves.serve import serve as serve_deployments

    try:
        serve_deployments(port=port, source=source, data_dir=data_dir, universe=universe, prefect_yaml=prefect_yaml,
                          timeout=timeout, say=lambda m: out.print(m, highlight=False, markup=False))
    except AimovesError as exc:
        _fail(str(exc), 1)


def main() -> None:  # pragma: no cover
    sys.exit(app())
