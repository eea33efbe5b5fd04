from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# A busy machine starts the embedded server slowly; Prefect gives up after 20 s by default.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

# AIMOVES_REALDATA points elsewhere (e.g. a worktree one level deeper than the main checkout).
REALDATA = Path(os.environ.get("AIMOVES_REALDATA") or Path(__file__).resolve().parents[2] / "shared" / "realdata")

SMALL_UNIVERSE = """
benchmarks: {US: "^GSPC", HK: "^HSI"}
fx: {HKD: "HKDUSD=X", CNY: "CNYUSD=X"}
stocks:
  - {symbol: NVDA, name: NVIDIA, market: US, sector: semiconductors, shares_outstanding: 24400000000}
  - {symbol: AMD, name: AMD, market: US, sector: semiconductors, shares_outstanding: 1620000000}
  - {symbol: MSFT, name: Microsoft, market: US, sector: cloud, shares_outstanding: 7430000000}
  - {symbol: 0981.HK, name: SMIC, market: HK, sector: semiconductors, company: smic}
  - {symbol: 3896.HK, name: Kingsoft Cloud, market: HK, sector: cloud}
  - {symbol: 688981.SS, name: SMIC A, market: CN, sector: semiconductors, company: smic}
"""

REALDATA_UNIVERSE = """
benchmarks: {}
stocks:
  - {symbol: NVDA, name: NVIDIA, market: US, sector: semiconductors}
  - {symbol: AMD, name: AMD, market: US, sector: semiconductors}
  - {symbol: AVGO, name: Broadcom, market: US, sector: semiconductors}
  - {symbol: TSM, name: TSMC, market: US, sector: semiconductors}
  - {symbol: 0981.HK, name: SMIC, market: HK, sector: semiconductors}
"""


@pytest.fixture
def small_universe_file(tmp_path: Path) -> Path:
    path = tmp_path / "universe.yaml"
    path.write_text(SMALL_UNIVERSE)
    return path


@pytest.fixture
def realdata_dir() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"{REALDATA} is absent (real data lives beside the project, never in it)")
    return REALDATA


@pytest.fixture(scope="session")
def yf_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """yfinance's time-zone cache in a temp folder, once per session.

    NOTE: yfinance keeps each symbol's time zone in an on-disk SQLite cache whose location can only
    be changed before its first use in the process; later set_tz_cache_location calls are ignored.
    """
    import yfinance as yf

    path = tmp_path_factory.mktemp("yfinance-cache")
    yf.set_tz_cache_location(str(path))
    return path


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the whole session (each start costs seconds)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "realdata" in item.keywords and not REALDATA.is_dir():
            item.add_marker(pytest.mark.skip(reason=f"{REALDATA} is absent"))
