"""Stage implementations: one module per stage kind.

Each module provides ``plan(stage, input_schema, keys)`` (no data read), ``apply(df, plan, spark=)``
(a lazy DataFrame) and ``builtin_guards(plan)`` (before and after guards it always runs).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from privstage.errors import SpecError

__all__ = ["STAGE_MODULES", "stage_module"]

STAGE_MODULES: dict[str, str] = {
    "pseudonymize": "privstage.stages.pseudonymize",
}


def stage_module(kind: str) -> ModuleType:
    """The implementation module of a stage kind."""
    try:
        return importlib.import_module(STAGE_MODULES[kind])
    except KeyError:
        raise SpecError(f"unknown stage kind '{kind}' (known: {', '.join(sorted(STAGE_MODULES))})") from None
