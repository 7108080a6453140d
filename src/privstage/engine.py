"""The engine: validate -> plan -> pre-guards -> apply -> post-guards -> commit -> report.

Every front door (CLI, Airflow operators, Dagster assets) calls :func:`run_pipeline` with the
same :class:`~privstage.spec.PipelineSpec`. Everything that can be checked without reading data
(spec, keys, input schemas, output policy, expectation names) is checked first, for all selected
stages, before any stage runs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from privstage.errors import GuardFailed, PrivstageError, SpecError, wrap_library_error
from privstage.guards.base import DataStats, Guard, GuardContext, GuardOutcome, GuardReport, Phase
from privstage.io import (
    MANIFEST_NAME,
    commit,
    discard,
    is_local,
    local_path,
    new_staging_path,
    read_dataset,
    write_json_atomic,
)
from privstage.report import PipelineManifest, StageManifest, utc_now, write_report
from privstage.stages import stage_module

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession
    from pyspark.sql.types import StructType

    from privstage.budget import BudgetLedger
    from privstage.keys.base import KeyProvider
    from privstage.spec import PipelineSpec, StageSpec

__all__ = [
    "PipelinePlan",
    "PlanEnv",
    "RunContext",
    "StagePlan",
    "plan_pipeline",
    "run_pipeline",
    "validate_pipeline",
]

log = logging.getLogger("privstage")


@dataclass(frozen=True)
class RunContext:
    """Who runs the pipeline and under which run key (stable across retries of one logical run)."""

    run_key: str
    orchestrator: str = "cli"
    partition: str | None = None
    attempt: int = 1


class PlanEnv:
    """What stages may ask the engine while planning: the pipeline, the run's partition, the budget ledger.

    The ledger opens on first use (only DP stages need it); :meth:`check_budget` adds up what the planned
    stages of this run will spend per (dataset, period) so that two stages cannot each fit alone but not
    together.
    """

    def __init__(
        self,
        spec: PipelineSpec,
        *,
        run_key: str | None,
        partition: str | None,
        ledger: BudgetLedger | str | None = None,
    ) -> None:
        self.pipeline = spec.name
        self.spark: SparkSession | None = None  # set by plan_pipeline
        self.run_key = run_key
        self.partition = partition
        self._spec = spec
        self._ledger_arg = ledger
        self._ledger: BudgetLedger | None = None
        self._owned = False
        self._planned: dict[tuple[str, str], list[Any]] = {}

    @property
    def spec(self) -> PipelineSpec:
        """The pipeline being planned (stages resolve their input paths and state directory through it)."""
        return self._spec

    def ledger(self) -> BudgetLedger:
        """The budget ledger: the one given to the engine, else the URL's, else ``<state_dir>/ledger.db``."""
        if self._ledger is None:
            from privstage.budget import BudgetLedger, resolve_ledger_url

            if isinstance(self._ledger_arg, BudgetLedger):
                self._ledger = self._ledger_arg
            else:
                url = resolve_ledger_url(self._spec.state_path(), self._ledger_arg)
                self._ledger = BudgetLedger(url)
                self._owned = True
        return self._ledger

    def check_budget(self, key: Any, budget: Any, total: Any, *, stage: str) -> str | None:
        """Check that ``budget`` fits the ledger for ``key`` (with this run's other stages). No write.

        Returns:
            The sha256 of the committed release when ``key`` is already committed (nothing will be spent),
            else ``None``.

        Raises:
            SpecError: the ledger's declared total for the dataset and period differs from the spec's.
            BudgetExceeded: the planned spends do not fit what remains.
        """
        from privstage.budget import PrivacyBudget
        from privstage.errors import BudgetExceeded

        ledger = self.ledger()
        spend = ledger.spend(key)
        if spend is not None and spend.state == "committed":
            return spend.release_sha256
        declared = ledger.declared(key.dataset, key.period)
        if declared is not None and declared != total:
            raise SpecError(
                f"the ledger declares {declared} for dataset {key.dataset!r}, period {key.period!r}; the spec says "
                f"{total} (a declared total never changes)",
                stage=stage,
            )
        remaining = total if declared is None else ledger.remaining(key.dataset, key.period)
        if spend is not None and spend.state == "reserved":
            remaining = remaining + spend.budget  # a dead attempt's reservation: this run takes it over
        planned = self._planned.setdefault((key.dataset, key.period), [])
        wanted = PrivacyBudget.total([*planned, budget])
        if not wanted.fits_within(remaining):
            earlier = f" (this stage {budget}, earlier stages of this run {PrivacyBudget.total(planned)})"
            raise BudgetExceeded(
                f"privacy budget exceeded for dataset {key.dataset!r}, period {key.period!r}: requested {wanted}"
                + (earlier if planned else "")
                + f", remaining {remaining} of {total}; ledger key {key}",
                stage=stage,
                requested=wanted,
                remaining=remaining,
                ledger_key=str(key),
            )
        planned.append(budget)
        return None

    def close(self) -> None:
        if self._ledger is not None and self._owned:
            self._ledger.close()
        self._ledger = None


@dataclass
class StagePlan:
    """One stage resolved against its input schema and keys. Holds keys: never serialize it."""

    spec: StageSpec
    module: ModuleType
    detail: Any  # the stage module's own plan object
    input_path: str
    input_format: str
    input_options: dict[str, str]
    input_schema: StructType
    output_path: str
    output_schema: StructType
    overwrite: bool
    before: list[Guard] = field(default_factory=list)
    after: list[Guard] = field(default_factory=list)
    committed: dict[str, Any] | None = None  # the output this run key already committed (a retry)
    reader: Callable[[], Any] | None = None  # stages without one ``input`` read through their module's read_inputs

    @property
    def key_versions(self) -> dict[str, int]:
        return dict(getattr(self.detail, "key_versions", {}))

    def describe(self) -> dict[str, Any]:
        """JSON-safe summary for ``privstage plan``."""
        return {
            "stage": self.spec.name,
            "kind": self.spec.kind,
            "input": self.input_path,
            "output": self.output_path,
            "overwrite": self.overwrite,
            "key_versions": self.key_versions,
            "columns_in": list(self.input_schema.fieldNames()),
            "columns_out": list(self.output_schema.fieldNames()),
            "guards_before": len(self.before) + len(self.spec.expect_before),
            "guards_after": len(self.after) + len(self.spec.expect_after),
            **({"privacy": self.detail.describe()} if hasattr(self.detail, "describe") else {}),
        }


@dataclass
class PipelinePlan:
    spec: PipelineSpec
    stages: list[StagePlan]

    def describe(self) -> dict[str, Any]:
        return {"pipeline": self.spec.name, "stages": [s.describe() for s in self.stages]}


# ---------------------------------------------------------------------------------------------
# Progress on the terminal
# ---------------------------------------------------------------------------------------------
class _Progress:
    """Per-stage progress lines on stderr (only names, counts and timings)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.console: Any = None
        if enabled:
            from rich.console import Console

            self.console = Console(stderr=True, highlight=False, soft_wrap=True)

    def stage(self, index: int, total: int, spec: StageSpec) -> None:
        log.info("stage %d/%d %s (%s) starting", index, total, spec.name, spec.kind)
        if self.console:
            self.console.print(f"[bold][{index}/{total}] {spec.name}[/bold] ({spec.kind})")

    def step(self, name: str, ok: bool, seconds: float, note: str = "") -> None:
        log.info("  %s %s in %.2fs %s", name, "ok" if ok else "FAILED", seconds, note)
        if self.console:
            mark = "[green]✓[/green]" if ok else "[red]✗[/red]"
            self.console.print(f"    {mark} {name:<14} {seconds:6.2f}s  {note}")


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------
def _read_schema(spark: SparkSession, stage: StageSpec, path: str, fmt: str, options: dict[str, str]) -> StructType:
    if is_local(path) and not local_path(path).exists():
        raise SpecError(f"input dataset {path} does not exist", stage=stage.name)
    try:
        return read_dataset(spark, path, fmt, options).schema
    except Exception as exc:
        raise SpecError(
            f"cannot read the schema of input {path} as {fmt} ({_error_class(exc)})", stage=stage.name
        ) from None


def _committed_by(output_path: str, run_key: str | None, reuse_key: str | None = None) -> dict[str, Any] | None:
    """The committed manifest of ``output_path`` when the same run key (or the same release) wrote it, else None.

    ``reuse_key`` names a logical release (a DP stage's ledger key): an output committed for the same
    release is that release, whichever run committed it (a second DAG run for the same logical date).
    """
    if run_key is None and reuse_key is None:
        return None
    manifest_file = local_path(output_path) / MANIFEST_NAME
    try:
        committed = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if committed.get("status") != "succeeded":
        return None
    same_run = run_key is not None and committed.get("run_key") == run_key
    same_release = reuse_key is not None and committed.get("release_key") == reuse_key
    return dict(committed) if same_run or same_release else None


def _guards_for(stage: StageSpec, phase: Phase, builtin: list[Guard]) -> list[Guard]:
    expectations = stage.expect_before if phase == "before" else stage.expect_after
    guards = list(builtin)
    if expectations:
        from privstage.guards.gx import GXSuiteGuard

        guards.append(GXSuiteGuard(name=f"expect_{phase}", expectations=expectations))
    return guards


def plan_pipeline(
    spec: PipelineSpec,
    *,
    spark: SparkSession,
    keys: KeyProvider,
    stages: Sequence[str] | None = None,
    overwrite: bool | None = None,
    run_key: str | None = None,
    env: PlanEnv | None = None,
) -> PipelinePlan:
    """Resolve every selected stage before any data is read.

    A stage whose output was committed by the same ``run_key`` (a retried task, a re-executed run)
    is planned as already done: the retry reconnects to that output instead of redoing or failing.

    Raises:
        SpecError: unknown stage, missing input, unknown column, wrong type, output exists, bad
            expectation.
        KeyUnavailable: a key id cannot be fetched.
    """
    env = env or PlanEnv(spec, run_key=run_key, partition=None)
    env.spark = spark
    selected = list(stages) if stages else [s.name for s in spec.stages]
    for name in selected:
        spec.stage(name)  # raises SpecError for an unknown name
    planned: dict[str, StagePlan] = {}
    out: list[StagePlan] = []
    for stage in spec.stages:
        if stage.name not in selected:
            continue
        module = stage_module(stage.kind)
        reader: Callable[[], Any] | None = None
        if stage.input is None:
            # No single input dataset (he_keygen reads none, he_aggregate many): the module reads its own.
            input_path, reader = module.read_inputs(stage, spec, spark)
            fmt, options = "parquet", {}
            schema = reader().schema
        else:
            input_path = spec.input_path(stage)
            fmt = spec.input_format(stage)
            options = dict(stage.input.options) if stage.input.stage is None else {}
            if stage.input.stage is not None and stage.input.stage in planned:
                schema = planned[stage.input.stage].output_schema
            elif hasattr(module, "read_schema"):  # e.g. decrypt: an input whose footers are encrypted
                schema = module.read_schema(stage, spark, input_path, keys, env=env)
            else:
                schema = _read_schema(spark, stage, input_path, fmt, options)
        detail = module.plan(stage, schema, keys, env=env)
        if hasattr(module, "output_schema"):
            output_schema = module.output_schema(detail, schema)
        else:
            output_schema = module.apply(spark.createDataFrame([], schema), detail, spark=spark).schema
        # A stage that normalises the partition (a DP stage's month) names its output by the normalised key, so
        # every front door (2025-12, 2025-12-01, 2025-12-01T00:00:00+00:00) writes one release to one place.
        partition = getattr(detail, "partition_key", None) or env.partition
        output_path = spec.resolve_path(_output_template(stage, partition))
        stage_overwrite = bool(overwrite) or stage.output.mode == "overwrite"
        committed = _committed_by(output_path, run_key, getattr(detail, "reuse_key", None))
        if local_path(output_path).exists() and not stage_overwrite and committed is None:
            raise SpecError(
                f"output {output_path} exists; set output.mode: overwrite or pass --overwrite", stage=stage.name
            )
        if reader is None and os.path.realpath(local_path(output_path)) == os.path.realpath(local_path(input_path)):
            raise SpecError("output path is the input path", stage=stage.name)
        for phase, expectations, columns in (
            ("expect_before", stage.expect_before, schema.fieldNames()),
            ("expect_after", stage.expect_after, output_schema.fieldNames()),
        ):
            if expectations:
                from privstage.guards.gx import check_expectation_specs

                check_expectation_specs(expectations, stage=stage.name, phase=phase, columns=columns)
        before, after = module.builtin_guards(detail)
        plan = StagePlan(
            spec=stage,
            module=module,
            detail=detail,
            input_path=input_path,
            input_format=fmt,
            input_options=options,
            input_schema=schema,
            output_path=output_path,
            output_schema=output_schema,
            overwrite=stage_overwrite,
            before=_guards_for(stage, "before", before),
            after=_guards_for(stage, "after", after),
            committed=committed,
            reader=reader,
        )
        planned[stage.name] = plan
        out.append(plan)
    return PipelinePlan(spec=spec, stages=out)


def _output_template(stage: StageSpec, partition: str | None) -> str:
    """The output path with ``{partition}`` filled in (one output per partition)."""
    path = stage.output.path
    if "{partition}" not in path:
        return path
    if partition is None:
        raise SpecError(
            "output.path uses {partition} and this run has no partition (pass --partition, or run a partitioned "
            "asset / a DAG with a logical date)",
            stage=stage.name,
        )
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in partition)
    return path.replace("{partition}", safe)


def _resolve_runtime(
    spec: PipelineSpec, spark: SparkSession | None, keys: KeyProvider | None
) -> tuple[SparkSession, KeyProvider]:
    from privstage.keys import provider_from_spec
    from privstage.spark import get_session

    if keys is None:
        keys = provider_from_spec(spec.keys, state_dir=spec.state_path(), base_dir=spec.base_dir)
    if spark is None:
        spark = get_session(spec.spark)
    return spark, keys


def validate_pipeline(
    spec: PipelineSpec,
    *,
    spark: SparkSession | None = None,
    keys: KeyProvider | None = None,
    stages: Sequence[str] | None = None,
    overwrite: bool | None = None,
    partition: str | None = None,
    ledger: BudgetLedger | str | None = None,
) -> PipelinePlan:
    """Check a pipeline without reading data or writing anything; returns the plan.

    DP stages read the budget ledger (never write it): a plan that does not fit what remains raises
    :class:`~privstage.errors.BudgetExceeded`.
    """
    spark, keys = _resolve_runtime(spec, spark, keys)
    env = PlanEnv(spec, run_key=None, partition=partition, ledger=ledger)
    try:
        return plan_pipeline(spec, spark=spark, keys=keys, stages=stages, overwrite=overwrite, env=env)
    finally:
        env.close()


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------
def _error_class(exc: BaseException) -> str:
    """Spark's error condition name, or the exception type: never the message (it can hold values)."""
    for attr in ("getCondition", "getErrorClass"):
        getter = getattr(exc, attr, None)
        if callable(getter):
            try:
                value = getter()
            except Exception:  # noqa: S112 - best effort
                continue
            if value:
                return f"{type(exc).__name__}: {value}"
    return type(exc).__name__


def _run_guards(guards: list[Guard], ctx: GuardContext) -> GuardReport:
    outcomes: list[GuardOutcome] = []
    for guard in guards:
        outcomes.extend(guard.check(ctx))
    return GuardReport(stage=ctx.stage, phase=ctx.phase, outcomes=tuple(outcomes))


def _blocked_message(report: GuardReport) -> str:
    failed = [f"{o.guard}:{o.check}" + (f"({o.column})" if o.column else "") for o in report.failures if o.blocking]
    return f"{report.phase}-guards blocked the stage: {', '.join(failed)}"


def _timed(progress: _Progress, name: str, fn: Callable[[], Any], note: Callable[[Any], str] | None = None) -> Any:
    t0 = time.perf_counter()
    try:
        result = fn()
    except BaseException:
        progress.step(name, False, time.perf_counter() - t0)
        raise
    progress.step(name, True, time.perf_counter() - t0, note(result) if note else "")
    return result


def _run_stage(
    plan: StagePlan,
    manifest: StageManifest,
    *,
    spark: SparkSession,
    run_id: str,
    run_key: str,
    pipeline: str,
    progress: _Progress,
    context: RunContext,
) -> None:
    if plan.committed is not None:
        # This run key (or this release) committed the stage already: reconnect, do not redo.
        manifest.status = "reused"
        manifest.rows_in = plan.committed.get("rows_in")
        manifest.rows_out = plan.committed.get("rows_out")
        manifest.details["reused_from"] = plan.committed.get("run_key")
        committed_details = plan.committed.get("details", {})
        manifest.details.update({k: v for k, v in committed_details.items() if k in ("dp", "anonymize")})
        manifest.guards.extend(GuardReport.from_dict(g) for g in plan.committed.get("guards", ()))
        progress.step("reused", True, 0.0, f"committed earlier by run key {plan.committed.get('run_key')}")
        return
    try:
        _run_stage_io(
            plan,
            manifest,
            spark=spark,
            run_id=run_id,
            run_key=run_key,
            pipeline=pipeline,
            progress=progress,
            context=context,
        )
    finally:
        close = getattr(plan.module, "close", None)
        if close is not None:
            close(plan.detail)  # per-run resources, e.g. a materialized key directory


def _run_stage_io(
    plan: StagePlan,
    manifest: StageManifest,
    *,
    spark: SparkSession,
    run_id: str,
    run_key: str,
    pipeline: str,
    progress: _Progress,
    context: RunContext,
) -> None:
    stage = plan.spec
    sensitive = stage.input_sensitive_columns()
    sensitive_out = sensitive | {
        f.name for f in plan.output_schema.fields if f.name not in plan.input_schema.fieldNames()
    }
    input_options = dict(plan.input_options)
    if hasattr(plan.module, "input_options"):  # e.g. decryption settings for an encrypted input
        input_options.update(plan.module.input_options(plan.detail))
    if plan.reader is not None:
        df_in = plan.reader()
    else:
        df_in = read_dataset(spark, plan.input_path, plan.input_format, input_options)
    narrow = getattr(plan.module, "narrow", None)
    if narrow is not None:
        df_in = narrow(df_in, plan.detail)
    in_stats = DataStats(df_in)
    timings = manifest.timings

    t0 = time.perf_counter()
    before = _timed(
        progress,
        "pre-guards",
        lambda: _run_guards(plan.before, GuardContext(stage.name, "before", df_in, None, sensitive, stats=in_stats)),
        lambda r: f"{len(r.outcomes)} checks",
    )
    manifest.guards.append(before)
    timings["pre_guards_s"] = time.perf_counter() - t0
    if before.blocked:
        raise GuardFailed(_blocked_message(before), stage=stage.name, report=before)

    staging = new_staging_path(plan.output_path, run_id)
    production: Any = None
    try:
        t0 = time.perf_counter()

        def write() -> None:
            nonlocal production
            produce = getattr(plan.module, "produce", None)
            if produce is not None:
                production = produce(df_in, plan.detail, spark=spark, run=context)
                df_out = production.frame
            else:
                df_out = plan.module.apply(df_in, plan.detail, spark=spark)
            if hasattr(plan.module, "write"):  # e.g. encrypt: write options, a manifest beside the files
                manifest.details.update(plan.module.write(df_out, staging, plan.detail, spark=spark) or {})
            else:
                writer = df_out.write.mode("error")
                if stage.output.partition_by:
                    writer = writer.partitionBy(*stage.output.partition_by)
                writer.parquet(staging)
            if production is not None:
                manifest.details.update(production.details)
                for name, data in production.files.items():
                    (local_path(staging) / name).write_bytes(data)

        _timed(progress, "apply + write", write)
        timings["apply_write_s"] = time.perf_counter() - t0

        if hasattr(plan.module, "read_staged"):  # e.g. file-mode encrypt: read back through the decryption
            staged = plan.module.read_staged(staging, plan.detail, spark=spark)
        else:
            staged = spark.read.parquet(staging)
        out_stats = DataStats(staged)
        t0 = time.perf_counter()
        after = _timed(
            progress,
            "post-guards",
            lambda: _run_guards(
                plan.after,
                GuardContext(stage.name, "after", staged, df_in, sensitive_out, stats=out_stats, input_stats=in_stats),
            ),
            lambda r: f"{len(r.outcomes)} checks",
        )
        manifest.guards.append(after)
        timings["post_guards_s"] = time.perf_counter() - t0
        if after.blocked:
            raise GuardFailed(_blocked_message(after), stage=stage.name, report=after)

        manifest.rows_in = in_stats.rows
        manifest.rows_out = out_stats.rows
        if production is not None and production.before_commit is not None:
            # e.g. the DP ledger: the spend is committed (with the release bytes) before the output is.
            outcomes = _timed(progress, "ledger commit", production.before_commit)
            manifest.guards.append(GuardReport(stage=stage.name, phase="after", outcomes=tuple(outcomes)))
        manifest.status = "succeeded"
        reuse_key = getattr(plan.detail, "reuse_key", None)
        write_json_atomic(
            local_path(staging) / MANIFEST_NAME,
            {"run_key": run_key, "pipeline": pipeline, "release_key": reuse_key, **manifest.to_dict()},
        )
        t0 = time.perf_counter()
        _timed(
            progress,
            "commit",
            lambda: commit(staging, plan.output_path, overwrite=plan.overwrite, stage=stage.name),
            lambda _: f"{manifest.rows_out:,} rows -> {plan.output_path}",
        )
        timings["commit_s"] = time.perf_counter() - t0
    except BaseException:
        manifest.status = "failed"
        discard(staging)
        if production is not None and production.on_failure is not None:
            try:
                production.on_failure()
            except Exception as exc:  # the original failure matters more; a stale reservation is taken over later
                log.warning("stage %s: could not release its budget reservation (%s)", stage.name, type(exc).__name__)
        raise


def run_pipeline(
    spec: PipelineSpec,
    *,
    stages: Sequence[str] | None = None,
    context: RunContext | None = None,
    spark: SparkSession | None = None,
    keys: KeyProvider | None = None,
    progress: bool | None = None,
    report_path: str | os.PathLike[str] | None = None,
    overwrite: bool | None = None,
    ledger: BudgetLedger | str | None = None,
) -> PipelineManifest:
    """Run the selected stages of a pipeline (all by default) and return the manifest.

    Args:
        spec: the parsed pipeline.
        stages: names of the stages to run, in spec order; default all.
        context: run key and orchestrator; default a fresh CLI run key.
        spark: the session to use; default :func:`privstage.spark.get_session` on ``spec.spark``.
        keys: the key provider; default the one ``spec.keys`` names.
        progress: print per-stage progress on stderr; default when stderr is a terminal.
        report_path: write the JSON report (and an HTML page beside it) here, also on failure.
        overwrite: replace existing outputs (atomically) whatever ``output.mode`` says.
        ledger: the privacy-budget ledger (DP stages): an open :class:`~privstage.budget.BudgetLedger` or a URL;
            default ``$PRIVSTAGE_LEDGER_URL``, ``$PRIVSTAGE_LEDGER_URL_FILE`` or ``<state_dir>/ledger.db``.

    Raises:
        SpecError, KeyUnavailable, BudgetExceeded: before any data is read.
        GuardFailed: a blocking guard failed; the stage's output was not committed.
        StageExecutionError: Spark or another library failed (retryable).
    """
    context = context or RunContext(run_key=f"cli/{spec.name}/{uuid.uuid4().hex[:12]}")
    run_id = uuid.uuid4().hex[:12]
    display = _Progress(sys.stderr.isatty() if progress is None else progress)
    manifest = PipelineManifest(
        pipeline=spec.name,
        run_key=context.run_key,
        orchestrator=context.orchestrator,
        partition=context.partition,
        attempt=context.attempt,
    )
    started = time.perf_counter()
    env = PlanEnv(spec, run_key=context.run_key, partition=context.partition, ledger=ledger)
    try:
        spark, keys = _resolve_runtime(spec, spark, keys)
        plan = plan_pipeline(
            spec, spark=spark, keys=keys, stages=stages, overwrite=overwrite, run_key=context.run_key, env=env
        )
        for index, stage_plan in enumerate(plan.stages, start=1):
            display.stage(index, len(plan.stages), stage_plan.spec)
            stage_manifest = StageManifest(
                name=stage_plan.spec.name,
                kind=stage_plan.spec.kind,
                input=stage_plan.input_path,
                output=stage_plan.output_path,
                key_ids=sorted(stage_plan.spec.key_ids()),
                key_versions=stage_plan.key_versions,
            )
            manifest.stages.append(stage_manifest)
            try:
                _run_stage(
                    stage_plan,
                    stage_manifest,
                    spark=spark,
                    run_id=run_id,
                    run_key=context.run_key,
                    pipeline=spec.name,
                    progress=display,
                    context=context,
                )
            except PrivstageError as exc:
                exc.stage = exc.stage or stage_plan.spec.name
                stage_manifest.error = exc.to_dict()
                raise
            except Exception as exc:
                wrapped = wrap_library_error(
                    exc, f"stage failed while running on Spark ({_error_class(exc)})", stage=stage_plan.spec.name
                )
                stage_manifest.error = wrapped.to_dict()
                raise wrapped from wrapped.__cause__
        manifest.status = "succeeded"
        return manifest
    except PrivstageError as exc:
        manifest.status = "failed"
        manifest.error = exc.to_dict()
        exc.manifest = manifest  # type: ignore[attr-defined]
        raise
    finally:
        env.close()
        manifest.finished_at = utc_now()
        manifest.duration_s = time.perf_counter() - started
        if report_path is not None:
            write_report(manifest, report_path)
