"""Operators that run privstage pipelines as Airflow tasks.

Both operators build a :class:`~privstage.spec.PipelineSpec` and hand it to the same execution path
(:meth:`PrivstageOperatorBase.execute`): the engine runs the stages between their guards, the
manifest (paths, row counts, key ids, guard outcomes; never data or keys) is logged and returned as
the task's XCom, and non-retryable privstage errors fail the task without retries.

Engine modules are imported inside methods so that parsing a DAG file stays cheap (no Spark, no
Great Expectations at parse time).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from privstage.errors import PrivstageError, SpecError
from privstage_airflow._compat import BaseOperator, Context
from privstage_airflow._errors import spec_error_from_validation, translate_errors
from privstage_airflow.hooks.privstage import PrivstageHook

if TYPE_CHECKING:  # pragma: no cover
    from privstage.engine import RunContext
    from privstage.spec import PipelineSpec

__all__ = [
    "PrivacyPipelineOperator",
    "PrivstageOperatorBase",
    "PseudonymizeOperator",
    "StageOperator",
    "dp_release_summary",
    "run_context_from",
]


def dp_release_summary(stage: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a DP stage's manifest entry says about its release; ``None`` for other stages.

    ``epsilon_spent`` / ``delta_spent`` are what *this run* charged to the ledger: zero when it returned
    a release committed earlier (a retry, a re-run of the same partition), which is what ``reused`` says.
    """
    dp = (stage.get("details") or {}).get("dp")
    if stage.get("kind") != "dp_aggregate" or not dp or stage.get("status") not in ("succeeded", "reused"):
        return None
    reused = stage["status"] == "reused" or bool(dp.get("reused_release"))
    budget = dp.get("budget") or {}
    return {
        "ledger_key": dp.get("ledger_key"),
        "dataset": dp.get("dataset"),
        "period": dp.get("period"),
        "partition": dp.get("partition"),
        "budget": budget,
        "epsilon_spent": "0" if reused else budget.get("epsilon"),
        "delta_spent": "0" if reused else budget.get("delta"),
        "release_sha256": dp.get("release_sha256"),
        "reused": reused,
        "output": stage.get("output"),
    }


def run_context_from(context: Context, partition: str | None = None) -> RunContext:
    """The engine's run context for an Airflow task instance.

    The run key names the DAG, run, task (and map index) but not the attempt, so every retry of one
    task instance shares it and the engine can reconnect to what an earlier attempt did.

    The partition (what a DP stage aggregates, and part of its ledger key) is, first match wins:
    ``partition`` (the operator's rendered argument), the DAG run's ``partition_key`` (Airflow 3.2+
    partitioned timetables such as ``CronPartitionTimetable``), the run's logical date (ISO 8601).
    A run with none of them (``logical_date=None``) has no partition.
    """
    from privstage.engine import RunContext

    ti = context["ti"]
    run_key = f"airflow/{ti.dag_id}/{ti.run_id}/{ti.task_id}"
    map_index = getattr(ti, "map_index", -1)
    if map_index is not None and map_index >= 0:
        run_key += f"/{map_index}"
    if not partition:
        partition = context.get("partition_key") or None
    if not partition:
        logical_date = context.get("logical_date")
        partition = logical_date.isoformat() if logical_date is not None else None
    return RunContext(
        run_key=run_key,
        orchestrator="airflow",
        partition=partition,
        attempt=int(ti.try_number or 1),
    )


class PrivstageOperatorBase(BaseOperator):
    """What every privstage operator shares: the hook, the engine call, error translation, logging.

    Subclasses only say which spec to run by implementing :meth:`build_spec`.

    **Partitions.** A DP stage aggregates one partition of its input per run (a month, say) and
    charges it to the ledger under the key (pipeline, stage, dataset, period, partition). By default the
    partition is the DAG run's ``partition_key`` if it has one, else its logical date; the stage
    truncates it to its granularity (``2025-12-01T00:00:00+00:00`` is the month ``2025-12``). For a
    monthly release of the month that just ended, schedule with data intervals,
    ``schedule=CronDataIntervalTimetable("0 0 1 * *", timezone="UTC")``: the run that starts on
    2026-01-01 covers [2025-12-01, 2026-01-01) and its logical date is 2025-12-01, the month it
    releases. (With ``"@monthly"`` Airflow 3 uses ``CronTriggerTimetable``, whose logical date is the
    trigger time, i.e. the month that is just *starting*: there, pass
    ``partition="{{ macros.ds_add(ds, -1) }}"`` or use ``CronPartitionTimetable(..., run_offset=-1)``.)
    Every retry, clear and re-run of the same month shares the ledger key: one spend, one release.

    Args:
        base_dir: relative dataset paths resolve against this folder (templated; empty means the
            default of the spec source).
        report_path: also write the JSON run report (and an HTML page beside it) here (templated).
        overwrite: replace existing outputs atomically whatever the spec's ``output.mode`` says;
            ``False`` leaves the decision to the spec.
        partition: the run's data partition (templated, e.g. ``"{{ params.month }}"``); empty means the
            DAG run's partition key, else its logical date.
        privstage_conn_id: Airflow connection with Spark / key-directory overrides; ``None`` for none.
        ledger_conn_id: the budget ledger's connection (type ``postgres`` or ``sqlite``); the default
            ``privstage_ledger_default`` may be missing; ``None`` reads none.
        ledger_url: a ledger URL that wins over the connection. Not templated (a rendered value is
            stored in the metadata DB); keep passwords in a connection instead.
    """

    ui_color = "#e3f2e8"

    def __init__(
        self,
        *,
        base_dir: str | None = None,
        report_path: str | None = None,
        overwrite: bool = False,
        partition: str | None = None,
        privstage_conn_id: str | None = PrivstageHook.default_conn_name,
        ledger_conn_id: str | None = PrivstageHook.default_ledger_conn_name,
        ledger_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.base_dir = base_dir
        self.report_path = report_path
        self.overwrite = overwrite
        self.partition = partition
        self.privstage_conn_id = privstage_conn_id
        self.ledger_conn_id = ledger_conn_id
        self.ledger_url = ledger_url

    @cached_property
    def hook(self) -> PrivstageHook:
        """The hook, created on first use (never while the DAG file is parsed)."""
        return PrivstageHook(self.privstage_conn_id, ledger_conn_id=self.ledger_conn_id, ledger_url=self.ledger_url)

    def build_spec(self) -> PipelineSpec:
        """The pipeline this task runs (after templates are rendered).

        Raises:
            SpecError: the spec or the operator's arguments are invalid.
        """
        raise NotImplementedError

    def selected_stages(self) -> Sequence[str] | None:
        """Names of the stages to run; ``None`` runs them all."""
        return None

    def execute(self, context: Context) -> dict[str, Any]:
        """Run the pipeline; return its manifest (JSON-safe, pushed as the task's XCom).

        Raises:
            AirflowFailException: a privstage error that retrying cannot fix (spec, guard, budget,
                integrity, HE parameters); chained ``from`` the original.
            PrivstageError: a retryable privstage error (key unavailable, stage execution).
        """
        from privstage.engine import run_pipeline

        run_context = run_context_from(context, self.partition or None)
        with translate_errors():
            spec = self.build_spec()
            try:
                manifest = run_pipeline(
                    spec,
                    stages=self.selected_stages(),
                    context=run_context,
                    spark=self.hook.get_spark(spec),
                    keys=self.hook.get_key_provider(spec),
                    progress=False,
                    report_path=self.report_path or None,
                    overwrite=True if self.overwrite else None,
                    ledger=self.hook.get_ledger_url(),
                )
            except PrivstageError as exc:
                partial = getattr(exc, "manifest", None)
                if partial is not None:
                    self.log_manifest(partial.to_dict())
                raise
        summary = manifest.to_dict()
        self.log_manifest(summary)
        return summary

    def log_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Log what ran: stage names, row counts, key ids and versions, guard verdicts. Never values."""
        self.log.info(
            "privstage pipeline %s %s (run key %s, partition %s, attempt %s, %s stage(s))",
            manifest["pipeline"],
            manifest["status"],
            manifest["run_key"],
            manifest.get("partition"),
            manifest.get("attempt"),
            len(manifest["stages"]),
        )
        for stage in manifest["stages"]:
            summary = stage.get("guard_summary") or {}
            self.log.info(
                "stage %s (%s) %s: rows %s -> %s; keys %s; guards %s passed, %s failed",
                stage["name"],
                stage["kind"],
                stage["status"],
                stage.get("rows_in"),
                stage.get("rows_out"),
                stage.get("key_versions") or stage.get("key_ids"),
                summary.get("passed", 0),
                summary.get("failed", 0),
            )
            release = dp_release_summary(stage)
            if release is not None:
                self.log.info(
                    "stage %s: DP release %s, epsilon spent by this run %s (release budget %s), release sha256 %s%s",
                    stage["name"],
                    release["ledger_key"],
                    release["epsilon_spent"],
                    release["budget"],
                    release["release_sha256"],
                    " (the committed release was reused)" if release["reused"] else "",
                )
            for report in stage.get("guards", []):
                for outcome in report["outcomes"]:
                    if not outcome["success"]:
                        self.log.warning(
                            "guard %s/%s failed on %s (%s, %s)",
                            outcome["guard"],
                            outcome["check"],
                            outcome.get("column") or "the table",
                            report["phase"],
                            "blocking" if outcome.get("blocking", True) else "warning only",
                        )


class StageOperator(PrivstageOperatorBase):
    """Run one named stage of a pipeline spec, checked to be of the operator's kind.

    The base of the per-kind operators (``DPAggregateOperator``, ``AnonymizeOperator``, ``EncryptOperator``, the
    HE role operators): a DAG cannot quietly run, say, a decryption where an aggregation was meant.

    Args:
        spec_path: the pipeline spec file (templated).
        stage: the name of the stage to run (templated). Its input, when it is an earlier stage's output,
            must exist: run that stage in an upstream task.
        **kwargs: see :class:`PrivstageOperatorBase` and Airflow's ``BaseOperator``.
    """

    template_fields: Sequence[str] = ("spec_path", "stage", "base_dir", "report_path", "partition")
    #: The stage kinds this operator runs.
    stage_kinds: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, spec_path: str, stage: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec_path = spec_path
        self.stage = stage

    def allowed_kinds(self) -> tuple[str, ...]:
        """The stage kinds this operator accepts (a subclass may compute them)."""
        return self.stage_kinds

    def build_spec(self) -> PipelineSpec:
        """The spec, checked to hold a stage of this operator's kind under that name.

        Raises:
            SpecError: the spec is invalid, the stage is unknown or of another kind.
        """
        from privstage.spec import load_spec

        spec = load_spec(self.spec_path, base_dir=self.base_dir or None)
        stage = spec.stage(self.stage)  # SpecError for an unknown name
        allowed = self.allowed_kinds()
        if stage.kind not in allowed:
            raise SpecError(
                f"{type(self).__name__} '{self.task_id}' runs {' / '.join(allowed)} stages; '{self.stage}' is a "
                f"{stage.kind} stage (use PrivacyPipelineOperator)",
                stage=self.stage,
            )
        return spec

    def selected_stages(self) -> Sequence[str]:
        return [self.stage]

    def stage_entry(self, manifest: Mapping[str, Any]) -> Mapping[str, Any]:
        """This operator's stage in a run manifest."""
        return next(s for s in manifest["stages"] if s["name"] == self.stage)


class PrivacyPipelineOperator(PrivstageOperatorBase):
    """Run the stages of a ``pipeline.yaml``.

    Args:
        spec_path: the pipeline spec file (templated).
        stages: names of the stages to run, in spec order; ``None`` runs all (templated).
        **kwargs: see :class:`PrivstageOperatorBase` and Airflow's ``BaseOperator``.
    """

    template_fields: Sequence[str] = ("spec_path", "stages", "base_dir", "report_path", "partition")

    def __init__(self, *, spec_path: str, stages: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec_path = spec_path
        self.stages = stages

    def build_spec(self) -> PipelineSpec:
        from privstage.spec import load_spec

        return load_spec(self.spec_path, base_dir=self.base_dir or None)

    def selected_stages(self) -> Sequence[str] | None:
        return list(self.stages) if self.stages else None


def _spec_name(task_id: str) -> str:
    """A pipeline / stage name (letters, digits, underscores) derived from a task id."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", task_id)
    if not name[:1].isalpha():
        name = f"t_{name}"
    return name[:64]


class PseudonymizeOperator(PrivstageOperatorBase):
    """Replace columns by keyed pseudonyms (HMAC-SHA-256): a one-stage pipeline without a spec file.

    Args:
        input_path: dataset to read (templated; relative to ``base_dir``).
        output_path: dataset to write (templated); committed atomically.
        columns: column names, or dicts with the fields of a spec's ``columns`` entry
            (``column``, ``case_fold``, ``encoding``, ``bits``, ``output_column``, ``key_id``).
        key_id: key id for columns that name none (templated). Never the key itself.
        keys: the spec's ``keys`` section as a dict (``{"provider": "files", "directory": ...}``);
            default the local dev keyring.
        input_format: ``parquet``, ``csv`` or ``json``.
        sensitive_columns: further columns whose values never appear in guard results.
        expect_before: Great Expectations checks on the input (``{"type": ..., "kwargs": {...}}``).
        expect_after: the same on the pseudonymized output.
        **kwargs: see :class:`PrivstageOperatorBase` and Airflow's ``BaseOperator``.
    """

    template_fields: Sequence[str] = ("input_path", "output_path", "key_id", "base_dir", "report_path", "partition")

    def __init__(
        self,
        *,
        input_path: str,
        output_path: str,
        columns: Sequence[str | Mapping[str, Any]],
        key_id: str,
        keys: Mapping[str, Any] | None = None,
        input_format: str = "parquet",
        sensitive_columns: Sequence[str] = (),
        expect_before: Sequence[Mapping[str, Any]] = (),
        expect_after: Sequence[Mapping[str, Any]] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.input_path = input_path
        self.output_path = output_path
        self.columns = columns
        self.key_id = key_id
        self.keys = keys
        self.input_format = input_format
        self.sensitive_columns = sensitive_columns
        self.expect_before = expect_before
        self.expect_after = expect_after

    def build_spec(self) -> PipelineSpec:
        from pydantic import ValidationError

        from privstage.spec import PipelineSpec

        name = _spec_name(self.task_id)
        columns = [
            {"column": c, "key_id": self.key_id} if isinstance(c, str) else {"key_id": self.key_id, **c}
            for c in self.columns
        ]
        base_dir = self.base_dir or os.environ.get("PRIVSTAGE_BASE_DIR") or Path.cwd()
        data: dict[str, Any] = {
            "name": name,
            "base_dir": str(Path(base_dir).resolve()),
            "stages": [
                {
                    "name": name,
                    "kind": "pseudonymize",
                    "input": {"path": self.input_path, "format": self.input_format},
                    "output": {"path": self.output_path},
                    "columns": columns,
                    "sensitive_columns": list(self.sensitive_columns),
                    "expect_before": [dict(e) for e in self.expect_before],
                    "expect_after": [dict(e) for e in self.expect_after],
                }
            ],
        }
        if self.keys is not None:
            data["keys"] = dict(self.keys)
        try:
            return PipelineSpec.model_validate(data)
        except ValidationError as exc:
            raise spec_error_from_validation(exc, source=f"PseudonymizeOperator '{self.task_id}'") from None
