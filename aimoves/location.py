"""Where a run's data lives when its caller did not say: one prefect.yaml for a laptop and a team.

The data location of a flow run is, first found:

1. its `data_dir` parameter (`--data-dir` on the command line, a deployment's or a run's parameters);
2. `AIMOVES_DATA_DIR` in the environment of the process that runs the flow (the worker's);
3. the Prefect Variable `aimoves-data-dir` on the server the run belongs to (one setting for a team:
   `prefect variable set aimoves-data-dir s3://bucket/aimoves`);
4. `data`, the folder the run starts in (a worker starts runs in the folder `prefect deploy` ran in).

Resolved when the flow runs, not when it is deployed, so deployments carry no data location.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

ENV_VAR = "AIMOVES_DATA_DIR"
VARIABLE = "aimoves-data-dir"
DEFAULT = "data"


def default_data_dir() -> str:
    """`AIMOVES_DATA_DIR` when set (and not empty), else `data`: the command line's `--data-dir` default."""
    return os.environ.get(ENV_VAR) or DEFAULT


def _variable() -> str | None:
    """The Prefect Variable `aimoves-data-dir` of the server a flow run belongs to; None when unset or not in a flow run."""
    import sys

    context = sys.modules.get("prefect.context")
    if context is None or context.FlowRunContext.get() is None:  # NOTE: outside a run, asking would start a temporary server
        return None
    from prefect.variables import Variable

    try:
        value = Variable.get(VARIABLE, default=None)
    except Exception as exc:  # no server reachable: the setting cannot be there
        logger.debug("Prefect Variable %s not read: %s", VARIABLE, exc)
        return None
    return str(value) if value else None


def resolve_data_dir(given: str | None) -> str:
    """The data location of a flow run: `given`, else `AIMOVES_DATA_DIR`, else the Variable `aimoves-data-dir`, else `data`."""
    if given:
        return str(given)
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR]
    return _variable() or DEFAULT
