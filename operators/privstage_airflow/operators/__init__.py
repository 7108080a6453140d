"""privstage operators."""

from __future__ import annotations

from privstage_airflow.operators.anonymize import AnonymizeOperator, anonymization_summary
from privstage_airflow.operators.dp_aggregate import DPAggregateOperator
from privstage_airflow.operators.encryption import DecryptOperator, EncryptOperator
from privstage_airflow.operators.he import (
    HEAggregateOperator,
    HEDecryptOperator,
    HEEncryptOperator,
    HEKeygenOperator,
    HEStageOperator,
    he_summary,
)
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
    "DecryptOperator",
    "EncryptOperator",
    "HEAggregateOperator",
    "HEDecryptOperator",
    "HEEncryptOperator",
    "HEKeygenOperator",
    "HEStageOperator",
    "PrivacyPipelineOperator",
    "PrivstageOperatorBase",
    "PseudonymizeOperator",
    "anonymization_summary",
    "dp_release_summary",
    "he_summary",
    "run_context_from",
]
