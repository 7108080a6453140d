"""Airflow 3 provider for privstage: run guarded privacy stages as Airflow tasks.

Public API::

    from privstage_airflow import AnonymizeOperator, DPAggregateOperator, PrivacyPipelineOperator, PrivstageHook
    from privstage_airflow import HEKeygenOperator, HEEncryptOperator, HEAggregateOperator, HEDecryptOperator
    from privstage_airflow import EncryptOperator, DecryptOperator, PseudonymizeOperator

Operators are thin: they build a :class:`privstage.spec.PipelineSpec`, call
:func:`privstage.engine.run_pipeline` and translate errors (spec, guard, budget, integrity and HE
parameter failures fail the task without retries). The run manifest is the task's XCom.
:class:`DPAggregateOperator` publishes one differentially private release per partition; its ledger
key, not the attempt, identifies the release, so retries and re-runs spend once. :class:`AnonymizeOperator`
runs one ``anonymize`` stage; its XCom adds an anonymization summary (levels, class sizes; no value).

Names are imported on first access. Airflow imports ``privstage_airflow.get_provider_info`` (and
with it this package) whenever it lists providers; an eager import of the operators here would make
every Airflow command load the Task SDK operator machinery, and fail if an operator module did.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from privstage.__about__ import __version__

if TYPE_CHECKING:  # pragma: no cover
    from privstage_airflow.hooks.privstage import PrivstageHook
    from privstage_airflow.operators.anonymize import AnonymizeOperator
    from privstage_airflow.operators.dp_aggregate import DPAggregateOperator
    from privstage_airflow.operators.encryption import DecryptOperator, EncryptOperator
    from privstage_airflow.operators.he import (
        HEAggregateOperator,
        HEDecryptOperator,
        HEEncryptOperator,
        HEKeygenOperator,
        HEStageOperator,
    )
    from privstage_airflow.operators.pipeline import (
        PrivacyPipelineOperator,
        PrivstageOperatorBase,
        PseudonymizeOperator,
    )

__all__ = [
    "AnonymizeOperator",
    "DPAggregateOperator",
    "DecryptOperator",
    "EncryptOperator",
    "HEAggregateOperator",
    "HEDecryptOperator",
    "HEEncryptOperator",
    "HEKeygenOperator",
    "HEStageOperator",
    "PrivacyPipelineOperator",
    "PrivstageHook",
    "PrivstageOperatorBase",
    "PseudonymizeOperator",
    "__version__",
]

_LAZY = {
    "AnonymizeOperator": "privstage_airflow.operators.anonymize",
    "DPAggregateOperator": "privstage_airflow.operators.dp_aggregate",
    "HEAggregateOperator": "privstage_airflow.operators.he",
    "HEDecryptOperator": "privstage_airflow.operators.he",
    "HEEncryptOperator": "privstage_airflow.operators.he",
    "HEKeygenOperator": "privstage_airflow.operators.he",
    "HEStageOperator": "privstage_airflow.operators.he",
    "DecryptOperator": "privstage_airflow.operators.encryption",
    "EncryptOperator": "privstage_airflow.operators.encryption",
    "PrivacyPipelineOperator": "privstage_airflow.operators.pipeline",
    "PrivstageOperatorBase": "privstage_airflow.operators.pipeline",
    "PseudonymizeOperator": "privstage_airflow.operators.pipeline",
    "PrivstageHook": "privstage_airflow.hooks.privstage",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
