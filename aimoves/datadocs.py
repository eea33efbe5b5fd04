"""Great Expectations Data Docs (HTML) for a run's validations, under `<data-dir>/_gx/`.

Validation runs in an ephemeral GX context (fast, nothing on disk) and returns its GX results as
values (`validate.SuiteRun`). After a run, the flow hands them here: they go into a file
context's validation results store under the run's `RunIdentifier`, and GX's site builder
(`build_data_docs`) renders just those pages and the index: one build per run, for every suite.
Skipped when AIMOVES_DATA_DOCS=0 (the benchmark leaves them on: a real run pays for them).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from aimoves.catalog import Catalog, as_catalog

log = logging.getLogger(__name__)


def enabled() -> bool:
    return os.environ.get("AIMOVES_DATA_DOCS", "1") != "0"


def run_identifier(run_id: str, run_time: datetime) -> Any:
    """GX's id of a run: our run id as its name, the run's real time as its time.

    NOTE: without run_time GX parses the name as a date: `20250101T000000Z-5885` reads as UTC
    offset -58:85 and raises (or, for a pid like 12, silently shifts the time by 12 hours).
    """
    from great_expectations.core.run_identifier import RunIdentifier

    return RunIdentifier(run_name=run_id, run_time=run_time)


INDEX_LIMIT = 40  # validation results the index page lists, newest first (a daily run adds 4; every result keeps its page)


def _limit_index(context: Any) -> None:
    """List only the newest INDEX_LIMIT results on the index page (every result keeps its own page).

    NOTE: GX's index builder reads and parses every stored validation result to build the index, so
    without a limit each run's Data Docs cost grows with every run before it: measured here 1.3 s
    for the first run and 4.5 s for the 80th (4 results each); with a limit of 40, 1.2-2.1 s throughout."""
    site = dict(context.list_data_docs_sites().get("local_site") or {})
    index = {"class_name": "DefaultSiteIndexBuilder", "validation_results_limit": INDEX_LIMIT}
    if site and site.get("site_index_builder") != index:
        context.update_data_docs_site("local_site", {**site, "site_index_builder": index})


def build(data_dir: Catalog | Path | str, run_id: str, run_time: datetime, suite_runs: Iterable[Any]) -> str | None:
    """Store the run's suite results and build their Data Docs pages; returns the site's index.html."""
    suite_runs = list(suite_runs)
    if not suite_runs or not enabled():
        return None
    import great_expectations as gx
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier, ValidationResultIdentifier

    catalog = as_catalog(data_dir)
    context = gx.get_context(mode="file", project_root_dir=catalog.gx_dir())
    _limit_index(context)
    run = run_identifier(run_id, run_time)
    keys = []
    for i, s in enumerate(suite_runs):
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=s.suite), run_id=run, batch_identifier=f"{i:02d}-{s.label}"
        )
        context.validation_results_store.set(key, s.result)
        keys.append(key)
    context.build_data_docs(resource_identifiers=keys)
    catalog.data_docs_built()
    index = catalog.data_docs_index()
    return index if catalog.fs.exists(index) else None
