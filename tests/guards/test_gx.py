"""The Great Expectations guard: verdicts, counts, and no data values in outcomes or errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from privstage.errors import SpecError, StageExecutionError
from privstage.guards.base import Guard, GuardContext, GuardOutcome, GuardReport
from privstage.guards.gx import GXSuiteGuard, check_expectation_specs
from privstage.spec import ExpectationSpec

CANARY_SSN = "123-45-6789"
CANARY_SALARY = 987654.25
ALLOWED_SSNS = ["000-00-0001", "000-00-0002"]
SCHEMA = "id int, ssn string, status string, amount double, salary double"


def expect(type_: str, blocking: bool = True, **kwargs: object) -> ExpectationSpec:
    return ExpectationSpec(type=type_, kwargs=kwargs, blocking=blocking)


def run_guard(data, expectations, sensitive=(), cwd: Path | None = None) -> list[GuardOutcome]:
    ctx = GuardContext(stage="visits", phase="before", data=data, sensitive_columns=frozenset(sensitive))
    previous = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return GXSuiteGuard("quality", expectations).check(ctx)
    finally:
        os.chdir(previous)


@pytest.fixture(scope="module")
def clean_df(spark):
    rows = [(i, ALLOWED_SSNS[i % 2], "open" if i % 3 else "closed", float(i), 1000.0 + i) for i in range(40)]
    return spark.createDataFrame(rows, SCHEMA)


@pytest.fixture(scope="module")
def dirty_df(spark):
    """40 rows: 3 null statuses, 2 amounts out of [0, 100], one planted SSN and one planted salary."""
    rows = []
    for i in range(40):
        status = None if i in (5, 6, 7) else "open"
        amount = {10: -1.0, 11: 250.0}.get(i, float(i))
        ssn = CANARY_SSN if i == 20 else ALLOWED_SSNS[i % 2]
        salary = CANARY_SALARY if i == 30 else 1000.0 + i
        rows.append((i, ssn, status, amount, salary))
    return spark.createDataFrame(rows, SCHEMA)


# --------------------------------------------------------------------------------------------
# Verdicts and counts
# --------------------------------------------------------------------------------------------
PASSING = [
    expect("expect_column_values_to_not_be_null", column="status"),
    expect("expect_column_values_to_be_between", column="amount", min_value=0, max_value=100),
    expect("expect_column_values_to_be_in_set", column="status", value_set=["open", "closed"]),
    expect("expect_table_row_count_to_be_between", min_value=1, max_value=1000),
]


@pytest.fixture(scope="module")
def passing_run(clean_df, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gx-cwd")
    return run_guard(clean_df, PASSING, cwd=workdir), workdir


def test_passing_suite_gives_one_successful_outcome_per_expectation_in_order(passing_run):
    outcomes, _ = passing_run
    assert [o.check for o in outcomes] == [e.type for e in PASSING]
    assert all(o.success and o.blocking and o.guard == "quality" for o in outcomes)
    assert [o.column for o in outcomes] == ["status", "amount", "status", None]
    assert outcomes[0].details["element_count"] == 40
    assert outcomes[0].details["unexpected_count"] == 0
    assert outcomes[3].details["observed_value"] == 40
    # Non-sensitive kwargs are reported as given.
    assert outcomes[2].details["kwargs"] == {"column": "status", "value_set": ["open", "closed"]}


def test_guard_writes_nothing_to_the_working_directory(passing_run):
    _, workdir = passing_run
    assert list(workdir.iterdir()) == []


FAILING = [
    expect("expect_column_values_to_not_be_null", column="status"),
    expect("expect_column_values_to_be_between", column="amount", min_value=0, max_value=100),
    expect(
        "expect_column_values_to_be_between", blocking=False, column="amount", min_value=0, max_value=100, mostly=0.9
    ),
    expect("expect_column_max_to_be_between", blocking=False, column="amount", max_value=100),
]


@pytest.fixture(scope="module")
def failing_run(dirty_df):
    return run_guard(dirty_df, FAILING)


def test_nulls_fail_with_their_count(failing_run):
    nulls = failing_run[0]
    assert not nulls.success
    assert nulls.details["unexpected_count"] == 3
    assert nulls.details["element_count"] == 40
    assert nulls.details["unexpected_percent"] == pytest.approx(7.5)


def test_out_of_range_values_fail_with_their_count(failing_run):
    out_of_range = failing_run[1]
    assert not out_of_range.success and out_of_range.blocking
    assert out_of_range.details["unexpected_count"] == 2
    assert out_of_range.details["missing_count"] == 0


def test_mostly_and_non_blocking_expectations(failing_run):
    mostly, max_check = failing_run[2], failing_run[3]
    assert mostly.success and not mostly.blocking  # 2 of 40 out of range is within mostly=0.9
    assert not max_check.success and not max_check.blocking
    assert max_check.details["observed_value"] == 250.0  # amount is not sensitive
    report = GuardReport(stage="visits", phase="before", outcomes=(mostly, max_check))
    assert not report.blocked
    assert GuardReport(stage="visits", phase="before", outcomes=tuple(failing_run)).blocked


def test_outcome_details_hold_only_whitelisted_fields(failing_run):
    allowed = {
        "element_count",
        "unexpected_count",
        "unexpected_percent",
        "missing_count",
        "missing_percent",
        "observed_value",
        "kwargs",
        "kwargs_redacted",
        "error",
        "cause",
    }
    for outcome in failing_run:
        assert set(outcome.details) <= allowed, outcome.details


def test_guard_satisfies_the_guard_protocol():
    assert isinstance(GXSuiteGuard("quality", PASSING), Guard)
    assert GXSuiteGuard("quality", []).check(GuardContext(stage="s", phase="before", data=None)) == []


# --------------------------------------------------------------------------------------------
# Sensitive columns: no values anywhere
# --------------------------------------------------------------------------------------------
SENSITIVE = [
    expect("expect_column_values_to_be_in_set", column="ssn", value_set=ALLOWED_SSNS),
    expect("expect_column_values_to_match_regex", column="ssn", regex=r"^000-00-000[12]$"),
    expect("expect_column_values_to_not_be_in_set", column="ssn", value_set=[CANARY_SSN]),
    expect("expect_column_max_to_be_between", column="salary", max_value=5000),
    expect("expect_column_values_to_be_between", column="salary", min_value=0, max_value=5000),
    expect(
        "expect_column_values_to_be_in_set",
        column="status",
        value_set=["open"],
        row_condition='ssn=="x"',
        condition_parser="spark",
    ),
]


@pytest.fixture(scope="module")
def sensitive_run(dirty_df):
    return run_guard(dirty_df, SENSITIVE, sensitive={"ssn", "salary"})


def test_sensitive_violations_are_counted(sensitive_run):
    in_set, regex, not_in_set, max_salary, salary_range, _ = sensitive_run
    for outcome in (in_set, regex, not_in_set, salary_range):
        assert not outcome.success
        assert outcome.details["unexpected_count"] == 1
    assert not max_salary.success


def test_sensitive_outcomes_never_hold_values(sensitive_run):
    text = json.dumps([o.to_dict() for o in sensitive_run])
    assert CANARY_SSN not in text
    assert "987654" not in text
    for allowed in ALLOWED_SSNS:
        assert allowed not in text
    assert "000-00-000" not in text  # the regex
    assert "observed_value" not in sensitive_run[3].details


def test_sensitive_kwargs_are_redacted_by_name(sensitive_run):
    in_set, regex, _, max_salary, salary_range, conditioned = sensitive_run
    assert in_set.details["kwargs"] == {"column": "ssn"}
    assert in_set.details["kwargs_redacted"] == ["value_set"]
    assert regex.details["kwargs_redacted"] == ["regex"]
    assert max_salary.details["kwargs_redacted"] == ["max_value"]
    assert salary_range.details["kwargs_redacted"] == ["max_value", "min_value"]
    # A row condition naming a sensitive column makes the expectation sensitive.
    assert conditioned.details["kwargs_redacted"] == ["row_condition", "value_set"]


def test_gx_itself_returns_no_row_values(dirty_df):
    """The result format: GX's own full result (before privstage's whitelist) holds no row value."""
    guard = GXSuiteGuard("quality", SENSITIVE[:2])
    result = guard._run(dirty_df, guard._build_expectations())
    raw = json.dumps(result.to_json_dict(), default=str)
    assert CANARY_SSN not in raw
    assert all(not r.result.get("partial_unexpected_list") for r in result.results)
    assert {r.result["unexpected_count"] for r in result.results} == {1}


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
def test_expectation_that_raises_is_a_failed_outcome_with_the_type_name_only(dirty_df):
    outcomes = run_guard(
        dirty_df,
        [
            expect("expect_column_values_to_not_be_null", column="status"),
            expect("expect_column_values_to_be_in_set", column="no_such_column", value_set=[CANARY_SSN]),
        ],
        sensitive={"no_such_column"},
    )
    assert [o.check for o in outcomes] == ["expect_column_values_to_not_be_null", "expect_column_values_to_be_in_set"]
    assert outcomes[0].details["unexpected_count"] == 3  # the good one still ran
    failed = outcomes[1]
    assert not failed.success and failed.blocking
    assert failed.details["error"] == "MetricResolutionError"
    assert failed.details["cause"] == "InvalidMetricAccessorDomainKwargsKeyError"
    text = json.dumps(failed.to_dict())
    assert "does not exist" not in text and CANARY_SSN not in text


def test_gx_unable_to_run_raises_retryable_stage_execution_error():
    not_a_spark_frame = object()
    with pytest.raises(StageExecutionError) as info:
        run_guard(not_a_spark_frame, PASSING[:1])
    assert info.value.retryable
    assert info.value.stage == "visits"
    assert info.value.original is not None  # kept for debugging, not chained into tracebacks
    assert info.value.__cause__ is None
    assert "quality" in str(info.value)


# --------------------------------------------------------------------------------------------
# Spec checks, before any data
# --------------------------------------------------------------------------------------------
COLUMNS = ["id", "ssn", "status", "amount", "salary"]


def spec_error(expectations, columns=COLUMNS) -> str:
    with pytest.raises(SpecError) as info:
        check_expectation_specs(expectations, stage="visits", phase="expect_after", columns=columns)
    assert not info.value.retryable
    return str(info.value)


def test_valid_specs_pass():
    check_expectation_specs(PASSING + SENSITIVE, stage="visits", phase="expect_before", columns=COLUMNS)
    check_expectation_specs(PASSING, stage="visits", phase="before")  # columns unknown: not checked


def test_unknown_type_names_stage_phase_index_and_suggests():
    message = spec_error([PASSING[0], expect("expect_column_values_to_not_be_nul", column="ssn")])
    assert "visits" in message
    assert "expect_after[1]" in message
    assert "expect_column_values_to_not_be_nul" in message
    assert "did you mean 'expect_column_values_to_not_be_null'" in message
    assert "expect_after[0]" not in message


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"column": "ssn", "value_set": ["x"], "bogus": 1}, "'bogus'"),
        ({"column": "ssn", "value_set": "SECRET-123"}, "'value_set'"),
        ({"column": "ssn"}, "'value_set'"),
        ({"column": "ssn", "value_set": ["x"], "mostly": 2}, "'mostly'"),
        ({"column": "ssn", "value_set": ["x"], "result_format": "COMPLETE"}, "'result_format'"),
        ({"column": "ssn", "value_set": {"$PARAMETER": "ssns"}}, "'value_set'"),
    ],
)
def test_bad_kwargs_name_the_kwarg_not_the_value(kwargs, named):
    message = spec_error([expect("expect_column_values_to_be_in_set", **kwargs)])
    assert "expect_after[0] (expect_column_values_to_be_in_set)" in message
    assert named in message
    assert "SECRET-123" not in message and "COMPLETE" not in message


def test_unknown_column_is_named_with_a_suggestion():
    message = spec_error([expect("expect_column_pair_values_to_be_equal", column_A="ssn", column_B="amout")])
    assert "column 'amout'" in message and "did you mean 'amount'" in message
    assert "column 'ssn'" not in message


def test_expectation_without_a_spark_implementation_is_refused():
    message = spec_error([expect("expect_column_values_to_match_like_pattern", column="ssn", like_pattern="1%")])
    assert "not implemented for Spark" in message


def test_all_problems_are_reported_at_once():
    message = spec_error([expect("expect_colum_to_exist", column="ssn"), expect("expect_column_to_exist", column="x")])
    assert "expect_after[0]" in message and "expect_after[1]" in message


# --------------------------------------------------------------------------------------------
# Import boundary
# --------------------------------------------------------------------------------------------
def test_privstage_imports_without_great_expectations():
    code = (
        "import sys, privstage, privstage.spec, privstage.guards, privstage.guards.base, privstage.guards.gx\n"
        "assert 'great_expectations' not in sys.modules, 'great_expectations was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
