"""privstage: guarded privacy stages for Spark pipelines run by Airflow 3 or Dagster.

The public API is listed in ``__all__``. Heavy modules (the engine, Spark, Great Expectations)
load on first use, so ``import privstage`` stays light and pulls in no orchestrator.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from privstage.__about__ import __version__
from privstage.errors import (
    BudgetExceeded,
    GuardFailed,
    HEParameterError,
    IntegrityError,
    KeyUnavailable,
    OverflowRisk,
    PrivstageError,
    SpecError,
    StageExecutionError,
)

if TYPE_CHECKING:  # pragma: no cover
    from privstage.engine import RunContext, run_pipeline, validate_pipeline
    from privstage.keys import EnvKeyProvider, FileKeyProvider, KeyProvider, LocalKeyring, provider_from_spec
    from privstage.report import PipelineManifest, StageManifest
    from privstage.spark import get_session
    from privstage.spec import PipelineSpec, load_spec, parse_spec

__all__ = [
    "BudgetExceeded",
    "EnvKeyProvider",
    "FileKeyProvider",
    "GuardFailed",
    "HEParameterError",
    "IntegrityError",
    "KeyProvider",
    "KeyUnavailable",
    "LocalKeyring",
    "OverflowRisk",
    "PipelineManifest",
    "PipelineSpec",
    "PrivstageError",
    "RunContext",
    "SpecError",
    "StageExecutionError",
    "StageManifest",
    "__version__",
    "get_session",
    "load_spec",
    "parse_spec",
    "provider_from_spec",
    "run_pipeline",
    "validate_pipeline",
]

_LAZY = {
    "RunContext": "privstage.engine",
    "run_pipeline": "privstage.engine",
    "validate_pipeline": "privstage.engine",
    "EnvKeyProvider": "privstage.keys",
    "FileKeyProvider": "privstage.keys",
    "KeyProvider": "privstage.keys",
    "LocalKeyring": "privstage.keys",
    "provider_from_spec": "privstage.keys",
    "PipelineManifest": "privstage.report",
    "StageManifest": "privstage.report",
    "get_session": "privstage.spark",
    "PipelineSpec": "privstage.spec",
    "load_spec": "privstage.spec",
    "parse_spec": "privstage.spec",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'privstage' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
