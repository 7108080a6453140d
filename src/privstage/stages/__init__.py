"""Stage implementations: one module per stage kind.

Each module provides ``plan(stage, input_schema, keys, env=)`` (no data read; ``env`` is the engine's
:class:`~privstage.engine.PlanEnv`), ``builtin_guards(plan)`` (before and after guards it always runs) and
either ``apply(df, plan, spark=)`` (a lazy DataFrame: row-wise stages) or ``produce(df, plan, spark=, run=)``
with ``output_schema(plan, input_schema)`` (stages that compute a release on the driver from aggregates and
hook the engine's commit, such as ``dp_aggregate``). An optional ``narrow(df, plan)`` restricts the input
(a partition, derived and needed columns) before the pre-guards.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from privstage.errors import SpecError

__all__ = ["STAGE_MODULES", "stage_module"]

STAGE_MODULES: dict[str, str] = {
    "pseudonymize": "privstage.stages.pseudonymize",
    "dp_aggregate": "privstage.stages.dp_aggregate",
    "anonymize": "privstage.stages.anonymize",
}


def stage_module(kind: str) -> ModuleType:
    """The implementation module of a stage kind."""
    try:
        return importlib.import_module(STAGE_MODULES[kind])
    except KeyError:
        raise SpecError(f"unknown stage kind '{kind}' (known: {', '.join(sorted(STAGE_MODULES))})") from None
