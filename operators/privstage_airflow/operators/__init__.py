"""privstage operators."""

from __future__ import annotations

from privstage_airflow.operators.anonymize import AnonymizeOperator, anonymization_summary
from privstage_airflow.operators.dp_aggregate import DPAggregateOperator
from privstage_airflow.operators.pipeline import (
    PrivacyPipelineOperator,
    PrivstageOperatorBase,
    PseudonymizeOperator,
    dp_release_summary,
    run_context_from,
)

__all__ = [
    "AnonymizeOperator",
    "DPAggregateOperator",
    "PrivacyPipelineOperator",
    "PrivstageOperatorBase",
    "PseudonymizeOperator",
    "anonymization_summary",
    "dp_release_summary",
    "run_context_from",
]
