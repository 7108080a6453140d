"""Exact privacy-budget value objects: parsing, range checks, arithmetic, splitting, pydantic."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

import privstage.budget as budget_pkg
from privstage.budget import Delta, Epsilon, InvalidBudgetValue, PrivacyBudget
from privstage.spec import StrictModel

# ---------------------------------------------------------------------------------------------
# Exactness
# ---------------------------------------------------------------------------------------------


def test_thirds_add_up_to_exactly_one() -> None:
    third = Epsilon("1/3")
    assert third + third + third == Epsilon(1)
    assert sum([third, third, third]) == Epsilon(1)
    assert Epsilon.total([third] * 3) == Epsilon(1)
    # The float sum of the same values is not 1: the reason for the value objects.
    assert (1 / 3) * 3 == 1.0 and 0.1 + 0.2 != 0.3
    assert Epsilon(0.1) + Epsilon(0.2) == Epsilon("0.3")


def test_ten_tenths_of_delta_are_exact() -> None:
    tenth = Delta("1e-7")
    assert Delta.total([tenth] * 10) == Delta("1e-6")
    assert Delta("1e-6") - tenth * 10 == Delta.zero()


def test_shares_add_up_exactly_to_the_whole() -> None:
    total = PrivacyBudget(1, "1e-6")
    shares = total.split({"count": 1, "mean": 2})
    assert shares == {"count": PrivacyBudget("1/3", "1/3000000"), "mean": PrivacyBudget("2/3", "1/1500000")}
    assert PrivacyBudget.total(shares.values()) == total
    assert total.split({"a": "1/3", "b": "2/3"}) == total.split({"a": 1, "b": 2})  # only ratios matter
    sevenths = PrivacyBudget(3, "1e-5").split_evenly(7)
    assert len(sevenths) == 7 and sum(sevenths) == PrivacyBudget(3, "1e-5")
    assert total.portion("1/4") == PrivacyBudget("0.25", "2.5e-7")


# ---------------------------------------------------------------------------------------------
# Parsing (YAML-ish) and printing
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given_value", "exact"),
    [
        (1, Fraction(1)),
        ("1/3", Fraction(1, 3)),
        (" 2/6 ", Fraction(1, 3)),
        ("1e-6", Fraction(1, 10**6)),
        ("1E-6", Fraction(1, 10**6)),
        ("0.5", Fraction(1, 2)),
        (".25", Fraction(1, 4)),
        ("+3", Fraction(3)),
        (0.1, Fraction(1, 10)),  # the decimal as written, not the binary double 0.1000000000000000055...
        (1e-06, Fraction(1, 10**6)),
        (Decimal("0.125"), Fraction(1, 8)),
        (Fraction(2, 7), Fraction(2, 7)),
    ],
)
def test_epsilon_parses_exactly(given_value: Any, exact: Fraction) -> None:
    assert Epsilon(given_value).fraction == exact


def test_yaml_numbers_and_strings_parse_exactly() -> None:
    # PyYAML (YAML 1.1) reads 1e-6 and 1/3 as strings and 1.0e-6, 0.1 as floats: all are exact here.
    doc = yaml.safe_load("a: 1e-6\nb: 1.0e-6\nc: 1/3\nd: 0.1\ne: 2")
    assert isinstance(doc["a"], str) and isinstance(doc["b"], float)
    assert Delta(doc["a"]) == Delta(doc["b"]) == Delta(Fraction(1, 10**6))
    assert Epsilon(doc["c"]).fraction == Fraction(1, 3)
    assert Epsilon(doc["d"]).fraction == Fraction(1, 10)
    assert Epsilon(doc["e"]) == Epsilon(2)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Fraction(1, 3), "1/3"),
        (Fraction(1, 2), "0.5"),
        (Fraction(1, 10**6), "0.000001"),
        (Fraction(1, 10**7), "1E-7"),
        (Fraction(1000), "1000"),
        (Fraction(3, 1024), "0.0029296875"),
        (Fraction(10**40 + 1, 10), "1000000000000000000000000000000000000000.1"),  # beyond Decimal's 28 digits
        (Fraction(10**200), "1E+200"),
        (Fraction(1, 10**500), "1/1" + "0" * 500),  # beyond the decimal exponent range: a fraction
    ],
)
def test_text_form_is_exact_and_reads_back(value: Fraction, text: str) -> None:
    epsilon = Epsilon(value)
    assert str(epsilon) == text
    assert Epsilon(text) == epsilon
    assert repr(epsilon) == f"Epsilon('{text}')"


INVALID_EPSILON = [
    0,
    -1,
    "0",
    "-1/3",
    0.0,
    -0.5,
    math.nan,
    math.inf,
    -math.inf,
    "nan",
    "NaN",
    "inf",
    "-Infinity",
    ".inf",
    Decimal("NaN"),
    Decimal("Infinity"),
    "1/0",
    "abc",
    "",
    "1 / 3",
    "1_000",
    True,
    None,
    [1],
    "1e-999999999",  # refused by range, not computed (10**999999999 would never finish)
    "1/" + "9" * 5000,  # more digits than Python converts
    "9" * 20_000,
]


@pytest.mark.parametrize("value", INVALID_EPSILON, ids=repr)
def test_invalid_epsilon_is_a_value_error(value: Any) -> None:
    with pytest.raises(InvalidBudgetValue, match="epsilon") as caught:
        Epsilon(value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("value", [1, "1", 1.0, 1.5, "3/2", -0.1, "-1e-9", math.nan, math.inf, "nan", False])
def test_invalid_delta_is_a_value_error(value: Any) -> None:
    with pytest.raises(InvalidBudgetValue, match="delta"):
        Delta(value)


def test_delta_zero_and_just_below_one_are_valid() -> None:
    assert Delta(0).is_zero
    assert Delta("999999/1000000") < Delta("0.9999999")


def test_messages_name_the_rule() -> None:
    with pytest.raises(InvalidBudgetValue, match=r"epsilon must be greater than 0, got 0"):
        Epsilon(0)
    with pytest.raises(InvalidBudgetValue, match=r"delta must be at least 0 and less than 1, got 1"):
        Delta(1)
    with pytest.raises(InvalidBudgetValue, match=r"finite"):
        Epsilon(math.nan)


# ---------------------------------------------------------------------------------------------
# Arithmetic rules
# ---------------------------------------------------------------------------------------------
def test_zero_is_a_result_never_an_input() -> None:
    assert Epsilon(1) - Epsilon(1) == Epsilon.zero()
    assert str(Epsilon.zero()) == "0" and not Epsilon.zero()
    with pytest.raises(InvalidBudgetValue):
        Epsilon("0")
    assert PrivacyBudget(Epsilon.zero()).is_zero  # a held zero (what remains) is a valid budget


def test_subtraction_below_zero_and_delta_at_one_are_refused() -> None:
    with pytest.raises(InvalidBudgetValue, match="negative"):
        Epsilon("1/3") - Epsilon("1/2")
    with pytest.raises(InvalidBudgetValue, match="below 1"):
        Delta("0.5") + Delta("0.5")
    with pytest.raises(InvalidBudgetValue, match="negative"):
        PrivacyBudget(1, "1e-6") - PrivacyBudget("1/2", "2e-6")


def test_epsilon_and_delta_do_not_mix() -> None:
    with pytest.raises(TypeError):
        Epsilon(1) + Delta("0.5")  # type: ignore[operator]
    with pytest.raises(TypeError):
        _ = Epsilon(1) < Delta("0.5")  # type: ignore[operator]
    with pytest.raises(InvalidBudgetValue):
        Epsilon(Delta("0.5"))  # type: ignore[arg-type]
    assert Epsilon(1) != 1  # a value object is not a bare number
    assert Epsilon(1) != Delta(0) and Epsilon(Epsilon("1/3")) == Epsilon("1/3")


def test_budgets_are_partially_ordered() -> None:
    small, large = PrivacyBudget("1/2"), PrivacyBudget(1, "1e-6")
    pure_large, approx_small = PrivacyBudget(1), PrivacyBudget("1/2", "1e-6")
    assert small <= large and small < large and large >= small and large > small
    assert not pure_large <= approx_small and not approx_small <= pure_large  # incomparable
    assert large.fits_within(large) and not large < large


def test_value_objects_are_immutable_hashable_and_picklable() -> None:
    epsilon, budget = Epsilon("1/3"), PrivacyBudget("1/3", "1e-6")
    with pytest.raises(AttributeError):
        epsilon._value = Fraction(5)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        budget.epsilon = Epsilon(5)  # type: ignore[misc]
    assert len({Epsilon("2/6"), Epsilon("1/3"), Epsilon(1)}) == 2
    assert pickle.loads(pickle.dumps(budget)) == budget  # noqa: S301 (our own bytes)
    assert pickle.loads(pickle.dumps(Epsilon.zero())) == Epsilon.zero()  # noqa: S301


def test_to_float_never_rounds_up() -> None:
    for value in ["1/3", "2/3", "0.1", "1e-6", "1/7", "123456789/1000"]:
        exact = Epsilon(value).fraction
        rounded = Epsilon(value).to_float()
        assert Fraction(rounded) <= exact < Fraction(math.nextafter(rounded, math.inf))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda b: b.split({}), "no shares"),
        (lambda b: b.split({"a": 1, "b": 0}), "weight of 'b' must be greater than 0"),
        (lambda b: b.split({"a": "x"}), "weight of 'a'"),
        (lambda b: b.split_evenly(0), "positive integer"),
        (lambda b: b.portion("3/2"), "at most 1"),
        (lambda b: b.portion(0), "greater than 0"),
    ],
)
def test_bad_splits_are_refused(call: Any, message: str) -> None:
    with pytest.raises(InvalidBudgetValue, match=message):
        call(PrivacyBudget(1))


# ---------------------------------------------------------------------------------------------
# pydantic integration (as spec fields)
# ---------------------------------------------------------------------------------------------
class QuerySpec(StrictModel):
    """A spec model as the dp_aggregate stage will declare one."""

    epsilon: Epsilon
    delta: Delta = Delta(0)
    budget: PrivacyBudget | None = None


def test_spec_fields_parse_yaml_and_round_trip_exactly() -> None:
    text = "epsilon: 1/3\ndelta: 1e-6\nbudget: {epsilon: 0.1, delta: 1.0e-7}\n"
    spec = QuerySpec.model_validate(yaml.safe_load(text))
    assert spec.epsilon == Epsilon("1/3") and spec.delta == Delta("1/1000000")
    assert spec.budget == PrivacyBudget("1/10", "1/10000000")
    dumped = spec.model_dump(mode="json")
    assert dumped == {"epsilon": "1/3", "delta": "0.000001", "budget": {"epsilon": "0.1", "delta": "1E-7"}}
    assert QuerySpec.model_validate_json(spec.model_dump_json()) == spec
    assert QuerySpec.model_validate(yaml.safe_load(yaml.safe_dump(dumped))) == spec
    assert spec.model_dump()["epsilon"] == Epsilon("1/3")  # python mode keeps the value object
    schema = QuerySpec.model_json_schema()
    assert {"type": "number"} in schema["properties"]["epsilon"]["anyOf"]


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"epsilon": 0}, "epsilon must be greater than 0"),
        ({"epsilon": "-1"}, "epsilon must be greater than 0"),
        ({"epsilon": math.nan}, "finite"),
        ({"epsilon": 1, "delta": 1}, "delta must be at least 0 and less than 1"),
        ({"epsilon": 1, "budget": {"epsilon": 1, "sigma": 2}}, "unknown: sigma"),
        ({"epsilon": 1, "budget": {"delta": "1e-6"}}, "needs an epsilon"),
        ({"epsilon": 1, "budget": "1"}, "a mapping with epsilon and delta"),
    ],
)
def test_invalid_spec_values_are_validation_errors(doc: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        QuerySpec.model_validate(doc)
    assert fragment in str(caught.value)


def test_public_names_are_curated() -> None:
    assert sorted(budget_pkg.__all__) == sorted(
        [
            "SCHEMA_VERSION",
            "BudgetLedger",
            "BudgetStatus",
            "Delta",
            "Epsilon",
            "InvalidBudgetValue",
            "LedgerKey",
            "LedgerUnavailable",
            "PrivacyBudget",
            "RationalLike",
            "Reservation",
            "ReservationLost",
            "Spend",
            "SpendState",
            "default_ledger_url",
            "resolve_ledger_url",
            "to_fraction",
        ]
    )
    assert all(hasattr(budget_pkg, name) for name in budget_pkg.__all__)


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------
epsilons = st.fractions(min_value=Fraction(1, 10**9), max_value=1000, max_denominator=10**9).map(Epsilon)
small_deltas = st.fractions(min_value=0, max_value=Fraction(1, 4), max_denominator=10**12).map(Delta)
budgets = st.builds(PrivacyBudget, epsilons, st.fractions(0, Fraction(1, 2), max_denominator=10**12).map(Delta))


@given(epsilons, epsilons, epsilons)
def test_epsilon_addition_is_associative_and_commutative(a: Epsilon, b: Epsilon, c: Epsilon) -> None:
    assert (a + b) + c == a + (b + c)
    assert a + b == b + a
    assert (a + b) - b == a
    assert a + b > a


@given(small_deltas, small_deltas, small_deltas)
def test_delta_addition_is_associative_and_subtraction_inverts_it(a: Delta, b: Delta, c: Delta) -> None:
    assert (a + b) + c == a + (b + c)
    assert (a + b + c) - c - b == a


@given(budgets, st.lists(st.integers(min_value=1, max_value=1000), min_size=1, max_size=12))
def test_shares_of_a_split_never_exceed_and_exactly_reach_the_total(total: PrivacyBudget, weights: list[int]) -> None:
    shares = total.split({f"q{i}": w for i, w in enumerate(weights)})
    assert PrivacyBudget.total(shares.values()) == total
    running = PrivacyBudget.zero()
    for share in shares.values():
        running = running + share
        assert running.fits_within(total)


@given(budgets, st.lists(st.fractions(Fraction(1, 1000), 1, max_denominator=1000), min_size=1, max_size=8))
def test_declared_portions_that_sum_to_at_most_one_fit(total: PrivacyBudget, raw: list[Fraction]) -> None:
    scale = max(Fraction(1), sum(raw))
    portions = [total.portion(share / scale) for share in raw]  # declared shares summing to <= 1
    assert PrivacyBudget.total(portions).fits_within(total)


@given(
    st.one_of(
        epsilons,
        st.builds(Epsilon, st.floats(min_value=1e-300, max_value=1e300)),
        st.builds(
            lambda a, b: a / b.fraction + a * b.fraction, epsilons, epsilons
        ),  # arithmetic results with long digits
    )
)
def test_text_and_json_round_trips_are_exact(epsilon: Epsilon) -> None:
    assert Epsilon(str(epsilon)) == epsilon
    model = QuerySpec(epsilon=epsilon)
    assert QuerySpec.model_validate_json(model.model_dump_json()) == model
    assert json.loads(model.model_dump_json())["epsilon"] == str(epsilon)


@given(st.floats(min_value=5e-324, max_value=1e300, allow_nan=False, allow_infinity=False))
def test_floats_read_as_written_and_to_float_rounds_down(value: float) -> None:
    epsilon = Epsilon(value)
    assert epsilon.fraction == Fraction(repr(value))
    assert Fraction(epsilon.to_float()) <= epsilon.fraction
    # The float nearest the decimal is the input; rounding down may step one float below it.
    assert epsilon.to_float() in (value, math.nextafter(value, -math.inf))


def test_the_value_types_load_without_sqlalchemy() -> None:
    code = (
        "import sys, privstage.budget; from privstage.budget import Epsilon, PrivacyBudget; "
        "assert 'sqlalchemy' not in sys.modules, 'values pulled in sqlalchemy'; "
        "from privstage.budget import BudgetLedger; assert 'sqlalchemy' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
