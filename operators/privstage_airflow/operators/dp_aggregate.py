"""DPAggregateOperator: publish one differentially private release of a pipeline spec as an Airflow task.

The operator runs one ``dp_aggregate`` stage of a ``pipeline.yaml`` for the task's partition (see
:class:`~privstage_airflow.operators.pipeline.PrivstageOperatorBase` for how a logical date or a run's
partition key becomes the partition). The engine plans the release against the budget ledger, reserves,
noises, commits the ledger and then the output; the operator only picks the ledger and translates errors:
``BudgetExceeded`` (like spec and guard failures) fails the task without retries.

Retries are safe by construction: the ledger key is (pipeline, stage, dataset, period, partition), not the
attempt. A retried task, a cleared task and a second DAG run for the same month all get the committed
release back, byte for byte, and spend nothing.

The XCom is the run manifest plus a ``dp_release`` summary (ledger key, ε and δ spent by this run, the
release's sha256), never the release's rows: the release is public once published, but XCom carries
manifests only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from privstage_airflow._compat import Context
from privstage_airflow.operators.pipeline import StageOperator, dp_release_summary

if TYPE_CHECKING:  # pragma: no cover
    pass

__all__ = ["DPAggregateOperator"]


class DPAggregateOperator(StageOperator):
    """Run one ``dp_aggregate`` stage of a pipeline spec for the task's partition.

    Args:
        spec_path: the pipeline spec file (templated).
        stage: the name of a ``dp_aggregate`` stage in it (templated). Its input, usually an earlier stage's
            output, must exist: run that stage in an upstream task.
        partition: the partition to release (templated); default the DAG run's partition key, else its
            logical date. The stage truncates it to its granularity (a month, say).
        ledger_conn_id: the budget ledger's connection (``postgres`` or ``sqlite``); the default
            ``privstage_ledger_default`` may be missing (then ``$PRIVSTAGE_LEDGER_URL``, the file named by
            ``$PRIVSTAGE_LEDGER_URL_FILE`` or ``<state_dir>/ledger.db``).
        **kwargs: see :class:`PrivstageOperatorBase` (``base_dir``, ``report_path``, ``ledger_url``, ...)
            and Airflow's ``BaseOperator``.

    Example:
        .. code-block:: python

            DPAggregateOperator(
                task_id="dp_visits_monthly",
                spec_path="/opt/pipelines/clinic_visits/pipeline.yaml",
                stage="dp_visits_monthly",
                ledger_conn_id="privacy_ledger",
            )
    """

    template_fields: Sequence[str] = ("spec_path", "stage", "partition", "base_dir", "report_path")
    stage_kinds = ("dp_aggregate",)
    ui_color = "#e8e3f2"

    def execute(self, context: Context) -> dict[str, Any]:
        """Publish the release (or return the committed one); return the manifest with a ``dp_release`` summary.

        Raises:
            AirflowFailException: spec, guard, budget (``BudgetExceeded``) or integrity failures; no retry.
            PrivstageError: retryable failures (Spark, the ledger database); Airflow retries them.
        """
        manifest = super().execute(context)
        entry = self.stage_entry(manifest)
        return {**manifest, "dp_release": dp_release_summary(entry)}
