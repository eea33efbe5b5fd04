"""Great Expectations Data Docs (HTML) for a run's validations, under `<data-dir>/_gx/`.

Validation itself runs in an ephemeral GX context (fast, nothing on disk). After a run, the flow
hands this module the suite results it collected; they go into a file context's validation store
and only those pages are (re)built. Skipped when AIMOVES_DATA_DOCS=0 (the benchmark does).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from aimoves.catalog import Catalog, as_catalog

log = logging.getLogger(__name__)

_collected: list[tuple[str, str, Any]] = []  # (suite, batch label, ExpectationSuiteValidationResult)


def collect(suite: str, label: str, result: Any) -> None:
    """Remember one suite result of this process's current run (called by validate.run_suite)."""
    if enabled():
        _collected.append((suite, label, result))


def take() -> list[tuple[str, str, Any]]:
    """The results collected since the last call (and forget them)."""
    out = list(_collected)
    _collected.clear()
    return out


def enabled() -> bool:
    return os.environ.get("AIMOVES_DATA_DOCS", "1") != "0"


def build(data_dir: Catalog | Path | str, run_id: str, results: list[tuple[str, str, Any]]) -> str | None:
    """Store the results and build their Data Docs pages; returns the site's index.html."""
    if not results:
        return None
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier, ValidationResultIdentifier

    catalog = as_catalog(data_dir)
    context = gx.get_context(mode="file", project_root_dir=catalog.gx_dir())
    keys = []
    for i, (suite, label, result) in enumerate(results):
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite),
            run_id=RunIdentifier(run_name=run_id),
            batch_identifier=f"{i:02d}-{label}",
        )
        context.validation_results_store.set(key, result)
        keys.append(key)
    context.build_data_docs(resource_identifiers=keys)
    index = catalog.data_docs_index()
    return index if catalog.fs.exists(index) else None
