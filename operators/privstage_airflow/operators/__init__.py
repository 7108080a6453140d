"""privstage operators."""

from __future__ import annotations

from privstage_airflow.operators.pipeline import (
    PrivacyPipelineOperator,
    PrivstageOperatorBase,
    PseudonymizeOperator,
    run_context_from,
)

__all__ = ["PrivacyPipelineOperator", "PrivstageOperatorBase", "PseudonymizeOperator", "run_context_from"]
