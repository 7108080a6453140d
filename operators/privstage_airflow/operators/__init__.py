"""privstage operators."""

from __future__ import annotations

from privstage_airflow.operators.dp_aggregate import DPAggregateOperator
from privstage_airflow.operators.encryption import DecryptOperator, EncryptOperator
from privstage_airflow.operators.pipeline import (
    PrivacyPipelineOperator,
    PrivstageOperatorBase,
    PseudonymizeOperator,
    dp_release_summary,
    run_context_from,
)

__all__ = [
    "DPAggregateOperator",
    "DecryptOperator",
    "EncryptOperator",
    "PrivacyPipelineOperator",
    "PrivstageOperatorBase",
    "PseudonymizeOperator",
    "dp_release_summary",
    "run_context_from",
]
