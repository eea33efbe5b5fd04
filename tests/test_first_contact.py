"""Issue 9 items 10 and 11: what an analyst copies from the README works, and the report reads right."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_block(after: str) -> str:
    """The first ```python block after the line containing `after`."""
    text = README.read_text()
    found = re.search(re.escape(after) + r".*?```python\n(.*?)```", text, re.S)
    assert found, f"no python block after {after!r} in the README"
    return found.group(1)


def test_readme_quarantine_snippet_works_when_nothing_was_quarantined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data" / "prices").mkdir(parents=True)  # a data dir whose runs quarantined nothing
    monkeypatch.chdir(tmp_path)
    code = _readme_block("Quarantined rows and their reasons")
    *setup, last = code.strip().splitlines()
    namespace: dict = {"pd": pd}
    exec("\n".join(setup), namespace)  # noqa: S102 - our own README's snippet
    frame = eval(last, namespace)  # noqa: S307 - its last line, the expression a notebook would show
    assert frame.empty and list(frame.columns) == ["date", "symbol", "expectation", "reason"]
    assert not (tmp_path / "data" / "quarantine").exists()


def test_analyst_dates_compare_with_datetime_date(tmp_path: Path) -> None:
    """`df.date == datetime.date(2025, 1, 27)` selects the day, as with pd.read_parquet."""
    from aimoves.api import load_stock_moves
    from aimoves.schema import STOCK_MOVES
    from aimoves.store import upsert

    frame = pd.DataFrame({
        "date": pd.to_datetime(["2025-01-24", "2025-01-27"]), "symbol": ["NVDA", "NVDA"], "market": ["US", "US"],
        "sector": ["semiconductors"] * 2, "ret": [0.01, -0.17], "ret_usd": [0.01, -0.17],
        "prev_date": pd.to_datetime(["2025-01-23", "2025-01-24"]), "zscore": [0.2, -6.0], "big_move": [False, True],
        "news_ids": [[], []], "dq_flags": [[], []], "year": [2025, 2025],
    })
    for name in STOCK_MOVES.schema.names:  # the other columns null
        if name not in frame:
            frame[name] = None
    upsert(frame, STOCK_MOVES, tmp_path)
    moves = load_stock_moves(data_dir=tmp_path)
    day = moves[moves.date == date(2025, 1, 27)]
    assert list(day["ret"]) == [-0.17]
    by_reader = pd.read_parquet(tmp_path / "stock_moves")
    assert (by_reader.date == date(2025, 1, 27)).sum() == 1  # the same comparison works on what the files hold


def test_report_names_a_benchmark_big_move_without_nan() -> None:
    """The event report's markdown listed the CSI 300 as a big move "(CN, nan)"."""
    from aimoves.report import _headlines_markdown

    big = pd.DataFrame([
        {"date": date(2025, 1, 27), "symbol": "000300.SS", "market": "CN", "sector": np.nan, "ret": -0.031, "zscore": -3.4, "headlines": []},
        {"date": date(2025, 1, 27), "symbol": "NVDA", "market": "US", "sector": "semiconductors", "ret": -0.17, "zscore": -6.0, "headlines": []},
    ])
    text = _headlines_markdown(big)
    assert "nan" not in text
    assert "**2025-01-27 000300.SS** (CN, benchmark index)" in text
    assert "**2025-01-27 NVDA** (US, semiconductors)" in text


def test_status_and_report_agree_on_a_missing_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both refuse a missing data dir as a configuration error (exit 2), in-process through Typer."""
    from typer.testing import CliRunner

    from aimoves.cli import app

    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    codes = {cmd[0]: runner.invoke(app, [*cmd, "--data-dir", "nowhere"]).exit_code
             for cmd in (["status"], ["report", "--event", "2025-01-27"], ["derive", "--start", "2025-01-27"])}
    assert codes == {"status": 2, "report": 2, "derive": 2}
