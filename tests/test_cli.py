"""The `aimoves` command as a user runs it (subprocesses; one pays the engine start)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest


def aimoves(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aimoves", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_on_every_command(tmp_path: Path) -> None:
    for command in ([], ["backfill"], ["daily"], ["universe"]):
        result = aimoves(*command, "--help", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "Usage" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["backfill", "--start", "2025-01-02", "--end", "2025-01-01", "--source", "simulated"], "--end 2025-01-01 is before --start"),
        (["backfill", "--start", "2025-13-02", "--end", "2025-01-01"], "is not a date"),
        (["backfill", "--start", "2025-01-02", "--end", "2025-01-03", "--markets", "US,JP"], "unknown market(s) JP"),
        (["backfill", "--start", "2025-01-02", "--end", "2025-01-03", "--source", "csv"], "--source csv needs --csv-dir"),
        (["daily", "--universe", "missing.yaml"], "universe file not found"),
    ],
)
def test_bad_options_fail_fast_with_a_clear_message(tmp_path: Path, args: list[str], message: str) -> None:
    result = aimoves(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr.replace("\n", " ")
    assert "Starting Prefect" not in result.stderr  # failed before the engine started


def test_bad_universe_names_line_and_field(tmp_path: Path) -> None:
    (tmp_path / "u.yaml").write_text("stocks:\n  - {symbol: NVDA, name: N, market: US, sector: chips}\n")
    result = aimoves("universe", "--universe", "u.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "u.yaml, line 2: stocks[0] (NVDA).sector" in result.stderr


@pytest.mark.flow
def test_backfill_end_to_end_strict(tmp_path: Path, small_universe_file: Path) -> None:
    result = aimoves(
        "backfill", "--source", "simulated", "--start", "2025-01-20", "--end", "2025-02-07", "--markets", "US,HK",
        "--universe", str(small_universe_file), "--data-dir", "out", "--inject-defects", "--strict", cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr  # --strict: rows were quarantined
    assert "--strict" in result.stderr
    assert "Wrote prices to out/prices" in " ".join(result.stdout.split())
    prices = pd.read_parquet(tmp_path / "out" / "prices")
    assert set(prices["market"]) == {"US", "HK"}
    assert len(pd.read_parquet(tmp_path / "out" / "quarantine" / "prices")) >= 4
    top = sorted(p.name for p in (tmp_path / "out").iterdir())
    datasets = {"prices", "fx", "stock_moves", "sector_moves", "divergence", "news", "quarantine", "raw"}
    assert all(name in datasets or name.startswith("_") for name in top), top
