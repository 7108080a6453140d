"""Contribution bounding and exact pre-noise aggregation for ``dp_aggregate``, in Spark.

This is the Spark half of a DP aggregation: everything that happens **before** the noise of
:mod:`privstage.dp.mechanisms`. It uses the DataFrame API only (no Python UDFs), so it runs on classic
Spark and on Spark Connect; row-level data never leaves Spark, only per-group aggregates are collected.

Pipeline, as the stage will call it::

    bounded = bound_contributions(df, privacy_unit="patient_id", group_by=["dx", "zip3"],
                                  max_groups_per_unit=4, max_rows_per_group=2)
    aggs = exact_aggregates(bounded, group_by=["dx", "zip3"], value_column="cost",
                            lower=0, upper=5000, scale=100, on_invalid="drop")
    released_keys = with_public_groups(aggs.frame, public_keys, group_by=["dx", "zip3"])
    sens = sensitivities(4, 2, lower=0, upper=5000, scale=100)

**Bounding plan: one shuffle by privacy unit, one sort.** ``bound_contributions`` keeps only the columns it
needs (``columns=``: the unit, the group keys and, say, the value column; by default every input column), repartitions
by the unit, sorts each partition by ``(unit, group_key, *group_by, row_key)`` and evaluates three window functions
that share the one partitioning ``partitionBy(unit)`` and that sort:

* ``dense_rank()`` over ``orderBy(group_key, *group_by)`` numbers the unit's groups in a random order
  (``group_key = xxhash64(salt, unit, *group_by)``),
* ``rank()`` over the same ordering is the position of the group's first row among the unit's rows, and
* ``row_number()`` over ``orderBy(group_key, *group_by, row_key)`` numbers the unit's rows, so
  ``row_number - rank`` numbers the rows *inside* each (unit, group) in a random order
  (``row_key = xxhash64(salt, *carried columns)``).

Keeping ``dense_rank <= max_groups_per_unit`` and ``row_number - rank < max_rows_per_group`` keeps a uniformly random
set of groups per unit and a uniformly random set of rows per group (for a random salt the keys are i.i.d. uniform as
far as the data is concerned; equal keys of distinct groups are broken by the group values). Spark plans one exchange of
row-level data and one sort for all three (a test checks the physical plan), and it pushes the group cap below the last
window (``WindowGroupLimit``).

Why this plan (bench/bench_dp_aggregate.py, 2 cores shared with other jobs, so figures are noisy): with the Spark JVM's
CPU seconds as the measure, the shuffle by unit plus the two-level aggregation alone costs about 4-6x a plain group-by,
and the sort is most of what bounding adds on top; carrying and hashing every input column (the previous default) and a
second window partitioning by ``(unit, group)`` for the row numbers (the previous plan) each cost more. Not taken: an
aggregate-based bounding (``min_by(..., k)`` / ``collect_list`` per (unit, group)) runs as an object hash aggregate
that falls back to sorting past 128 keys per task, and realistic data has about one row per (unit, group), so partial
aggregation would not shrink the shuffle.

Why salted hashes rather than ``rand()``: ``rand(seed)`` depends on the partition index and on the row
order inside a partition, which after a shuffle is not deterministic, so a seeded test would not be
reproducible; and a re-computed lineage (a lost executor) could select different rows. A hash of the row
under a fixed salt gives the same selection on every partitioning and every recomputation. In release
mode the salt is 63 bits from :mod:`secrets` (the OS CSPRNG), drawn once per call, so the selection is not
predictable without it; a caller-given seed is accepted only in test configuration. Identical rows get
identical keys, which is harmless: keeping either copy gives the same bounded data. (This randomness
selects rows; it is not the DP noise, which :mod:`privstage.dp.mechanisms` draws.)

**Exact aggregation.** Values are clamped to the *declared* bounds, rounded to fixed point
``round(value * scale)`` and clamped again in integers to ``[ceil(lower*scale), floor(upper*scale)]``, so
the sensitivity is an exact integer. Aggregation runs in two levels: per (unit, group) first (no shuffle:
the bounded rows are already partitioned by unit; ``distinct_units`` becomes a plain count), then per group.
Sums and sums of squares are integer sums (``try_sum`` over 64-bit longs; if any overflows, the job is redone
over ``decimal(38,0)``, and a decimal overflow raises): exact, hence independent of row order and partitioning,
never silently wrapping. Nulls, NaN and infinities follow the declared ``on_invalid`` policy and never reach the sums.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from privstage.dp.mechanisms import SEED_ENV_VAR, TestConfig
from privstage.errors import GuardFailed, SpecError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

__all__ = [
    "AGGREGATE_COLUMNS",
    "ExactAggregates",
    "FixedPointBounds",
    "InvalidPolicy",
    "bound_contributions",
    "exact_aggregates",
    "fixed_point_bounds",
    "sensitivities",
    "with_public_groups",
]

InvalidPolicy: TypeAlias = Literal["drop", "error"]

#: Aggregate columns of :func:`exact_aggregates`, after the group columns, in this order.
AGGREGATE_COLUMNS: tuple[str, ...] = ("count", "distinct_units", "value_count", "sum_fp", "sum_sq_fp")

_LONG_MAX = (1 << 63) - 1
_DECIMAL38_MAX = 10**38 - 1
_GROUP_KEY = "__privstage_group_key"
_ROW_KEY = "__privstage_row_key"
_GROUP_RANK = "__privstage_group_rank"
_ROW_NUMBER = "__privstage_row_number"
_GROUP_START = "__privstage_group_start"
_INVALID = "__privstage_invalid"
_UNIT = "__privstage_unit"
_FIXED = "__privstage_fixed"
_OVERFLOW = "__privstage_overflow"


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------
def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise SpecError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _bound(value: object, name: str) -> Fraction:
    if value is None:
        raise SpecError(f"{name} must be declared (bounds are never derived from the data)")
    if isinstance(value, bool) or not isinstance(value, (Real, Decimal)):
        raise SpecError(f"{name} must be a real number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{name} must be finite, got {value!r}")
    return Fraction(value)


def _columns(df: DataFrame, names: Sequence[str], what: str) -> list[str]:
    if isinstance(names, str):
        raise SpecError(f"{what} must be a sequence of column names, not a string")
    cols = list(names)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise SpecError(f"{what} names columns not in the data: {missing}; available: {df.columns}")
    if len(set(cols)) != len(cols):
        raise SpecError(f"{what} repeats a column: {cols}")
    return cols


def _salt(seed: int | None, config: TestConfig | None) -> int:
    if seed is None:
        return secrets.randbits(63)
    if not ((config is not None and config.allow_seed) or os.environ.get(SEED_ENV_VAR) == "1"):
        raise SpecError(
            f"a bounding seed is accepted only in test configuration (TestConfig(allow_seed=True) or "
            f"{SEED_ENV_VAR}=1); releases pick rows with a salt drawn by the operating system's CSPRNG"
        )
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= seed <= _LONG_MAX:
        raise SpecError(f"seed must be an integer in [0, 2^63), got {seed!r}")
    return int(seed)


# ---------------------------------------------------------------------------------------------
# 1. Contribution bounding
# ---------------------------------------------------------------------------------------------
def bound_contributions(
    df: DataFrame,
    *,
    privacy_unit: str,
    group_by: Sequence[str],
    max_groups_per_unit: int,
    max_rows_per_group: int,
    seed: int | None = None,
    test_config: TestConfig | None = None,
    columns: Sequence[str] | None = None,
) -> DataFrame:
    """Keep at most ``max_groups_per_unit`` groups per unit and ``max_rows_per_group`` rows per (unit, group).

    Groups and rows are chosen uniformly at random (salted hashes, see the module docstring) in one
    shuffle by the privacy unit. Rows whose privacy unit is null are dropped: they cannot be attributed
    to a unit, so their contribution cannot be bounded (the stage counts and reports them).

    Args:
        df: The input rows (lazy; nothing is executed here).
        privacy_unit: Column identifying the privacy unit (e.g. patient id).
        group_by: Group key columns (may be empty: one global group per unit).
        max_groups_per_unit: Groups a unit may contribute to (≥ 1).
        max_rows_per_group: Rows a unit may contribute to one group (≥ 1).
        seed: Test-only seed making the selection reproducible; refused outside test configuration.
        test_config: ``TestConfig(allow_seed=True)`` to accept ``seed`` (or ``PRIVSTAGE_TEST_SEED_ALLOWED=1``).
        columns: Columns to carry besides the unit and the group keys (e.g. ``[value_column]``); ``None`` carries
            every input column. Fewer columns make the shuffle narrower and the row key cheaper. The row key hashes
            the carried columns, so the selection depends on which columns are carried (not on their order).

    Returns:
        A lazy DataFrame with the carried columns (in the input's order) and the bounded rows.

    Raises:
        SpecError: Unknown columns, the unit among the group keys, bad caps, or a seed outside tests.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    groups = _columns(df, group_by, "group_by")
    _columns(df, [privacy_unit], "privacy_unit")
    if privacy_unit in groups:
        raise SpecError(f"the privacy unit {privacy_unit!r} cannot also be a group key")
    max_groups = _positive_int(max_groups_per_unit, "max_groups_per_unit")
    max_rows = _positive_int(max_rows_per_group, "max_rows_per_group")
    carried = _carried_columns(df, privacy_unit, groups, columns)
    salt = F.lit(_salt(seed, test_config)).cast("long")

    group_key, row_key = _selection_keys(salt, privacy_unit, groups, carried)
    keyed = (
        df.select(*carried)
        .filter(F.col(privacy_unit).isNotNull())
        .withColumn(_GROUP_KEY, group_key)
        .withColumn(_ROW_KEY, row_key)
        .repartition(F.col(privacy_unit))
    )
    group_order = [F.col(_GROUP_KEY), *[F.col(g).asc_nulls_first() for g in groups]]
    by_group = Window.partitionBy(privacy_unit).orderBy(*group_order)
    by_row = Window.partitionBy(privacy_unit).orderBy(*group_order, F.col(_ROW_KEY))
    ranked = (
        keyed.withColumn(_ROW_NUMBER, F.row_number().over(by_row))
        .withColumn(_GROUP_START, F.rank().over(by_group))
        .withColumn(_GROUP_RANK, F.dense_rank().over(by_group))
    )
    row_in_group = F.col(_ROW_NUMBER) - F.col(_GROUP_START)  # 0, 1, ... inside each (unit, group)
    return ranked.filter((F.col(_GROUP_RANK) <= max_groups) & (row_in_group < max_rows)).select(*carried)


def _selection_keys(salt: Column, privacy_unit: str, groups: list[str], carried: list[str]) -> tuple[Column, Column]:
    """The salted 64-bit keys that order a unit's groups and a group's rows (also used by the reference tests)."""
    from pyspark.sql import functions as F

    group_key = F.xxhash64(salt, F.col(privacy_unit), *[F.col(g) for g in groups])
    row_key = F.xxhash64(salt, F.lit(1), *[F.col(c) for c in carried])
    return group_key, row_key


def _carried_columns(df: DataFrame, privacy_unit: str, groups: list[str], columns: Sequence[str] | None) -> list[str]:
    """The unit, the group keys and the requested columns, in the input's order (all columns for ``None``)."""
    if columns is None:
        return list(df.columns)
    extra = _columns(df, columns, "columns")
    wanted = {privacy_unit, *groups, *extra}
    return [c for c in df.columns if c in wanted]


# ---------------------------------------------------------------------------------------------
# 2. Exact aggregates
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FixedPointBounds:
    """Declared bounds in fixed point: a value ``v`` becomes ``clamp(round(v*scale), low, high)``.

    Attributes:
        lower: Declared lower bound (exact).
        upper: Declared upper bound (exact).
        scale: Fixed-point scale (values are multiples of ``1/scale``).
        low: ``ceil(lower*scale)``, the smallest fixed-point value.
        high: ``floor(upper*scale)``, the largest fixed-point value.
    """

    lower: Fraction
    upper: Fraction
    scale: int
    low: int
    high: int

    @property
    def max_abs(self) -> int:
        """Largest absolute fixed-point contribution of one row, ``max(|low|, |high|)``."""
        return max(abs(self.low), abs(self.high))


def fixed_point_bounds(lower: Real | Decimal, upper: Real | Decimal, scale: int = 100) -> FixedPointBounds:
    """Validate declared bounds and derive their fixed-point range.

    Args:
        lower: Declared lower bound.
        upper: Declared upper bound (≥ lower).
        scale: Positive integer fixed-point scale.

    Raises:
        SpecError: A bound is missing or not finite, lower > upper, no multiple of 1/scale lies in the bounds,
            or a fixed-point value would not fit a signed 64-bit integer.
    """
    lo, hi = _bound(lower, "lower"), _bound(upper, "upper")
    fixed_scale = _positive_int(scale, "scale")
    if lo > hi:
        raise SpecError(f"lower bound {float(lo)} exceeds upper bound {float(hi)}")
    low, high = math.ceil(lo * fixed_scale), math.floor(hi * fixed_scale)
    if low > high:
        raise SpecError(f"no multiple of 1/{fixed_scale} lies in [{float(lo)}, {float(hi)}]; raise the scale")
    if max(abs(low), abs(high)) > _LONG_MAX // 2:
        raise SpecError(f"bounds * scale = {max(abs(low), abs(high))} does not fit a 63-bit fixed-point value")
    return FixedPointBounds(lower=lo, upper=hi, scale=fixed_scale, low=low, high=high)


@dataclass(frozen=True)
class ExactAggregates:
    """Exact per-group aggregates of bounded data, collected to the driver (one Spark job).

    Attributes:
        group_by: The group key columns.
        rows: One mapping per group present in the data: the group columns, then ``count`` (rows),
            ``distinct_units``, ``value_count`` (rows with a valid value), ``sum_fp`` and ``sum_sq_fp``
            (exact ``int`` sums of fixed-point values and of their squares; 0 without a value column).
        frame: The same aggregates as a small DataFrame (for :func:`with_public_groups`).
        invalid_count: Rows whose value was null, NaN or infinite (over the whole dataset; never in a sum).
        bounds: Fixed-point bounds of the value column, or ``None`` without one.
    """

    group_by: tuple[str, ...]
    rows: tuple[Mapping[str, Any], ...]
    frame: DataFrame = field(repr=False)
    invalid_count: int
    bounds: FixedPointBounds | None


def exact_aggregates(
    bounded_df: DataFrame,
    *,
    group_by: Sequence[str],
    privacy_unit: str,
    value_column: str | None = None,
    lower: Real | Decimal | None = None,
    upper: Real | Decimal | None = None,
    scale: int = 100,
    on_invalid: InvalidPolicy = "drop",
) -> ExactAggregates:
    """Per group: row count, distinct units and exact fixed-point sum and sum of squares of a value column.

    Runs one Spark job (the bounding shuffle plus a small shuffle by group; a second job only if a 64-bit sum
    overflows) and collects per-group aggregates
    only. A row with an invalid value (null, NaN, ±inf) still counts in ``count`` and ``distinct_units``
    (it is a visit); its value is left out of ``value_count``, ``sum_fp`` and ``sum_sq_fp``.

    Args:
        bounded_df: Output of :func:`bound_contributions`.
        group_by: Group key columns.
        privacy_unit: The privacy unit column (for ``distinct_units``).
        value_column: Numeric column to sum, or ``None`` for counts only.
        lower: Declared lower bound of the value (required with ``value_column``).
        upper: Declared upper bound of the value (required with ``value_column``).
        scale: Fixed-point scale: ``value`` contributes ``round(value*scale)``.
        on_invalid: ``"drop"`` (count and leave out) or ``"error"`` (raise :class:`GuardFailed`).

    Raises:
        SpecError: Missing bounds, unknown columns, a non-numeric value column or an unknown policy
            (before any Spark job runs).
        GuardFailed: ``on_invalid="error"`` and some value is invalid, or a fixed-point sum overflows decimal(38,0).
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    groups = _columns(bounded_df, group_by, "group_by")
    _columns(bounded_df, [privacy_unit], "privacy_unit")
    if on_invalid not in ("drop", "error"):
        raise SpecError(f"on_invalid must be 'drop' or 'error', got {on_invalid!r}")
    bounds: FixedPointBounds | None = None
    if value_column is None:
        if lower is not None or upper is not None:
            raise SpecError("lower/upper given without a value_column")
        fixed, invalid = F.lit(None).cast("long"), F.lit(0)
        squares_fit = True
    else:
        _columns(bounded_df, [value_column], "value_column")
        dtype = bounded_df.schema[value_column].dataType
        if not isinstance(dtype, T.NumericType):
            raise SpecError(f"value column {value_column!r} must be numeric, got {dtype.simpleString()}")
        bounds = fixed_point_bounds(lower, upper, scale)  # type: ignore[arg-type]
        _check_square_headroom(bounds)
        squares_fit = bounds.max_abs**2 <= _LONG_MAX
        value = F.col(value_column).cast("double")
        bad = value.isNull() | F.isnan(value) | (F.abs(value) == F.lit(float("inf")))
        clamped = F.least(F.greatest(value, F.lit(float(bounds.lower))), F.lit(float(bounds.upper)))
        rounded = F.round(clamped * F.lit(float(bounds.scale))).cast("long")
        fixed = F.when(~bad, F.least(F.greatest(rounded, F.lit(bounds.low)), F.lit(bounds.high)))
        invalid = bad.cast("int")
    prepared = bounded_df.select(
        F.col(privacy_unit).alias(_UNIT), *[F.col(g) for g in groups], fixed.alias(_FIXED), invalid.alias(_INVALID)
    )
    collected = _two_level_aggregate(prepared, groups, wide=False, squares_fit=squares_fit)
    if any(r[_OVERFLOW] for r in collected):  # a 64-bit sum overflowed: redo it in decimal(38,0), still exact
        collected = _two_level_aggregate(prepared, groups, wide=True, squares_fit=squares_fit)
    overflowed = [{g: r[g] for g in groups} for r in collected if r[_OVERFLOW]]
    if overflowed:
        raise GuardFailed(
            f"fixed-point sums of groups {overflowed[:3]} overflow decimal(38,0); lower the scale or bounds"
        )
    invalid_count = sum(int(r[_INVALID] or 0) for r in collected)
    if on_invalid == "error" and invalid_count:
        raise GuardFailed(
            f"value column {value_column!r} has {invalid_count} null, NaN or infinite values after bounding; "
            "the declared policy is on_invalid='error' (allowed: 0)"
        )
    rows: list[dict[str, Any]] = []
    for r in collected:
        row = {g: r[g] for g in groups}
        row.update(
            count=int(r["count"] or 0), distinct_units=int(r["distinct_units"]), value_count=int(r["value_count"] or 0)
        )
        for name in ("sum_fp", "sum_sq_fp"):
            row[name] = int(r[name] or 0)
        rows.append(row)
    rows.sort(key=lambda row: tuple((row[g] is not None, row[g]) for g in groups))

    schema_fields = [bounded_df.schema[g] for g in groups] + [
        T.StructField("count", T.LongType(), False),
        T.StructField("distinct_units", T.LongType(), False),
        T.StructField("value_count", T.LongType(), False),
        T.StructField("sum_fp", T.DecimalType(38, 0), False),
        T.StructField("sum_sq_fp", T.DecimalType(38, 0), False),
    ]
    data = [tuple(row[g] for g in groups) + _aggregate_tuple(row) for row in rows]
    frame = bounded_df.sparkSession.createDataFrame(data, T.StructType(schema_fields))
    return ExactAggregates(
        group_by=tuple(groups), rows=tuple(rows), frame=frame, invalid_count=invalid_count, bounds=bounds
    )


def _two_level_aggregate(prepared: DataFrame, groups: list[str], *, wide: bool, squares_fit: bool) -> list[Any]:
    """Aggregate per (unit, group) first, then per group, and collect.

    Bounded data is already hash-partitioned by the unit, so the first level needs no shuffle and leaves at most
    ``max_groups_per_unit`` rows per unit; ``distinct_units`` is then a plain count (no distinct aggregation).
    ``try_sum`` yields null on overflow (ANSI or not); a null sum over valid values sets the overflow flag.
    """
    from pyspark.sql import functions as F

    kind = "decimal(38,0)" if wide else "long"
    value = F.col(_FIXED).cast("decimal(19,0)") if wide else F.col(_FIXED)
    square_wide = wide or not squares_fit
    square_base = F.col(_FIXED).cast("decimal(19,0)") if square_wide else F.col(_FIXED)
    sq_kind = "decimal(38,0)" if square_wide else "long"
    level1 = prepared.groupBy(_UNIT, *groups).agg(
        F.count(F.lit(1)).alias("c"),
        F.count(F.col(_FIXED)).alias("vc"),
        F.try_sum(value).alias("s"),
        F.try_sum(square_base * square_base).alias("sq"),
        F.sum(F.col(_INVALID)).alias("inv"),
    )
    lost1 = (F.col("vc") > 0) & (F.col("s").isNull() | F.col("sq").isNull())
    aggs = [
        F.sum("c").alias("count"),
        F.count(F.col(_UNIT)).alias("distinct_units"),
        F.sum("vc").alias("value_count"),
        F.try_sum(F.col("s").cast(kind)).alias("sum_fp"),
        F.try_sum(F.col("sq").cast(sq_kind)).alias("sum_sq_fp"),
        F.sum("inv").alias(_INVALID),
        F.count(F.when(lost1, F.lit(1))).alias("lost1"),
    ]
    level2 = level1.groupBy(*groups).agg(*aggs) if groups else level1.agg(*aggs)
    lost2 = (F.col("value_count") > 0) & (F.col("sum_fp").isNull() | F.col("sum_sq_fp").isNull())
    return level2.withColumn(_OVERFLOW, (F.col("lost1") > 0) | lost2).collect()


def _aggregate_tuple(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (row["count"], row["distinct_units"], row["value_count"], Decimal(row["sum_fp"]), Decimal(row["sum_sq_fp"]))


def _check_square_headroom(bounds: FixedPointBounds) -> None:
    # One square must fit decimal(38,0); a sum of n squares overflowing raises (ANSI) or gives null (checked).
    if bounds.max_abs**2 > _DECIMAL38_MAX:
        raise SpecError(f"(bounds * scale)^2 = {bounds.max_abs**2} exceeds decimal(38,0); lower the scale or bounds")


# ---------------------------------------------------------------------------------------------
# 3. Public groups
# ---------------------------------------------------------------------------------------------
def with_public_groups(
    aggregates_df: DataFrame,
    public_groups: DataFrame | Sequence[tuple[Any, ...]],
    *,
    group_by: Sequence[str],
) -> DataFrame:
    """Restrict aggregates to a declared public key set: missing groups get zeros, other groups are dropped.

    A group is released because it is declared, never because it exists in the data. Duplicate public
    keys are collapsed; keys are matched null-safely.

    Args:
        aggregates_df: ``ExactAggregates.frame`` (group columns followed by :data:`AGGREGATE_COLUMNS`).
        public_groups: A DataFrame with the group columns, or a list of key tuples in ``group_by`` order.
        group_by: Group key columns.

    Returns:
        One row per distinct public key: the key and its aggregates (0 where the data has no such group).

    Raises:
        SpecError: No group columns, a public key tuple of the wrong length, or public groups lacking a column.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    groups = _columns(aggregates_df, group_by, "group_by")
    if not groups:
        raise SpecError("public groups need at least one group column")
    if isinstance(public_groups, Sequence):
        keys = [tuple(k) for k in public_groups]
        bad = [k for k in keys if len(k) != len(groups)]
        if bad:
            raise SpecError(f"public group keys must have {len(groups)} values ({groups}); got {bad[:3]}")
        schema = T.StructType([T.StructField(g, aggregates_df.schema[g].dataType, True) for g in groups])
        public = aggregates_df.sparkSession.createDataFrame(keys, schema)
    else:
        _columns(public_groups, groups, "public groups")
        public = public_groups.select(*[F.col(g).cast(aggregates_df.schema[g].dataType).alias(g) for g in groups])
    public = public.dropDuplicates(groups).alias("p")
    aggs = aggregates_df.alias("a")
    condition = None
    for g in groups:
        clause = F.col(f"p.{g}").eqNullSafe(F.col(f"a.{g}"))
        condition = clause if condition is None else condition & clause
    joined = public.join(aggs, on=condition, how="left")
    zero = {"count": "long", "distinct_units": "long", "value_count": "long"}
    out = [F.col(f"p.{g}").alias(g) for g in groups]
    for name in AGGREGATE_COLUMNS:
        kind = zero.get(name, "decimal(38,0)")
        out.append(F.coalesce(F.col(f"a.{name}"), F.lit(0).cast(kind)).cast(kind).alias(name))
    return joined.select(*out)


# ---------------------------------------------------------------------------------------------
# 4. Sensitivities
# ---------------------------------------------------------------------------------------------
def sensitivities(
    max_groups_per_unit: int,
    max_rows_per_group: int,
    lower: Real | Decimal | None = None,
    upper: Real | Decimal | None = None,
    scale: int = 100,
) -> dict[str, dict[str, int]]:
    """Sensitivities of the bounded aggregates under adding or removing one privacy unit, as exact integers.

    With ``G = max_groups_per_unit``, ``R = max_rows_per_group`` and ``B = max(|low|, |high|)`` the largest
    fixed-point contribution of one row (:class:`FixedPointBounds`), one unit changes at most ``G`` groups
    (``l0``), each by at most ``linf``; ``l1 = G·linf``; ``l2_squared = G·linf²`` (the discrete Gaussian's Δ₂²):

    ============== ====== =========== ============ ===============
    quantity        l0     linf        l1           l2_squared
    ============== ====== =========== ============ ===============
    count           G      R           G·R          G·R²
    distinct_units  G      1           G            G
    value_count     G      R           G·R          G·R²
    sum_fp          G      R·B         G·R·B        G·(R·B)²
    sum_sq_fp       G      R·B²        G·R·B²       G·(R·B²)²
    ============== ====== =========== ============ ===============

    Fixed-point entries are in scaled units (divide by ``scale`` — ``scale²`` for ``sum_sq_fp`` — for release
    units). Sum entries appear only when ``lower`` and ``upper`` are given.

    Args:
        max_groups_per_unit: G.
        max_rows_per_group: R.
        lower: Declared lower bound of the value.
        upper: Declared upper bound of the value.
        scale: Fixed-point scale.

    Returns:
        ``{quantity: {"l0": ..., "linf": ..., "l1": ..., "l2_squared": ...}}``.

    Raises:
        SpecError: Non-positive caps, or only one of the bounds.
    """
    g = _positive_int(max_groups_per_unit, "max_groups_per_unit")
    r = _positive_int(max_rows_per_group, "max_rows_per_group")

    def entry(linf: int) -> dict[str, int]:
        return {"l0": g, "linf": linf, "l1": g * linf, "l2_squared": g * linf * linf}

    table = {"count": entry(r), "distinct_units": entry(1), "value_count": entry(r)}
    if (lower is None) != (upper is None):
        raise SpecError("declare both lower and upper bounds, or neither")
    if lower is not None and upper is not None:
        b = fixed_point_bounds(lower, upper, scale).max_abs
        table["sum_fp"] = entry(r * b)
        table["sum_sq_fp"] = entry(r * b * b)
    return table
