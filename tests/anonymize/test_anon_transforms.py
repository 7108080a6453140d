"""Hierarchy labels and column transforms, each checked against values computed by hand."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os

import pytest

from privstage.anonymize import AnonymizeConfig, anonymize
from privstage.anonymize.config import (
    AgeHierarchy,
    CategoricalHierarchy,
    DateHierarchy,
    IntervalHierarchy,
    MaskRule,
    PrefixHierarchy,
)
from privstage.anonymize.hierarchy import labels
from privstage.anonymize.transforms import mask
from privstage.errors import KeyUnavailable, SpecError
from privstage.keys import EnvKeyProvider

KEY = os.urandom(32)
KEYS = EnvKeyProvider(environ={"PRIVSTAGE_KEY_ANON_KEY": base64.b64encode(KEY).decode()})


@pytest.fixture(scope="module")
def values(spark):
    rows = [
        (33.0, dt.date(1990, 5, 1), "94107", "France"),
        (130.0, dt.date(1890, 1, 1), "9410", "Atlantis"),  # outside every hierarchy
        (None, None, None, None),
        (7.5, dt.date(2024, 12, 31), "02139", "Japan"),
    ]
    return spark.createDataFrame(rows, "age double, dob date, zip string, country string")


def test_every_level_of_every_hierarchy_and_top_for_values_outside(values):
    from pyspark.sql import functions as F

    interval = IntervalHierarchy(type="interval", lower=0, upper=120, widths=(5, 10))
    age = AgeHierarchy(type="age", reference_date=dt.date(2025, 1, 1), widths=(10, 20), max_age=110)
    date = DateHierarchy(type="date", units=("month", "quarter", "year"))
    prefix = PrefixHierarchy(type="prefix", keep=(3, 1))
    country = CategoricalHierarchy(type="categorical", values={"France": ("Europe",), "Japan": ("Asia",)})
    cols = {
        "interval": labels(interval, F.col("age")),
        "age": labels(age, F.col("dob")),
        "date": labels(date, F.col("dob")),
        "prefix": labels(prefix, F.col("zip")),
        "country": labels(country, F.col("country")),
    }
    selected = [c.alias(f"{name}{i}") for name, levels in cols.items() for i, c in enumerate(levels)]
    got = [row.asDict() for row in values.select(*selected).collect()]

    def row(i, name):
        return [got[i][f"{name}{lv}"] for lv in range(len(cols[name]))]

    assert row(0, "interval") == ["33", "[30, 35)", "[30, 40)", "*"]
    assert row(0, "age") == ["34", "[30, 40)", "[20, 40)", "*"]
    assert row(0, "date") == ["1990-05-01", "1990-05", "1990-Q2", "1990", "*"]
    assert row(0, "prefix") == ["94107", "941**", "9****", "*"]
    assert row(0, "country") == ["France", "Europe", "*"]
    assert row(3, "interval")[:2] == ["7.5", "[5, 10)"]
    assert row(3, "age") == ["0", "[0, 10)", "[0, 20)", "*"]
    # age 130, born 1890 (age 135 > max_age), a 4-digit ZIP, an unseen country: TOP at every level
    for name in ("interval", "age", "prefix", "country"):
        assert set(row(1, name)) == {"*"}, name
        assert set(row(2, name)) == {"*"}, name  # nulls too
    assert set(row(2, "date")) == {"*"}


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        ({"mode": "keep_last", "keep_last": 4}, "123-45-6789", "***-**-6789"),
        ({"mode": "keep_last", "keep_last": 4, "keep_separators": False}, "123-45-6789", "*******6789"),
        ({"mode": "keep_last", "keep_last": 2, "char": "#"}, "Zoë Ångström", "### ######öm"),
        ({"mode": "fixed"}, "4111 1111", "**** ****"),
        ({"mode": "shape"}, "Ab-12 ç", "Aa-99 a"),
        ({"mode": "keep_last", "keep_last": 0}, "ab", "**"),
    ],
)
def test_masks(spark, rule, value, expected):
    from pyspark.sql import functions as F

    df = spark.createDataFrame([(value,), (None,)], "v string")
    out = [r[0] for r in df.select(mask(F.col("v"), MaskRule(column="v", action="mask", **rule))).collect()]
    assert out == [expected, None]


def test_keyed_pseudonym_date_shift_top_coding_and_suppression(spark):
    """k=1 isolates the transforms: pseudonyms are Python's HMAC, shifts keep intervals within a subject."""
    rows = [
        ("P1", dt.date(2024, 1, 10), 50.0, "a", "x", "secret"),
        ("P1", dt.date(2024, 3, 1), 999.0, "a", "x", "secret"),
        ("P2", dt.date(2024, 1, 10), -5.0, "b", "x", "secret"),
        (None, dt.date(2024, 1, 10), 10.0, "b", "x", "secret"),
    ]
    df = spark.createDataFrame(rows, "pid string, visit date, cost double, grp string, extra string, note string")
    cfg = AnonymizeConfig.model_validate(
        {
            "k": 1,
            "unlisted": "drop",
            "columns": [
                {"column": "pid", "action": "pseudonymize", "key_id": "anon-key", "output_column": "pid_p"},
                {"column": "visit", "action": "date_shift", "subject_column": "pid", "key_id": "anon-key",
                 "max_days": 30},
                {"column": "cost", "action": "top_bottom_code", "bottom": 0, "top": 500},
                {"column": "grp", "action": "quasi_identifier", "hierarchy": {"type": "categorical",
                 "values": {"a": ["*"], "b": ["*"]}}},
                {"column": "note", "action": "suppress"},
            ],
        }
    )  # fmt: skip
    result = anonymize(df, cfg, spark=spark, keys=KEYS)
    assert result.data.columns == ["pid_p", "visit", "cost", "grp", "note"]  # 'extra' unlisted: dropped
    out = sorted(
        (r.asDict() for r in result.data.collect()), key=lambda r: (r["pid_p"] or "", r["visit"] or dt.date.min)
    )
    expected_p1 = hmac.new(KEY, b"P1", hashlib.sha256).hexdigest()
    p1 = [r for r in out if r["pid_p"] == expected_p1]
    assert len(p1) == 2
    shift = (p1[0]["visit"] - dt.date(2024, 1, 10)).days
    assert -30 <= shift <= 30
    assert (p1[1]["visit"] - p1[0]["visit"]).days == 51  # the interval within one subject is kept
    # the shift comes from an HMAC under a derived key: recompute it independently
    from privstage.keys.base import Key

    derived = Key("anon-key", 1, KEY).derive("anonymize/date-shift")
    bits = int(hmac.new(derived, b"P1", hashlib.sha256).hexdigest()[:8], 16)
    assert shift == bits % 61 - 30
    assert sorted(r["cost"] for r in out) == [0.0, 10.0, 50.0, 500.0]
    assert {r["note"] for r in out} == {None}
    no_subject = [r for r in out if r["pid_p"] is None]
    assert len(no_subject) == 1 and no_subject[0]["visit"] is None  # no subject, no shift: the date goes


def test_schema_and_key_errors_come_before_any_data_is_read(spark):
    df = spark.createDataFrame([("a", "b")], "grp string, other string")
    qi = {"column": "grp", "action": "quasi_identifier", "hierarchy": {"type": "prefix", "keep": [1], "pattern": ".+"}}
    with pytest.raises(SpecError, match="columns not named by any rule: other"):
        anonymize(df, AnonymizeConfig.model_validate({"k": 1, "columns": [qi]}), spark=spark)
    with pytest.raises(SpecError, match="column 'missing' is not in the input"):
        cfg = AnonymizeConfig.model_validate(
            {"k": 1, "unlisted": "drop", "columns": [qi, {"column": "missing", "action": "drop"}]}
        )
        anonymize(df, cfg, spark=spark)
    with pytest.raises(KeyUnavailable, match="nope"):
        cfg = AnonymizeConfig.model_validate(
            {"k": 1, "columns": [qi, {"column": "other", "action": "pseudonymize", "key_id": "nope"}]}
        )
        anonymize(df, cfg, spark=spark, keys=KEYS)
