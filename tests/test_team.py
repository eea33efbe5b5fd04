"""The production shape end to end: PostgreSQL, a Prefect server on it, `prefect deploy --all`, two process workers.

One stack for the module and one batch of runs: the three daily deployments and a chunked backfill
are triggered together, so the four worker slots (two workers, `--limit 2`) stay busy and the module
pays the ~5 s subprocess start of each of its nine flow runs mostly in parallel. The runs take their
data location from the server's Variable aimoves-data-dir (prefect.yaml and the parameters name none).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import SMALL_UNIVERSE
from teamkit import Team, team, wait_for_runs

pytestmark = [pytest.mark.team, pytest.mark.flow]

DAILY = ("daily/daily-us", "daily/daily-hk", "daily/daily-cn")


@pytest.fixture(scope="module")
def team_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    tmp = tmp_path_factory.mktemp("team")
    with team(tmp) as t:
        yield t
    print(f"\nteam stack timings (s): {', '.join(f'{k} {v:.1f}' for k, v in t.timings.items())}")


def test_daily_runs_and_a_chunked_backfill_are_shared_by_both_workers(team_stack: Team, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.deployments import run_deployment

    t = team_stack
    universe = tmp_path / "universe.yaml"
    universe.write_text(SMALL_UNIVERSE)
    common = {"source": "simulated", "universe": str(universe)}
    backfill = {**common, "start": "2025-01-02", "end": "2025-01-31", "markets": ["US"], "batch_size": 2}
    with t.settings():
        parent = run_deployment("chunked-backfill/chunked-backfill", parameters=backfill, timeout=0)
        daily = [run_deployment(name, parameters={**common, "day": "2025-01-27"}, timeout=0) for name in DAILY]
    finished = wait_for_runs(t, [parent.id, *(r.id for r in daily)], timeout=600)
    assert [r.state.type.value for r in finished] == ["COMPLETED"] * 4, [(r.name, r.state.message) for r in finished]
    with t.settings(), get_client(sync_client=True) as client:
        chunks = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent.id])))
    # The backfill split: two symbol batches of US prices and of stock moves, one sector chunk, each a run on the pool.
    assert sorted(r.name for r in chunks) == ["prices-US-2025-b1of2", "prices-US-2025-b2of2", "sector_moves-ALL-2025",
                                              "stock_moves-US-2025-b1of2", "stock_moves-US-2025-b2of2"]
    assert all(r.state.is_completed() for r in chunks)
    for dataset in ("prices/market=US", "prices/market=HK", "prices/market=CN", "stock_moves", "sector_moves"):
        assert list((t.data / dataset).rglob("*.parquet")), dataset  # where the Variable aimoves-data-dir says
    taken = t.workers_of([*(r.id for r in finished), *(r.id for r in chunks)])
    assert set(taken.values()) == {"worker-1", "worker-2"}, taken
