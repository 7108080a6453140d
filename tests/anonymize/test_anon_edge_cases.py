"""Hand-built edge cases: nulls, a dominant value, values outside the hierarchy, unicode, too few rows,
a model that cannot be met. Each error names the model and the best k reached."""

from __future__ import annotations

import datetime as dt

import pytest

from privstage.anonymize import AnonymityNotAchievable, AnonymizeConfig, anonymize
from privstage.errors import GuardFailed

AGE = {"column": "age", "action": "quasi_identifier",
       "hierarchy": {"type": "interval", "lower": 0, "upper": 120, "widths": [10, 40]}}  # fmt: skip
COUNTRY = {"column": "country", "action": "quasi_identifier",
           "hierarchy": {"type": "categorical", "values": {"France": ["Europe"], "Spain": ["Europe"],
                                                            "Japan": ["Asia"], "China": ["Asia"]}}}  # fmt: skip
SCHEMA = "name string, age double, country string, dx string"


def cfg(k, *, l=None, null_policy="top", max_suppression=0.0, name_action="drop"):  # noqa: E741
    return AnonymizeConfig.model_validate(
        {
            "k": k, "l": l, "max_suppression": max_suppression, "null_policy": null_policy,
            "columns": [{"column": "name", "action": name_action}, AGE, COUNTRY,
                        {"column": "dx", "action": "sensitive"}],
        }
    )  # fmt: skip


def run(spark, rows, config):
    result = anonymize(spark.createDataFrame(rows, SCHEMA), config, spark=spark)
    return result, [r.asDict() for r in result.data.collect()]


def test_age_130_and_an_unseen_country_never_pass_through(spark):
    rows = [("a", 31.0, "France", "x")] * 3 + [("b", 130.0, "Atlantis", "y")] + [("c", 35.0, "Spain", "z")] * 2
    # k=2: the bottom node already holds: [30, 40)/France etc. - the outside values are TOP at level 0
    result, out = run(spark, rows, cfg(2, max_suppression=0.2))
    ages = {r["age"] for r in out}
    countries = {r["country"] for r in out}
    assert "130" not in ages and "130.0" not in ages and "Atlantis" not in countries
    assert result.report.suppressed_rows == 1  # the lone outsider is a class of one: removed, within 20%
    assert "name" not in result.data.columns


def test_all_null_quasi_identifier_is_top_or_suppressed_or_refused(spark):
    rows = [(f"n{i}", None, "France" if i % 2 else "Spain", f"d{i % 3}") for i in range(10)]
    result, out = run(spark, rows, cfg(5))
    assert {r["age"] for r in out} == {"*"}  # null is TOP at every level
    assert len(out) == 10 and result.report.risk.min_class_size >= 5
    with pytest.raises(AnonymityNotAchievable, match=r"5-anonymity cannot be met .* 10 rows already removed by null"):
        run(spark, rows, cfg(5, null_policy="suppress", max_suppression=0.5))
    with pytest.raises(AnonymityNotAchievable, match="age hold nulls and null_policy is 'error'"):
        run(spark, rows, cfg(5, null_policy="error"))


def test_one_dominant_value_and_unicode_names(spark):
    rows = [("Zoë Ångström", 41.0, "Japan", "d1")] * 20 + [("Nguyễn Văn An", 42.0, "Japan", "d2")] * 20
    rows += [("Łukasz Wójcik", 77.0, "China", "d3")]
    result, out = run(spark, rows, cfg(3, l=2, max_suppression=0.05))
    assert len(out) + result.report.suppressed_rows == 41
    assert result.report.suppressed_rows <= 2
    assert all(set(r) == {"age", "country", "dx"} for r in out)  # names dropped, whatever the script
    assert result.report.risk.min_class_size >= 3 and result.report.risk.min_l >= 2


def test_fewer_rows_than_k_is_an_error_naming_the_model_and_best_k(spark):
    rows = [("a", 30.0, "France", "x"), ("b", 31.0, "France", "y"), ("c", 32.0, "Spain", "z")]
    with pytest.raises(
        AnonymityNotAchievable, match=r"5-anonymity .* 3 rows, fewer than k=5 \(best k reached: 3\)"
    ) as err:
        run(spark, rows, cfg(5))
    assert err.value.best_k == 3
    assert isinstance(err.value, GuardFailed) and err.value.exit_code == 4


def test_a_model_that_cannot_be_met_names_the_best_k_and_l(spark):
    # every class has one diagnosis, so l=2 fails everywhere, even at the top of the lattice
    rows = [(f"n{i}", 20.0 + i, "France", "same") for i in range(12)]
    with pytest.raises(AnonymityNotAchievable) as err:
        run(spark, rows, cfg(3, l=2, max_suppression=0.1))
    message = str(err.value)
    assert "3-anonymity with distinct 2-diversity on 'dx' cannot be met" in message
    assert "best k reached: 12" in message and "smallest l there: 1" in message
    assert err.value.best_k == 12 and err.value.best_l == 1
    # k larger than achievable with the levels capped below the top
    capped = cfg(6, max_suppression=0.0).model_copy(deep=True)
    columns = [c if c.column != "age" else c.model_copy(update={"max_level": 1}) for c in capped.columns]
    columns = [c if c.column != "country" else c.model_copy(update={"max_level": 0}) for c in columns]
    capped = capped.model_copy(update={"columns": tuple(columns)})
    with pytest.raises(AnonymityNotAchievable, match=r"best k reached: [0-5] at the highest allowed levels"):
        run(spark, rows, capped)


def test_a_date_of_birth_outside_max_age_is_top(spark):
    rows = [(dt.date(1890, 1, 1), "a"), (dt.date(1990, 6, 1), "a"), (dt.date(1991, 6, 1), "a")]
    config = AnonymizeConfig.model_validate(
        {"k": 1, "columns": [{"column": "dob", "action": "quasi_identifier",
                              "hierarchy": {"type": "age", "reference_date": "2025-01-01", "max_age": 110}},
                             {"column": "g", "action": "keep"}]}
    )  # fmt: skip
    result = anonymize(spark.createDataFrame(rows, "dob date, g string"), config, spark=spark)
    assert sorted(r["dob"] for r in result.data.collect()) == ["*", "33", "34"]
