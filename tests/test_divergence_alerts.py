"""The divergence alert, the digest artifact and the asset materializations, end to end against the
session's `aimoves serve` (see test_deployments.py: one Prefect server per session, shared).

A served backfill over the simulated shock sends one webhook notification per divergent date, with
headlines; a served backfill of a quiet week sends none; `derive-all` links the digest as an artifact;
every dataset write is an asset materialization with its upstream assets and metadata (read back
through the API's events).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pytest

from test_deployments import REPO, Stack, acquire_stack, release_stack, webhook  # noqa: F401 - the webhook fixture

pytestmark = pytest.mark.flow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield acquire_stack(tmp_path_factory)
    release_stack()


def _divergent_dates(data_dir: Path) -> list[str]:
    frame = pd.read_parquet(data_dir / "divergence")
    return sorted(frame.loc[frame["divergent"], "date"].astype(str).unique())


def _events(stack: Stack, prefix: str, since: Any) -> list[Any]:
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    with stack.settings(), stack.client() as client:
        page = client.read_events(EventFilter(occurred=EventOccurredFilter(since=since), event=EventNameFilter(prefix=[prefix])), limit=50)
        events = list(page.events)
        while page.next_page:
            page = client.read_events_page(page.next_page)
            events += page.events
    return events


def test_divergent_dates_alert_quiet_weeks_do_not_and_datasets_are_assets(stack: Stack, webhook, tmp_path: Path) -> None:  # noqa: F811
    from prefect.types._datetime import now

    url, received = webhook
    applied = stack.cli(str(REPO / "automations" / "apply.py"), "--webhook-url", url, str(REPO / "automations" / "divergence.yaml"))
    assert applied.returncode == 0 and "automation 'aimoves: divergence'" in applied.stdout, applied.stdout + applied.stderr
    since = now("UTC")
    shock, quiet = tmp_path / "shock", tmp_path / "quiet"
    runs = stack.wait(
        stack.submit("backfill/backfill", {"start": "2025-01-02", "end": "2025-02-07", "data_dir": str(shock)}),
        stack.submit("backfill/backfill", {"start": "2025-02-10", "end": "2025-02-14", "data_dir": str(quiet)}),
    )
    for run in runs:
        assert run.state.is_completed(), run.state
    expected = _divergent_dates(shock)
    assert "2025-01-27" in expected and _divergent_dates(quiet) == []

    def alerts() -> list[dict[str, Any]]:
        return [m for m in received if " diverged on " in m.get("subject", "")]

    deadline = time.monotonic() + 90
    while len(alerts()) < len(expected) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(3)  # anything extra (a duplicate, a quiet-week alert) would arrive by now
    got = sorted(m["subject"].split(" diverged on ", 1)[1][:10] for m in alerts())
    assert got == expected, [m["subject"] for m in alerts()]
    shock_alert = next(m for m in alerts() if "diverged on 2025-01-27" in m["subject"])
    assert shock_alert["subject"].startswith("aimoves: all_ai diverged on 2025-01-27 (China +"), shock_alert["subject"]
    assert "- semiconductors: spread +" in shock_alert["body"]
    assert "none linked to the top movers" not in shock_alert["body"] and "- [" in shock_alert["body"].split("Headlines:", 1)[1]

    # Assets: each dataset the shock backfill wrote, with its upstream datasets and what was written.
    events = [e for e in _events(stack, "prefect.asset.materialization.succeeded", since) if str(shock.resolve()) in e.resource.id]
    by_dataset = {e.resource.id.rsplit("/", 1)[1]: e for e in events}
    assert set(by_dataset) == {"raw", "prices", "fx", "news", "stock_moves", "sector_moves", "divergence"}, sorted(by_dataset)
    upstream = {name: sorted(r.id.rsplit("/", 1)[1] for r in e.related if r.role == "asset") for name, e in by_dataset.items()}
    assert upstream["prices"] == ["raw"]
    assert upstream["stock_moves"] == ["fx", "news", "prices"]
    assert upstream["sector_moves"] == ["news", "stock_moves"]
    assert upstream["divergence"] == ["news", "stock_moves"]
    div = by_dataset["divergence"].payload
    stored = pd.read_parquet(shock / "divergence")
    assert div["rows_written"] == len(stored) and div["date_range"] == "2025-01-02..2025-02-07"
    assert div["partitions"] == ["year=2025"] and div["quarantined"] == 0
    assert by_dataset["prices"].payload["rows_written"] > 0 and by_dataset["divergence"].resource.id == (shock.resolve() / "divergence").as_uri()

    # derive-all (a quiet date): divergence recomputed, the digest written and linked as an artifact, no alert.
    before = len(alerts())
    derived = stack.run("derive/derive-all", {"start": "2025-02-07", "data_dir": str(shock)})
    assert derived.state.is_completed(), derived.state
    (link,) = [a for a in stack.artifacts(derived.id) if a.key == "digest"]
    page = shock / "_digests" / "digest-2025-02-07.html"
    assert page.resolve().as_uri() in link.data and page.exists() and (shock / "_digests" / "digest-2025-02-07.png").exists()
    assert "AI stocks, US ↔ China — 2025-02-07" in page.read_text()
    time.sleep(2)
    assert len(alerts()) == before
    stack.cache["shock-data-dir"] = shock
    stack.cache["derive-all-run"] = derived
