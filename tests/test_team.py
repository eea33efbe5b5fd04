"""The production shape end to end: PostgreSQL, a Prefect server on it, `prefect deploy --all`, two process workers,
and the datasets on an S3-compatible server (moto's, on 127.0.0.1).

One stack for the module. The first test triggers one batch of runs, the three daily deployments and
a chunked backfill together, so the four worker slots (two workers, `--limit 2`) stay busy and the
module pays the ~5 s subprocess start of its flow runs mostly in parallel. The daily runs take their
data location from the server's Variable aimoves-data-dir (`s3://aimoves-team/team`; prefect.yaml
and their parameters name none); each backfill gets a location of its own as its `data_dir`
parameter, so that it can be compared with a local run of the same inputs (the dailies of one day
overlap a backfill's window, and which of them writes a day's moves last depends on the order the
workers took them). The second test SIGKILLs a worker in the middle of a chunked backfill, then
re-runs it on the worker left.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

import crashkit as ck
from conftest import SMALL_UNIVERSE
from teamkit import BUCKET, Team, alive, kill_group, team, wait_for_runs

pytestmark = [pytest.mark.team, pytest.mark.flow, pytest.mark.s3]

DAILY = ("daily/daily-us", "daily/daily-hk", "daily/daily-cn")
CHUNKED = "chunked-backfill/chunked-backfill"
# Two markets (HK brings FX), one symbol batch each: five chunk runs (prices and stock moves per market, sector moves),
# few because each costs a process start and the re-run after the kill has one worker (test_chunked splits symbols).
# Defects injected, so the quarantine is compared too.
WINDOW = {"source": "simulated", "start": "2025-01-02", "end": "2025-01-31", "markets": ["US", "HK"], "batch_size": 50,
          "inject_defects": True}
# A backfill writes prices, quarantine, FX and moves; news and divergence are the daily runs' (flows/chunked.py).
WRITTEN = ("prices", "quarantine/prices", "fx", "stock_moves", "sector_moves")


@pytest.fixture(scope="module")
def team_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    tmp = tmp_path_factory.mktemp("team")
    with team(tmp) as t:
        (t.tmp / "universe.yaml").write_text(SMALL_UNIVERSE)
        yield t
    print(f"\nteam stack timings (s): {', '.join(f'{k} {v:.1f}' for k, v in t.timings.items())}")


@pytest.fixture(scope="module")
def local_run(team_stack: Team) -> Callable[[], dict[str, pd.DataFrame]]:
    """The same chunked backfill run here, in this process, into a local folder: what the bucket must hold.

    Made on first call, once: a test calls it after triggering its runs, so that it overlaps their ~5 s subprocess starts."""
    from aimoves.flows.chunked import chunked_backfill

    t = team_stack
    made: dict[str, dict[str, pd.DataFrame]] = {}

    def frames() -> dict[str, pd.DataFrame]:
        if not made:
            args = {**WINDOW, "start": pd.Timestamp(WINDOW["start"]).date(), "end": pd.Timestamp(WINDOW["end"]).date()}
            with t.settings():  # the engine talks to the team server (no temporary server to start)
                chunked_backfill(**args, universe=str(t.tmp / "universe.yaml"), data_dir=str(t.tmp / "local"))
            made["local"] = ck.read_all(t.tmp / "local")
            assert all(len(made["local"][name]) for name in WRITTEN), {name: len(made["local"][name]) for name in WRITTEN}
        return made["local"]

    return frames


def _backfill(t: Team, prefix: str) -> Any:
    """Trigger the chunked backfill of WINDOW on the pool, writing to s3://aimoves-team/<prefix>."""
    from prefect.deployments import run_deployment

    with t.settings():
        return run_deployment(CHUNKED, parameters={**WINDOW, "universe": str(t.tmp / "universe.yaml"),
                                                   "data_dir": t.location(prefix)}, timeout=0)


def _chunks_of(t: Team, parent: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with t.settings(), get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent])))


def _keys(t: Team, prefix: str) -> list[str]:
    pages = t.s3.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/")
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _bucket(t: Team, prefix: str) -> dict[str, pd.DataFrame]:
    """Every dataset under s3://aimoves-team/<prefix>, read by pyarrow through its S3 filesystem, after reading each
    Parquet object there whole (a half-written object would fail here)."""
    fs = t.s3.arrow_fs()
    for key in _keys(t, prefix):
        if key.endswith(".parquet"):
            pq.read_table(f"{BUCKET}/{key}", filesystem=fs)
    return ck.read_all(f"{BUCKET}/{prefix}", fs)


def test_daily_runs_and_a_chunked_backfill_are_shared_by_both_workers_and_land_in_the_bucket(
        team_stack: Team, local_run: Callable[[], dict[str, pd.DataFrame]]) -> None:
    from prefect.deployments import run_deployment

    t = team_stack
    parent = _backfill(t, "backfill")
    with t.settings():
        daily = [run_deployment(name, parameters={"source": "simulated", "universe": str(t.tmp / "universe.yaml"), "day": "2025-01-27"},
                                timeout=0) for name in DAILY]
    want = local_run()
    finished = wait_for_runs(t, [parent.id, *(r.id for r in daily)], timeout=600)
    assert [r.state.type.value for r in finished] == ["COMPLETED"] * 4, [(r.name, r.state.message) for r in finished]
    chunks = _chunks_of(t, parent.id)
    # The backfill split: per market, prices and stock moves; one sector chunk. Each a run on the pool.
    assert sorted(r.name for r in chunks) == ["prices-HK-2025", "prices-US-2025", "sector_moves-ALL-2025", "stock_moves-HK-2025",
                                              "stock_moves-US-2025"]
    assert all(r.state.is_completed() for r in chunks)
    taken = t.workers_of([*(r.id for r in finished), *(r.id for r in chunks)])
    assert set(taken.values()) == {"worker-1", "worker-2"}, taken

    # The daily runs wrote where the Variable says: the bucket.
    keys = _keys(t, "team")
    for dataset in ("prices/market=US", "prices/market=HK", "prices/market=CN", "stock_moves", "sector_moves", "news"):
        assert any(k.startswith(f"team/{dataset}/") and k.endswith(".parquet") for k in keys), dataset
    team = _bucket(t, "team")  # readable, each object whole
    assert all(len(team[name]) for name in ("prices", "fx", "stock_moves", "sector_moves", "news")), {k: len(v) for k, v in team.items()}
    # The backfill's datasets read back from the bucket as the local run's, and nothing was left staged or locked.
    ck.assert_same(_bucket(t, "backfill"), want)
    assert not [k for k in _keys(t, "backfill") if k.startswith(("backfill/_staging", "backfill/_locks"))]


def test_a_worker_killed_mid_backfill_leaves_the_bucket_readable_and_a_rerun_completes_it(
        team_stack: Team, local_run: Callable[[], dict[str, pd.DataFrame]]) -> None:
    from prefect.client.orchestration import get_client

    t = team_stack
    parent = _backfill(t, "killed")
    # Wait until the backfill writes (a price chunk's first partition is in the bucket), then SIGKILL the worker that
    # runs the backfill's parent run: the worker, its flow-run subprocesses (the parent and any chunk it took), at once.
    deadline = time.monotonic() + 300
    while not any(k.startswith("killed/prices/") for k in _keys(t, "killed")):
        assert time.monotonic() < deadline, "the backfill wrote no prices in 300 s"
        time.sleep(0.2)
    victim = t.workers_of([parent.id])[str(parent.id)]
    assert victim in t.workers, victim
    survivor = next(name for name in t.workers if name != victim)
    running = [r.name for r in _chunks_of(t, parent.id) if r.state is not None and r.state.is_running()]
    killed = kill_group(t.workers[victim])
    print(f"\nkilled {victim} (pids {killed}) while these chunk runs were running on the pool: {running}")
    assert killed and not any(alive(pid) for pid in killed), killed  # the flow-run subprocesses died with their worker
    assert t.workers[survivor].poll() is None

    # Every object in the bucket reads whole, and the backfill is cut short: its last stage (sector moves) never ran.
    at_kill = _bucket(t, "killed")
    assert len(at_kill["prices"]) and at_kill["sector_moves"].empty, {k: len(v) for k, v in at_kill.items()}
    with t.settings(), get_client(sync_client=True) as client:
        # How the killed run is left: RUNNING. Nothing reports its death (its worker died with it). Its flow-run heartbeats
        # (PREFECT_FLOWS_HEARTBEAT_FREQUENCY, 180 s by default in Prefect 3.9) stop, but only an automation on their absence
        # (docs.prefect.io/v3/advanced/detect-zombie-flows) marks it Crashed: none here (and the automations service is
        # off in this stack). An operator cancels or deletes such a run.
        assert client.read_flow_run(parent.id).state.is_running()

    # The same backfill again: the worker left takes it (a lock the killed writer held lapses within its 30 s lease),
    # and the bucket then holds what the local run wrote.
    started = time.monotonic()
    rerun = _backfill(t, "killed")
    want = local_run()  # made here (if this test runs alone) while the re-run starts
    [done] = wait_for_runs(t, [rerun.id], timeout=600)
    assert done.state.is_completed(), done.state.message
    print(f"\nre-run after the kill: {time.monotonic() - started:.1f} s")
    chunks = _chunks_of(t, rerun.id)
    assert len(chunks) == 5 and all(r.state.is_completed() for r in chunks)
    assert set(t.workers_of([rerun.id, *(r.id for r in chunks)]).values()) == {survivor}
    ck.assert_same(_bucket(t, "killed"), want)
