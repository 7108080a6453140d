"""privstage's own GX expectations on Spark: expect_k_anonymity, expect_l_diversity, expect_no_plaintext_pii.

They pass and fail as the definitions say, agree with the stage's built-in guards, are checked against the
schema before data is read, and their outcomes hold counts only (no value of any row).
"""

from __future__ import annotations

import json

import pytest

from privstage.anonymize import expect_k_anonymity, expect_l_diversity
from privstage.errors import SpecError
from privstage.guards.base import GuardContext
from privstage.guards.gx import GXSuiteGuard, check_expectation_specs
from privstage.spec import ExpectationSpec

CANARY_EMAIL = "zoe.canary@example.org"
CANARY_ZIP = "94107"
SCHEMA = "age_band string, zip3 string, diagnosis string, contact string"


def expect(type_: str, **kwargs: object) -> ExpectationSpec:
    return ExpectationSpec(type=type_, kwargs=kwargs)


@pytest.fixture(scope="module")
def release(spark):
    """Class (20-29, 941**): 3 rows, 2 diagnoses; class (30-39, 100**): 2 rows, 1 diagnosis and the planted
    e-mail; one row whose zip3 is a raw ZIP code (a class of 1)."""
    rows = [
        ("[20, 30)", "941**", "I10", "none"),
        ("[20, 30)", "941**", "E11.9", "none"),
        ("[20, 30)", "941**", "I10", "none"),
        ("[30, 40)", "100**", "J06.9", CANARY_EMAIL),
        ("[30, 40)", "100**", "J06.9", "none"),
        ("[30, 40)", CANARY_ZIP, "Z23", "none"),
    ]
    return spark.createDataFrame(rows, SCHEMA)


def outcomes(data, expectations, sensitive=()):
    ctx = GuardContext(stage="research", phase="after", data=data, sensitive_columns=frozenset(sensitive))
    return GXSuiteGuard("expect_after", expectations).check(ctx)


def test_pass_and_fail_on_a_spark_frame_with_counts_only(release):
    qis = ["age_band", "zip3"]
    got = outcomes(
        release,
        [
            expect("expect_k_anonymity", quasi_identifiers=["age_band"], k=3),
            expect("expect_k_anonymity", quasi_identifiers=qis, k=2),
            expect("expect_l_diversity", quasi_identifiers=["age_band"], sensitive="diagnosis", l=2),
            expect("expect_l_diversity", quasi_identifiers=qis, sensitive="diagnosis", l=2),
            expect("expect_no_plaintext_pii", columns=["diagnosis", "zip3"]),
            expect("expect_no_plaintext_pii", columns=["contact", "diagnosis"]),
        ],
        sensitive=("contact", "zip3"),
    )
    verdicts = [(o.check, o.success) for o in got]
    assert verdicts == [
        ("expect_k_anonymity", True),
        ("expect_k_anonymity", False),
        ("expect_l_diversity", True),
        ("expect_l_diversity", False),
        ("expect_no_plaintext_pii", True),
        ("expect_no_plaintext_pii", False),
    ]
    assert got[0].details["observed_value"] == 3 and got[0].details["unexpected_count"] == 0
    assert got[1].details["unexpected_count"] == 1  # the row whose zip3 is a raw ZIP forms a class of one
    assert got[3].details["unexpected_count"] == 2  # (30-39, 100**) and (30-39, raw ZIP) hold one diagnosis each
    assert got[5].details["unexpected_count"] == 1
    text = json.dumps([o.to_dict() for o in got])
    assert CANARY_EMAIL not in text and CANARY_ZIP not in text and "J06.9" not in text


def test_the_gx_expectations_agree_with_the_stage_guards(release):
    qis = ("age_band", "zip3")
    ctx = GuardContext(stage="research", phase="after", data=release)
    (k_guard,) = expect_k_anonymity(qis, 2).check(ctx)
    (l_guard,) = expect_l_diversity(qis, "diagnosis", 2).check(ctx)
    k_gx, l_gx = outcomes(
        release,
        [
            expect("expect_k_anonymity", quasi_identifiers=list(qis), k=2),
            expect("expect_l_diversity", quasi_identifiers=list(qis), sensitive="diagnosis", l=2),
        ],
    )
    assert (k_gx.success, k_gx.details["observed_value"]) == (k_guard.success, k_guard.details["smallest_class"])
    assert (l_gx.success, l_gx.details["observed_value"]) == (l_guard.success, l_guard.details["smallest_l"])


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (expect("expect_k_anonymity", quasi_identifiers=["age_band", "zip"], k=5), "column 'zip' is not in the data"),
        (expect("expect_l_diversity", quasi_identifiers=["zip3"], sensitive="dx", l=2), "column 'dx' is not in"),
        (expect("expect_no_plaintext_pii", columns=["contakt"]), "column 'contakt' is not in the data"),
        (expect("expect_k_anonymity", quasi_identifiers=["zip3"], k=0), "kwarg 'k'"),
        (expect("expect_k_anonymity", quasi_identifiers=["zip3"]), "kwarg 'k'"),
    ],
    ids=["unknown-qi", "unknown-sensitive", "unknown-pii-column", "k-zero", "k-missing"],
)
def test_bad_kwargs_are_spec_errors_before_data(spec, problem):
    with pytest.raises(SpecError) as err:
        check_expectation_specs([spec], stage="research", phase="after", columns=SCHEMA_COLUMNS)
    assert problem in str(err.value)


SCHEMA_COLUMNS = [c.split()[0] for c in SCHEMA.split(", ")]
