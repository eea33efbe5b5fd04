"""The bad-input corpus (tests/badinputs/): every case's expected outcome is asserted.

Each prices case runs the whole recipe (plain steps, no engine) into a copy of a data dir that
already holds NVDA's earlier bars; nothing stored before may be lost, whatever the case.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import yaml

from aimoves.planning import plan_backfill
from aimoves.run import run_prices
from aimoves.runs import RunFailed, RunSummary
from aimoves.sources.factory import SourceSettings
from aimoves.errors import ConfigError
from aimoves.universe import load_universe, parse_universe

CORPUS = Path(__file__).parent / "badinputs"
EXPECTED: dict[str, dict] = yaml.safe_load((CORPUS / "expected.yaml").read_text())
UNIVERSE = parse_universe("stocks:\n  - {symbol: NVDA, name: NVIDIA, market: US, sector: semiconductors}\n", "nvda-only")
START = date(2025, 1, 27)
EARLIER = "Date,Open,High,Low,Close,Adj Close,Volume\n" + "\n".join(
    f"{d.date()},{100 + i:.2f},{102 + i:.2f},{99 + i:.2f},{101 + i:.2f},{101 + i:.2f},150000000"
    for i, d in enumerate(pd.bdate_range("2025-01-02", "2025-01-24"))
    if d.date() not in (date(2025, 1, 9), date(2025, 1, 20))
) + "\n"


def _data_lines(path: Path) -> int:
    """Non-blank lines of a CSV case after its header (1 line, or 3 for yfinance's to_csv())."""
    lines = [line for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    return len(lines) - (3 if lines and lines[0].startswith("Price") else 1)


def _record(case: str, outcome: str, klass: str | None = None) -> None:
    out = os.environ.get("AIMOVES_RELIABILITY_OUT")
    if out:
        with open(out, "a") as f:
            row = {"kind": "bad input", "point": case, "outcome": outcome, "verdict": "ok", "class": klass or EXPECTED.get(case, {}).get("class")}
            f.write(json.dumps(row) + "\n")


def _run(data_dir: Path, csv_dir: Path, end: date) -> RunSummary:
    plan = plan_backfill(UNIVERSE, "US", START if end >= START else end, end)
    try:
        return run_prices("backfill", [plan], SourceSettings("csv", csv_dir), UNIVERSE, data_dir)
    except RunFailed as exc:
        exc.summary.markets[0].notes.append(f"run failed: {exc}")
        return exc.summary


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding NVDA's bars of 2025-01-02..2025-01-24."""
    root = tmp_path_factory.mktemp("badinputs")
    (root / "csv").mkdir()
    (root / "csv" / "NVDA.csv").write_text(EARLIER)
    plan = plan_backfill(UNIVERSE, "US", date(2025, 1, 2), date(2025, 1, 24))
    run_prices("backfill", [plan], SourceSettings("csv", root / "csv"), UNIVERSE, root / "data")
    return root / "data"


def test_the_corpus_is_complete() -> None:
    files = {p.name for p in CORPUS.iterdir() if p.name != "expected.yaml"}
    assert files == set(EXPECTED), files ^ set(EXPECTED)
    assert len(EXPECTED) >= 25


PRICE_CASES = sorted(k for k, v in EXPECTED.items() if v["kind"] == "prices")


@pytest.mark.parametrize("case", PRICE_CASES)
def test_prices_case(case: str, stored: Path, tmp_path: Path) -> None:
    expected = EXPECTED[case]
    data_dir = tmp_path / "data"
    shutil.copytree(stored, data_dir)
    before = pd.read_parquet(data_dir / "prices")
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    shutil.copy(CORPUS / case, csv_dir / "NVDA.csv")
    end = expected.get("window_end", date(2025, 2, 7))
    summary = _run(data_dir, csv_dir, end)
    report = summary.markets[0]

    after = pd.read_parquet(data_dir / "prices")
    kept = before.merge(after, on=["symbol", "date"], suffixes=("", "_after"))
    assert len(kept) == len(before) and (kept["close"] == kept["close_after"]).all(), "earlier rows were lost or changed"
    window = after[pd.to_datetime(after["date"]) >= pd.Timestamp(START)]
    if "failure" in expected:
        assert report.failures and expected["failure"] in report.failures[0]["reason"], report.failures
        assert window.empty
        _record(case, f"failure record: {report.failures[0]['reason']}")
        return
    assert len(window) == expected["written"], (len(window), report)
    quarantine = pd.read_parquet(data_dir / "quarantine" / "prices") if (data_dir / "quarantine" / "prices").exists() else pd.DataFrame(columns=["expectation", "reason", "date"])
    quarantine = quarantine[quarantine["date"].isna() | (pd.to_datetime(quarantine["date"]) >= pd.Timestamp(START))]
    counts = quarantine["expectation"].str.split(",").explode().value_counts().to_dict() if len(quarantine) else {}
    for name, n in (expected.get("quarantined") or {}).items():
        assert counts.get(name) == n, counts
    if not expected.get("quarantined"):
        assert quarantine.empty, quarantine[["expectation", "reason"]]
    # Every input row ends in exactly one place (issue 10.6): written, quarantined by this run (the
    # summary's count is what was stored), or counted (identical duplicate, empty bar, live bar).
    assert len(quarantine[quarantine["run_id"] == summary.run_id] if len(quarantine) else quarantine) == report.quarantined
    counted = report.passed + report.quarantined + report.duplicates_collapsed + report.empty_bars_dropped + report.unsettled_dropped
    assert counted == _data_lines(CORPUS / case), (counted, report)
    if "reason" in expected:
        assert any(expected["reason"] in r for r in quarantine["reason"]), list(quarantine["reason"])
    flags = window["dq_flags"].explode().value_counts().to_dict()
    for name, n in (expected.get("flagged") or {}).items():
        assert flags.get(name) == n, flags
    if "empty_bars" in expected:
        assert report.empty_bars_dropped == expected["empty_bars"]
    reasons = "; ".join(sorted(set(quarantine["reason"]))) if len(quarantine) else ""
    _record(case, f"{len(window)} rows written" + (f"; quarantined: {reasons}" if reasons else "") + (f"; flagged: {flags}" if flags else ""))


@pytest.mark.parametrize("case", sorted(k for k, v in EXPECTED.items() if v["kind"] == "universe"))
def test_universe_case(case: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_universe(CORPUS / case)
    for text in EXPECTED[case]["error"]:
        assert text in str(info.value)
    assert case in str(info.value)  # names the file
    _record(case, str(info.value).replace("\n", " "))


def test_truncated_raw_payload_is_reported_not_fatal(stored: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(stored, data_dir)
    before = pd.read_parquet(data_dir / "prices")
    fetch = next((data_dir / "raw" / "prices").glob("*/*/*"))
    shutil.copy(CORPUS / "truncated_raw.parquet", fetch / "NVDA.csv")  # the csv payload replaced by junk
    manifest = json.loads((fetch / "manifest.json").read_text())
    manifest["payloads"] = [{"name": "NVDA.csv", "kind": "table", "rows": 2}]
    (fetch / "manifest.json").write_text(json.dumps(manifest))
    plan = plan_backfill(UNIVERSE, "US", date(2025, 1, 2), date(2025, 1, 24))
    with pytest.raises(RunFailed) as info:
        run_prices("backfill", [plan], SourceSettings("replay"), UNIVERSE, data_dir)
    report = info.value.summary.markets[0]
    assert any(EXPECTED["truncated_raw.parquet"]["note"] in n for n in report.notes), report.notes
    pd.testing.assert_frame_equal(pd.read_parquet(data_dir / "prices"), before)
    _record("truncated_raw.parquet", f"replay: {next(n for n in report.notes if 'unreadable' in n)}; stored prices unchanged")





NEWS_CASES = sorted(k for k, v in EXPECTED.items() if v["kind"] == "news")
NEWS_UNIVERSE = """
feeds: [{feed}]
stocks:
  - {{symbol: NVDA, name: NVIDIA, market: US, sector: semiconductors, aliases: [Nvidia]}}
  - {{symbol: AVGO, name: Broadcom, market: US, sector: semiconductors}}
  - {{symbol: 3896.HK, name: Kingsoft Cloud, market: HK, sector: cloud}}
  - {{symbol: 0981.HK, name: SMIC, market: HK, sector: semiconductors, aliases: [SMIC]}}
"""


@pytest.mark.parametrize("case", NEWS_CASES)
def test_news_case(case: str, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from aimoves.news.stage import update_news
    from aimoves.news.store import load_news

    expected = EXPECTED[case]
    universe = parse_universe(NEWS_UNIVERSE.format(feed=json.dumps(str(CORPUS / case))), "news-universe")
    data_dir = tmp_path / "data"
    now = datetime(2026, 1, 5, tzinfo=UTC)
    result = update_news("rss", universe, ["US", "HK"], date(2025, 1, 20), date(2025, 2, 7), data_dir, "run1", now)
    if "failure" in expected:
        reasons = [f["reason"] for f in result["failures"]]
        assert any(expected["failure"] in r for r in reasons), reasons
        manifest = next((data_dir / "raw" / "news").rglob("manifest.json"))
        assert json.loads(manifest.read_text())["payloads"] == []  # a rejected file is not copied into raw/
        secret = expected.get("secret", "\0never")
        raw = b"".join(p.read_bytes() for p in (data_dir / "raw").rglob("*") if p.is_file())
        assert secret.encode() not in raw and not any(secret in r for r in reasons)
        assert not (data_dir / "news").exists()
        _record(case, f"refused, nothing stored in raw/: {'; '.join(reasons)}", expected.get("class"))
        return
    assert result is not None and not result.get("batch_error"), result
    stored = load_news(data_dir)
    assert len(stored) == expected["rows"], stored[["title", "url"]] if len(stored) else result
    for name, n in (expected.get("quarantined") or {}).items():
        assert result["failed_expectations"].get(name) == n, result["failed_expectations"]
    if "title" in expected:
        assert stored["title"].iloc[0] == expected["title"]
    if "summary" in expected:
        assert stored["summary"].iloc[0] == expected["summary"]
    if "symbols" in expected:
        assert [sorted(s) for s in stored["symbols"]] == expected["symbols"]
    if expected.get("url_null"):
        assert stored["url"].isna().all()
    for name, n in (expected.get("flagged") or {}).items():
        assert int(stored["dq_flags"].map(lambda f: name in list(f)).sum()) == n, stored["dq_flags"]
    if "note" in expected:
        assert any(expected["note"] in n for n in result["notes"]), result["notes"]
    outcome = f"{len(stored)} stored"
    if result["failed_expectations"]:
        outcome += f"; checks failed: {result['failed_expectations']}"
    if len(stored):
        outcome += f"; title {stored['title'].iloc[0]!r}, symbols {[list(s) for s in stored['symbols']]}"
    _record(case, outcome)
