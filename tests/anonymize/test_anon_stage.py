"""The ``kind: anonymize`` stage through the engine: planning before data, guards on the staged output,
the report in the manifest and the HTML page, and errors that leave nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from privstage.anonymize import AnonymityNotAchievable
from privstage.engine import run_pipeline, validate_pipeline
from privstage.errors import GuardFailed, KeyUnavailable, SpecError
from privstage.io import STAGING_DIR
from privstage.keys import LocalKeyring
from privstage.sample_data import CLINIC_VISITS_SCHEMA, generate_clinic_visits_pandas
from privstage.spec import AnonymizeStage, parse_spec

ROWS = 300
QIS = ["age_band", "zip3", "sex", "visit_month"]
REFERENCE = "2025-01-01"


def stage_yaml(
    *, k: int = 5, l: int | None = 2, unlisted: str = "error", extra_rules: str = "", qi_max: str = "",  # noqa: E741
    output: str = "out/release", max_suppression: float = 0.02, key_id: str = "pseudonym-key",
    data: str = "data/visits", null_policy: str = "top",
) -> str:  # fmt: skip
    return f"""\
  - name: research
    kind: anonymize
    input: {{path: {data}}}
    output: {{path: {output}}}
    k: {k}
    l: {"null" if l is None else l}
    max_suppression: {max_suppression}
    null_policy: {null_policy}
    unlisted: {unlisted}
    columns:
      - {{column: patient_id, action: pseudonymize, key_id: {key_id}}}
      - {{column: diagnosis_code, action: sensitive}}
      - {{column: date_of_birth, action: quasi_identifier, output_column: age_band, min_level: 1{qi_max},
         hierarchy: {{type: age, reference_date: "{REFERENCE}", widths: [5, 10, 20]}}}}
      - {{column: zip_code, action: quasi_identifier, output_column: zip3, min_level: 1{qi_max},
         hierarchy: {{type: prefix, keep: [3, 2, 1]}}}}
      - {{column: sex, action: quasi_identifier{qi_max},
         hierarchy: {{type: categorical, values: {{F: ["*"], M: ["*"], X: ["*"]}}}}}}
      - {{column: visit_date, action: quasi_identifier, output_column: visit_month, min_level: 1{qi_max},
         hierarchy: {{type: date, units: [month, quarter, year]}}}}
      - {{column: visit_id, action: drop}}
      - {{column: name, action: drop}}
      - {{column: ssn, action: drop}}
      - {{column: clinic_id, action: drop}}
      - {{column: cost, action: drop}}
{extra_rules}"""


EMAIL_DROPPED = "      - {column: email, action: drop}\n"


class Space:
    def __init__(self, root: Path, spark) -> None:
        self.root = root
        self.spark = spark
        self.keyring = root / "keyring.json"
        LocalKeyring.init(self.keyring, ("pseudonym-key",), warn=False)
        self.visits = generate_clinic_visits_pandas(ROWS)
        spark.createDataFrame(self.visits, CLINIC_VISITS_SCHEMA).coalesce(1).write.parquet(str(root / "data/visits"))
        no_zip = self.visits.head(60).assign(zip_code=None)  # an all-null quasi-identifier column
        spark.createDataFrame(no_zip, CLINIC_VISITS_SCHEMA).coalesce(1).write.parquet(str(root / "data/no_zip"))

    def spec(self, stages: str, file: str = "pipeline.yaml"):
        text = f"name: anon\nkeys: {{provider: local, path: {self.keyring}}}\nstages:\n{stages}"
        path = self.root / file
        path.write_text(text, encoding="utf-8")
        from privstage.spec import load_spec

        return load_spec(path)

    def leftovers(self, rel: str) -> set[str]:
        base = self.root / rel
        staging = base.parent / STAGING_DIR
        return {p.name for p in staging.iterdir()} if staging.exists() else set()


@pytest.fixture(scope="module")
def space(tmp_path_factory, spark) -> Space:
    return Space(tmp_path_factory.mktemp("anon_stage"), spark)


@pytest.fixture(scope="module")
def run(space, spark):
    expectations = """\
    expect_after:
      - {type: expect_k_anonymity, kwargs: {quasi_identifiers: [age_band, zip3, sex, visit_month], k: 5}}
      - {type: expect_l_diversity, kwargs: {quasi_identifiers: [age_band, zip3], sensitive: diagnosis_code, l: 2}}
      - {type: expect_no_plaintext_pii, kwargs: {columns: [patient_id, diagnosis_code]}}
"""
    spec = space.spec(stage_yaml(extra_rules=EMAIL_DROPPED).replace("    columns:\n", expectations + "    columns:\n"))
    report = space.root / "report.json"
    manifest = run_pipeline(spec, spark=spark, report_path=report, progress=False)
    out = spark.read.parquet(str(space.root / "out/release")).toPandas()
    return manifest, report, out


# --- the spec ------------------------------------------------------------------------------------------
def test_the_stage_spec_embeds_the_anonymize_config():
    spec = parse_spec(
        "name: p\nstages:\n" + stage_yaml(extra_rules=EMAIL_DROPPED), base_dir=Path.cwd(), source="pipeline.yaml"
    )
    (stage,) = spec.stages
    assert isinstance(stage, AnonymizeStage)
    assert (stage.k, stage.l, stage.sensitive) == (5, 2, "diagnosis_code")
    assert [r.column for r in stage.quasi_identifiers] == ["date_of_birth", "zip_code", "sex", "visit_date"]
    assert stage.key_ids() == {"pseudonym-key"}
    assert "date_of_birth" in stage.input_sensitive_columns()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("    l: 2\n", "l-diversity needs a column with action: sensitive"),
        ("      - {column: zip_code, action: drop}\n", "a column has more than one rule"),
        ("    k: 0\n", "k"),
    ],
    ids=["l-without-sensitive", "two-rules", "k-zero"],
)
def test_bad_anonymize_specs_are_spec_errors_naming_the_stage_path(change, message):
    text = stage_yaml(extra_rules=EMAIL_DROPPED)
    if change.strip().startswith("l:"):
        text = text.replace("      - {column: diagnosis_code, action: sensitive}\n", "")
    elif change.strip().startswith("k:"):
        text = text.replace("    k: 5\n", change)
    else:
        text += change
    with pytest.raises(SpecError) as err:
        parse_spec("name: p\nstages:\n" + text, base_dir=Path.cwd(), source="pipeline.yaml")
    assert "stages[0]" in str(err.value) and message in str(err.value)


# --- a run -----------------------------------------------------------------------------------------------
def test_release_meets_k_and_l_by_an_independent_group_by(run):
    manifest, _, out = run
    assert manifest.status == "succeeded"
    assert list(out.columns) == ["patient_id", "age_band", "zip3", "sex", "visit_month", "diagnosis_code"]
    classes = out.groupby(QIS, dropna=False).agg(n=("patient_id", "size"), l=("diagnosis_code", "nunique"))
    assert classes["n"].min() >= 5 and classes["l"].min() >= 2
    (stage,) = manifest.stages
    anon = stage.details["anonymize"]
    assert anon["risk"]["min_class_size"] == int(classes["n"].min())
    assert anon["risk"]["classes"] == len(classes)
    assert stage.rows_out == len(out) == ROWS - anon["suppressed_rows"]
    assert anon["suppressed_rows"] <= anon["suppression_limit_rows"] == int(0.02 * ROWS)


def test_after_guards_ran_on_the_staged_output_and_passed(run):
    manifest, _, _ = run
    (stage,) = manifest.stages
    after = {
        (o.check, o.column): o for g in stage.guards if g.phase == "after" for o in g.outcomes if o.guard == "anonymize"
    }
    k_outcome = after[("expect_k_anonymity", None)]
    assert (
        k_outcome.success
        and k_outcome.details["smallest_class"] == stage.details["anonymize"]["risk"]["min_class_size"]
    )
    assert after[("expect_l_diversity", "diagnosis_code")].success
    pii_checked = {c for (check, c) in after if check == "expect_no_plaintext_pii"}
    assert pii_checked == {"patient_id", "diagnosis_code"}  # every released text column but the QI labels
    gx = [o for g in stage.guards for o in g.outcomes if o.guard == "expect_after"]
    assert [(o.check, o.success) for o in gx] == [
        ("expect_k_anonymity", True),
        ("expect_l_diversity", True),
        ("expect_no_plaintext_pii", True),
    ]
    assert gx[0].details["unexpected_count"] == 0 and gx[2].details["unexpected_count"] == 0


def test_report_holds_risk_and_levels_but_no_raw_value(run, space):
    _, report, out = run
    data = json.loads(report.read_text())
    anon = data["stages"][0]["details"]["anonymize"]
    assert set(anon["levels"]) == {"date_of_birth", "zip_code", "sex", "visit_date"}
    assert anon["quasi_identifiers"] == QIS
    page = report.with_suffix(".html").read_text()
    assert "anonymity: 5-anonymity with distinct 2-diversity" in page and "generalization levels" in page
    text = report.read_text() + page
    visits = space.visits
    for raw in [*visits["zip_code"], *visits["ssn"], *visits["patient_id"], *visits["email"].dropna()]:
        assert raw not in text
    assert not set(out["patient_id"]) & set(visits["patient_id"])  # keyed pseudonyms, not ids


# --- schema drift and keys: refused before data is read --------------------------------------------------
def test_an_unmentioned_column_is_refused_before_reading(space, spark):
    spec = space.spec(stage_yaml(output="out/drift"))  # email has no rule
    with pytest.raises(SpecError) as err:
        validate_pipeline(spec, spark=spark)
    assert "email" in str(err.value) and err.value.stage == "research"
    assert not (space.root / "out/drift").exists()


def test_an_unmentioned_column_is_dropped_when_the_spec_says_so(space, spark):
    spec = space.spec(stage_yaml(unlisted="drop", output="out/drift_drop"))
    plan = validate_pipeline(spec, spark=spark)
    (stage,) = plan.stages
    assert "email" not in stage.output_schema.fieldNames()
    assert stage.detail.dropped_unlisted == ("email",)


def test_a_missing_key_fails_at_plan_time(space, spark):
    spec = space.spec(stage_yaml(extra_rules=EMAIL_DROPPED, key_id="no-such-key", output="out/nokey"))
    with pytest.raises(KeyUnavailable) as err:
        validate_pipeline(spec, spark=spark)
    assert "no-such-key" in str(err.value)


# --- the model cannot be met: the typed error, nothing written ------------------------------------------
@pytest.mark.parametrize(
    ("k", "qi_max", "best"),
    [(ROWS + 1, "", "best k reached: 300"), (40, ", max_level: 1", "best k reached: ")],
    ids=["fewer-rows-than-k", "k-above-what-the-levels-allow"],
)
def test_unachievable_model_names_model_and_best_k_and_writes_nothing(space, spark, k, qi_max, best):
    rel = f"out/unachievable_{k}"
    spec = space.spec(stage_yaml(k=k, l=None, qi_max=qi_max, extra_rules=EMAIL_DROPPED, output=rel))
    with pytest.raises(AnonymityNotAchievable) as err:
        run_pipeline(spec, spark=spark, progress=False)
    message = str(err.value)
    assert f"{k}-anonymity cannot be met" in message and best in message
    assert err.value.best_k < k and err.value.stage == "research"
    assert not (space.root / rel).exists()
    assert not space.leftovers(rel)


def test_an_all_null_quasi_identifier_under_null_policy_error_is_refused_and_nothing_is_written(space, spark):
    rel = "out/no_zip"
    spec = space.spec(stage_yaml(data="data/no_zip", null_policy="error", extra_rules=EMAIL_DROPPED, output=rel))
    with pytest.raises(AnonymityNotAchievable) as err:
        run_pipeline(spec, spark=spark, progress=False)
    assert "zip_code" in str(err.value) and "null_policy is 'error'" in str(err.value)
    assert err.value.stage == "research"
    assert not (space.root / rel).exists() and not space.leftovers(rel)


def test_a_kept_column_holding_emails_is_blocked_by_the_no_pii_guard(space, spark):
    rel = "out/leaky"
    spec = space.spec(stage_yaml(output=rel, extra_rules="      - {column: email, action: keep}\n"))
    with pytest.raises(GuardFailed) as err:
        run_pipeline(spec, spark=spark, progress=False)
    assert not isinstance(err.value, AnonymityNotAchievable)
    failed = [o for o in err.value.report.failures]
    assert [(o.check, o.column) for o in failed] == [("expect_no_plaintext_pii", "email")]
    assert failed[0].details["matching_values"]["email"] > 0
    assert "@" not in json.dumps(err.value.report.to_dict())
    assert not (space.root / rel).exists()
    assert isinstance(space.visits, pd.DataFrame)
