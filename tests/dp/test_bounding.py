"""Contribution bounding and exact pre-noise aggregation (privstage.dp.bounding) on a real local Spark."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

import pytest

from privstage.dp.bounding import (
    AGGREGATE_COLUMNS,
    bound_contributions,
    exact_aggregates,
    fixed_point_bounds,
    sensitivities,
    with_public_groups,
)
from privstage.dp.mechanisms import TestConfig
from privstage.errors import GuardFailed, SpecError

TEST = TestConfig(allow_seed=True)
SCHEMA = "unit string, dx string, zip string, cost double"


def _rows(n_units: int = 40, groups_per_unit: int = 6, rows_per_group: int = 5) -> list[tuple[Any, ...]]:
    """Every unit visits ``groups_per_unit`` (dx, zip) groups, ``rows_per_group`` times each, with distinct costs."""
    rows = []
    for u in range(n_units):
        for g in range(groups_per_unit):
            for r in range(rows_per_group):
                rows.append((f"u{u}", f"d{(u + g) % 9}", f"z{g % 2}", float(u * 100 + g * 10 + r) + 0.25))
    return rows


@pytest.fixture(scope="module")
def visits(spark):
    return spark.createDataFrame(_rows(), SCHEMA)


def _bound(df, *, groups=2, rows=3, seed: int | None = None):
    return bound_contributions(
        df,
        privacy_unit="unit",
        group_by=["dx", "zip"],
        max_groups_per_unit=groups,
        max_rows_per_group=rows,
        seed=seed,
        test_config=TEST if seed is not None else None,
    )


def _sorted(df) -> list[tuple[Any, ...]]:
    return sorted((tuple(r) for r in df.collect()), key=repr)


# ---------------------------------------------------------------------------------------------
# Bounding
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("groups", "rows"), [(1, 1), (2, 3), (6, 5)])
def test_caps_hold_per_unit_and_group(spark, visits, groups, rows):
    from pyspark.sql import functions as F

    bounded = _bound(visits, groups=groups, rows=rows)
    per_group = bounded.groupBy("unit", "dx", "zip").count()
    per_unit = per_group.groupBy("unit").agg(F.count("*").alias("n_groups"), F.max("count").alias("max_rows"))
    stats = per_unit.agg(
        F.max("n_groups"), F.max("max_rows"), F.min("n_groups"), F.count("*"), F.sum(F.col("n_groups"))
    ).first()
    # Every unit has 6 groups of 5 rows, so every unit is cut to exactly min(cap, available).
    assert tuple(stats)[:4] == (min(groups, 6), min(rows, 5), min(groups, 6), 40)
    assert stats[4] == 40 * min(groups, 6)


def test_bounded_rows_are_input_rows(visits):
    kept = _sorted(_bound(visits, seed=3))
    source = set(_rows())
    assert len(kept) == 40 * 2 * 3 and all(row in source for row in kept)


def test_unit_below_the_caps_keeps_all_its_rows(spark):
    rows = [("small", "a", "z", 1.0), ("small", "b", "z", 2.0), ("small", "b", "z", 3.0), *_rows(5)]
    bounded = _bound(spark.createDataFrame(rows, SCHEMA), groups=2, rows=2)
    assert sorted(r for r in map(tuple, bounded.filter("unit = 'small'").collect())) == sorted(rows[:3])


def test_duplicate_rows_are_bounded_like_distinct_rows(spark):
    rows = [("u", "a", "z", 1.0)] * 10
    assert _bound(spark.createDataFrame(rows, SCHEMA), rows=4).count() == 4


def test_null_units_are_dropped_and_null_group_keys_are_a_group(spark):
    rows = [(None, "a", "z", 1.0), ("u", None, None, 2.0), ("u", None, None, 3.0), ("u", "a", None, 4.0)]
    kept = _sorted(_bound(spark.createDataFrame(rows, SCHEMA), groups=5, rows=5))
    assert kept == sorted(rows[1:], key=repr)


def test_selection_is_random_without_a_seed(visits):
    # 40 units each choose 2 of 6 groups and 3 of 5 rows: two salts agree on every choice with probability
    # (1/15 · (1/10)²)^40 < 10^-120, so this false failure never happens in practice.
    assert _sorted(_bound(visits)) != _sorted(_bound(visits))


def test_selection_is_reproducible_with_a_test_seed_and_independent_of_partitioning(visits):
    first = _sorted(_bound(visits, seed=11))
    assert _sorted(_bound(visits.repartition(7), seed=11)) == first
    assert _sorted(_bound(visits.coalesce(1), seed=11)) == first
    # A different seed picks differently (false-failure probability < 10^-120, as above).
    assert _sorted(_bound(visits, seed=12)) != first


def test_each_group_is_chosen_about_uniformly(spark):
    # One unit, 4 groups, keep 1; 400 seeds. Each group count ~ Binomial(400, 1/4): mean 100, sd 8.7.
    # Bounds [55, 145] are ±5.2 sd: false-failure rate < 4 · 2·10^-7 per run.
    from pyspark.sql import functions as F

    rows = [("u", f"d{g}", "z", 1.0) for g in range(4)]
    df = spark.createDataFrame(rows, SCHEMA)
    # Many seeds in one job: stack the unit 400 times as distinct units (a unit id is hashed with the salt).
    many = spark.range(400).crossJoin(df).withColumn("unit", F.concat(F.lit("u"), F.col("id").cast("string")))
    kept = _bound(many.drop("id"), groups=1, rows=1, seed=5).groupBy("dx").count().collect()
    counts = {r["dx"]: r["count"] for r in kept}
    assert sum(counts.values()) == 400 and len(counts) == 4
    assert all(55 <= c <= 145 for c in counts.values()), counts


def _brute_force_selection(keyed_rows, *, groups: int, rows: int) -> Counter:
    """Reference bounding in plain Python: per unit the ``groups`` groups of smallest (group key, group values), and in
    each of them the ``rows`` rows of smallest row key; rows are ``(unit, dx, zip, cost, group_key, row_key)``."""
    by_unit: dict[Any, dict[tuple[Any, ...], list[tuple[Any, ...]]]] = defaultdict(lambda: defaultdict(list))
    for unit, dx, zip_, cost, group_key, row_key in keyed_rows:
        if unit is not None:
            by_unit[unit][(group_key, (dx is not None, dx), (zip_ is not None, zip_))].append((row_key, cost))
    kept: Counter = Counter()
    for unit, unit_groups in by_unit.items():
        for group in sorted(unit_groups)[:groups]:
            (_, (_, dx), (_, zip_)) = group
            for _, cost in sorted(unit_groups[group], key=lambda rk_cost: rk_cost[0])[:rows]:
                kept[(unit, dx, zip_, cost)] += 1
    return kept


@pytest.mark.parametrize("columns", [None, ["cost"]])
@pytest.mark.parametrize(("groups", "rows"), [(1, 1), (3, 2), (5, 4)])
def test_selection_matches_a_brute_force_reference(spark, columns, groups, rows):
    # Units of 1 to 7 groups of 1 to 5 rows (some duplicated, some with null group keys): the windows must keep
    # exactly the rows a plain sort by the same salted keys keeps.
    from pyspark.sql import functions as F

    from privstage.dp.bounding import _selection_keys

    data = []
    for u in range(60):
        for g in range(1 + u % 7):
            dx = None if (u + g) % 11 == 0 else f"d{g}"
            for r in range(1 + (u * 3 + g) % 5):
                data.append((f"u{u}", dx, f"z{(u + g) % 2}", float(u * 1000 + g * 10 + r % 3)))
    data.append((None, "d0", "z0", 1.0))
    df = spark.createDataFrame(data, SCHEMA).withColumn("extra", F.lit("x"))
    carried = ["unit", "dx", "zip", "cost"] if columns else ["unit", "dx", "zip", "cost", "extra"]
    group_key, row_key = _selection_keys(F.lit(21).cast("long"), "unit", ["dx", "zip"], carried)
    keyed = df.select("unit", "dx", "zip", "cost", group_key.alias("gk"), row_key.alias("rk")).collect()
    bounded = bound_contributions(
        df,
        privacy_unit="unit",
        group_by=["dx", "zip"],
        max_groups_per_unit=groups,
        max_rows_per_group=rows,
        seed=21,
        test_config=TEST,
        columns=columns,
    )
    assert bounded.columns == carried
    got = Counter(tuple(r)[:4] for r in bounded.collect())
    assert got == _brute_force_selection(map(tuple, keyed), groups=groups, rows=rows)
    assert sum(got.values()) < len(data)  # the caps did cut something


def test_bounding_shuffles_row_level_data_once_and_sorts_once(spark):
    # One exchange (by the privacy unit) and one sort serve all three window functions; with columns= only the unit,
    # the group keys, the value and the two keys cross the shuffle.
    from pyspark.sql import functions as F

    df = spark.createDataFrame(_rows(5), SCHEMA).withColumn("note", F.lit("wide"))
    bounded = bound_contributions(
        df, privacy_unit="unit", group_by=["dx", "zip"], max_groups_per_unit=2, max_rows_per_group=3, columns=["cost"]
    )
    plan = bounded._jdf.queryExecution().executedPlan().toString()
    exchanges = [line for line in plan.splitlines() if "Exchange " in line]
    sorts = [line for line in plan.splitlines() if "Sort [" in line]
    assert len(exchanges) == 1 and "hashpartitioning(unit#" in exchanges[0], plan
    assert len(sorts) == 1 and sorts[0].split("Sort [")[1].startswith("unit#"), plan
    assert "note" not in plan.split("Exchange ")[1].split("\n")[0]
    assert bounded.columns == ["unit", "dx", "zip", "cost"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_groups_per_unit": 0}, "max_groups_per_unit must be a positive integer"),
        ({"max_rows_per_group": 1.5}, "max_rows_per_group must be a positive integer"),
        ({"group_by": ["nope"]}, "group_by names columns not in the data"),
        ({"group_by": ["unit"]}, "cannot also be a group key"),
        ({"privacy_unit": "patient"}, "privacy_unit names columns not in the data"),
        ({"seed": 1}, "accepted only in test configuration"),
        ({"columns": ["nope"]}, "columns names columns not in the data"),
        ({"columns": "cost"}, "columns must be a sequence of column names"),
    ],
)
def test_bounding_rejects_bad_arguments(visits, monkeypatch, kwargs, message):
    monkeypatch.delenv("PRIVSTAGE_TEST_SEED_ALLOWED", raising=False)
    args: dict[str, Any] = {
        "privacy_unit": "unit",
        "group_by": ["dx"],
        "max_groups_per_unit": 1,
        "max_rows_per_group": 1,
    } | kwargs
    with pytest.raises(SpecError, match=message):
        bound_contributions(visits, **args)


# ---------------------------------------------------------------------------------------------
# Exact aggregates
# ---------------------------------------------------------------------------------------------
def _reference(rows, *, lower, upper, scale):
    """Brute-force reference: Fraction-free integer arithmetic on the collected bounded rows."""
    fp = fixed_point_bounds(lower, upper, scale)
    out: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(
        lambda: {"count": 0, "units": set(), "value_count": 0, "sum_fp": 0, "sum_sq_fp": 0}
    )
    for unit, dx, zip_, cost in rows:
        cell = out[(dx, zip_)]
        cell["count"] += 1
        cell["units"].add(unit)
        if cost is None or math.isnan(cost) or math.isinf(cost):
            continue
        clamped = min(max(Decimal(cost), Decimal(str(lower))), Decimal(str(upper)))
        v = int((clamped * scale).to_integral_value(rounding="ROUND_HALF_UP"))
        v = min(max(v, fp.low), fp.high)
        cell["value_count"] += 1
        cell["sum_fp"] += v
        cell["sum_sq_fp"] += v * v
    return {
        k: {
            "count": c["count"],
            "distinct_units": len(c["units"]),
            "value_count": c["value_count"],
            "sum_fp": c["sum_fp"],
            "sum_sq_fp": c["sum_sq_fp"],
        }
        for k, c in out.items()
    }


def _as_dict(aggs) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {(r["dx"], r["zip"]): {c: r[c] for c in AGGREGATE_COLUMNS} for r in aggs.rows}


@pytest.mark.parametrize(("lower", "upper", "scale"), [(0, 1500, 100), (-50.5, 900.125, 1000), (100, 200, 1)])
def test_exact_aggregates_match_a_brute_force_reference(visits, lower, upper, scale):
    bounded = _bound(visits, groups=3, rows=2, seed=7)
    aggs = exact_aggregates(
        bounded,
        group_by=["dx", "zip"],
        privacy_unit="unit",
        value_column="cost",
        lower=lower,
        upper=upper,
        scale=scale,
    )
    expected = _reference([tuple(r) for r in bounded.collect()], lower=lower, upper=upper, scale=scale)
    assert _as_dict(aggs) == expected
    assert all(type(r["sum_fp"]) is int and type(r["sum_sq_fp"]) is int for r in aggs.rows)
    assert aggs.invalid_count == 0


def test_fixed_point_sums_do_not_depend_on_partitioning(spark):
    # Values whose float sum depends on order (1e16 + 1 - 1e16): fixed point makes it exact either way.
    rows = [(f"u{i}", "a", "z", v) for i, v in enumerate([1e15, 0.01, -1e15, 0.07, 3.33] * 400)]
    df = spark.createDataFrame(rows, SCHEMA)
    results = []
    for parts in (1, 7):
        bounded = _bound(df.repartition(parts), groups=1, rows=1, seed=1)
        aggs = exact_aggregates(
            bounded, group_by=["dx"], privacy_unit="unit", value_column="cost", lower=-1e15, upper=1e15, scale=100
        )
        results.append(aggs.rows)
    assert results[0] == results[1]
    assert results[0][0]["sum_fp"] == 400 * (1 + 7 + 333)
    assert results[0][0]["sum_sq_fp"] == 400 * (2 * 10**34 + 1 + 49 + 333**2)


def test_values_beyond_the_declared_bounds_contribute_the_bounds(spark):
    rows = [("a", "g", "z", 1e9), ("b", "g", "z", -1e9), ("c", "g", "z", 12.345), ("d", "g", "z", 12.344)]
    aggs = exact_aggregates(
        spark.createDataFrame(rows, SCHEMA),
        group_by=["dx"],
        privacy_unit="unit",
        value_column="cost",
        lower=-10,
        upper=20.5,
        scale=100,
    )
    assert aggs.rows[0]["sum_fp"] == 2050 - 1000 + 1235 + 1234


def test_counts_only_and_a_global_group(spark, visits):
    bounded = _bound(visits, groups=2, rows=3, seed=2)
    aggs = exact_aggregates(bounded, group_by=[], privacy_unit="unit")
    assert [dict(r) for r in aggs.rows] == [
        {"count": 240, "distinct_units": 40, "value_count": 0, "sum_fp": 0, "sum_sq_fp": 0}
    ]


INVALID_ROWS = [
    ("a", "g", "z", 1.0),
    ("b", "g", "z", None),
    ("c", "g", "z", float("nan")),
    ("d", "h", "z", float("inf")),
    ("e", "h", "z", float("-inf")),
    ("f", "h", "z", 2.0),
]


def test_invalid_values_are_counted_and_never_summed(spark):
    aggs = exact_aggregates(
        spark.createDataFrame(INVALID_ROWS, SCHEMA),
        group_by=["dx"],
        privacy_unit="unit",
        value_column="cost",
        lower=0,
        upper=10,
        scale=10,
        on_invalid="drop",
    )
    assert aggs.invalid_count == 4
    assert [
        (r["dx"], r["count"], r["distinct_units"], r["value_count"], r["sum_fp"], r["sum_sq_fp"]) for r in aggs.rows
    ] == [("g", 3, 3, 1, 10, 100), ("h", 3, 3, 1, 20, 400)]


def test_invalid_values_fail_under_the_error_policy(spark):
    with pytest.raises(GuardFailed, match="4 null, NaN or infinite values"):
        exact_aggregates(
            spark.createDataFrame(INVALID_ROWS, SCHEMA),
            group_by=["dx"],
            privacy_unit="unit",
            value_column="cost",
            lower=0,
            upper=10,
            on_invalid="error",
        )


def test_error_policy_passes_clean_data(spark):
    aggs = exact_aggregates(
        spark.createDataFrame(INVALID_ROWS[:1], SCHEMA),
        group_by=["dx"],
        privacy_unit="unit",
        value_column="cost",
        lower=0,
        upper=10,
        on_invalid="error",
    )
    assert aggs.invalid_count == 0 and aggs.rows[0]["sum_fp"] == 100


def test_empty_dataset_gives_no_groups(spark):
    empty = _bound(spark.createDataFrame([], SCHEMA))
    aggs = exact_aggregates(empty, group_by=["dx", "zip"], privacy_unit="unit", value_column="cost", lower=0, upper=1)
    assert aggs.rows == () and aggs.invalid_count == 0 and aggs.frame.count() == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"value_column": "cost", "upper": 1}, "lower must be declared"),
        ({"value_column": "cost", "lower": 0}, "upper must be declared"),
        ({"value_column": "cost", "lower": 2, "upper": 1}, "exceeds upper bound"),
        ({"value_column": "cost", "lower": 0.001, "upper": 0.009}, "no multiple of 1/100"),
        ({"value_column": "cost", "lower": 0, "upper": float("inf")}, "upper must be finite"),
        ({"value_column": "cost", "lower": 0, "upper": 1, "scale": 0}, "scale must be a positive integer"),
        ({"value_column": "cost", "lower": 0, "upper": 10**18}, "does not fit"),
        ({"value_column": "dx", "lower": 0, "upper": 1}, "must be numeric"),
        ({"value_column": "cost", "lower": 0, "upper": 1, "on_invalid": "ignore"}, "on_invalid must be"),
        ({"lower": 0, "upper": 1}, "without a value_column"),
    ],
)
def test_exact_aggregates_reject_bad_declarations(visits, kwargs, message):
    with pytest.raises(SpecError, match=message):
        exact_aggregates(visits, group_by=["dx"], privacy_unit="unit", **kwargs)


# ---------------------------------------------------------------------------------------------
# Public groups
# ---------------------------------------------------------------------------------------------
def test_public_groups_fill_missing_with_zero_and_drop_undeclared(spark):
    rows = [("a", "d1", "z1", 5.0), ("b", "d1", "z1", 7.0), ("c", "d2", "z1", 1.0), ("d", "secret", "z9", 9.0)]
    aggs = exact_aggregates(
        spark.createDataFrame(rows, SCHEMA),
        group_by=["dx", "zip"],
        privacy_unit="unit",
        value_column="cost",
        lower=0,
        upper=10,
        scale=1,
    )
    public = [("d1", "z1"), ("d2", "z1"), ("d3", "z2"), ("d1", "z1")]
    released = sorted(tuple(r) for r in with_public_groups(aggs.frame, public, group_by=["dx", "zip"]).collect())
    assert released == [
        ("d1", "z1", 2, 2, 2, Decimal(12), Decimal(74)),
        ("d2", "z1", 1, 1, 1, Decimal(1), Decimal(1)),
        ("d3", "z2", 0, 0, 0, Decimal(0), Decimal(0)),
    ]
    from_frame = with_public_groups(
        aggs.frame, spark.createDataFrame([("d3", "z2"), ("d2", "z1")], "dx string, zip string"), group_by=["dx", "zip"]
    )
    assert sorted(tuple(r)[:3] for r in from_frame.collect()) == [("d2", "z1", 1), ("d3", "z2", 0)]
    assert with_public_groups(aggs.frame, [], group_by=["dx", "zip"]).count() == 0


def test_public_group_keys_are_checked(spark, visits):
    aggs = exact_aggregates(_bound(visits, seed=1), group_by=["dx", "zip"], privacy_unit="unit")
    with pytest.raises(SpecError, match="must have 2 values"):
        with_public_groups(aggs.frame, [("d1",)], group_by=["dx", "zip"])


# ---------------------------------------------------------------------------------------------
# Sensitivities
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("g", "r", "lower", "upper", "scale", "b"),
    [(1, 1, 0, 1, 1, 1), (4, 2, 0, 5000, 100, 500_000), (3, 5, -20.5, 10, 10, 205), (2, 3, -0.014, 0.019, 100, 1)],
)
def test_sensitivity_table(g, r, lower, upper, scale, b):
    table = sensitivities(g, r, lower, upper, scale)
    assert table["count"] == {"l0": g, "linf": r, "l1": g * r, "l2_squared": g * r * r}
    assert table["value_count"] == table["count"]
    assert table["distinct_units"] == {"l0": g, "linf": 1, "l1": g, "l2_squared": g}
    assert table["sum_fp"] == {"l0": g, "linf": r * b, "l1": g * r * b, "l2_squared": g * (r * b) ** 2}
    assert table["sum_sq_fp"] == {"l0": g, "linf": r * b * b, "l1": g * r * b * b, "l2_squared": g * (r * b * b) ** 2}
    assert all(type(v) is int for entry in table.values() for v in entry.values())


def test_sensitivities_without_bounds_cover_counts_only():
    assert set(sensitivities(2, 2)) == {"count", "distinct_units", "value_count"}
    with pytest.raises(SpecError, match="both lower and upper"):
        sensitivities(2, 2, lower=0)


def test_sum_sensitivity_bounds_one_units_change(spark):
    # Removing any one unit changes each released quantity by at most the table's linf, in at most l0 groups.
    rows = [(f"u{u}", f"d{g}", "z", 1e6 * (-1) ** u) for u in range(6) for g in range(5) for _ in range(4)]
    df = spark.createDataFrame(rows, SCHEMA)
    table = sensitivities(2, 3, -100, 100, 10)

    def run(frame):
        bounded = _bound(frame, groups=2, rows=3, seed=9)
        aggs = exact_aggregates(
            bounded, group_by=["dx", "zip"], privacy_unit="unit", value_column="cost", lower=-100, upper=100, scale=10
        )
        return _as_dict(aggs)

    full = run(df)
    for u in (0, 3):
        less = run(df.filter(f"unit != 'u{u}'"))
        for name in ("count", "distinct_units", "sum_fp", "sum_sq_fp"):
            diffs = [abs(full[k][name] - less.get(k, {name: 0})[name]) for k in full]
            assert max(diffs) <= table[name]["linf"] and sum(d > 0 for d in diffs) <= table[name]["l0"]
            assert sum(diffs) <= table[name]["l1"]


def test_64_bit_overflow_falls_back_to_exact_decimal_sums(spark):
    # 3 · 4e18 overflows a long: the sums are redone in decimal(38,0) and stay exact.
    rows = [(f"u{i}", "g", "z", 4e18) for i in range(3)]
    aggs = exact_aggregates(
        spark.createDataFrame(rows, SCHEMA),
        group_by=["dx"],
        privacy_unit="unit",
        value_column="cost",
        lower=0,
        upper=4e18,
        scale=1,
    )
    assert aggs.rows[0]["sum_fp"] == 12 * 10**18 and aggs.rows[0]["sum_sq_fp"] == 48 * 10**36


def test_decimal_overflow_is_refused(spark):
    # 7 squares of 4e18 exceed decimal(38,0): no sum is released.
    rows = [(f"u{i}", "g", "z", 4e18) for i in range(7)]
    with pytest.raises(GuardFailed, match="overflow decimal"):
        exact_aggregates(
            spark.createDataFrame(rows, SCHEMA),
            group_by=["dx"],
            privacy_unit="unit",
            value_column="cost",
            lower=0,
            upper=4e18,
            scale=1,
        )
