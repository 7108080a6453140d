"""Build Dagster assets from a privstage pipeline spec: one asset per stage.

The factory is thin: it parses the spec once, declares assets and their blocking checks, and at
run time calls :func:`privstage.engine.run_pipeline` for one stage, then reports the manifest.
Guards, keys, atomic commits and every privacy decision stay in the engine.

``dp_aggregate`` stages also need the ``privstage_ledger`` resource (:class:`BudgetLedgerResource`)
and, when they aggregate one partition per run, a partitions definition (``dp_partitions_def``, e.g.
``MonthlyPartitionsDefinition``): the asset's partition key (``2025-12-01``) is the engine's partition,
which the stage truncates to its granularity (the month ``2025-12``). The release is identified by its
ledger key (pipeline, stage, dataset, period, partition), not by the Dagster run: a step retry, a
re-execution and a second materialization of the same partition get the committed release back,
byte for byte, and spend nothing.
"""

# No ``from __future__ import annotations`` here: Dagster reads the compute function's annotations
# at definition time to find its resources, and needs them as real types.

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    RetryPolicy,
    asset,
)

from privstage.engine import RunContext, run_pipeline
from privstage.errors import GuardFailed, PrivstageError, SpecError
from privstage.spec import PipelineSpec, StageSpec, load_spec, stage_inputs
from privstage_dagster._errors import failure_from
from privstage_dagster.checks import check_results_from_guards, check_specs_for_stage
from privstage_dagster.resources import BudgetLedgerResource, KeyProviderResource, SparkResource

__all__ = [
    "anonymization_metadata",
    "build_privstage_assets",
    "dp_release_metadata",
    "encryption_metadata",
    "he_metadata",
    "materialization_metadata",
    "run_key_for",
]


def run_key_for(context: AssetExecutionContext) -> str:
    """``dagster/<root run id>/<asset key>``.

    The *root* run id is the run's own id, except for a re-execution, where it is the id of the run
    that was re-executed: like a step retry, a re-execution is the same logical run, so the engine
    sees the same run key (the property ledgers and idempotent writes rely on).
    """
    root = context.run.root_run_id or context.run_id
    return f"dagster/{root}/{context.asset_key.to_user_string()}"


def materialization_metadata(manifest: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """Asset metadata from a run manifest (``PipelineManifest.to_dict()``): counts, paths, key ids."""
    entry = next(s for s in manifest["stages"] if s["name"] == stage)
    metadata: dict[str, Any] = {
        "dagster/row_count": entry["rows_out"],
        "rows_in": entry["rows_in"],
        "rows_out": entry["rows_out"],
        "input": MetadataValue.path(entry["input"]),
        "output": MetadataValue.path(entry["output"]),
        "key_ids": entry["key_ids"],
        "key_versions": entry["key_versions"],
        "guards_passed": entry["guard_summary"]["passed"],
        "guards_failed": entry["guard_summary"]["failed"],
        "timings_s": entry["timings"],
        "duration_s": manifest["duration_s"],
        "run_key": manifest["run_key"],
        "privstage_version": manifest["privstage_version"],
    }
    if manifest.get("partition") is not None:
        metadata["partition"] = manifest["partition"]
    metadata.update(dp_release_metadata(entry))
    metadata.update(he_metadata(entry))
    metadata.update(encryption_metadata(entry))
    metadata.update(anonymization_metadata(entry))
    return metadata


def he_metadata(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An HE stage's public facts as asset metadata (empty for other stages): role, round, context fingerprint."""
    he = (entry.get("details") or {}).get("he")
    if not he:
        return {}
    keep = ("role", "round_id", "scheme", "context_fingerprint", "layout_id", "party_id", "aggregator_id")
    return {f"privstage/he_{k}": he[k] for k in keep if k in he}


def encryption_metadata(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An encrypt stage's manifest summary as asset metadata (empty for other stages): dataset, mode, KEK id
    and version, encrypted columns, file count. Never keys or wrapped keys (the summary holds none)."""
    summary = (entry.get("details") or {}).get("encryption")
    if entry.get("kind") != "encrypt" or not summary:
        return {}
    return {
        "privstage/dataset": summary["dataset"],
        "privstage/encryption_mode": summary["mode"],
        "privstage/kek_id": summary["kek_id"],
        "privstage/kek_version": summary["kek_version"],
        "privstage/encrypted_columns": summary["columns"],
        "privstage/files": summary["files"],
    }


def anonymization_metadata(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An anonymize stage's release as asset metadata (empty for other stages): model, levels, class sizes.

    Counts, shares and generalization levels only; never a value.
    """
    anon = (entry.get("details") or {}).get("anonymize")
    if entry.get("kind") != "anonymize" or not anon:
        return {}
    risk = anon.get("risk") or {}
    return {
        "privstage/anonymity_model": anon.get("model"),
        "generalization_levels": anon.get("levels"),
        "smallest_class": risk.get("min_class_size"),
        "smallest_l": risk.get("min_l"),
        "classes": risk.get("classes"),
        "suppressed_rows": anon.get("suppressed_rows"),
        "prosecutor_risk_max": risk.get("prosecutor_risk_max"),
        "discernibility": anon.get("discernibility"),
    }


def dp_release_metadata(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A DP stage's release as asset metadata (empty for other stages): ledger key, ε/δ spent, sha256.

    ``epsilon_spent`` / ``delta_spent`` are what this materialization charged to the ledger: ``"0"`` when
    it returned a release committed earlier (``reused_release``). Budgets stay exact decimal text.
    """
    dp = (entry.get("details") or {}).get("dp")
    if entry.get("kind") != "dp_aggregate" or not dp:
        return {}
    reused = entry.get("status") == "reused" or bool(dp.get("reused_release"))
    budget = dp.get("budget") or {}
    return {
        "privstage/ledger_key": dp.get("ledger_key"),
        "privstage/budget_dataset": dp.get("dataset"),
        "privstage/budget_period": dp.get("period"),
        "release_epsilon": budget.get("epsilon"),
        "release_delta": budget.get("delta"),
        "epsilon_spent": "0" if reused else budget.get("epsilon"),
        "delta_spent": "0" if reused else budget.get("delta"),
        "release_sha256": dp.get("release_sha256"),
        "reused_release": reused,
    }


def _needs_partition(stage: StageSpec) -> bool:
    """True when a run of ``stage`` fails without a partition (a partitioned DP stage or output, a dated period)."""
    budget = getattr(stage, "budget", None)
    return (
        getattr(stage, "partition", None) is not None
        or "{partition}" in stage.output.path
        or (budget is not None and "{" in budget.period)
    )


def _stage_asset(
    spec: PipelineSpec,
    stage: StageSpec,
    *,
    prefix: Sequence[str],
    group_name: str | None,
    partitions_def: PartitionsDefinition | None,
    retry_policy: RetryPolicy | None,
    extra_deps: Sequence[AssetKey] = (),
) -> AssetsDefinition:
    asset_key = AssetKey([*prefix, stage.name])
    deps = [AssetKey([*prefix, source.stage]) for source in stage_inputs(stage) if source.stage]
    deps += [d for d in extra_deps if d not in deps]
    output_path = spec.resolve_path(stage.output.path)
    # DP stages spend from the ledger; the aggregator and the key holder keep replay nonces in its database.
    uses_ledger = stage.kind in ("dp_aggregate", "he_aggregate", "he_decrypt")

    def run(
        context: AssetExecutionContext,
        spark: SparkResource,
        privstage_keys: KeyProviderResource,
        privstage_ledger: BudgetLedgerResource | None,
    ) -> Iterator[MaterializeResult | AssetCheckResult]:
        run_context = RunContext(
            run_key=run_key_for(context),
            orchestrator="dagster",
            partition=context.partition_key if context.has_partition_key else None,
            attempt=context.retry_number + 1,
        )
        selected = context.selected_asset_check_keys
        try:
            session = spark.get_session(spec.spark)
            keys = privstage_keys.get_provider(spec.state_path(), base_dir=spec.base_dir, default=spec.keys)
            ledger = privstage_ledger.ledger_url(spec.state_path()) if privstage_ledger is not None else None
            manifest = run_pipeline(
                spec,
                stages=[stage.name],
                context=run_context,
                spark=session,
                keys=keys,
                progress=False,
                ledger=ledger,
            )
        except GuardFailed as exc:
            # Record what the guards found, then stop: the output was not committed.
            reports = _guard_reports(exc, stage.name)
            yield from check_results_from_guards(reports, asset_key=asset_key, selected=selected)
            raise failure_from(exc) from exc
        except PrivstageError as exc:
            if exc.retryable:
                raise
            raise failure_from(exc) from exc

        data = manifest.to_dict()
        entry = next(s for s in data["stages"] if s["name"] == stage.name)
        yield MaterializeResult(
            metadata=materialization_metadata(data, stage.name),
            check_results=check_results_from_guards(entry["guards"], asset_key=asset_key, selected=selected),
        )

    # Dagster finds an asset's resources in its compute function's signature: DP stages ask for the ledger.
    if uses_ledger:

        def compute(
            context: AssetExecutionContext,
            spark: SparkResource,
            privstage_keys: KeyProviderResource,
            privstage_ledger: BudgetLedgerResource,
        ) -> Iterator[MaterializeResult | AssetCheckResult]:
            yield from run(context, spark, privstage_keys, privstage_ledger)

    else:

        def compute(  # type: ignore[misc]
            context: AssetExecutionContext, spark: SparkResource, privstage_keys: KeyProviderResource
        ) -> Iterator[MaterializeResult | AssetCheckResult]:
            yield from run(context, spark, privstage_keys, None)

    metadata: dict[str, Any] = {
        "privstage/pipeline": spec.name,
        "privstage/kind": stage.kind,
        "output": MetadataValue.path(output_path),
    }
    if stage.kind == "dp_aggregate":
        metadata["privstage/budget_dataset"] = stage.budget.dataset  # type: ignore[union-attr]
        metadata["privstage/budget_period"] = stage.budget.period  # type: ignore[union-attr]
        metadata["privstage/release_epsilon"] = str(stage.total_budget().epsilon)  # type: ignore[union-attr]
    return asset(
        key=asset_key,
        deps=deps,
        check_specs=check_specs_for_stage(stage, asset_key),
        group_name=group_name,
        partitions_def=partitions_def,
        retry_policy=retry_policy,
        description=stage.description or f"privstage {stage.kind} stage '{stage.name}' of '{spec.name}'.",
        metadata=metadata,
        kinds={"spark", "privstage"},
    )(compute)


def _guard_reports(exc: GuardFailed, stage: str) -> list[Mapping[str, Any]]:
    manifest = getattr(exc, "manifest", None)
    if manifest is not None:
        for entry in manifest.to_dict()["stages"]:
            if entry["name"] == stage:
                return entry["guards"]
    return [exc.report.to_dict()] if exc.report is not None else []


def build_privstage_assets(
    spec: PipelineSpec | str | os.PathLike[str],
    *,
    base_dir: str | os.PathLike[str] | None = None,
    group_name: str | None = None,
    key_prefix: str | Sequence[str] | None = None,
    partitions_def: PartitionsDefinition | None = None,
    dp_partitions_def: PartitionsDefinition | None = None,
    retry_policy: RetryPolicy | None = None,
) -> list[AssetsDefinition]:
    """One Dagster asset per stage of a privstage pipeline.

    The assets need two resources: ``spark`` (:class:`SparkResource`) and ``privstage_keys``
    (:class:`KeyProviderResource`); ``dp_aggregate`` assets also need ``privstage_ledger``
    (:class:`BudgetLedgerResource`). Asset keys are the stage names (under ``key_prefix``); a stage
    reading another stage's output depends on its asset. Each asset declares blocking checks for
    its guards (see :mod:`privstage_dagster.checks`).

    Args:
        spec: a ``pipeline.yaml`` path, or a parsed :class:`~privstage.spec.PipelineSpec`.
        base_dir: relative dataset paths resolve against it (default ``$PRIVSTAGE_BASE_DIR``, else the
            spec file's folder); only with a path.
        group_name: Dagster asset group; default the pipeline name.
        key_prefix: prefix of every asset key.
        partitions_def: partitions of every asset; the engine receives the partition key.
        dp_partitions_def: partitions of the ``dp_aggregate`` assets (instead of ``partitions_def``), e.g.
            ``MonthlyPartitionsDefinition`` for a stage with ``partition: {granularity: month}``. A
            partitioned DP asset may depend on an unpartitioned one (the whole pseudonymized table).
        retry_policy: applies to retryable errors only (privstage's non-retryable errors, among them
            ``BudgetExceeded``, bypass it).

    Raises:
        SpecError: the spec cannot be read or is invalid, or a stage that needs a partition per run
            (a partitioned DP stage, a ``{partition}`` output, a dated budget period) has no partitions
            definition (at definition time, before any run).

    Example:
        .. code-block:: python

            defs = dg.Definitions(
                assets=build_privstage_assets(
                    "pipeline.yaml", dp_partitions_def=dg.MonthlyPartitionsDefinition(start_date="2024-01-01")
                ),
                resources={
                    "spark": SparkResource(),
                    "privstage_keys": KeyProviderResource(),
                    "privstage_ledger": BudgetLedgerResource(url=dg.EnvVar("PRIVSTAGE_LEDGER_URL")),
                },
            )
    """
    if isinstance(spec, PipelineSpec):
        if base_dir is not None:
            raise SpecError("base_dir applies to a spec path; a parsed PipelineSpec has its base_dir already")
        pipeline = spec
    else:
        pipeline = load_spec(Path(spec), base_dir=base_dir)
    prefix = [key_prefix] if isinstance(key_prefix, str) else list(key_prefix or [])
    assets = []
    for stage in pipeline.stages:
        stage_partitions = dp_partitions_def if stage.kind == "dp_aggregate" and dp_partitions_def else partitions_def
        if stage_partitions is None and _needs_partition(stage):
            option = "dp_partitions_def" if stage.kind == "dp_aggregate" else "partitions_def"
            raise SpecError(
                f"runs of this stage need a partition (it aggregates or writes one per run); pass {option}="
                "(e.g. dg.MonthlyPartitionsDefinition(start_date=...)) to build_privstage_assets",
                stage=stage.name,
            )
        assets.append(
            _stage_asset(
                pipeline,
                stage,
                prefix=prefix,
                group_name=group_name or pipeline.name,
                partitions_def=stage_partitions,
                retry_policy=retry_policy,
            )
        )
    return assets
