"""Great Expectations suites, kept as data: one JSON file per dataset, loaded by name."""

from __future__ import annotations

import json
from importlib import resources


def suite_definition(name: str) -> dict:
    """The suite `name` as a dict (`{"name", "meta", "expectations": [{"type", "kwargs", "severity", "meta"}]}`)."""
    return json.loads(resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8"))


def default_parameters(name: str) -> dict:
    """Values for the suite's `{"$PARAMETER": ...}` placeholders, from its meta.parameters."""
    params = suite_definition(name).get("meta", {}).get("parameters", {})
    return {k: v for k, v in params.items() if k != "note"}
