"""``dp_aggregate``: differentially private aggregates per group, retry-safe through the budget ledger.

One run of the stage is one *release*, identified by its ledger key ``(pipeline, stage, dataset, period,
partition)``. The run:

1. **plans** without reading data: bounds, groups, sensitivities and noise parameters follow from the spec
   alone; the ledger is asked whether the release is already committed (then nothing is spent) or whether its
   (ε, δ) fits what remains of the declared total (else :class:`~privstage.errors.BudgetExceeded`);
2. **reserves** the stage's budget in the ledger (a committed key returns its stored release instead);
3. **computes** exact aggregates of the contribution-bounded data in Spark
   (:mod:`privstage.dp.bounding`), collects the per-group aggregates (never rows) and draws the noise on the
   driver from a CSPRNG (:mod:`privstage.dp.mechanisms`);
4. **serializes** the release as canonical JSON (the bytes the ledger stores), builds the output from those
   bytes, writes it to staging, runs the post-guards;
5. **commits** the ledger (reservation → spend, with the release bytes) and then the output.

A failure before 5 releases the reservation (or, if the process died, leaves it for the retry to take over);
a retry after 5 gets the committed bytes back and rewrites the same output: one spend, one release, the same
bytes, whichever orchestrator retried.

Noise per query (G = max_groups_per_unit, R = max_rows_per_group, B = largest fixed-point |value|):

============ ============================================ ===============================================
query        noised integers                              sensitivity (geometric: l1 over all groups)
============ ============================================ ===============================================
count        rows per group                               G·R
count_units  distinct units per group                     G
sum          fixed-point sum                              G·R·B
mean         rows with a value; Σ(2v-(lo+hi)) (ε/2 each)  G·R; G·R·(hi-lo)
variance     count; Σ(2v-(lo+hi)); Σ(2v-(lo+hi))² (ε/3)   G·R; G·R·(hi-lo); G·R·(hi-lo)²
quantiles    per-bin counts of a histogram over bounds    G·R
histogram    per-bin counts                               G·R
============ ============================================ ===============================================

``gaussian_discrete`` calibrates each group's noise to (ε/G, δ/G) at the per-group sensitivity (basic
composition over the at most G groups a unit touches): conservative, and exact arithmetic throughout.
Mean and variance are post-processed from their noisy parts (clamped to what the bounds allow); their 95%
half-widths come from the parts' intervals at 1-0.05/k each (a union bound), applied to the noisy values:
computed from the mechanism and the release, never from the true value.

Private partition selection (``groups.select``) keeps a data-derived group only when its count of distinct
units plus geometric noise (sensitivity G) reaches τ = 1 + ⌈ln(δ·(1+q)/G) / ln q⌉, q = exp(-ε/G): a group
that exists only because of one unit is released with probability at most δ/G, so at most δ for the unit.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from fractions import Fraction
from itertools import product
from typing import TYPE_CHECKING, Any

from privstage.errors import GuardFailed, IntegrityError, SpecError
from privstage.guards.base import GuardContext, GuardOutcome
from privstage.guards.builtin import NonEmptyGuard, NoNullsGuard

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType, StructType

    from privstage.budget import BudgetLedger, LedgerKey, PrivacyBudget
    from privstage.guards.base import Guard
    from privstage.keys.base import KeyProvider
    from privstage.spec import DPAggregateStage, DPQuery

__all__ = [
    "RELEASE_FORMAT",
    "RELEASE_NAME",
    "DPAggregatePlan",
    "builtin_guards",
    "decode_release",
    "narrow",
    "output_schema",
    "partition_window",
    "plan",
    "produce",
    "render_period",
]

RELEASE_FORMAT = "privstage-dp-release/1"
#: The committed release's bytes, exactly as the ledger stores them, beside the output's Parquet files.
RELEASE_NAME = "_privstage_release.json"
_CI = 0.95
_UNIT = "__privstage_dp_unit"


# ---------------------------------------------------------------------------------------------
# Partitions and periods
# ---------------------------------------------------------------------------------------------
_PARTITION = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


def partition_window(partition: str, granularity: str) -> tuple[str, date, date]:
    """The partition key at ``granularity`` and its half-open date window ``[start, end)``.

    Accepts what orchestrators hand over: ``2026``, ``2026-03``, ``2026-03-01`` and ISO timestamps
    (an Airflow logical date, a Dagster time-window partition key).

    Raises:
        SpecError: the text does not start with a date precise enough for ``granularity``.
    """
    m = _PARTITION.match(partition.strip())
    need = {"year": 1, "month": 2, "day": 3}[granularity]
    if not m or sum(g is not None for g in m.groups()) < need:
        raise SpecError(f"partition {partition!r} is not a {granularity} (expected YYYY[-MM[-DD]] or an ISO date)")
    year, month, day = int(m.group(1)), int(m.group(2) or 1), int(m.group(3) or 1)
    try:
        start = date(year, month, day)
    except ValueError:
        raise SpecError(f"partition {partition!r} is not a valid date") from None
    if granularity == "year":
        return f"{year:04d}", date(year, 1, 1), date(year + 1, 1, 1)
    if granularity == "month":
        end = date(year + (month == 12), month % 12 + 1, 1)
        return f"{year:04d}-{month:02d}", date(year, month, 1), end
    return start.isoformat(), start, date.fromordinal(start.toordinal() + 1)


def render_period(template: str, partition: str | None) -> str:
    """Fill a budget period template (``{year}``, ``{month}``, ``{day}``, ``{partition}``) from the partition.

    Raises:
        SpecError: the template uses the partition and the run has none, or the partition is no date.
    """
    if "{" not in template:
        return template
    if partition is None:
        raise SpecError(
            f"the budget period {template!r} depends on the run's partition, and this run has none "
            "(pass --partition, run a partitioned Dagster asset, or an Airflow DAG run with a logical date)"
        )
    values: dict[str, str] = {"partition": partition}
    for name in ("year", "month", "day"):
        if "{" + name + "}" in template:
            values[name] = partition_window(partition, name)[0]
    return template.format(**values)


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Part:
    """One noised vector of a query: which integer aggregate, its sensitivity and its noise."""

    name: str
    linf: int  # per-group sensitivity in integer units
    epsilon: Fraction
    delta: Fraction
    noise: Any  # GeometricNoise | DiscreteGaussianNoise
    resolution: Fraction  # integer unit -> release unit


@dataclass
class DPAggregatePlan:
    """What the stage resolved before reading data. Holds no keys; safe to describe."""

    stage: DPAggregateStage
    pipeline: str
    work_schema: StructType
    output_schema: StructType
    ledger_key: LedgerKey
    budget: PrivacyBudget
    total: PrivacyBudget
    partition_key: str | None
    window: tuple[date, date] | None
    public_keys: list[tuple[Any, ...]] | None
    threshold: int | None
    selection_noise: Any
    parts: dict[str, list[_Part]]
    sensitivities: dict[str, dict[str, int]]
    scale: int
    ledger: Callable[[], BudgetLedger] = field(repr=False)
    release_sha256: str | None = None  # set when the ledger holds the committed release (or once this run made it)

    @property
    def already_committed(self) -> bool:
        return self.release_sha256 is not None

    @property
    def key_versions(self) -> dict[str, int]:
        return {}

    @property
    def reuse_key(self) -> str | None:
        """An output committed with this key is this release: the ledger key and the committed release's sha256
        (an output of another ledger, or of a release the ledger does not hold, is never taken for it)."""
        return None if self.release_sha256 is None else f"{self.ledger_key}@{self.release_sha256}"

    def describe(self) -> dict[str, Any]:
        """The budget allocation and noise, for ``privstage plan`` and the run report."""
        queries = []
        for query in self.stage.queries:
            queries.append(
                {
                    "name": query.name,
                    "type": query.type,
                    "column": query.column,
                    "epsilon": str(query.epsilon),
                    "delta": str(query.delta),
                    "mechanism": query.mechanism,
                    "parts": [_describe_part(p) for p in self.parts[query.name]],
                }
            )
        selection = None
        if self.threshold is not None:
            sel = self.stage.groups.select  # type: ignore[union-attr]
            selection = {
                "epsilon": str(sel.epsilon),
                "delta": str(sel.delta),
                "threshold_distinct_units": self.threshold,
                "noise_scale": self.selection_noise.scale,
            }
        return {
            "ledger_key": str(self.ledger_key),
            "dataset": self.ledger_key.dataset,
            "period": self.ledger_key.period,
            "partition": self.partition_key,
            "budget": self.budget.to_dict(),
            "declared_total": self.total.to_dict(),
            "already_committed": self.already_committed,
            "max_groups_per_unit": self.stage.max_groups_per_unit,
            "max_rows_per_group": self.stage.max_rows_per_group,
            "groups": "public" if self.public_keys is not None else ("selected" if self.threshold else "global"),
            "public_groups": None if self.public_keys is None else len(self.public_keys),
            "partition_selection": selection,
            "sensitivities": self.sensitivities,
            "queries": queries,
        }


def _describe_part(part: _Part) -> dict[str, Any]:
    d = part.noise.describe(resolution=part.resolution).to_dict()
    d.update(part=part.name, per_group_sensitivity=str(part.linf * part.resolution))
    return d


def _python_value(value: Any, dtype: DataType, where: str, stage: str) -> Any:
    """A YAML value as the group column's Python value (for public keys)."""
    from pyspark.sql import types as T

    if value is None:
        return None
    try:
        if isinstance(dtype, T.StringType):
            if not isinstance(value, str):
                raise TypeError
            return value
        if isinstance(dtype, T.BooleanType):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if isinstance(dtype, T.IntegralType):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError
            return int(value)
        if isinstance(dtype, T.DateType):
            return value if isinstance(value, date) else date.fromisoformat(str(value))
    except (TypeError, ValueError):
        raise SpecError(f"{where}: {value!r} is not a {dtype.simpleString()} value", stage=stage) from None
    raise SpecError(
        f"{where}: group columns are string, integer, boolean or date columns, not {dtype.simpleString()}",
        stage=stage,
    )


def _work_schema(stage: DPAggregateStage, schema: StructType, spark: SparkSession) -> StructType:
    """The input schema plus derived columns (checked by Spark's analyzer on an empty frame)."""
    from pyspark.sql import functions as F

    names = schema.fieldNames()
    clash = sorted(set(stage.derive) & set(names))
    if clash:
        raise SpecError(f"derived columns {clash} already exist in the input", stage=stage.name)
    if not stage.derive:
        return schema
    empty = spark.createDataFrame([], schema)
    try:
        derived = empty.select("*", *[F.expr(expr).alias(name) for name, expr in stage.derive.items()])
        return derived.schema
    except Exception as exc:
        raise SpecError(
            f"a derive expression does not analyse against the input ({type(exc).__name__}); "
            f"derive: {sorted(stage.derive)}",
            stage=stage.name,
        ) from None


def _require(stage: DPAggregateStage, schema: StructType, column: str, what: str) -> DataType:
    if column not in schema.fieldNames():
        raise SpecError(
            f"{what} column '{column}' is not in the input (columns: {', '.join(schema.fieldNames())})",
            stage=stage.name,
        )
    return schema[column].dataType


def _integer_mechanism(query: DPQuery, linf: int, groups: int, epsilon: Fraction, delta: Fraction) -> Any:
    from privstage.dp.mechanisms import DiscreteGaussianNoise, GeometricNoise

    if linf <= 0:
        raise SpecError(f"query '{query.name}': the bounds leave no room for a value (sensitivity 0)")
    if query.mechanism == "geometric":
        return GeometricNoise(epsilon=epsilon, sensitivity=groups * linf)
    return DiscreteGaussianNoise(epsilon=epsilon / groups, delta=delta / groups, sensitivity=linf)


def _parts(stage: DPAggregateStage, query: DPQuery, scale: int) -> list[_Part]:
    from privstage.dp.bounding import fixed_point_bounds

    g, r = stage.max_groups_per_unit, stage.max_rows_per_group
    eps, delta = query.epsilon.fraction, query.delta.fraction
    specs: list[tuple[str, int, Fraction]]
    if query.type in ("count", "quantiles", "histogram"):
        specs = [("count", r, Fraction(1))]
    elif query.type == "count_units":
        specs = [("distinct_units", 1, Fraction(1))]
    else:
        fixed = fixed_point_bounds(Decimal(repr(query.lower)), Decimal(repr(query.upper)), scale)
        width = fixed.high - fixed.low
        if query.type == "sum":
            specs = [("sum_fp", r * fixed.max_abs, Fraction(1, scale))]
        elif query.type == "mean":
            specs = [("value_count", r, Fraction(1)), ("centred_sum", r * width, Fraction(1, 2 * scale))]
        else:
            specs = [
                ("value_count", r, Fraction(1)),
                ("centred_sum", r * width, Fraction(1, 2 * scale)),
                ("centred_sum_sq", r * width * width, Fraction(1, 4 * scale * scale)),
            ]
    k = len(specs)
    return [
        _Part(name, linf, eps / k, delta / k, _integer_mechanism(query, linf, g, eps / k, delta / k), res)
        for name, linf, res in specs
    ]


def plan(stage: DPAggregateStage, schema: StructType, keys: KeyProvider, *, env: Any = None) -> DPAggregatePlan:
    """Resolve the stage against its input schema and the ledger. No data is read.

    Raises:
        SpecError: unknown or mistyped columns, a bad derive expression, public keys of the wrong type, a
            period that needs a partition the run lacks, a declared total that differs from the ledger's.
        BudgetExceeded: the release does not fit what remains of the declared budget.
    """
    from pyspark.sql import types as T

    from privstage.budget import LedgerKey
    from privstage.dp.bounding import sensitivities
    from privstage.dp.mechanisms import GeometricNoise

    if env is None:
        raise SpecError("dp_aggregate needs the engine's plan environment (pipeline, partition, ledger)")
    work = _work_schema(stage, schema, env.spark)
    _require(stage, work, stage.privacy_unit, "privacy_unit")
    for name in stage.group_by:
        _require(stage, work, name, "group_by")
    for name in stage.sensitive_columns:
        _require(stage, schema, name, "sensitive")
    for query in stage.queries:
        if query.column is not None:
            dtype = _require(stage, work, query.column, f"query '{query.name}'")
            if not isinstance(dtype, T.NumericType):
                raise SpecError(
                    f"query '{query.name}': column '{query.column}' must be numeric, got {dtype.simpleString()}",
                    stage=stage.name,
                )

    window = None
    partition_key = env.partition
    if stage.partition is not None:
        dtype = _require(stage, work, stage.partition.column, "partition")
        if not isinstance(dtype, T.DateType | T.TimestampType | T.TimestampNTZType):
            raise SpecError(
                f"partition column '{stage.partition.column}' must be a date or timestamp, got {dtype.simpleString()}",
                stage=stage.name,
            )
        if env.partition is None:
            raise SpecError(
                f"this stage aggregates one {stage.partition.granularity} of '{stage.partition.column}' per run; "
                "the run has no partition (pass --partition, or run a partitioned asset / a DAG with a logical date)",
                stage=stage.name,
            )
        partition_key, start, end = partition_window(env.partition, stage.partition.granularity)
        window = (start, end)
    try:
        period = render_period(stage.budget.period, partition_key)
    except SpecError as exc:
        raise SpecError(exc.message, stage=stage.name) from None

    public_keys = None
    if stage.groups is not None and stage.groups.public is not None:
        domains = [
            [
                _python_value(v, work[c].dataType, f"groups.public.{c}", stage.name)
                for v in dict.fromkeys(stage.groups.public[c])
            ]
            for c in stage.group_by
        ]
        public_keys = [tuple(k) for k in product(*domains)]
    elif stage.groups is not None and stage.groups.keys is not None:
        public_keys = list(
            dict.fromkeys(
                tuple(
                    _python_value(v, work[c].dataType, f"groups.keys[{i}]", stage.name)
                    for v, c in zip(k, stage.group_by, strict=True)
                )
                for i, k in enumerate(stage.groups.keys)
            )
        )
    if public_keys is not None and len(public_keys) > 1_000_000:
        raise SpecError(f"{len(public_keys)} public groups; at most 1,000,000 per release", stage=stage.name)
    for name in stage.group_by:
        if not isinstance(work[name].dataType, T.StringType | T.BooleanType | T.IntegralType | T.DateType):
            raise SpecError(
                f"group column '{name}' is {work[name].dataType.simpleString()}; group keys are string, integer, "
                "boolean or date",
                stage=stage.name,
            )

    scale = 10**stage.precision
    threshold = None
    selection_noise = None
    if stage.groups is not None and stage.groups.select is not None:
        sel = stage.groups.select
        g = stage.max_groups_per_unit
        selection_noise = GeometricNoise(epsilon=sel.epsilon.fraction, sensitivity=g)
        q = selection_noise.q
        threshold = 1 + max(0, math.ceil(math.log(sel.delta.to_float() * (1 + q) / g) / math.log(q)))
    parts = {query.name: _parts(stage, query, scale) for query in stage.queries}
    value_query = next((q for q in stage.queries if q.lower is not None), None)
    table = sensitivities(
        stage.max_groups_per_unit,
        stage.max_rows_per_group,
        None if value_query is None else Decimal(repr(value_query.lower)),
        None if value_query is None else Decimal(repr(value_query.upper)),
        scale,
    )

    key = LedgerKey(env.pipeline, stage.name, stage.budget.dataset, period, partition_key)
    budget = stage.total_budget()
    total = stage.budget.total.budget
    committed_sha256 = env.check_budget(key, budget, total, stage=stage.name)
    detail = DPAggregatePlan(
        stage=stage,
        pipeline=env.pipeline,
        work_schema=work,
        output_schema=T.StructType([]),
        ledger_key=key,
        budget=budget,
        total=total,
        partition_key=partition_key,
        window=window,
        public_keys=public_keys,
        threshold=threshold,
        selection_noise=selection_noise,
        parts=parts,
        sensitivities=table,
        scale=scale,
        ledger=env.ledger,
        release_sha256=committed_sha256,
    )
    detail.output_schema = _output_schema(detail)
    return detail


def _output_schema(p: DPAggregatePlan) -> StructType:
    from pyspark.sql import types as T

    fields = [T.StructField(g, p.work_schema[g].dataType, True) for g in p.stage.group_by]
    for q in p.stage.queries:
        if q.type in ("count", "count_units"):
            value: DataType = T.LongType()
        elif q.type == "sum":
            value = T.DecimalType(38, p.stage.precision)
        elif q.type in ("mean", "variance"):
            value = T.DoubleType()
        elif q.type == "quantiles":
            value = T.ArrayType(T.DoubleType(), True)
        else:
            value = T.ArrayType(T.LongType(), False)
        fields.append(T.StructField(q.name, value, True))
        fields.append(T.StructField(f"{q.name}_ci95", T.DoubleType(), True))
    return T.StructType(fields)


def output_schema(p: DPAggregatePlan, input_schema: StructType | None = None) -> StructType:
    """The release's schema: group columns, then ``<query>`` and ``<query>_ci95`` per query."""
    return p.output_schema


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------
def narrow(df: DataFrame, p: DPAggregatePlan) -> DataFrame:
    """The rows and columns the stage aggregates: the run's partition, derived columns, needed columns only."""
    from pyspark.sql import functions as F

    stage = p.stage
    if stage.derive:
        df = df.select("*", *[F.expr(expr).alias(name) for name, expr in stage.derive.items()])
    if p.window is not None and stage.partition is not None:
        column = F.col(stage.partition.column)
        start, end = p.window
        df = df.where((column >= F.lit(start)) & (column < F.lit(end)))
    needed = [stage.privacy_unit, *stage.group_by]
    needed += [q.column for q in stage.queries if q.column is not None and q.column not in needed]
    return df.select(*dict.fromkeys(needed))


@dataclass
class _Exact:
    """Exact integer aggregates per group key (collected aggregates, never rows)."""

    count: dict[tuple[Any, ...], int] = field(default_factory=dict)
    distinct_units: dict[tuple[Any, ...], int] = field(default_factory=dict)
    by_query: dict[str, dict[tuple[Any, ...], Any]] = field(default_factory=dict)
    invalid: dict[str, int] = field(default_factory=dict)


def _bin_index(value: Any, edges: Sequence[float]) -> Any:
    """Spark column: the bin of a value clamped into [edges[0], edges[-1]] (bins are [e_i, e_i+1))."""
    from pyspark.sql import functions as F

    clamped = F.least(F.greatest(value, F.lit(float(edges[0]))), F.lit(float(edges[-1])))
    index = F.lit(0)
    for e in edges[1:-1]:
        index = index + (clamped >= F.lit(float(e))).cast("int")
    return index


def _histogram(
    bounded: DataFrame, p: DPAggregatePlan, query: DPQuery, edges: Sequence[float]
) -> tuple[dict[tuple[Any, ...], list[int]], int]:
    """Per group, the count of bounded rows per bin (one Spark job; aggregates only)."""
    from pyspark.sql import functions as F

    groups = list(p.stage.group_by)
    value = F.col(query.column).cast("double")  # type: ignore[arg-type]
    bad = value.isNull() | F.isnan(value) | (F.abs(value) == F.lit(float("inf")))
    binned = bounded.select(*groups, F.when(~bad, _bin_index(value, edges)).alias("__bin"), bad.alias("__bad"))
    rows = binned.groupBy(*groups, "__bin").agg(F.count(F.lit(1)).alias("n"), F.max("__bad").alias("bad")).collect()
    bins = len(edges) - 1
    out: dict[tuple[Any, ...], list[int]] = {}
    invalid = 0
    for row in rows:
        key = tuple(row[g] for g in groups)
        if row["__bin"] is None:
            invalid += int(row["n"])
            continue
        out.setdefault(key, [0] * bins)[int(row["__bin"])] += int(row["n"])
    return out, invalid


def _exact(bounded: DataFrame, p: DPAggregatePlan) -> _Exact:
    from privstage.dp.bounding import exact_aggregates

    stage = p.stage
    groups = list(stage.group_by)
    result = _Exact()
    by_bounds: dict[tuple[str, float, float], list[DPQuery]] = {}
    for q in stage.queries:
        if q.type in ("sum", "mean", "variance"):
            by_bounds.setdefault((q.column, q.lower, q.upper), []).append(q)  # type: ignore[arg-type]
    calls: list[tuple[tuple[str, float, float] | None, list[DPQuery]]] = list(by_bounds.items())
    if not calls:
        calls = [(None, [])]
    for i, (bounds, queries) in enumerate(calls):
        if bounds is None:
            aggs = exact_aggregates(bounded, group_by=groups, privacy_unit=stage.privacy_unit)
        else:
            column, lower, upper = bounds
            aggs = exact_aggregates(
                bounded,
                group_by=groups,
                privacy_unit=stage.privacy_unit,
                value_column=column,
                lower=Decimal(repr(lower)),
                upper=Decimal(repr(upper)),
                scale=p.scale,
                on_invalid=stage.on_invalid,
            )
            result.invalid[column] = aggs.invalid_count
        for row in aggs.rows:
            key = tuple(row[g] for g in groups)
            if i == 0:
                result.count[key] = row["count"]
                result.distinct_units[key] = row["distinct_units"]
            for q in queries:
                assert aggs.bounds is not None
                mid2 = aggs.bounds.low + aggs.bounds.high  # 2·midpoint in fixed point
                n, s, sq = row["value_count"], row["sum_fp"], row["sum_sq_fp"]
                result.by_query.setdefault(q.name, {})[key] = {
                    "sum_fp": s,
                    "value_count": n,
                    "centred_sum": 2 * s - mid2 * n,
                    "centred_sum_sq": 4 * sq - 4 * mid2 * s + n * mid2 * mid2,
                }
    for q in stage.queries:
        if q.type in ("quantiles", "histogram"):
            edges = q.edges if q.type == "histogram" else _equal_edges(q)
            hist, invalid = _histogram(bounded, p, q, edges)
            if stage.on_invalid == "error" and invalid:
                raise GuardFailed(
                    f"column '{q.column}' has {invalid} null, NaN or infinite values after bounding; the declared "
                    "policy is on_invalid='error'",
                    stage=stage.name,
                )
            result.invalid[q.column] = max(result.invalid.get(q.column, 0), invalid)  # type: ignore[index]
            result.by_query[q.name] = hist  # type: ignore[assignment]
    return result


def _equal_edges(q: DPQuery) -> list[float]:
    lo, hi = Fraction(repr(q.lower)), Fraction(repr(q.upper))
    return [float(lo + (hi - lo) * i / q.bins) for i in range(q.bins + 1)]


def _released_keys(p: DPAggregatePlan, exact: _Exact) -> list[tuple[Any, ...]]:
    if not p.stage.group_by:
        return [()]
    if p.public_keys is not None:
        return list(p.public_keys)
    assert p.threshold is not None and p.selection_noise is not None
    present = sorted(exact.distinct_units, key=_sort_key)
    return [k for k in present if exact.distinct_units[k] + p.selection_noise.noise() >= p.threshold]


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((v is not None, v) for v in key)


def _fraction_to_decimal(value: Fraction, precision: int) -> str:
    """Exact decimal text of a fraction whose denominator divides 10^precision."""
    scaled = value * 10**precision
    assert scaled.denominator == 1
    return str(Decimal(scaled.numerator).scaleb(-precision)) if precision else str(scaled.numerator)


def _noisy(part: _Part, value: int) -> Fraction:
    return (value + part.noise.noise()) * part.resolution


def _ratio_bounds(num: Fraction, hn: Fraction, den: Fraction, hd: Fraction) -> tuple[Fraction, Fraction] | None:
    """Range of num'/den' over the box |num'-num| <= hn, |den'-den| <= hd (None if den' can reach 0)."""
    if den - hd <= 0:
        return None
    corners = [(num + a) / (den + b) for a in (-hn, hn) for b in (-hd, hd)]
    return min(corners), max(corners)


def _release_rows(p: DPAggregatePlan, exact: _Exact, keys: list[tuple[Any, ...]]) -> list[list[Any]]:
    stage = p.stage
    rows: list[list[Any]] = []
    for key in keys:
        row: list[Any] = [v.isoformat() if isinstance(v, date) else v for v in key]
        for q in stage.queries:
            parts = p.parts[q.name]
            agg = exact.by_query.get(q.name, {}).get(key)
            if q.type in ("count", "count_units"):
                part = parts[0]
                base = exact.count if q.type == "count" else exact.distinct_units
                noisy = _noisy(part, base.get(key, 0))
                value = max(noisy, Fraction(0)) if stage.clamp_counts else noisy
                row += [int(value), float(part.noise.half_width(_CI) * part.resolution)]
            elif q.type == "sum":
                part = parts[0]
                noisy = _noisy(part, agg["sum_fp"] if agg else 0)
                ci = float(part.noise.half_width(_CI) * part.resolution)
                row += [_fraction_to_decimal(noisy, stage.precision), ci]
            elif q.type in ("mean", "variance"):
                row += _moment(q, parts, agg, p.scale)
            else:
                row += _binned(q, parts[0], agg, stage.clamp_counts)
        rows.append(row)
    return rows


def _moment(q: DPQuery, parts: list[_Part], agg: Mapping[str, int] | None, scale: int) -> list[Any]:
    """Noisy mean or variance (post-processed from noisy parts) and its 95% half-width (union bound).

    Values were centred on the midpoint of the fixed-point range ``[low, high] / scale`` (the declared bounds
    rounded inwards to multiples of 1/scale), so the mean is that midpoint plus the centred mean, clamped.
    """
    from privstage.dp.bounding import fixed_point_bounds

    level = 1 - (1 - _CI) / len(parts)
    noisy = {part.name: _noisy(part, agg[part.name] if agg else 0) for part in parts}
    width = {part.name: part.noise.half_width(level) * part.resolution for part in parts}
    fixed = fixed_point_bounds(Decimal(repr(q.lower)), Decimal(repr(q.upper)), scale)
    mid, half = Fraction(fixed.low + fixed.high, 2 * scale), Fraction(fixed.high - fixed.low, 2 * scale)
    n, hn = noisy["value_count"], width["value_count"]
    if n < 1:
        return [None, None]
    s, hs = noisy["centred_sum"], width["centred_sum"]
    mean_c = min(max(s / n, -half), half)
    if q.type == "mean":
        box = _ratio_bounds(s, hs, n, hn)
        value = mid + mean_c
        ci = None if box is None else max(abs(min(max(b, -half), half) - mean_c) for b in box)
        return [float(value), None if ci is None else float(ci)]
    sq, hsq = noisy["centred_sum_sq"], width["centred_sum_sq"]
    variance = min(max(sq / n - mean_c * mean_c, Fraction(0)), half * half)
    box_sq = _ratio_bounds(sq, hsq, n, hn)
    box_s = _ratio_bounds(s, hs, n, hn)
    if box_sq is None or box_s is None:
        return [float(variance), None]
    m_abs_max = min(max(abs(box_s[0]), abs(box_s[1])), half)
    m_abs_min = Fraction(0) if box_s[0] <= 0 <= box_s[1] else min(abs(box_s[0]), abs(box_s[1]), half)
    lo = min(max(box_sq[0] - m_abs_max**2, Fraction(0)), half * half)
    hi = min(max(box_sq[1] - m_abs_min**2, Fraction(0)), half * half)
    return [float(variance), float(max(variance - lo, hi - variance))]


def _binned(q: DPQuery, part: _Part, agg: Sequence[int] | None, clamp: bool) -> list[Any]:
    bins = len(q.edges) - 1 if q.type == "histogram" else q.bins
    counts = list(agg) if agg else [0] * bins
    noisy = [int(_noisy(part, c)) for c in counts]
    if clamp or q.type == "quantiles":
        noisy = [max(c, 0) for c in noisy]
    ci = float(part.noise.half_width(_CI) * part.resolution)
    if q.type == "histogram":
        return [noisy, ci]
    total = sum(noisy)
    if total <= 0:
        return [[None] * len(q.quantiles), ci]
    edges = [Fraction(repr(e)) for e in _equal_edges(q)]
    cumulative = [0]
    for c in noisy:
        cumulative.append(cumulative[-1] + c)
    values = []
    for prob in q.quantiles:
        target = Fraction(repr(prob)) * total
        i = max(1, bisect.bisect_left(cumulative, target))  # first edge index whose cumulative count reaches target
        i = min(i, bins)
        inside = noisy[i - 1]
        share = Fraction(0) if inside == 0 else (target - cumulative[i - 1]) / inside
        values.append(float(edges[i - 1] + (edges[i] - edges[i - 1]) * min(max(share, Fraction(0)), Fraction(1))))
    return [values, ci]


def _canonical(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def _compute_release(df: DataFrame, p: DPAggregatePlan) -> tuple[bytes, dict[str, Any]]:
    """Bound, aggregate exactly, select groups, noise: the release bytes and what the report says of them."""
    from pyspark import StorageLevel

    from privstage.dp.bounding import bound_contributions

    stage = p.stage
    bounded = bound_contributions(
        df,
        privacy_unit=stage.privacy_unit,
        group_by=list(stage.group_by),
        max_groups_per_unit=stage.max_groups_per_unit,
        max_rows_per_group=stage.max_rows_per_group,
    )
    jobs = len({(q.column, q.lower, q.upper) for q in stage.queries if q.type in ("sum", "mean", "variance")})
    jobs += sum(q.type in ("quantiles", "histogram") for q in stage.queries)
    persisted = jobs > 1
    if persisted:
        bounded = bounded.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        exact = _exact(bounded, p)
    finally:
        if persisted:
            bounded.unpersist()
    keys = _released_keys(p, exact)
    rows = _release_rows(p, exact, keys)
    release = {
        "format": RELEASE_FORMAT,
        "ledger_key": str(p.ledger_key),
        "budget": p.budget.to_dict(),
        "columns": [f.name for f in p.output_schema.fields],
        "rows": rows,
        "accuracy": [
            {"query": q.name, "type": q.type, "parts": [_describe_part(part) for part in p.parts[q.name]]}
            for q in stage.queries
        ],
    }
    details = {"invalid_values_dropped": dict(exact.invalid), "groups_released": len(rows)}
    return _canonical(release), details


def decode_release(data: bytes, schema: StructType) -> list[tuple[Any, ...]]:
    """The output rows of release bytes, typed by ``schema``.

    Raises:
        IntegrityError: the bytes are not a release of this schema.
    """
    from pyspark.sql import types as T

    try:
        release = json.loads(data.decode("ascii"))
        if release.get("format") != RELEASE_FORMAT or release.get("columns") != schema.fieldNames():
            raise ValueError
        rows = release["rows"]
    except (ValueError, UnicodeDecodeError, AttributeError, KeyError):
        raise IntegrityError("the committed release does not match this stage's output schema") from None
    converters = []
    for f in schema.fields:
        if isinstance(f.dataType, T.DecimalType):
            converters.append(lambda v: None if v is None else Decimal(v))
        elif isinstance(f.dataType, T.DateType):
            converters.append(lambda v: None if v is None else date.fromisoformat(v))
        else:
            converters.append(lambda v: v)
    return [tuple(c(v) for c, v in zip(converters, row, strict=True)) for row in rows]


@dataclass
class Production:
    """What a producing stage hands the engine: the frame to stage, files beside it, and ledger hooks."""

    frame: DataFrame
    files: dict[str, bytes] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    before_commit: Callable[[], list[GuardOutcome]] | None = None
    on_failure: Callable[[], None] | None = None
    reused: bool = False


def produce(df: DataFrame, p: DPAggregatePlan, *, spark: SparkSession, run: Any) -> Production:
    """Reserve, compute (or fetch the committed release), and hand the release to the engine to stage.

    Raises:
        BudgetExceeded: another run spent the budget since planning.
        GuardFailed: invalid values under ``on_invalid: error``.
    """
    stage = p.stage
    ledger = p.ledger()
    ledger.declare(p.ledger_key.dataset, p.ledger_key.period, p.total)
    held = ledger.reserve(p.ledger_key, p.budget)
    details: dict[str, Any] = {"dp": p.describe()}
    if held.committed:
        assert held.release is not None
        release = held.release
        details["dp"].update(reused_release=True, release_sha256=held.release_sha256, spent_by=held.attempt_id)
    else:
        try:
            release, extra = _compute_release(df, p)
        except BaseException:
            ledger.release(held)
            raise
        details["dp"].update(extra, reused_release=False, release_sha256=hashlib.sha256(release).hexdigest())
    p.release_sha256 = hashlib.sha256(release).hexdigest()  # the output's manifest names the release it holds
    frame = spark.createDataFrame(decode_release(release, p.output_schema), p.output_schema).coalesce(1)

    def before_commit() -> list[GuardOutcome]:
        if not held.committed:
            ledger.commit(held, release)
        status = ledger.budgets(p.ledger_key.dataset, p.ledger_key.period)[0]
        used = status.committed + status.reserved
        within = used.fits_within(status.total)
        outcome = GuardOutcome(
            "builtin",
            "ledger_within_budget",
            within,
            details={"declared": status.total.to_dict(), "committed": status.committed.to_dict()},
        )
        if not within:
            raise IntegrityError(
                f"ledger for dataset {p.ledger_key.dataset!r}, period {p.ledger_key.period!r} exceeds its declared "
                f"budget {status.total} after commit (committed {status.committed}, reserved {status.reserved})",
                stage=stage.name,
            )
        return [outcome]

    def on_failure() -> None:
        if not held.committed:
            ledger.release(held)

    return Production(
        frame=frame,
        files={RELEASE_NAME: release},
        details=details,
        before_commit=before_commit,
        on_failure=on_failure,
        reused=held.committed,
    )


# ---------------------------------------------------------------------------------------------
# Guards
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReleaseShapeGuard:
    """The release has exactly the declared schema and groups: every public group once, or distinct groups."""

    schema: StructType
    group_by: tuple[str, ...]
    public_keys: tuple[tuple[Any, ...], ...] | None
    name: str = "builtin"

    def check(self, ctx: GuardContext) -> list[GuardOutcome]:
        from pyspark.sql import functions as F

        actual = [(f.name, f.dataType.simpleString()) for f in ctx.data.schema.fields]
        expected = [(f.name, f.dataType.simpleString()) for f in self.schema.fields]
        outcomes = [GuardOutcome(self.name, "release_schema", actual == expected, details={"columns": len(actual)})]
        if not self.group_by:
            rows = ctx.data_stats().rows
            outcomes.append(GuardOutcome(self.name, "release_groups", rows == 1, details={"rows": rows}))
            return outcomes
        # One Spark job: released and declared keys tagged, grouped null-safely (groupBy treats nulls as equal).
        groups = list(self.group_by)
        tagged = ctx.data.select(*groups, F.lit(1).alias("_released"), F.lit(0).alias("_declared"))
        if self.public_keys is not None:
            declared = ctx.data.sparkSession.createDataFrame(list(self.public_keys), ctx.data.select(*groups).schema)
            tagged = tagged.unionByName(
                declared.select(*groups, F.lit(0).alias("_released"), F.lit(1).alias("_declared"))
            )
        per_key = tagged.groupBy(*groups).agg(F.sum("_released").alias("r"), F.sum("_declared").alias("d"))
        stats = per_key.agg(
            F.coalesce(F.sum("r"), F.lit(0)).alias("rows"),
            F.count(F.when(F.col("r") > 1, 1)).alias("repeated"),
            F.count(F.when((F.col("d") > 0) & (F.col("r") == 0), 1)).alias("missing"),
            F.count(F.when((F.col("r") > 0) & (F.col("d") == 0), 1)).alias("undeclared"),
        ).first()
        details: dict[str, Any] = {"rows": int(stats["rows"]), "repeated_groups": int(stats["repeated"])}
        ok = stats["repeated"] == 0
        if self.public_keys is not None:
            details.update(
                declared_groups=len(self.public_keys),
                missing=int(stats["missing"]),
                undeclared=int(stats["undeclared"]),
            )
            ok = ok and stats["missing"] == 0 and stats["undeclared"] == 0
        outcomes.append(GuardOutcome(self.name, "release_groups", ok, details=details))
        return outcomes


def builtin_guards(p: DPAggregatePlan) -> tuple[list[Guard], list[Guard]]:
    """Before: the aggregated rows are not empty (and privacy units are not null, unless dropped).

    After: the release has exactly the declared schema and groups. The ledger check runs after its commit.
    """
    # NoNullsGuard first: the input's row and null counts then come from one Spark job (shared DataStats).
    before: list[Guard] = [NoNullsGuard((p.stage.privacy_unit,))] if p.stage.on_null_unit == "error" else []
    before.append(NonEmptyGuard())
    public = None if p.public_keys is None else tuple(p.public_keys)
    after: list[Guard] = [ReleaseShapeGuard(p.output_schema, tuple(p.stage.group_by), public)]
    return before, after
