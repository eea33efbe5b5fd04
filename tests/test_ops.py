"""Operator commands on a data dir built with plain pipeline functions (no Prefect)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from aimoves.planning import plan_backfill
from aimoves.quarantine import quarantine_for_write, write_quarantine
from aimoves.run import prices_for_write, write_prices
from aimoves.errors import AimovesError
from aimoves.normalize import normalize_prices
from aimoves.ops import quarantined_prices, release_prices, status
from aimoves.sources.simulated import SimulatedSource
from aimoves.universe import parse_universe
from aimoves.validate import validate_prices

UNIVERSE = parse_universe("stocks:\n  - {symbol: NVDA, name: NVIDIA, market: US, sector: semiconductors}\n  - {symbol: AMD, name: AMD, market: US, sector: semiconductors}\n", "u")
NOW = datetime(2025, 3, 3, 23, 0, tzinfo=UTC)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    plan = plan_backfill(UNIVERSE, "US", date(2025, 2, 3), date(2025, 2, 28))
    batch = SimulatedSource({}, inject_defects=True).fetch_prices(plan.request)
    normalized = normalize_prices(batch, "US")
    checked = validate_prices(normalized.prices, "US", list(plan.request.symbols), NOW.date())
    write_quarantine(quarantine_for_write(checked, normalized, batch, plan, "run1", NOW), tmp_path)
    write_prices(prices_for_write(checked, plan, NOW), tmp_path)
    return tmp_path


def test_status_reports_latest_sessions_freshness_and_quarantine(data_dir: Path) -> None:
    st = status(data_dir, NOW)
    prices_us = next(r for r in st.rows if r["dataset"] == "prices" and r["market"] == "US")
    assert prices_us["latest"] == date(2025, 2, 28)
    assert prices_us["expected"] == date(2025, 3, 3)  # 23:00 UTC: the 3 March NYSE session has closed
    assert prices_us["fresh"] is False
    assert next(r for r in st.rows if r["dataset"] == "prices" and r["market"] == "HK")["latest"] is None
    assert st.quarantine["prices"] == len(quarantined_prices(data_dir)) >= 3


def test_status_of_a_missing_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AimovesError, match="no data dir"):
        status(tmp_path / "nope")


def test_release_revalidates_and_never_releases_silently(data_dir: Path) -> None:
    q = quarantined_prices(data_dir)
    glitch = q[q["expectation"] == "no_unit_glitch"].iloc[0]
    negative = q[q["expectation"] == "low_positive"].iloc[0]

    result = release_prices(data_dir, UNIVERSE, [glitch["row_id"], negative["row_id"]], accept=[], now=NOW)
    assert result.released.empty and len(result.kept) == 2  # still failing: nothing written
    assert len(quarantined_prices(data_dir)) == len(q)

    result = release_prices(data_dir, UNIVERSE, [glitch["row_id"]], accept=["no_unit_glitch"], now=NOW)
    assert list(result.released["dq_flags"].iloc[0]) == ["released:no_unit_glitch"]
    prices = pd.read_parquet(data_dir / "prices")
    prices["date"] = pd.to_datetime(prices["date"])
    row = prices[(prices.symbol == glitch["symbol"]) & (prices.date == glitch["date"])]
    assert len(row) == 1 and row["adj_close"].iloc[0] == pytest.approx(glitch["adj_close"])
    assert glitch["row_id"] not in set(quarantined_prices(data_dir)["row_id"])
    with pytest.raises(AimovesError, match="not in quarantine"):
        release_prices(data_dir, UNIVERSE, ["nope"], accept=[], now=NOW)
