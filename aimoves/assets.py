"""What a run reports to Prefect about its datasets: asset materializations with lineage, the
`aimoves.divergence` events, the digest as an artifact. Call these only inside a flow run.

Asset keys are the datasets' locations as URIs (`file:///…/data/prices`), so two data dirs are two
sets of assets. Lineage follows what each stage reads:

    raw → prices → stock_moves → sector_moves
    raw → fx → stock_moves;  news → stock_moves, sector_moves;  stock_moves, news → divergence
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

UPSTREAM: dict[str, tuple[str, ...]] = {
    "prices": ("raw",),
    "fx": ("raw",),
    "news": ("raw",),
    "stock_moves": ("prices", "fx", "news"),
    "sector_moves": ("stock_moves", "news"),
    "divergence": ("stock_moves", "news"),
}
MAX_HEADLINES = 5


@dataclass
class Materialization:
    """One dataset write of a run: what it wrote, for the asset's metadata."""

    dataset: str
    rows_written: int = 0
    partitions: list[str] = field(default_factory=list)
    quarantined: int = 0
    date_range: str = ""

    @property
    def metadata(self) -> dict[str, Any]:
        return {"rows_written": self.rows_written, "partitions": self.partitions, "partitions_written": len(self.partitions),
                "quarantined": self.quarantined, "date_range": self.date_range}


def asset_key(data_dir: Path, dataset: str) -> str:
    """The dataset's asset key: its folder as a URI (`s3://bucket/prefix/<dataset>` on object storage)."""
    if "://" in str(data_dir):
        return f"{str(data_dir).rstrip('/')}/{dataset}"
    return (Path(data_dir).resolve() / dataset).as_uri()


def materializations(summary: Any) -> list[Materialization]:
    """The dataset writes of a run summary (prices per market summed; derive reports as they are)."""
    out = []
    markets = [m for m in getattr(summary, "markets", []) if not m.closed and not m.error]
    if markets:
        windows = [m.window.split("..") for m in markets]
        out.append(Materialization("raw", sum(m.bars_fetched for m in markets), [m.raw_path for m in markets if m.raw_path], 0,
                                   f"{min(w[0] for w in windows)}..{max(w[1] for w in windows)}"))
        out.append(Materialization("prices", sum(m.passed for m in markets), [p for m in markets for p in m.partitions_written],
                                   sum(m.quarantined for m in markets), out[0].date_range))
    fx = getattr(summary, "fx", None)
    if isinstance(fx, dict) and "passed" in fx:
        out.append(Materialization("fx", int(fx.get("passed", 0)), list(fx.get("partitions_written") or []), int(fx.get("quarantined", 0)),
                                   str(fx.get("window", ""))))
    news = getattr(summary, "news", None)
    if isinstance(news, dict) and not news.get("error"):
        out.append(Materialization("news", int(news.get("rows_written", news.get("passed", 0)) or 0), list(news.get("partitions_written") or []),
                                   int(news.get("quarantined", 0) or 0), str(news.get("window", ""))))
    for name in ("stock_moves", "sector_moves", "divergence"):
        report = getattr(summary, name, None)
        if report is not None and getattr(report, "window", ""):
            out.append(Materialization(name, report.passed, list(report.partitions_written or []), report.quarantined, report.window))
    return out


def _record(key: str, metadata: dict[str, Any]) -> None:
    from prefect.assets import add_asset_metadata

    add_asset_metadata(key, metadata)


def report_assets(summary: Any, data_dir: Path) -> list[str]:
    """One asset materialization per dataset the run wrote, with its upstream assets and metadata; the keys."""
    from prefect.assets import Asset, AssetProperties, materialize
    from prefect.cache_policies import NO_CACHE

    done = []
    written = materializations(summary)
    names = {m.dataset for m in written}
    for m in written:
        key = asset_key(data_dir, m.dataset)
        upstream = [Asset(key=asset_key(data_dir, u)) for u in UPSTREAM.get(m.dataset, ()) if u in names or u in ("raw", "prices", "stock_moves")]
        asset = Asset(key=key, properties=AssetProperties(name=m.dataset, description=f"aimoves dataset {m.dataset} at {key}"))
        task = materialize(asset, asset_deps=upstream, by="aimoves", name=f"materialize-{m.dataset}", cache_policy=NO_CACHE)(_record)
        task(key, m.metadata)
        done.append(key)
    return done


def divergence_alerts(data_dir: Path, start: object, end: object) -> list[dict[str, Any]]:
    """One payload per divergent date from start to end: its divergent sectors and up to five headlines of their top movers."""
    from aimoves.news.store import load_news
    from aimoves.schema import DIVERGENCE, STOCK_MOVES
    from aimoves.store import read_frame

    rows = read_frame(DIVERGENCE, data_dir, start, end)
    rows = rows[rows["divergent"].astype("boolean").fillna(False).astype(bool)] if len(rows) else rows
    if rows.empty:
        return []
    news = load_news(data_dir, rows["date"].min() - pd.Timedelta(days=7), rows["date"].max() + pd.Timedelta(days=2)) if (Path(data_dir) / "news").is_dir() else pd.DataFrame()
    titles = news.drop_duplicates("id").set_index("id") if len(news) else pd.DataFrame()
    # The news ids of the top movers named on divergent dates only (not every stock's moves of the window).
    named = sorted({s for s in pd.concat([rows["us_top_symbol"], rows["china_top_symbol"]]) if isinstance(s, str)})
    news_ids: dict[tuple[pd.Timestamp, str], Any] = {}
    if len(titles) and named:
        moves = read_frame(STOCK_MOVES, data_dir, rows["date"].min(), rows["date"].max(), columns=["date", "symbol", "news_ids"], symbol=named)
        news_ids = {(d, s): ids for d, s, ids in moves.itertuples(index=False) if ids is not None}
    alerts = []
    for day, g in rows.groupby("date", sort=True):
        g = g.assign(_abs=g["zscore"].abs()).sort_values("_abs", ascending=False)
        lead = g[g["sector"] == "all_ai"].iloc[0] if (g["sector"] == "all_ai").any() else g.iloc[0]
        symbols = list(dict.fromkeys(s for r in g.itertuples() for s in (r.us_top_symbol, r.china_top_symbol) if isinstance(s, str)))
        headlines = []
        for symbol in symbols:
            for i in news_ids.get((day, symbol), []):
                if i in titles.index and len(headlines) < MAX_HEADLINES:
                    item = titles.loc[i]
                    headlines.append({"symbol": symbol, "title": str(item["title"]), "url": item.get("url") if isinstance(item.get("url"), str) else None,
                                      "publisher": str(item.get("publisher") or "")})
        alerts.append({
            "date": f"{day:%Y-%m-%d}",
            "sector": str(lead["sector"]),
            "spread": round(float(lead["spread"]), 6),
            "z": round(float(lead["zscore"]), 3),
            "ret_us_usd": round(float(lead["ret_us_usd"]), 6),
            "ret_china_usd": round(float(lead["ret_china_usd"]), 6),
            "us_top_symbol": lead["us_top_symbol"], "china_top_symbol": lead["china_top_symbol"],
            "sectors": [{"sector": r.sector, "spread": round(float(r.spread), 6), "z": round(float(r.zscore), 3),
                         "us_top_symbol": r.us_top_symbol, "china_top_symbol": r.china_top_symbol} for r in g.itertuples()],
            "headlines": headlines,
        })
    return alerts


def emit_divergence_events(alerts: list[dict[str, Any]], run_name: str) -> int:
    """An `aimoves.divergence` event per alert, on the resource `aimoves.divergence.<date>`."""
    from prefect.events import emit_event

    for alert in alerts:
        emit_event(
            event="aimoves.divergence",
            resource={"prefect.resource.id": f"aimoves.divergence.{alert['date']}", "prefect.resource.name": f"divergence {alert['date']}"},
            related=[{"prefect.resource.id": f"aimoves.run.{run_name}", "prefect.resource.role": "run", "prefect.resource.name": run_name}],
            payload=alert,
        )
    return len(alerts)


def publish_digest(data_dir: Path, day: object) -> Path | None:
    """Write the digest of `day` under `<data_dir>/_digests/` and link it as an artifact; None when nothing could be shown."""
    from prefect.artifacts import create_link_artifact

    from aimoves.digest import DigestError, write_digest

    if "://" in str(data_dir):  # NOTE: the digest renders from local files; on object storage run `aimoves digest` where they are
        log.info("no digest for %s: the digest is written for a local data dir only", data_dir)
        return None
    try:
        result = write_digest(data_dir, Path(data_dir) / "_digests", day)
    except DigestError as exc:
        log.warning("no digest: %s", exc)
        return None
    note = f" (missing: {'; '.join(result.warnings)})" if result.warnings else ""
    create_link_artifact(result.html.resolve().as_uri(), link_text=f"Digest {result.day}", key="digest",
                         description=f"Daily digest of {result.day}: heat map, divergence, movers, data quality{note}")
    return result.html


def publish_derived(summary: Any, data_dir: Path, run_name: str, digest_day: object | None = None) -> None:
    """Everything a run reports about its datasets: assets, divergence events, and the digest when asked."""
    report_assets(summary, data_dir)
    report = getattr(summary, "divergence", None)
    if report is not None and getattr(report, "window", ""):
        start, _, end = report.window.partition("..")
        emit_divergence_events(divergence_alerts(data_dir, start, end), run_name)
    if digest_day is not None:
        publish_digest(data_dir, digest_day)
