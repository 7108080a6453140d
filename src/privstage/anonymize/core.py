"""``anonymize``: transforms, lattice search, suppression, and the risk report measured on the output.

Order of work: check the config against the schema and fetch keys (nothing read yet); one Spark job
builds the count table of the finest allowed QI labels (cached, small); the lattice search rolls it up;
the chosen levels are applied to every row in one projection with the other column transforms, rows
of classes that violate the model are removed by an anti-join against the (small) table of violating
classes; finally the release is measured on itself (:func:`~privstage.anonymize.risk.measure_risk`) and
checked against k and l before it is returned.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from privstage.anonymize.config import (
    AgeHierarchy,
    AnonymizeConfig,
    DateShiftRule,
    DropRule,
    GeneralizeRule,
    KeepRule,
    MaskRule,
    PseudonymizeRule,
    QuasiIdentifierRule,
    SensitiveRule,
    SuppressRule,
    TopBottomCodeRule,
)
from privstage.anonymize.hierarchy import base_value, labels, level_labels
from privstage.anonymize.risk import RiskReport, measure_risk, risk_of_classes
from privstage.anonymize.search import (
    COUNT_COL,
    NULL_COL,
    SENS_COL,
    QISpec,
    SearchResult,
    best_k_at,
    lattice_search,
)
from privstage.anonymize.transforms import (
    apply_keyed,
    mask,
    resolve_keys,
    shift_column,
    shifted,
    top_bottom_code,
)
from privstage.errors import GuardFailed, SpecError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from privstage.keys.base import KeyProvider

__all__ = [
    "AnonymityNotAchievable",
    "AnonymizationReport",
    "AnonymizationResult",
    "anonymize",
    "check_schema",
    "release_schema",
]


class AnonymityNotAchievable(GuardFailed):
    """The privacy model cannot be met within the suppression limit (or the input is smaller than k)."""

    def __init__(self, message: str, *, stage: str | None = None, best_k: int = 0, best_l: int | None = None) -> None:
        self.best_k = best_k
        self.best_l = best_l
        super().__init__(message, stage=stage)


@dataclass(frozen=True)
class AnonymizationReport:
    """What the release cost and what risk remains. Counts, levels and shares only; no values."""

    model: str
    k: int
    l: int | None  # noqa: E741
    rows_in: int
    rows_out: int
    suppressed_rows: int
    null_suppressed_rows: int
    suppression_limit_rows: int
    levels: dict[str, int]
    top_levels: dict[str, int]
    discernibility: int
    normalized_discernibility: float
    precision_loss: float
    lattice_size: int
    nodes_evaluated: int
    search_jobs: int
    count_table_rows: int
    risk: RiskReport
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["risk"] = self.risk.to_dict()
        return out


@dataclass(frozen=True)
class AnonymizationResult:
    """The release (a lazy DataFrame) and its report (already measured on the release)."""

    data: DataFrame
    report: AnonymizationReport
    search: SearchResult


def _model_name(config: AnonymizeConfig) -> str:
    name = f"{config.k}-anonymity"
    if config.l is not None:
        name += f" with distinct {config.l}-diversity on '{config.sensitive}'"
    return name


def check_schema(config: AnonymizeConfig, schema: StructType, *, stage: str | None = None) -> list[str]:
    """Validate the config against the input schema (no data read). Returns the columns dropped as unlisted.

    Raises:
        SpecError: a rule names a missing column or a column of the wrong type, or an input column is
            not named by any rule while ``unlisted: error``.
    """
    from pyspark.sql.types import DateType, NumericType, TimestampNTZType, TimestampType

    names = list(schema.fieldNames())
    types = {f.name: f.dataType for f in schema.fields}
    for rule in config.columns:
        if rule.column not in names:
            raise SpecError(f"column '{rule.column}' is not in the input", stage=stage)
        if isinstance(rule, DateShiftRule):
            if rule.subject_column not in names:
                raise SpecError(
                    f"subject_column '{rule.subject_column}' of '{rule.column}' is not in the input", stage=stage
                )
            if not isinstance(types[rule.column], DateType | TimestampType | TimestampNTZType):
                raise SpecError(f"date_shift needs a date or timestamp column; '{rule.column}' is not", stage=stage)
        if isinstance(rule, TopBottomCodeRule) and not isinstance(types[rule.column], NumericType):
            raise SpecError(f"top_bottom_code needs a numeric column; '{rule.column}' is not", stage=stage)
        hierarchy = getattr(rule, "hierarchy", None)
        if isinstance(hierarchy, AgeHierarchy) and hierarchy.reference_column:
            if hierarchy.reference_column not in names:
                raise SpecError(f"reference_column '{hierarchy.reference_column}' is not in the input", stage=stage)
    outputs = {getattr(r, "output_column", None) for r in config.columns} - {None}
    listed = {r.column for r in config.columns}
    unlisted = [c for c in names if c not in listed]
    if unlisted and config.unlisted == "error":
        raise SpecError(
            f"columns not named by any rule: {', '.join(unlisted)} (add a rule, or set unlisted: drop)", stage=stage
        )
    clash = sorted(outputs & (set(names) - {r.column for r in config.columns if getattr(r, "output_column", None)}))
    if clash:
        raise SpecError(f"output_column clashes with input column(s): {', '.join(clash)}", stage=stage)
    return unlisted


def _qi_specs(config: AnonymizeConfig) -> list[QISpec]:
    return [
        QISpec(name=r.column, low=r.level_range[0], high=r.level_range[1], top=r.hierarchy.levels - 1)
        for r in config.quasi_identifiers
    ]


def release_schema(config: AnonymizeConfig, schema: StructType, *, spark: SparkSession) -> StructType:
    """The schema of the release of an input with ``schema``, without reading data or keys.

    The release projection is built over an empty frame of that schema: keyed columns get stand-ins of
    their types (pseudonyms are text, date shifts whole days) and every quasi-identifier its lowest
    allowed level (every level's label is text, so the level chosen later does not change the type).
    """
    from pyspark.sql import functions as F

    unlisted = check_schema(config, schema)
    qis = _qi_specs(config)
    prepared = _prepare(spark.createDataFrame([], schema), config, qis)
    stand_ins = {r.column: F.lit(None).cast("string") for r in config.columns if isinstance(r, PseudonymizeRule)}
    shifts = [r for r in config.columns if isinstance(r, DateShiftRule)]
    stand_ins.update({shift_column(i): F.lit(0).cast("int") for i in range(len(shifts))})
    stand_ins.update({f"__g{i}": F.col(q.label_column(i, q.low)) for i, q in enumerate(qis)})
    chosen = prepared.withColumns(stand_ins)
    return chosen.select(*_outputs(chosen, prepared.select(*schema.fieldNames()), config, qis, unlisted)).schema


def _prepare(df: DataFrame, config: AnonymizeConfig, qis: list[QISpec]) -> DataFrame:
    """``df`` plus the label columns of every allowed level of every QI and the null flag.

    Two projections: the level-0 base value of each QI once, then the labels from it.
    """
    from pyspark.sql import functions as F

    bases: dict[str, Column] = {}
    for i, rule in enumerate(config.quasi_identifiers):
        h = rule.hierarchy
        ref = F.col(h.reference_column) if isinstance(h, AgeHierarchy) and h.reference_column else None
        bases[f"__b{i}"] = base_value(h, F.col(rule.column), reference=ref)
    null_flag = F.lit(False)
    if config.null_policy == "suppress":
        for rule in config.quasi_identifiers:
            null_flag = null_flag | F.col(rule.column).isNull()
    bases[NULL_COL] = null_flag
    columns: dict[str, Column] = {}
    for i, (rule, spec) in enumerate(zip(config.quasi_identifiers, qis, strict=True)):
        all_levels = level_labels(rule.hierarchy, F.col(f"__b{i}"))
        for lv in range(spec.low, spec.high + 1):
            columns[spec.label_column(i, lv)] = all_levels[lv]
    return df.withColumns(bases).withColumns(columns).drop(*[f"__b{i}" for i in range(len(qis))])


def anonymize(
    df: DataFrame,
    config: AnonymizeConfig,
    *,
    spark: SparkSession,
    keys: KeyProvider | None = None,
    stage: str = "anonymize",
    measure: Literal["release", "classes"] = "release",
) -> AnonymizationResult:
    """Anonymize ``df``: transform every column by its rule and enforce the privacy model.

    Args:
        df: the input (not collected; only aggregates reach the driver).
        config: rules and privacy model.
        spark: the session (for the small node and key relations).
        keys: key provider for pseudonym and date-shift keys.
        stage: stage name for messages.
        measure: where the risk report is measured: on the ``release`` itself (one more pass over the rows), or
            on the chosen node's kept ``classes`` in the small count table (exactly the release's classes; for
            callers that verify the written release themselves, as the ``anonymize`` stage's guards do).

    Returns:
        The release (lazy) and its report, measured on the release.

    Raises:
        SpecError: config does not fit the schema (before data is read).
        KeyUnavailable: a key id is missing (before data is read).
        AnonymityNotAchievable: fewer rows than k, a null QI under ``null_policy: error``, or no
            generalization meets the model within ``max_suppression``; names the model and best k reached.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    unlisted = check_schema(config, df.schema, stage=stage)
    resolved = resolve_keys(config, keys, stage=stage)
    model = _model_name(config)
    qis = _qi_specs(config)
    sensitive = config.sensitive
    prepared = _prepare(df, config, qis)

    # One pass over the rows: counts per combination of allowed labels (and sensitive value).
    label_cols = [q.label_column(i, lv) for i, q in enumerate(qis) for lv in range(q.low, q.high + 1)]
    group = [*label_cols, NULL_COL] + ([SENS_COL] if sensitive else [])
    source = prepared.withColumn(SENS_COL, F.col(sensitive)) if sensitive else prepared
    null_counts = [
        F.sum(F.col(r.column).isNull().cast("long")).alias(f"__nulls{i}")
        for i, r in enumerate(config.quasi_identifiers)
    ]
    counted = source.groupBy(*group).agg(F.count(F.lit(1)).alias(COUNT_COL), *null_counts)
    counted = counted.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        totals = counted.agg(
            F.sum(COUNT_COL).alias("rows"),
            F.sum(F.when(F.col(NULL_COL), F.col(COUNT_COL)).otherwise(F.lit(0))).alias("null_rows"),
            F.count(F.lit(1)).alias("table_rows"),
            *[F.sum(f"__nulls{i}").alias(f"__nulls{i}") for i in range(len(qis))],
        ).first()
        total_rows = int(totals["rows"] or 0)
        null_rows = int(totals["null_rows"] or 0)
        base_rows = int(totals["table_rows"] or 0)
        if config.null_policy == "error":
            with_nulls = [r.column for i, r in enumerate(config.quasi_identifiers) if int(totals[f"__nulls{i}"] or 0)]
            if with_nulls:
                raise AnonymityNotAchievable(
                    f"quasi-identifier(s) {', '.join(with_nulls)} hold nulls and null_policy is 'error'", stage=stage
                )
        budget = math.floor(config.max_suppression * total_rows)
        if total_rows < config.k:
            raise AnonymityNotAchievable(
                f"{model} cannot be met: the input has {total_rows} rows, fewer than k={config.k} "
                f"(best k reached: {total_rows})",
                stage=stage,
                best_k=total_rows,
            )
        # The count table is small: a few partitions of it (not spark.sql.shuffle.partitions, 200 by default) keep
        # the search and the class jobs below from running hundreds of near-empty tasks each.
        base = counted.where(~F.col(NULL_COL)).drop(NULL_COL).coalesce(max(1, -(-base_rows // 1_000_000)))
        result = lattice_search(
            base, qis, spark=spark, k=config.k, l=config.l, budget=budget, total_rows=total_rows,
            null_suppressed=null_rows, base_rows=base_rows, has_sensitive=sensitive is not None,
        )  # fmt: skip
        if result.best is None:
            top = tuple(q.high for q in qis)
            best_k, best_l = best_k_at(
                base, qis, top, spark=spark, left=budget - null_rows, has_sensitive=sensitive is not None
            )
            highest = dict(zip([q.name for q in qis], top, strict=True))
            detail = f"best k reached: {best_k} at the highest allowed levels {highest}"
            if sensitive is not None:
                detail += f", smallest l there: {best_l}"
            raise AnonymityNotAchievable(
                f"{model} cannot be met within the suppression limit of {config.max_suppression:.2%} "
                f"({budget} of {total_rows} rows; {null_rows} rows already removed by null_policy) - {detail}",
                stage=stage,
                best_k=best_k,
                best_l=best_l,
            )
        best = result.best
        # Classes of the chosen node that violate the model: a small table, anti-joined below.
        node_cols = [F.col(q.label_column(i, best.levels[i])).alias(f"__g{i}") for i, q in enumerate(qis)]
        aggs = [F.sum(COUNT_COL).alias("n")] + ([F.count_distinct(SENS_COL).alias("d")] if sensitive else [])
        classes = (
            base.select(*node_cols, COUNT_COL, *([SENS_COL] if sensitive else []))
            .groupBy(*[f"__g{i}" for i in range(len(qis))])
            .agg(*aggs)
        )
        fail = F.col("n") < config.k
        if sensitive and config.l is not None:
            fail = fail | (F.col("d") < config.l)
        violating = classes.where(fail).select(*[f"__g{i}" for i in range(len(qis))])

        keyed = apply_keyed(prepared, config, resolved, spark=spark, stage=stage)
        chosen = keyed.withColumns({f"__g{i}": F.col(q.label_column(i, best.levels[i])) for i, q in enumerate(qis)})
        kept = chosen.where(~F.col(NULL_COL)).join(violating, on=[f"__g{i}" for i in range(len(qis))], how="left_anti")
        release = kept.select(*_outputs(kept, df, config, qis, unlisted))

        qi_out = [r.output_column or r.column for r in config.quasi_identifiers]
        if measure == "release":
            risk = measure_risk(release, qi_out, sensitive)
        else:
            kept_classes = classes.where(~fail).withColumnRenamed("d", "l") if sensitive else classes.where(~fail)
            risk = risk_of_classes(kept_classes, has_l=sensitive is not None)
    finally:
        counted.unpersist()

    if risk.rows != total_rows - best.suppressed:
        raise GuardFailed(
            f"{model}: the release has {risk.rows} rows, expected {total_rows - best.suppressed} (internal error)",
            stage=stage,
        )
    if risk.rows and (risk.min_class_size < config.k or (config.l is not None and (risk.min_l or 0) < config.l)):
        raise GuardFailed(
            f"{model} does not hold on the release: smallest class {risk.min_class_size}, smallest l {risk.min_l} "
            "(internal error)",
            stage=stage,
        )
    report = AnonymizationReport(
        model=model,
        k=config.k,
        l=config.l,
        rows_in=total_rows,
        rows_out=risk.rows,
        suppressed_rows=best.suppressed,
        null_suppressed_rows=null_rows,
        suppression_limit_rows=budget,
        levels={q.name: lv for q, lv in zip(qis, best.levels, strict=True)},
        top_levels={q.name: q.top for q in qis},
        discernibility=best.discernibility,
        normalized_discernibility=round(best.discernibility / (total_rows * total_rows), 9) if total_rows else 0.0,
        precision_loss=best.precision_loss,
        lattice_size=result.lattice_size,
        nodes_evaluated=result.evaluated,
        search_jobs=result.jobs,
        count_table_rows=base_rows,
        risk=risk,
    )
    return AnonymizationResult(data=release, report=report, search=result)


def _outputs(
    kept: DataFrame, original: DataFrame, config: AnonymizeConfig, qis: list[QISpec], unlisted: list[str]
) -> list[Column]:
    """One output Column per released column, in input order."""
    from pyspark.sql import functions as F

    out: list[Column] = []
    qi_index = {r.column: i for i, r in enumerate(config.quasi_identifiers)}
    shift_index = {r.column: i for i, r in enumerate(r for r in config.columns if isinstance(r, DateShiftRule))}
    types = {f.name: f.dataType.simpleString() for f in original.schema.fields}
    for name in original.columns:
        rule = config.rule(name)
        if rule is None or isinstance(rule, DropRule):
            continue  # unlisted columns are dropped (unlisted: error refused them earlier)
        target = getattr(rule, "output_column", None) or name
        if isinstance(rule, KeepRule | SensitiveRule | PseudonymizeRule):
            expr = F.col(name)  # pseudonyms were computed in place by apply_keyed
        elif isinstance(rule, SuppressRule):
            expr = F.lit(None).cast(types[name])
        elif isinstance(rule, MaskRule):
            expr = mask(F.col(name), rule)
        elif isinstance(rule, TopBottomCodeRule):
            expr = top_bottom_code(F.col(name), rule)
        elif isinstance(rule, GeneralizeRule):
            hierarchy = rule.hierarchy
            ref = (
                F.col(hierarchy.reference_column)
                if isinstance(hierarchy, AgeHierarchy) and hierarchy.reference_column
                else None
            )
            expr = labels(hierarchy, F.col(name), reference=ref)[rule.level]
        elif isinstance(rule, DateShiftRule):
            expr = shifted(F.col(name), F.col(shift_column(shift_index[name])), types[name])
        elif isinstance(rule, QuasiIdentifierRule):
            expr = F.col(f"__g{qi_index[name]}")
        else:  # pragma: no cover - the union is closed
            raise TypeError(type(rule).__name__)
        out.append(expr.alias(target))
    del unlisted, qis, kept
    return out
