"""The production shape end to end: PostgreSQL, a Prefect server on it, `prefect deploy --all`, two process workers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import SMALL_UNIVERSE
from teamkit import Team, team, wait_for_runs, wait_for_workers

pytestmark = [pytest.mark.team, pytest.mark.flow]

DAILY = ("daily/daily-us", "daily/daily-hk", "daily/daily-cn")


@pytest.fixture(scope="session")
def team_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    tmp = tmp_path_factory.mktemp("team")
    with team(tmp) as t:
        wait_for_workers(t, set(t.workers))
        yield t


def test_daily_deployments_run_on_both_workers(team_stack: Team, tmp_path: Path) -> None:
    from prefect.deployments import run_deployment

    t = team_stack
    universe = tmp_path / "universe.yaml"
    universe.write_text(SMALL_UNIVERSE)
    data = tmp_path / "data"
    overrides = {"source": "simulated", "data_dir": str(data), "universe": str(universe), "day": "2025-01-27"}
    with t.settings():
        runs = [run_deployment(name, parameters=overrides, timeout=0) for name in DAILY]
    finished = wait_for_runs(t, [r.id for r in runs], timeout=240)
    assert [r.state.type.value for r in finished] == ["COMPLETED"] * 3, [(r.name, r.state.message) for r in finished]
    for market in ("US", "HK", "CN"):
        assert list((data / "prices" / f"market={market}").rglob("*.parquet")), market
    deadline = time.monotonic() + 30  # events reach the database a moment after the runs end
    while True:
        taken = t.workers_of_runs()
        if all(str(r.id) in taken for r in runs) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert {taken.get(str(r.id)) for r in runs} == {"worker-1", "worker-2"}, taken


def test_a_chunked_backfill_is_shared_by_the_workers(team_stack: Team, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.deployments import run_deployment

    t = team_stack
    universe = tmp_path / "universe.yaml"
    universe.write_text(SMALL_UNIVERSE)
    data = tmp_path / "data"
    params = {"start": "2025-01-02", "end": "2025-01-31", "markets": ["US"], "source": "simulated", "data_dir": str(data),
              "universe": str(universe), "batch_size": 2}
    with t.settings():
        parent = run_deployment("chunked-backfill/chunked-backfill", parameters=params, timeout=0)
    (finished,) = wait_for_runs(t, [parent.id], timeout=300)
    assert finished.state.is_completed(), finished.state.message
    with t.settings(), get_client(sync_client=True) as client:
        chunks = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent.id])))
    assert sorted(r.name for r in chunks) == ["prices-US-2025-b1of2", "prices-US-2025-b2of2", "sector_moves-ALL-2025",
                                              "stock_moves-US-2025-b1of2", "stock_moves-US-2025-b2of2"]
    assert all(r.state.is_completed() for r in chunks)
    for dataset in ("prices", "stock_moves", "sector_moves"):
        assert list((data / dataset).rglob("*.parquet")), dataset
    deadline = time.monotonic() + 30
    while True:
        taken = t.workers_of_runs()
        if all(str(r.id) in taken for r in [finished, *chunks]) or time.monotonic() > deadline:
            break
        time.sleep(1)
    # The parent holds one of its worker's two slots while it waits, so the other worker takes chunks too.
    assert {taken.get(str(r.id)) for r in [finished, *chunks]} == {"worker-1", "worker-2"}, taken
