"""The research release of clinic_visits: k and l checked independently (pandas; pycanon when
PRIVSTAGE_PYCANON_PYTHON names a Python with pycanon), a linkage attack, the report, and the guards."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess

import pandas as pd
import pytest

from privstage.anonymize import (
    AnonymizeConfig,
    anonymize,
    expect_k_anonymity,
    expect_l_diversity,
    expect_no_plaintext_pii,
)
from privstage.guards.base import GuardContext
from privstage.keys import EnvKeyProvider
from privstage.sample_data import CLINIC_VISITS_SCHEMA, generate_clinic_visits_pandas

ROWS = 2000
REFERENCE = dt.date(2025, 1, 1)
QIS = ["age_band", "zip_code", "sex", "visit_date"]
KEYS = EnvKeyProvider(environ={"PRIVSTAGE_KEY_PSEUDONYM_KEY": base64.b64encode(os.urandom(32)).decode()})


def research_config(k: int, l: int | None, max_suppression: float = 0.02) -> AnonymizeConfig:  # noqa: E741
    return AnonymizeConfig.model_validate(
        {
            "k": k,
            "l": l,
            "max_suppression": max_suppression,
            "columns": [
                {"column": "visit_id", "action": "drop"},
                {"column": "patient_id", "action": "pseudonymize", "key_id": "pseudonym-key"},
                {"column": "name", "action": "drop"},
                {"column": "email", "action": "drop"},
                {"column": "ssn", "action": "drop"},
                {"column": "date_of_birth", "action": "quasi_identifier", "output_column": "age_band",
                 "hierarchy": {"type": "age", "reference_date": REFERENCE.isoformat(), "widths": [5, 10, 20]},
                 "min_level": 1},
                {"column": "zip_code", "action": "quasi_identifier", "hierarchy": {"type": "prefix", "keep": [3, 2, 1]},
                 "min_level": 2},
                {"column": "sex", "action": "quasi_identifier",
                 "hierarchy": {"type": "categorical", "values": {"F": ["*"], "M": ["*"], "X": ["*"]}}},
                {"column": "clinic_id", "action": "drop"},
                {"column": "visit_date", "action": "quasi_identifier",
                 "hierarchy": {"type": "date", "units": ["month", "quarter", "year"]}, "min_level": 1},
                {"column": "diagnosis_code", "action": "sensitive"},
                {"column": "cost", "action": "top_bottom_code", "top": 5000},
            ],
        }
    )  # fmt: skip


@pytest.fixture(scope="module")
def visits():
    return generate_clinic_visits_pandas(ROWS)


@pytest.fixture(scope="module", params=[(5, 2), (10, 3)], ids=["k5-l2", "k10-l3"])
def release(request, spark, visits):
    k, l = request.param  # noqa: E741
    df = spark.createDataFrame(visits, CLINIC_VISITS_SCHEMA)
    result = anonymize(df, research_config(k, l), spark=spark, keys=KEYS)
    data = result.data.cache()
    yield k, l, result, data, data.toPandas()
    data.unpersist()


# --- independent generalization of the input, in plain Python ---------------------------------------
def _age(dob: dt.date) -> int:
    return REFERENCE.year - dob.year - ((REFERENCE.month, REFERENCE.day) < (dob.month, dob.day))


def _age_label(dob: dt.date, level: int) -> str:
    age = _age(dob)
    if level == 0:
        return str(age)
    if level == 4 or not 0 <= age < 120:
        return "*"
    width = (5, 10, 20)[level - 1]
    lo = age // width * width
    return f"[{lo}, {min(lo + width, 120)})"


def _zip_label(z: str, level: int) -> str:
    return z if level == 0 else "*" if level == 4 else z[: (3, 2, 1)[level - 1]].ljust(5, "*")


def _date_label(d: dt.date, level: int) -> str:
    return [d.isoformat(), d.strftime("%Y-%m"), f"{d.year}-Q{(d.month - 1) // 3 + 1}", str(d.year), "*"][level]


def generalize_input(visits: pd.DataFrame, levels: dict[str, int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age_band": [_age_label(d, levels["date_of_birth"]) for d in visits["date_of_birth"]],
            "zip_code": [_zip_label(z, levels["zip_code"]) for z in visits["zip_code"]],
            "sex": visits["sex"] if levels["sex"] == 0 else "*",
            "visit_date": [_date_label(d, levels["visit_date"]) for d in visits["visit_date"]],
        }
    )


# --- the checks ------------------------------------------------------------------------------------
def test_k_and_l_hold_by_an_independent_pandas_group_by(release):
    k, l, result, _, out = release  # noqa: E741
    classes = out.groupby(QIS, dropna=False).agg(n=("cost", "size"), l=("diagnosis_code", "nunique"))
    assert classes["n"].min() >= k
    assert classes["l"].min() >= l
    risk = result.report.risk
    assert (risk.rows, risk.classes, risk.min_class_size, risk.min_l) == (
        len(out), len(classes), int(classes["n"].min()), int(classes["l"].min()),
    )  # fmt: skip
    assert risk.discernibility == int((classes["n"] ** 2).sum())
    assert sum(risk.class_size_histogram.values()) == len(classes)


def test_suppression_stays_within_the_limit_and_rows_are_removed_not_regrouped(release, visits):
    _, _, result, _, out = release
    report = result.report
    assert report.rows_in == ROWS
    assert report.rows_out == len(out) == ROWS - report.suppressed_rows
    assert report.suppressed_rows <= report.suppression_limit_rows == int(0.02 * ROWS)
    # suppressed rows are gone: no row is all-TOP unless the chosen levels made every QI TOP
    if any(level < report.top_levels[q] for q, level in report.levels.items()):
        assert not ((out[QIS] == "*").all(axis=1)).any()


def test_linkage_no_released_record_matches_fewer_than_k_input_records(release, visits):
    """An attacker who knows a patient's exact QIs generalizes them as the release did and joins."""
    k, _, result, _, out = release
    attacker_view = generalize_input(visits, result.report.levels)
    matches = attacker_view.groupby(QIS).size().rename("input_matches").reset_index()
    joined = out[QIS].merge(matches, on=QIS, how="left")
    assert joined["input_matches"].notna().all()  # every released record comes from the input's generalization
    assert joined["input_matches"].min() >= k


def test_released_values_are_labels_not_raw_values(release, visits):
    _, _, result, _, out = release
    assert set(out.columns) == {"patient_id", *QIS, "diagnosis_code", "cost"}
    assert not set(out["zip_code"]) & set(visits["zip_code"])  # never a full ZIP code
    assert all(label == "*" or label.startswith("[") for label in out["age_band"])
    assert out["cost"].max() <= 5000
    assert not set(out["patient_id"]) & set(visits["patient_id"])
    text = json.dumps(result.report.to_dict())
    for raw in list(visits["zip_code"][:200]) + list(visits["ssn"][:200]) + list(visits["patient_id"][:200]):
        assert raw not in text


def test_the_guards_pass_on_the_release_and_block_the_raw_input(release, spark, visits):
    k, l, _, data, _ = release  # noqa: E741
    ctx = GuardContext(stage="anon", phase="after", data=data)
    checks = [expect_k_anonymity(QIS, k), expect_l_diversity(QIS, "diagnosis_code", l)]
    checks.append(expect_no_plaintext_pii(["patient_id", *QIS]))
    outcomes = [o for g in checks for o in g.check(ctx)]
    assert all(o.success for o in outcomes), [o.to_dict() for o in outcomes if not o.success]
    raw = spark.createDataFrame(visits, CLINIC_VISITS_SCHEMA)
    raw_ctx = GuardContext(stage="anon", phase="after", data=raw)
    k_raw = expect_k_anonymity(["date_of_birth", "zip_code", "sex", "visit_date"], k).check(raw_ctx)[0]
    assert not k_raw.success and k_raw.details["smallest_class"] == 1
    pii = {o.column: o for o in expect_no_plaintext_pii(["ssn", "email", "cost"]).check(raw_ctx)}
    assert not pii["ssn"].success and pii["ssn"].details["matching_values"]["ssn"] == ROWS
    assert not pii["email"].success and pii["cost"].success
    assert "078-05" not in json.dumps([o.to_dict() for o in pii.values()])


def test_pycanon_agrees_when_available(release, tmp_path):
    """pycanon pins numpy/scipy/pandas versions our stack cannot take, so it runs in its own venv
    (PRIVSTAGE_PYCANON_PYTHON); the pandas group-by above is the always-on independent check."""
    k, l, _, _, out = release  # noqa: E741
    python = os.environ.get("PRIVSTAGE_PYCANON_PYTHON")
    expected = out.groupby(QIS).agg(n=("cost", "size"), l=("diagnosis_code", "nunique"))
    if not python:
        assert (int(expected["n"].min()), int(expected["l"].min())) >= (k, l)
        return
    path = tmp_path / "release.csv"
    out[[*QIS, "diagnosis_code"]].to_csv(path, index=False)
    code = (
        "import sys, json, pandas as pd; from pycanon import anonymity\n"
        "df = pd.read_csv(sys.argv[1], dtype=str).reset_index(drop=True)\n"
        f"qi = {QIS!r}\n"
        "k = anonymity.k_anonymity(df, qi)\n"
        "l = anonymity.l_diversity(df, qi, ['diagnosis_code'])\n"
        "print(json.dumps([int(k), int(l)]))"
    )
    done = subprocess.run([python, "-c", code, str(path)], capture_output=True, text=True, check=True, timeout=120)
    k_pycanon, l_pycanon = json.loads(done.stdout.strip().splitlines()[-1])
    assert (k_pycanon, l_pycanon) == (int(expected["n"].min()), int(expected["l"].min()))
    assert k_pycanon >= k and l_pycanon >= l
