"""Built-in guards catch what they exist to catch (each case here is a bug they must block)."""

from __future__ import annotations

import hashlib

from privstage.guards.base import GuardContext
from privstage.guards.builtin import NonEmptyGuard, NoNullsGuard, NoRawValuesGuard, NullsPreservedGuard

SSN = "078-05-1120"
HEX64 = "a" * 64  # a raw value that has the pseudonyms' length and alphabet


def fake_pseudonym(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def ctx(spark, inputs, outputs, schema="id int, v string"):
    return GuardContext(
        stage="s",
        phase="after",
        data=spark.createDataFrame(outputs, schema),
        input_data=spark.createDataFrame(inputs, schema),
    )


def outcome(outcomes, check, column=None):
    (found,) = [o for o in outcomes if o.check == check and o.column == column]
    return found


def test_no_raw_values_passes_when_every_value_is_replaced(spark):
    inputs = [(1, SSN), (2, HEX64), (3, None)]
    outputs = [(1, fake_pseudonym(SSN)), (2, fake_pseudonym(HEX64)), (3, None)]
    result = NoRawValuesGuard((("v", "v"),)).check(ctx(spark, inputs, outputs))
    assert outcome(result, "no_raw_values", "v").success


def test_no_raw_values_catches_a_pass_through_of_any_shape(spark):
    inputs = [(1, SSN), (2, HEX64), (3, "bob")]
    # row 1 leaks a short raw value, row 2 a raw value shaped like a pseudonym
    outputs = [(1, SSN), (2, HEX64), (3, fake_pseudonym("bob"))]
    found = outcome(NoRawValuesGuard((("v", "v"),)).check(ctx(spark, inputs, outputs)), "no_raw_values", "v")
    assert not found.success
    assert found.details == {"raw_value_matches": 2}
    assert SSN not in str(found.to_dict())


def test_no_raw_values_compares_each_column_with_its_own_source(spark):
    schema = "a string, b string"
    inputs = [("x1", "y1")]
    outputs = [("y1", fake_pseudonym("y1"))]  # a's output holds b's raw value: not a's leak
    result = NoRawValuesGuard((("a", "a"), ("b", "b")), raw_columns_must_be_absent=("a",)).check(
        ctx(spark, inputs, outputs, schema)
    )
    assert outcome(result, "no_raw_values", "a").success
    assert outcome(result, "no_raw_values", "b").success
    assert not outcome(result, "raw_column_absent", "a").success  # column a is still there


def test_nulls_and_emptiness(spark):
    c = ctx(spark, [(1, "x"), (2, None)], [(1, "p"), (2, "q")])
    assert not outcome(NullsPreservedGuard((("v", "v"),)).check(c), "nulls_preserved", "v").success
    assert not outcome(NoNullsGuard(("v",)).check(GuardContext("s", "before", c.input_data)), "no_nulls", "v").success
    empty = GuardContext("s", "before", spark.createDataFrame([], "v string"))
    assert not outcome(NonEmptyGuard().check(empty), "not_empty").success
