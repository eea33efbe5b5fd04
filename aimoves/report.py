"""Sector moves around an event or over a window: the numbers, a chart, a markdown and an HTML table.

    from aimoves.api import load_sector_moves
    from aimoves.report import event_window, write_report
    win = event_window(load_sector_moves("2025-01-01", "2025-03-01"), "2025-01-27", before=5, after=10)
    write_report("data", "reports", event="2025-01-27")   # reports/event-2025-01-27.{png,md,html}

Returns are the sectors' equal-weighted returns: `ret_ew` in local currency for US, HK and CN,
`ret_ew_usd` for ALL. Sessions are counted per region: a row of `sector_moves` is a session of its
region when `market_open` is true; closed days are skipped, never counted as a 0% move.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from aimoves.api import REGIONS, DateLike, _as_date, load_sector_moves
from aimoves.catalog import as_catalog
from aimoves.errors import AimovesError
from aimoves.schema import NEWS, SECTOR_MOVES
from aimoves.universe import SECTORS

__all__ = [
    "HEADLINES_MARKER",
    "ReportFiles",
    "event_table",
    "event_window",
    "window_moves",
    "window_table",
    "write_report",
]

log = logging.getLogger(__name__)

# Later steps append the headlines of big moves after this line of the .md and .html reports.
HEADLINES_MARKER = "<!-- aimoves:headlines - headlines of big moves are appended below this line -->"

_CURRENCY = {"US": "local currency, USD", "HK": "local currency, HKD", "CN": "local currency, CNY", "ALL": "USD"}
_MOVE_COLUMNS = ["region", "sector", "offset", "date", "ret", "cum"]


@dataclass(frozen=True)
class ReportFiles:
    """What `write_report` wrote."""

    png: Path
    markdown: Path
    html: Path


# --- the numbers ---------------------------------------------------------------------------------


def event_window(sector_moves: pd.DataFrame, event: DateLike, before: int, after: int) -> pd.DataFrame:
    """Cumulative move of each (region, sector) at session offsets −before..+after around `event`.

    Offsets count that region's own sessions: 0 is the event date's session, or the region's first
    session after it when its market was closed that day. With P the compounded index of the
    session returns, `cum` at offset k is P_k / P_{−1} − 1: 0 at the close of session −1, the
    event-day return at 0, and before the event the move still to come to session −1 (negative of
    a run-up). Columns: region, sector, offset, date (that session's date), ret (its own return),
    cum. Offsets the data does not reach are absent; a missing return makes `cum` NaN where it
    is needed.
    """
    if before < 0 or after < 0:
        raise AimovesError(f"before and after must be ≥ 0 (got {before}, {after})")
    event_ts = pd.Timestamp(_as_date(event, "event"))
    parts = []
    for (region, sector), g in _sessions(sector_moves).groupby(["region", "sector"], sort=False):
        k0 = int(np.searchsorted(g["date"].to_numpy(), event_ts.to_datetime64(), side="left"))
        offsets = np.arange(len(g)) - k0
        g = g.assign(offset=offsets)
        g = g[(g["offset"] >= -before) & (g["offset"] <= after)].copy()
        growth = 1.0 + g["ret"].to_numpy(dtype=float)
        post = g["offset"].to_numpy() >= 0
        cum = np.empty(len(g))
        cum[post] = np.cumprod(growth[post]) - 1.0
        # Before the event, walk back from −1: cum_k = 1 / Π(growth of sessions k+1..−1) − 1.
        back = growth[~post][::-1]  # sessions −1, −2, …
        denom = np.concatenate([[1.0], np.cumprod(back)[:-1]]) if len(back) else np.empty(0)
        cum[~post] = (1.0 / denom - 1.0)[::-1]
        g["cum"] = cum
        parts.append(g)
    return _finish(parts)


def window_moves(sector_moves: pd.DataFrame, start: DateLike, end: DateLike) -> pd.DataFrame:
    """Cumulative move of each (region, sector) over its sessions from `start` to `end`.

    `offset` numbers the region's sessions in the window from 0; `cum` is the compounded return
    from the close before the first session, so `cum` at the first session is that session's own
    return. Same columns as `event_window`.
    """
    start_ts, end_ts = pd.Timestamp(_as_date(start, "start")), pd.Timestamp(_as_date(end, "end"))
    sessions = _sessions(sector_moves)
    sessions = sessions[(sessions["date"] >= start_ts) & (sessions["date"] <= end_ts)]
    parts = []
    for _, g in sessions.groupby(["region", "sector"], sort=False):
        g = g.assign(offset=np.arange(len(g)))
        g["cum"] = np.cumprod(1.0 + g["ret"].to_numpy(dtype=float)) - 1.0
        parts.append(g)
    return _finish(parts)


def event_table(window: pd.DataFrame, after: int) -> pd.DataFrame:
    """One row per sector × region from an `event_window`: the session-0 date, its return, and `cum` at +1, +5, +after."""
    marks = sorted({k for k in (1, 5, after) if 1 <= k <= after})
    rows = []
    for (sector, region), g in _ordered_groups(window):
        by = g.set_index("offset")
        row = {
            "sector": sector,
            "region": region,
            "session 0": by["date"].get(0, pd.NaT),
            "day 0": by["ret"].get(0, np.nan),
        }
        row |= {f"cum +{k}": by["cum"].get(k, np.nan) for k in marks}
        rows.append(row)
    return pd.DataFrame(rows, columns=["sector", "region", "session 0", "day 0", *[f"cum +{k}" for k in marks]])


def window_table(moves: pd.DataFrame) -> pd.DataFrame:
    """One row per sector × region from `window_moves`: first and last session, sessions, first-day return, cumulative."""
    rows = [
        {
            "sector": sector,
            "region": region,
            "first session": g["date"].iloc[0],
            "last session": g["date"].iloc[-1],
            "sessions": len(g),
            "first day": g["ret"].iloc[0],
            "cumulative": g["cum"].iloc[-1],
        }
        for (sector, region), g in _ordered_groups(moves)
    ]
    return pd.DataFrame(rows, columns=["sector", "region", "first session", "last session", "sessions", "first day", "cumulative"])


def _sessions(sector_moves: pd.DataFrame) -> pd.DataFrame:
    """The open rows: region, sector, date (datetime64[ns]), ret (ret_ew, or ret_ew_usd for ALL), sorted."""
    frame = sector_moves
    is_open = frame["market_open"].astype("boolean").fillna(False).astype(bool)
    rets = np.where(frame["region"] == "ALL", frame["ret_ew_usd"].astype(float), frame["ret_ew"].astype(float))
    out = pd.DataFrame(
        {
            "region": frame["region"].astype(str),
            "sector": frame["sector"].astype(str),
            "date": pd.to_datetime(frame["date"]).dt.normalize().astype("datetime64[ns]"),
            "ret": rets,
        }
    )[is_open.to_numpy()]
    return out.sort_values(["region", "sector", "date"], kind="stable").reset_index(drop=True)


def _finish(parts: list[pd.DataFrame]) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(_MOVE_COLUMNS, ["str", "str", "int64", "datetime64[ns]", "float64", "float64"])})
    frame = pd.concat(parts, ignore_index=True)[_MOVE_COLUMNS]
    frame["offset"] = frame["offset"].astype("int64")
    region_rank = frame["region"].map(_region_rank)
    return (
        frame.assign(_r=region_rank, _s=frame["sector"].map(_sector_rank))
        .sort_values(["_r", "_s", "sector", "offset"], kind="stable")
        .drop(columns=["_r", "_s"])
        .reset_index(drop=True)
    )


def _region_rank(region: str) -> int:
    return REGIONS.index(region) if region in REGIONS else len(REGIONS)


def _sector_rank(sector: str) -> int:
    return SECTORS.index(sector) if sector in SECTORS else len(SECTORS)


def _ordered_groups(moves: pd.DataFrame) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    """Groups by (sector, region), sectors in the universe's order, regions US, HK, CN, ALL."""
    groups = list(moves.groupby(["sector", "region"], sort=False))
    return sorted(groups, key=lambda kv: (_sector_rank(kv[0][0]), kv[0][0], _region_rank(kv[0][1]), kv[0][1]))


# --- the files -----------------------------------------------------------------------------------


def write_report(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    event: DateLike | None = None,
    before: int = 5,
    after: int = 10,
    start: DateLike | None = None,
    end: DateLike | None = None,
) -> ReportFiles:
    """Write the chart (PNG), markdown and HTML report of sector moves around `event`, or from `start` to `end`.

    Give either `event` (with `before`/`after` sessions) or both `start` and `end`. Files go to
    `out_dir` as `event-YYYY-MM-DD.*` or `window-YYYY-MM-DD-YYYY-MM-DD.*`, replacing earlier ones.
    Raises `AimovesError` when `sector_moves` has no sessions for the dates asked.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if (event is None) == (start is None and end is None):
        raise AimovesError("give either an event date, or a window's start and end (not both, not neither)")
    if event is not None:
        event_d = _as_date(event, "event")
        if before < 0 or after < 0:
            raise AimovesError(f"before and after must be ≥ 0 sessions (got {before}, {after})")
        # Calendar days enough for before/after sessions of every market, Lunar New Year included.
        lo, hi = event_d - timedelta(days=2 * before + 30), event_d + timedelta(days=2 * after + 30)
        moves = _load_or_explain(data_dir, lo, hi, f"around {event_d}")
        window = event_window(moves, event_d, before, after)
        if window.empty or not (window["offset"] >= 0).any():
            raise AimovesError(f"sector_moves in {data_dir} has no session on or after {event_d}{_coverage(data_dir)}")
        name = f"event-{event_d.isoformat()}"
        table = event_table(window, after)
        title = f"Sector moves around {event_d}"
        intro = (
            f"Cumulative equal-weighted sector returns from session −{before} to +{after} around {event_d}, "
            "measured from the close of session −1 (the session before the event). Session 0 is each market's "
            "session on the event date, or its first session after it when that market was closed; offsets count "
            "each market's own sessions, closed days skipped. US, HK and CN in local currency, ALL in USD. "
            "n/a: the data does not reach that session, or a return is missing."
        )
        figure = _event_figure(window, event_d, before, after)
    else:
        if start is None or end is None:
            raise AimovesError("a window needs both start and end")
        start_d, end_d = _as_date(start, "start"), _as_date(end, "end")
        if end_d < start_d:  # type: ignore[operator]
            raise AimovesError(f"end {end_d} is before start {start_d}")
        moves = _load_or_explain(data_dir, start_d, end_d, f"from {start_d} to {end_d}")  # type: ignore[arg-type]
        window = window_moves(moves, start_d, end_d)  # type: ignore[arg-type]
        if window.empty:
            raise AimovesError(f"sector_moves in {data_dir} has no open session from {start_d} to {end_d}{_coverage(data_dir)}")
        name = f"window-{start_d}-{end_d}"
        table = window_table(window)
        title = f"Sector moves from {start_d} to {end_d}"
        intro = (
            f"Cumulative equal-weighted sector returns over each market's sessions from {start_d} to {end_d}, "
            "measured from the close before the first session (so the first session's own return counts); "
            "closed days skipped. US, HK and CN in local currency, ALL in USD. n/a: a return is missing."
        )
        figure = _window_figure(window, start_d, end_d)  # type: ignore[arg-type]

    out_dir.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(png=out_dir / f"{name}.png", markdown=out_dir / f"{name}.md", html=out_dir / f"{name}.html")
    figure.savefig(files.png, dpi=110)
    shown = _formatted(table)
    headlines = big_move_headlines(data_dir, window["date"].min(), window["date"].max())
    markdown = _markdown(title, intro, files.png.name, shown)
    markdown = markdown.replace(HEADLINES_MARKER, HEADLINES_MARKER + "\n\n" + _headlines_markdown(headlines), 1)
    page = _html(title, intro, files.png.name, shown, table, headlines)
    files.markdown.write_text(markdown, encoding="utf-8")
    files.html.write_text(page, encoding="utf-8")
    log.info("wrote %s, %s, %s", files.png, files.markdown, files.html)
    return files


def _load_or_explain(data_dir: Path, lo: date, hi: date, what: str) -> pd.DataFrame:
    moves = load_sector_moves(lo, hi, data_dir=data_dir)
    if moves.empty:
        if not as_catalog(data_dir).has_dataset(SECTOR_MOVES):
            raise AimovesError(
                f"no sector_moves dataset in {data_dir} (expected {as_catalog(data_dir).dataset_dir(SECTOR_MOVES)}/region=…/year=…): "
                f"nothing to report {what}; derive sector moves first"
            )
        raise AimovesError(f"sector_moves in {data_dir} has no rows from {lo} to {hi}, nothing to report {what}{_coverage(data_dir)}")
    return moves


def _coverage(data_dir: Path) -> str:
    dates = load_sector_moves(data_dir=data_dir)["date"]
    return f" (it covers {dates.min():%Y-%m-%d} to {dates.max():%Y-%m-%d})" if len(dates) else " (it is empty)"


def _pct(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value * 100:+.2f}%"


def _formatted(table: pd.DataFrame) -> pd.DataFrame:
    shown = table.copy().astype(object)
    for column in table.columns:
        if pd.api.types.is_datetime64_any_dtype(table[column]):
            shown[column] = [("n/a" if pd.isna(v) else f"{v:%Y-%m-%d}") for v in table[column]]
        elif pd.api.types.is_float_dtype(table[column]):
            shown[column] = [_pct(v) for v in table[column]]
        else:
            shown[column] = table[column].astype(str)
    return shown


def _markdown(title: str, intro: str, png: str, shown: pd.DataFrame) -> str:
    numeric = [not (c in ("sector", "region") or "session" in c) for c in shown.columns]
    lines = [
        f"# {title}",
        "",
        intro,
        "",
        f"![{title}]({png})",
        "",
        "| " + " | ".join(shown.columns) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
        *("| " + " | ".join(row) + " |" for row in shown.itertuples(index=False, name=None)),
        "",
        HEADLINES_MARKER,
        "",
    ]
    return "\n".join(lines)


def _html(title: str, intro: str, png: str, shown: pd.DataFrame, table: pd.DataFrame, big: pd.DataFrame | None = None) -> str:
    """The HTML page (templates/report.html.j2): the table, coloured by sign, then the headlines of big moves."""
    from aimoves.render import render, tone

    rows = []
    for i, row in enumerate(shown.itertuples(index=False, name=None)):
        rows.append([
            (text, tone(table[column].iloc[i]) if pd.api.types.is_float_dtype(table[column]) else None)
            for column, text in zip(shown.columns, row)
        ])
    return render("report.html.j2", title=title, intro=intro, png=png, columns=list(shown.columns), rows=rows,
                  marker=HEADLINES_MARKER, big=None if big is None else _headlines_context(big))


# --- the chart -----------------------------------------------------------------------------------


def _figure(moves: pd.DataFrame, suptitle: str):  # noqa: ANN202 - matplotlib.figure.Figure, imported lazily
    """2×2 panels US, HK, CN, ALL; a line per sector in the same colour on every panel; one legend below."""
    from matplotlib.figure import Figure  # NOTE: no pyplot: no global backend or state, renders with Agg
    from matplotlib.lines import Line2D
    from matplotlib.ticker import PercentFormatter

    sectors = sorted(moves["sector"].unique(), key=lambda s: (_sector_rank(s), s))
    colors = {s: f"C{i % 10}" for i, s in enumerate(sectors)}
    fig = Figure(figsize=(13, 8.5), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True, sharey=True).ravel()
    for ax, region in zip(axes, REGIONS):
        ax.set_title(f"{region} ({_CURRENCY[region]})", fontsize=11, loc="left")
        ax.axhline(0, color="0.4", linewidth=0.8)
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        ax.grid(True, color="0.9", linewidth=0.6)
        ax.set_axisbelow(True)
        here = moves[moves["region"] == region]
        if here.empty:
            ax.text(0.5, 0.5, f"no {region} sessions in sector_moves", transform=ax.transAxes, ha="center", va="center", color="0.5")
        for sector in sectors:
            line = here[here["sector"] == sector]
            if len(line):
                ax.plot(line["x"], line["cum"], color=colors[sector], marker="o", markersize=3, linewidth=1.6, label=sector)
    for ax in axes[2:]:
        ax.tick_params(labelbottom=True)
    for ax in axes[::2]:
        ax.set_ylabel("cumulative move")
    handles = [Line2D([], [], color=colors[s], marker="o", markersize=3, linewidth=1.6) for s in sectors]
    fig.legend(handles, sectors, loc="outside lower center", ncols=max(1, len(sectors)), frameon=False, fontsize=10)
    fig.suptitle(suptitle, fontsize=12)
    return fig, axes


def _event_figure(window: pd.DataFrame, event: date, before: int, after: int):  # noqa: ANN202
    fig, axes = _figure(
        window.assign(x=window["offset"]),
        f"Sector moves around {event}: cumulative equal-weighted returns from the close of session −1\n"
        "US, HK, CN in local currency; ALL in USD. Sessions counted per market (closed days skipped).",
    )
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.axvline(0, color="0.3", linestyle="--", linewidth=0.9)
        ax.set_xlim(-before - 0.5, after + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=min(before + after + 1, 20), integer=True))
    for ax in axes[2:]:
        ax.set_xlabel(f"session offset (0 = {event}, or the market's next session)")
    return fig


def _window_figure(moves: pd.DataFrame, start: date, end: date):  # noqa: ANN202
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    fig, axes = _figure(
        moves.assign(x=moves["date"]),
        f"Sector moves from {start} to {end}: cumulative equal-weighted returns from the close before the first session\n"
        "US, HK, CN in local currency; ALL in USD. Closed days skipped.",
    )
    locator = AutoDateLocator()
    for ax in axes:
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    for ax in axes[2:]:
        ax.set_xlabel("session date")
    return fig


def big_move_headlines(data_dir: Path, lo: object, hi: object) -> pd.DataFrame:
    """Big moves from lo to hi (|z| ≥ the threshold) with the headlines linked to each."""
    from aimoves.api import load_stock_moves
    from aimoves.news.store import load_news

    moves = load_stock_moves(lo, hi, data_dir=data_dir)
    if moves.empty:
        return pd.DataFrame()
    big = moves[moves["big_move"].fillna(False).astype(bool)].sort_values(["date", "zscore"])
    if big.empty or not as_catalog(data_dir).has_dataset(NEWS):
        return big.assign(headlines=[[] for _ in range(len(big))])
    news = load_news(data_dir, pd.Timestamp(lo) - pd.Timedelta(days=7), pd.Timestamp(hi) + pd.Timedelta(days=1)).drop_duplicates("id").set_index("id")
    big = big.copy()
    big["headlines"] = [
        [news.loc[i].to_dict() | {"id": i} for i in ids if i in news.index] if isinstance(ids, list | np.ndarray) else []
        for ids in big["news_ids"]
    ]
    return big


def _headlines_markdown(big: pd.DataFrame) -> str:
    if big.empty:
        return "## Headlines of big moves\n\nNo big move (|z| ≥ 3) in this window."
    lines = ["## Headlines of big moves", "", "Moves with |z| ≥ 3 against the stock's own 60-session volatility, with the news linked to them "
             "(published between the previous session's close and this one's)."]
    for _, m in big.iterrows():
        lines += ["", f"**{m['date']:%Y-%m-%d} {m['symbol']}** ({m['market']}, {m['sector'] if isinstance(m['sector'], str) and m['sector'] else 'benchmark index'}): {_pct(m['ret'])}, z = {m['zscore']:+.1f}"]
        if not m["headlines"]:
            lines.append("- no linked headline")
        for h in m["headlines"]:
            when = pd.Timestamp(h["published_at"]).strftime("%Y-%m-%d %H:%M UTC")
            link = f" <{h['url']}>" if isinstance(h.get("url"), str) and h["url"] else ""
            lines.append(f"- {h['title']} — {h.get('publisher') or 'unknown'}, {when}, sentiment {h['sentiment']:+.2f}{link}")
    return "\n".join(lines)


def _headlines_context(big: pd.DataFrame) -> list[dict]:
    """Big moves and their headlines as plain values for the template (links only to http(s) URLs)."""
    out = []
    for _, m in big.iterrows():
        headlines = []
        for h in m["headlines"]:
            url = h.get("url")
            headlines.append({
                "title": str(h["title"]),
                "url": url if isinstance(url, str) and url.startswith(("http://", "https://")) else None,
                "publisher": str(h.get("publisher") or "unknown"),
                "when": pd.Timestamp(h["published_at"]).strftime("%Y-%m-%d %H:%M UTC"),
                "sentiment": float(h["sentiment"]),
            })
        out.append({"date": f"{m['date']:%Y-%m-%d}", "symbol": str(m["symbol"]), "ret": m["ret"], "zscore": float(m["zscore"]), "headlines": headlines})
    return out
