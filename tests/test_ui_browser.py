"""The Prefect UI shows a served run and its artifacts: headless Chromium (Debian's chromium and
chromium-driver) via Selenium, against the session's `aimoves serve` (see test_deployments.py).

Screenshots go to docs/screenshots/ (the README shows them); AIMOVES_SCREENSHOT_DIR redirects them.
Skipped where /usr/bin/chromium, /usr/bin/chromedriver or selenium is missing (`.ci/run` installs them).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from test_deployments import REPO, Stack, acquire_stack, release_stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SHOTS = Path(os.environ.get("AIMOVES_SCREENSHOT_DIR") or REPO / "docs" / "screenshots")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.flow,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver"),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield acquire_stack(tmp_path_factory)
    release_stack()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="aimoves-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1440,1000", f"--user-data-dir={profile}",
                 # the UI's analytics script reaches for an outside host even with analytics off
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait_for_text(driver: Any, *texts: str, timeout: float = 45) -> str:
    """The page's text once it contains all `texts` (a single-page app renders after load)."""
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        try:
            body = driver.find_element("tag name", "body").text
        except Exception:
            body = ""
        if all(t in body for t in texts):
            time.sleep(0.5)  # let charts and fonts settle before a screenshot
            return body
        time.sleep(0.3)
    raise AssertionError(f"{texts} not on {driver.current_url} after {timeout:.0f} s; page text:\n{body[:2000]}")


def test_the_ui_shows_the_run_and_its_sector_moves_artifact(stack: Stack, browser: Any) -> None:
    run = stack.daily_us_run()
    SHOTS.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    browser.get(f"{stack.ui_url}/runs/flow-run/{run.id}")
    text = _wait_for_text(browser, run.name, run.state.name)  # Completed (or "Needs attention")
    assert "Can't connect to Server API" not in text
    browser.save_screenshot(str(SHOTS / "flow-run.png"))
    page_seconds = time.monotonic() - started

    artifact = next(a for a in stack.artifacts(run.id) if (a.key or "").startswith("sector-moves"))
    browser.get(f"{stack.ui_url}/artifacts/artifact/{artifact.id}")
    _wait_for_text(browser, "Sector moves on 2025-01-27", "semiconductors")
    browser.save_screenshot(str(SHOTS / "artifact.png"))

    with stack.settings(), stack.client() as client:
        deployment = client.read_deployment_by_name("daily/daily-us")
    browser.get(f"{stack.ui_url}/deployments/deployment/{deployment.id}")
    _wait_for_text(browser, "daily-us", "At 04:30 PM, Monday through Friday", "Scheduled for")
    browser.save_screenshot(str(SHOTS / "deployment.png"))

    for name in ("flow-run.png", "artifact.png", "deployment.png"):
        assert (SHOTS / name).stat().st_size > 20_000, name  # a rendered page, not a blank one
    print(f"flow run page rendered in {page_seconds:.1f} s")


def test_the_digest_page_and_an_asset_materialization_with_its_lineage(stack: Stack, browser: Any, tmp_path: Path) -> None:
    """The digest of the simulated shock in the browser, and the divergence's asset event (upstream assets) in the UI."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    from aimoves.digest import write_digest

    shock = stack.cache.get("shock-data-dir")
    if shock is None:  # test_divergence_alerts.py did not run in this session: make the same backfill
        shock = tmp_path / "shock"
        run = stack.run("backfill/backfill", {"start": "2025-01-02", "end": "2025-02-07", "data_dir": str(shock)})
        assert run.state.is_completed(), run.state
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = write_digest(shock, tmp_path / "digest", "2025-01-27").html
    browser.get(page.resolve().as_uri())
    _wait_for_text(browser, "AI stocks, US ↔ China — 2025-01-27", "Divergent:", "Biggest movers")
    browser.save_screenshot(str(SHOTS / "digest.png"))

    key = (shock.resolve() / "divergence").as_uri()
    with stack.settings(), stack.client() as client:
        events = client.read_events(EventFilter(event=EventNameFilter(name=["prefect.asset.materialization.succeeded"]),
                                                resource=EventResourceFilter(id=[key])), limit=1).events
    assert events, f"no materialization event for {key}"
    event = events[0]
    browser.get(f"{stack.ui_url}/events/event/{event.occurred:%Y-%m-%d}/{event.id}")
    _wait_for_text(browser, "prefect.asset.materialization.succeeded", "stock_moves")
    browser.save_screenshot(str(SHOTS / "asset-lineage.png"))
    for name in ("digest.png", "asset-lineage.png"):
        assert (SHOTS / name).stat().st_size > 20_000, name


def test_a_chunked_backfill_shows_its_chunk_runs(stack: Stack, browser: Any, tmp_path: Path) -> None:
    """Issue 12: the parent run of a chunked backfill and its chunk runs, as the UI lists them (README screenshot)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    run = stack.run("chunked-backfill/chunked-backfill", {"start": "2024-12-16", "end": "2025-01-10", "markets": ["US", "HK"],
                                                          "batch_size": 4, "data_dir": str(tmp_path / "data")})
    assert run.state.is_completed(), run.state
    with stack.settings(), stack.client() as client:
        chunks = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])))
    names = sorted(r.name for r in chunks)  # per stage, market and year (and batch of 4 symbols where a market has more)
    for prefix in ("prices-US-2024", "prices-US-2025", "prices-HK-2024", "prices-HK-2025", "stock_moves-US-2025", "sector_moves-ALL-2025"):
        assert any(n.startswith(prefix) for n in names), (prefix, names)
    assert all(r.state.is_completed() for r in chunks)
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.get(f"{stack.ui_url}/runs/flow-run/{run.id}")
    _wait_for_text(browser, run.name, "Completed")
    tab = next(e for e in browser.find_elements("xpath", "//*[normalize-space(text())='Subflow Runs']") if e.is_displayed())
    tab.click()
    _wait_for_text(browser, names[0], "sector_moves-ALL-2025")
    browser.save_screenshot(str(SHOTS / "chunked-backfill.png"))
    assert (SHOTS / "chunked-backfill.png").stat().st_size > 20_000
