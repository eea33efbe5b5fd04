"""What a run shows in the Prefect UI: markdown and tables built from its summary (plain functions)."""

from __future__ import annotations


import pandas as pd

from aimoves.catalog import Catalog
from aimoves.runs import RunSummary

QUARANTINE_ALERT_SHARE = 0.05  # more than this share of a run's rows quarantined: the quarantine event fires


def _pct(value: object) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{float(value):+.2%}"


def sector_moves_markdown(sectors: pd.DataFrame, run_name: str) -> str:
    """Best and worst sector per region on the latest date of the run, then every sector."""
    if sectors.empty:
        return f"# Sector moves — {run_name}\n\nNo sector moves were computed in this run."
    day = sectors.loc[sectors["market_open"], "date"].max() if sectors["market_open"].any() else sectors["date"].max()
    today = sectors[sectors["date"] == day]
    lines = [f"# Sector moves on {pd.Timestamp(day).date()} — {run_name}", "",
             "Equal-weighted returns; US, HK, CN in local currency, ALL in USD.", "",
             "| region | open | best sector | return | worst sector | return | sectors |", "|---|---|---|---:|---|---:|---:|"]
    for region, g in today.groupby("region", sort=False):
        traded = g.dropna(subset=["ret_ew"])
        if traded.empty:
            lines.append(f"| {region} | {'yes' if g['market_open'].any() else 'closed'} | – | – | – | – | 0 |")
            continue
        best, worst = traded.loc[traded["ret_ew"].idxmax()], traded.loc[traded["ret_ew"].idxmin()]
        lines.append(f"| {region} | yes | {best['sector']} | {_pct(best['ret_ew'])} | {worst['sector']} | {_pct(worst['ret_ew'])} | {len(traded)} |")
    lines += ["", "| region | sector | ret_ew | ret_cw | ret_ew_usd | excess | traded/members | top | bottom |", "|---|---|---:|---:|---:|---:|---:|---|---|"]
    closed = sorted(today.loc[~today["market_open"], "region"].unique())
    for _, r in today[today["market_open"]].sort_values(["region", "ret_ew"]).iterrows():
        top = f"{r['top_symbol']} {_pct(r['top_ret'])}" if isinstance(r["top_symbol"], str) else "–"
        bottom = f"{r['bottom_symbol']} {_pct(r['bottom_ret'])}" if isinstance(r["bottom_symbol"], str) else "–"
        lines.append(f"| {r['region']} | {r['sector']} | {_pct(r['ret_ew'])} | {_pct(r['ret_cw'])} | {_pct(r['ret_ew_usd'])} | "
                     f"{_pct(r['excess_vs_benchmark'])} | {int(r['n_traded'])}/{int(r['n_members'])} | {top} | {bottom} |")
    if closed:
        lines += ["", f"Closed that day: {', '.join(closed)} (no returns, never a 0% bar)."]
    return "\n".join(lines)


def data_quality_markdown(summary: RunSummary) -> str:
    lines = ["# Data quality", "", "| dataset | market | passed | flagged | quarantined | failing expectations |", "|---|---|---:|---:|---:|---|"]
    for m in summary.markets:
        if m.closed:
            lines.append(f"| prices | {m.market} | – | – | – | market closed: {m.closed} |")
            continue
        checks = ", ".join(f"`{k}` ({v})" for k, v in sorted(m.failed_expectations.items())) or "none"
        lines.append(f"| prices | {m.market} | {m.passed:,} | {m.flagged:,} | {m.quarantined:,} | {checks} |")
    if summary.fx:
        checks = ", ".join(f"`{k}` ({v})" for k, v in sorted((summary.fx.get("failed_expectations") or {}).items())) or "none"
        lines.append(f"| fx | all | {summary.fx.get('passed', 0):,} | – | {summary.fx.get('quarantined', 0):,} | {checks} |")
    for report in (summary.stock_moves, summary.sector_moves):
        if report is not None and report.window:
            checks = ", ".join(f"`{k}` ({v})" for k, v in sorted((report.failed_expectations or {}).items())) or "none"
            lines.append(f"| {report.dataset} | all | {report.passed:,} | {report.flagged:,} | {report.quarantined:,} | {checks} |")
    blocked = summary.sector_moves.blocked if summary.sector_moves is not None else None
    if blocked:
        lines += ["", f"Sector moves not computed where the prices batch failed: {', '.join(blocked)}."]
    return "\n".join(lines)


FAILED_SYMBOLS_SHOWN = 500  # rows of the UI's table; the run record under _runs/ has every one


def failed_symbols_table(summary: RunSummary, limit: int = FAILED_SYMBOLS_SHOWN) -> list[dict]:
    rows = [{"market": m.market, "symbol": f["symbol"], "reason": f["reason"]} for m in summary.markets for f in m.failures]
    rows += [{"market": "FX", "symbol": f["symbol"], "reason": f["reason"]} for f in (summary.fx or {}).get("failures", [])]
    if len(rows) > limit:
        more = len(rows) - limit + 1
        record = Catalog(summary.data_dir).run_record_path(summary.run_id)
        rows = rows[: limit - 1] + [{"market": "", "symbol": f"… {more:,} more", "reason": f"all {len(rows):,} are in {record}"}]
    return rows


def written_markdown(summary: RunSummary) -> str:
    catalog = Catalog(summary.data_dir)
    lines = ["# Written", "", f"Data dir: `{catalog.root}`", ""]
    for m in summary.markets:
        for part in m.partitions_written:
            lines.append(f"- prices: [`{catalog.path('prices', part)}`]({catalog.fs.unstrip_protocol(catalog.path('prices', part))})")
        if m.raw_path:
            lines.append(f"- raw fetch {m.market}: `{m.raw_path}`")
    for report in (summary.stock_moves, summary.sector_moves):
        for part in (getattr(report, "partitions_written", None) or []):
            lines.append(f"- {report.dataset}: [`{catalog.path(report.dataset, part)}`]({catalog.fs.unstrip_protocol(catalog.path(report.dataset, part))})")
    if len(lines) == 4:
        lines.append("Nothing changed: every partition already held these rows.")
    lines.append(f"- run record: `{catalog.run_record_path(summary.run_id)}`")
    return "\n".join(lines)


def quarantine_share(summary: RunSummary) -> float:
    passed = sum(m.passed for m in summary.markets)
    quarantined = sum(m.quarantined for m in summary.markets)
    return quarantined / (passed + quarantined) if passed + quarantined else 0.0
