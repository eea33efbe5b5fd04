"""The daily digest: one self-contained HTML page (and a PNG of its chart) an analyst opens each morning.

    from aimoves.digest import write_digest
    result = write_digest("data", "reports", day="2025-01-27")   # reports/digest-2025-01-27.{html,png}

For a calendar date D: a region × sector heat map of USD returns (closed markets marked closed),
the divergence of D with its last 20 dates, the five biggest movers per market with their headlines
and sentiment, and the data quality behind it (quarantined rows of D, failed symbols, stale markets
of the runs that wrote D). What is missing is said on the page and returned as warnings; when
nothing at all is stored for D, `DigestError` is raised and no page is written.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from aimoves.api import DateLike, _as_date
from aimoves.divergence import ALL_AI, DIVERGENCE_SECTORS, divergence_threshold
from aimoves.errors import AimovesError
from aimoves.markets import MARKETS
from aimoves.schema import DIVERGENCE, QUARANTINE_DIVERGENCE, QUARANTINE_PRICES, QUARANTINE_SECTOR_MOVES, QUARANTINE_STOCK_MOVES, SECTOR_MOVES, STOCK_MOVES
from aimoves.universe import SECTORS

log = logging.getLogger(__name__)

HISTORY_DATES = 20  # dates of divergence history on the page
TOP_MOVERS = 5  # biggest movers per market
HEATMAP_REGIONS = (*MARKETS, "ALL")


class DigestError(AimovesError):
    """Nothing could be shown for the date: no page was written."""


@dataclass
class DigestResult:
    day: date
    html: Path
    png: Path
    warnings: list[str] = field(default_factory=list)


def latest_date(data_dir: Path) -> date | None:
    """The latest date of divergence/ (else of sector_moves/), or None when neither is stored."""
    from aimoves.store import read_frame

    for spec in (DIVERGENCE, SECTOR_MOVES):
        dates = read_frame(spec, data_dir, columns=["date"])["date"]
        if len(dates):
            return pd.Timestamp(dates.max()).date()
    return None


def _heatmap(sectors: pd.DataFrame) -> tuple[list[dict], list[str]]:
    """Rows per region: cells of (sector, USD return, closed?) and what is missing."""
    missing = []
    rows = []
    for region in HEATMAP_REGIONS:
        here = sectors[sectors["region"] == region].set_index("sector") if len(sectors) else pd.DataFrame()
        if here.empty:
            missing.append(f"no {region} sector moves for this date")
            rows.append({"region": region, "open": None, "cells": [{"sector": s, "ret": None, "closed": False, "n": None} for s in SECTORS]})
            continue
        is_open = bool(here["market_open"].astype(bool).any())
        cells = []
        for s in SECTORS:
            value = here["ret_ew_usd"].get(s, np.nan) if is_open else np.nan
            cells.append({"sector": s, "ret": None if pd.isna(value) else float(value), "closed": not is_open,
                          "n": f"{int(here['n_traded'].get(s, 0))}/{int(here['n_members'].get(s, 0))}" if s in here.index else None})
        rows.append({"region": region, "open": is_open, "cells": cells})
    return rows, missing


def _movers(moves: pd.DataFrame, news: pd.DataFrame) -> dict[str, list[dict]]:
    """The TOP_MOVERS biggest |ret| per market, with their linked headlines and sentiment."""
    out: dict[str, list[dict]] = {}
    indexed = news.drop_duplicates("id").set_index("id") if len(news) else pd.DataFrame()
    for market in MARKETS:
        here = moves[(moves["market"] == market) & ~moves["is_benchmark"].fillna(False).astype(bool) & moves["ret"].notna()]
        top = here.assign(_abs=here["ret"].abs()).sort_values(["_abs", "symbol"], ascending=[False, True]).head(TOP_MOVERS)
        rows = []
        for _, m in top.iterrows():
            ids = list(m["news_ids"]) if isinstance(m["news_ids"], list | np.ndarray | tuple) else []
            headlines = [_headline(indexed.loc[i]) for i in ids if len(indexed) and i in indexed.index]
            sentiments = [h["sentiment"] for h in headlines if h["sentiment"] is not None]
            rows.append({"symbol": m["symbol"], "sector": m["sector"], "ret": m["ret"], "ret_usd": m["ret_usd"], "zscore": m["zscore"],
                         "headlines": headlines[:3], "more": max(0, len(headlines) - 3),
                         "sentiment": float(np.mean(sentiments)) if sentiments else None})
        out[market] = rows
    return out


def _headline(item: pd.Series) -> dict:
    url = item.get("url")
    sentiment = item.get("sentiment")
    return {"title": str(item["title"]), "publisher": str(item.get("publisher") or "unknown"),
            "url": url if isinstance(url, str) and url.startswith(("http://", "https://")) else None,
            "when": pd.Timestamp(item["published_at"]).strftime("%Y-%m-%d %H:%M UTC"),
            "sentiment": None if sentiment is None or pd.isna(sentiment) else float(sentiment)}


def _quarantined(data_dir: Path, day: date) -> list[dict]:
    """Rows of `day` in each quarantine dataset, with their expectations."""
    from aimoves.store import read_frame

    out = []
    for spec in (QUARANTINE_PRICES, QUARANTINE_STOCK_MOVES, QUARANTINE_SECTOR_MOVES, QUARANTINE_DIVERGENCE):
        rows = read_frame(spec, data_dir, day, day, columns=["date", "expectation"])
        if len(rows):
            counts = rows["expectation"].value_counts()
            out.append({"dataset": spec.name.split("/", 1)[1], "rows": len(rows),
                        "expectations": ", ".join(f"{k} ({v})" for k, v in counts.items())})
    return out


def _runs_behind(data_dir: Path, day: date) -> list[dict]:
    """Run records (`_runs/`) whose windows hold `day`: failed symbols, closed or stale markets, notes."""
    runs = []
    folder = data_dir / "_runs"
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        touched = []
        for m in record.get("markets", []):
            lo, _, hi = str(m.get("window", "")).partition("..")
            if lo and hi and lo <= day.isoformat() <= hi:
                touched.append(m)
        derived = [r for r in (record.get("stock_moves"), record.get("divergence")) if isinstance(r, dict)]
        in_derive = any(lo <= day.isoformat() <= hi for r in derived for lo, _, hi in [str(r.get("window", "")).partition("..")] if lo and hi)
        if not touched and not in_derive:
            continue
        runs.append({
            "run_id": record.get("run_id"), "flow": record.get("flow"), "finished": record.get("finished_at") or "never",
            "failed": [f"{m['market']}:{f['symbol']}" for m in touched for f in m.get("failures", [])],
            "closed": [m["market"] for m in touched if m.get("closed")],
            "errors": [f"{m['market']}: {m['error']}" for m in touched if m.get("error")],
            "stale": [n for m in touched for n in m.get("notes", []) if n.startswith("stale")],
            "quarantined": sum(int(m.get("quarantined") or 0) for m in touched),
        })
    return runs[-5:]


def _figure(day: date, heat: list[dict], history: pd.DataFrame, threshold: float):  # noqa: ANN202 - matplotlib Figure
    """Left: the heat map of USD returns (closed: grey, hatched). Right: spread and z of the last dates."""
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure  # NOTE: no pyplot: no global state, renders with Agg

    fig = Figure(figsize=(13, 4.8), layout="constrained")
    ax_heat, ax_hist = fig.subplots(1, 2, width_ratios=[1.1, 1])
    values = np.array([[np.nan if c["ret"] is None else c["ret"] for c in r["cells"]] for r in heat], dtype=float)
    finite = values[np.isfinite(values)]
    span = max(0.005, float(np.abs(finite).max())) if finite.size else 0.01
    ax_heat.imshow(np.ma.masked_invalid(values), cmap="RdYlGn", norm=TwoSlopeNorm(0, -span, span), aspect="auto")
    ax_heat.set_xticks(range(len(SECTORS)), [s.replace("_", "\n") for s in SECTORS], fontsize=9)
    ax_heat.set_yticks(range(len(heat)), [r["region"] for r in heat])
    for i, r in enumerate(heat):
        for j, c in enumerate(r["cells"]):
            text = "closed" if c["closed"] else ("n/a" if c["ret"] is None else f"{c['ret'] * 100:+.1f}%")
            ax_heat.text(j, i, text, ha="center", va="center", fontsize=9, color="0.35" if c["ret"] is None else "black")
    ax_heat.set_title(f"Sector returns on {day}, in USD (equal-weighted)", fontsize=11, loc="left")
    if history.empty:
        ax_hist.text(0.5, 0.5, "no divergence history", transform=ax_hist.transAxes, ha="center", va="center", color="0.5")
    else:
        from matplotlib.ticker import PercentFormatter

        for sector, g in history.groupby("sector", sort=False):
            line = ax_hist.plot(g["date"], g["spread"], marker="o", markersize=3, linewidth=1.4, label=sector)[0]
            hit = g[g["divergent"].astype(bool)]
            ax_hist.scatter(hit["date"], hit["spread"], s=90, facecolors="none", edgecolors=line.get_color(), linewidths=1.8)
        ax_hist.axhline(0, color="0.4", linewidth=0.8)
        ax_hist.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        ax_hist.grid(True, color="0.9", linewidth=0.6)
        ax_hist.legend(fontsize=8, frameon=False, loc="best")
        ax_hist.tick_params(axis="x", labelrotation=45, labelsize=8)
    ax_hist.set_title(f"Spread China − US, last {HISTORY_DATES} dates (circled: divergent, |z| ≥ {threshold:g})", fontsize=11, loc="left")
    return fig


def build_digest(data_dir: str | Path, day: DateLike | None = None) -> tuple[dict, object, list[str]]:
    """The page's context, its figure and the warnings (what is missing); DigestError when nothing is stored for the date."""
    from aimoves.news.store import load_news
    from aimoves.store import read_frame

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DigestError(f"{data_dir}: no data dir here (run a backfill first, or pass --data-dir)")
    chosen = _as_date(day, "--date") if day is not None else latest_date(data_dir)
    if chosen is None:
        raise DigestError(f"{data_dir} holds neither divergence/ nor sector_moves/: nothing to show (run a backfill first)")
    threshold = divergence_threshold()
    sectors = read_frame(SECTOR_MOVES, data_dir, chosen, chosen)
    divergence = read_frame(DIVERGENCE, data_dir, chosen - timedelta(days=60), chosen)
    moves = read_frame(STOCK_MOVES, data_dir, chosen, chosen)
    today = divergence[divergence["date"] == pd.Timestamp(chosen)]
    if sectors.empty and today.empty and moves.empty:
        raise DigestError(f"nothing stored for {chosen} in {data_dir} (no sector_moves, divergence or stock_moves rows): no digest written")
    warnings = []
    heat, missing = _heatmap(sectors)
    warnings += missing
    closed = [r["region"] for r in heat if r["open"] is False and r["region"] in MARKETS]
    if today.empty:
        warnings.append("no divergence rows for this date (derive it: aimoves derive --start D)")
    dates = sorted(divergence["date"].unique())[-HISTORY_DATES:]
    history = divergence[divergence["date"].isin(dates)]
    shown_sectors = [ALL_AI] + sorted(set(today.loc[today["divergent"].astype(bool), "sector"]) - {ALL_AI})
    if "semiconductors" not in shown_sectors:
        shown_sectors.insert(1, "semiconductors")
    history_shown = history[history["sector"].isin(shown_sectors)].sort_values(["sector", "date"])
    news = pd.DataFrame()
    if len(moves) and (data_dir / "news").is_dir():
        news = load_news(data_dir, chosen - timedelta(days=7), chosen + timedelta(days=1))
    elif not (data_dir / "news").is_dir():
        warnings.append("no news/ dataset: movers are shown without headlines")
    movers = _movers(moves, news) if len(moves) else {m: [] for m in MARKETS}
    for market in MARKETS:
        if not movers[market] and market not in closed:
            warnings.append(f"no {market} stock moves for this date")
    order = {s: i for i, s in enumerate(DIVERGENCE_SECTORS)}
    context = {
        "day": chosen.isoformat(),
        "weekday": f"{chosen:%A}",
        "threshold": threshold,
        "heat": heat,
        "sectors": list(SECTORS),
        "closed": closed,
        "divergence": sorted(_records(today), key=lambda r: order.get(r["sector"], 99)),
        "divergent": sorted(today.loc[today["divergent"].astype(bool), "sector"], key=lambda s: order.get(s, 99)),
        "history": _history_table(history, shown_sectors),
        "history_sectors": shown_sectors,
        "movers": movers,
        "quarantined": _quarantined(data_dir, chosen),
        "runs": _runs_behind(data_dir, chosen),
        "warnings": warnings,
        "data_dir": str(data_dir.resolve()),
    }
    return context, _figure(chosen, heat, history_shown, threshold), warnings


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as dicts, missing values as None (so a template never prints "nan")."""
    return [{k: (None if not isinstance(v, list | np.ndarray | tuple) and pd.isna(v) else v) for k, v in r.items()} for r in frame.to_dict("records")]


def _history_table(history: pd.DataFrame, sectors: list[str]) -> list[dict]:
    """One row per date (newest first): per shown sector its spread, z and divergent flag."""
    rows = []
    for day, g in sorted(history.groupby("date"), key=lambda kv: kv[0], reverse=True):
        by = g.set_index("sector")
        cells = []
        for s in sectors:
            if s in by.index:
                r = by.loc[s]
                cells.append({"spread": r["spread"], "zscore": r["zscore"], "divergent": bool(r["divergent"]), "flags": list(r["dq_flags"])})
            else:
                cells.append({"spread": None, "zscore": None, "divergent": False, "flags": []})
        rows.append({"date": f"{pd.Timestamp(day):%Y-%m-%d}", "cells": cells})
    return rows


def write_digest(data_dir: str | Path, out_dir: str | Path, day: DateLike | None = None) -> DigestResult:
    """Write `digest-<date>.html` (the PNG embedded, nothing else needed to view it) and `digest-<date>.png` to `out_dir`."""
    from aimoves.render import render

    context, figure, warnings = build_digest(data_dir, day)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"digest-{context['day']}.png"
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    png.write_bytes(buffer.getvalue())
    page = render("digest.html.j2", png_data=base64.b64encode(buffer.getvalue()).decode("ascii"), **context)
    html = out / f"digest-{context['day']}.html"
    tmp = html.with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(html)
    for w in warnings:
        log.warning("digest %s: %s", context["day"], w)
    return DigestResult(date.fromisoformat(context["day"]), html, png, warnings)
