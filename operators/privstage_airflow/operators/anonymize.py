"""AnonymizeOperator: run one ``anonymize`` stage of a pipeline spec as an Airflow task.

The engine does everything: it checks the rules against the input schema (a column no rule names is
dropped or refused, as the spec says) and fetches the keys before reading data, searches the
generalization, writes the release to staging, proves k-anonymity, l-diversity and the absence of
plaintext PII on the staged output, and only then commits. The operator picks the stage and translates
errors: a model that cannot be met (``AnonymityNotAchievable``), a failed guard or a bad spec fails the
task without retries.

The XCom is the run manifest plus an ``anonymization`` summary (model, generalization levels, smallest
class, smallest l, suppressed rows, information loss): counts, shares and levels, never a value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from privstage_airflow._compat import Context
from privstage_airflow.operators.pipeline import StageOperator

if TYPE_CHECKING:  # pragma: no cover
    pass

__all__ = ["AnonymizeOperator", "anonymization_summary"]


def anonymization_summary(stage: Mapping[str, Any]) -> dict[str, Any] | None:
    """What an anonymize stage's manifest entry says about its release; ``None`` for other stages."""
    anon = (stage.get("details") or {}).get("anonymize")
    if stage.get("kind") != "anonymize" or not anon or stage.get("status") not in ("succeeded", "reused"):
        return None
    risk = anon.get("risk") or {}
    return {
        "model": anon.get("model"),
        "k": anon.get("k"),
        "l": anon.get("l"),
        "quasi_identifiers": anon.get("quasi_identifiers"),
        "levels": anon.get("levels"),
        "top_levels": anon.get("top_levels"),
        "rows_in": anon.get("rows_in"),
        "rows_out": anon.get("rows_out"),
        "suppressed_rows": anon.get("suppressed_rows"),
        "smallest_class": risk.get("min_class_size"),
        "smallest_l": risk.get("min_l"),
        "classes": risk.get("classes"),
        "prosecutor_risk_max": risk.get("prosecutor_risk_max"),
        "discernibility": anon.get("discernibility"),
        "reused": stage.get("status") == "reused",
        "output": stage.get("output"),
    }


class AnonymizeOperator(StageOperator):
    """Run one ``anonymize`` stage of a pipeline spec.

    Args:
        spec_path: the pipeline spec file (templated).
        stage: the name of an ``anonymize`` stage in it (templated). Its input, when it is an earlier
            stage's output, must exist: run that stage in an upstream task.
        **kwargs: see :class:`PrivstageOperatorBase` (``base_dir``, ``report_path``, ``overwrite``, ...) and
            Airflow's ``BaseOperator``.

    Example:
        .. code-block:: python

            AnonymizeOperator(
                task_id="anonymize_research",
                spec_path="/opt/pipelines/clinic_visits/pipeline.yaml",
                stage="anonymize_research",
            )
    """

    stage_kinds = ("anonymize",)
    ui_color = "#e3f2ea"

    def execute(self, context: Context) -> dict[str, Any]:
        """Anonymize; return the manifest with an ``anonymization`` summary (no value).

        Raises:
            AirflowFailException: spec or guard failures, a model that cannot be met; no retry.
            PrivstageError: retryable failures (Spark); Airflow retries them.
        """
        manifest = super().execute(context)
        entry = self.stage_entry(manifest)
        return {**manifest, "anonymization": anonymization_summary(entry)}
