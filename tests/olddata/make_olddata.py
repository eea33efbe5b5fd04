"""Rebuild `tests/olddata/data/`: a small data dir written by the code of main before the Catalog.

The fixture pins what a data dir made by earlier releases looks like on disk (tests/test_store.py
checks that today's code reads, appends to and derives from it). Made with commit 89782d5:

    git archive 89782d5 | tar -x -C /tmp/old
    cd /tmp/old/aimoves && ln -s ../flows flows && ln -s ../tasks tasks && ln -s ../expectations expectations
    rm -rf tests/olddata/data && PYTHONPATH=/tmp/old python tests/olddata/make_olddata.py tests/olddata/data
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime
from pathlib import Path

from aimoves import pipeline
from aimoves.flows.prices import PLAIN_STEPS, run_prices
from aimoves.universe import parse_universe

UNIVERSE = """
benchmarks: {US: "^GSPC", HK: "^HSI"}
fx: {HKD: "HKDUSD=X", CNY: "CNYUSD=X"}
stocks:
  - {symbol: NVDA, name: NVIDIA, market: US, sector: semiconductors, shares_outstanding: 24400000000}
  - {symbol: MSFT, name: Microsoft, market: US, sector: cloud, shares_outstanding: 7430000000}
  - {symbol: 0981.HK, name: SMIC, market: HK, sector: semiconductors, company: smic}
  - {symbol: 3896.HK, name: Kingsoft Cloud, market: HK, sector: cloud}
"""
START, END = date(2025, 1, 2), date(2025, 1, 17)
NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)


def main(data_dir: Path) -> None:
    universe = parse_universe(UNIVERSE, "olddata")
    plans = [pipeline.plan_backfill(universe, m, START, END) for m in ("US", "HK")]
    settings = pipeline.SourceSettings("simulated", inject_defects=True, news="simulated")
    run_prices("backfill", plans, settings, universe, data_dir, steps=PLAIN_STEPS, now=NOW)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
