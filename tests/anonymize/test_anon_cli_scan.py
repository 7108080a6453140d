"""``privstage scan``: classification and confidence per column, a starting anonymize spec, never a value."""

from __future__ import annotations

import json

import pytest

from privstage.cli import main
from privstage.engine import validate_pipeline
from privstage.errors import EXIT_CODES
from privstage.keys import LocalKeyring, default_keyring_path
from privstage.sample_data import CLINIC_VISITS_SCHEMA, generate_clinic_visits_pandas
from privstage.spec import AnonymizeStage, load_spec

ROWS = 200


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("scan")
    visits = generate_clinic_visits_pandas(ROWS)
    path = root / "visits"
    spark.createDataFrame(visits, CLINIC_VISITS_SCHEMA).coalesce(1).write.parquet(str(path))
    return root, path, visits


def raw_values(visits) -> list[str]:
    return [*visits["ssn"], *visits["email"].dropna(), *visits["zip_code"], *visits["name"].dropna()]


def test_scan_classifies_columns_and_writes_a_valid_anonymize_stage_without_printing_a_value(dataset, capsys, spark):
    root, path, visits = dataset
    target = root / "pipeline.yaml"
    args = ["scan", str(path), "--json", "--write-spec", str(target), "--sensitive", "diagnosis_code", "--l", "2"]
    args += ["--identifier", "patient_id", "--reference-date", "2025-01-01"]
    assert main(args) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)
    kinds = {c["column"]: (c["kind"], c["confidence"]) for c in report["columns"]}
    assert kinds["ssn"][0] == "ssn" and kinds["ssn"][1] >= 0.9
    assert kinds["email"][0] == "email"
    assert kinds["zip_code"][0] == "zip_code"
    assert kinds["date_of_birth"][0] == "date_of_birth"
    assert kinds["name"][0] == "person_name"
    assert kinds["cost"][0] == "none"
    assert report["rows_sampled"] == ROWS
    assert "wrote a starting anonymize spec" in out.err
    text = target.read_text()
    assert text.startswith("# Starting anonymization spec")
    for raw in raw_values(visits):
        assert raw not in out.out and raw not in out.err and raw not in text

    LocalKeyring.init(default_keyring_path(root / ".privstage"), ("pseudonym-key",), warn=False)
    spec = load_spec(target)
    (stage,) = spec.stages
    assert isinstance(stage, AnonymizeStage)
    rules = {r.column: r.action for r in stage.columns}
    assert rules["ssn"] == "drop" and rules["name"] == "drop" and rules["patient_id"] == "pseudonymize"
    assert rules["date_of_birth"] == rules["zip_code"] == "quasi_identifier"
    assert (stage.k, stage.l, stage.sensitive, stage.unlisted) == (5, 2, "diagnosis_code", "error")
    (planned,) = validate_pipeline(spec, spark=spark).stages  # the rules fit the dataset's schema
    assert "ssn" not in planned.output_schema.fieldNames()
    # an existing file is not replaced without --force (refused before the dataset is read)
    assert main(args) == EXIT_CODES["SpecError"]
    assert "--force" in capsys.readouterr().err


def test_scan_of_a_missing_dataset_is_a_spec_error(tmp_path, capsys):
    assert main(["scan", str(tmp_path / "nope")]) == EXIT_CODES["SpecError"]
    assert "does not exist" in " ".join(capsys.readouterr().err.split())
