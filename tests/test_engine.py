"""The engine: validation before data, guards, atomic commits, manifests and reports."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from privstage.engine import RunContext, run_pipeline, validate_pipeline
from privstage.errors import GuardFailed, KeyUnavailable, SpecError
from privstage.io import STAGING_DIR
from privstage.spec import load_spec
from testsupport import CANARY_SSN, PSEUDO_STAGE


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")} if path.exists() else set()


def test_run_writes_output_manifest_and_report(workspace, spark):
    spec = workspace.load(PSEUDO_STAGE)
    report = workspace.root / "report.json"
    manifest = run_pipeline(spec, spark=spark, report_path=report, progress=False)

    assert manifest.status == "succeeded"
    (stage,) = manifest.stages
    assert (stage.rows_in, stage.rows_out) == (5, 5)
    assert stage.key_ids == ["pseudonym-key"]
    assert stage.key_versions == {"pseudonym-key": 1}
    checks = {(o.check, o.column): o.success for g in stage.guards for o in g.outcomes}
    assert checks[("not_empty", None)] is True
    assert checks[("row_count_preserved", None)] is True
    assert checks[("no_raw_values", "ssn")] is True
    assert checks[("raw_column_absent", "name")] is True
    out = workspace.read("out/visits")
    assert "name" not in out.columns and "name_pseudonym" in out.columns
    assert out.where(out.ssn == CANARY_SSN).count() == 0

    data = json.loads(report.read_text())
    assert data["status"] == "succeeded"
    assert data["stages"][0]["rows_out"] == 5
    assert data["privstage_version"]
    assert report.with_suffix(".html").exists()
    committed = json.loads((workspace.root / "out/visits/_privstage_manifest.json").read_text())
    assert committed["name"] == "pseudo" and committed["rows_out"] == 5
    assert files_under(workspace.root / "out" / STAGING_DIR) == set()


def test_same_spec_same_pseudonyms_across_runs(workspace, spark):
    spec = workspace.load(PSEUDO_STAGE)
    run_pipeline(spec, spark=spark, progress=False)
    first = sorted(workspace.read("out/visits").collect())
    run_pipeline(spec, spark=spark, progress=False, overwrite=True)
    assert sorted(workspace.read("out/visits").collect()) == first


def test_existing_output_without_overwrite_is_refused_before_reading(workspace, spark):
    spec = workspace.load(PSEUDO_STAGE)
    run_pipeline(spec, spark=spark, progress=False)
    before = files_under(workspace.root / "out")
    with pytest.raises(SpecError, match=r"exists; set output\.mode: overwrite"):
        run_pipeline(spec, spark=spark, progress=False)
    assert files_under(workspace.root / "out") == before


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (lambda s: s.replace("column: ssn,", "column: ssm,"), SpecError, "column 'ssm' is not in the input"),
        (lambda s: s.replace("column: ssn,", "column: cost,"), SpecError, "column 'cost' has type double"),
        (
            lambda s: s.replace(
                "key_id: pseudonym-key}\n      - {column: ssn", "key_id: missing-key}\n      - {column: ssn"
            ),
            KeyUnavailable,
            "missing-key",
        ),
        (lambda s: s.replace("kind: pseudonymize", "kind: pseudonymise"), SpecError, "unknown stage kind"),
        (lambda s: s.replace("path: data/visits", "path: data/nowhere"), SpecError, "does not exist"),
        (lambda s: s.replace("    columns:", "    colums:"), SpecError, r"stages\[0\]\.colums \(line \d+\)"),
        (lambda s: s.replace("    columns:", "  columns:\n   bad"), SpecError, "malformed YAML"),
    ],
    ids=["unknown-column", "wrong-type", "missing-key", "unknown-kind", "missing-input", "unknown-key", "bad-yaml"],
)
def test_bad_input_is_a_typed_error_and_writes_nothing(workspace, spark, mutate, error, message):
    with pytest.raises(error, match=message):
        spec = workspace.load(mutate(PSEUDO_STAGE))
        run_pipeline(spec, spark=spark, progress=False)
    assert not (workspace.root / "out").exists()


def test_empty_input_is_blocked_by_the_builtin_guard(workspace, spark):
    spark.createDataFrame([], workspace.read("data/visits").schema).write.parquet(str(workspace.root / "data/empty"))
    spec = workspace.load(PSEUDO_STAGE.replace("data/visits", "data/empty"))
    with pytest.raises(GuardFailed, match="before-guards blocked the stage: builtin:not_empty") as info:
        run_pipeline(spec, spark=spark, progress=False)
    assert info.value.report is not None and info.value.report.blocked
    assert info.value.stage == "pseudo"
    assert files_under(workspace.root / "out") == set()


def test_failed_run_reports_and_keeps_manifest(workspace, spark):
    spec = workspace.load(PSEUDO_STAGE.replace("key_id: pseudonym-key}", "key_id: absent-key}", 1))
    report = workspace.root / "failed.json"
    with pytest.raises(KeyUnavailable) as info:
        run_pipeline(spec, spark=spark, progress=False, report_path=report)
    data = json.loads(report.read_text())
    assert data["status"] == "failed"
    assert data["error"]["type"] == "KeyUnavailable"
    assert info.value.manifest.status == "failed"  # type: ignore[attr-defined]


def test_validate_reads_no_data_and_plans_chained_stages(workspace, spark):
    chained = (
        PSEUDO_STAGE
        + """\
  - name: second
    kind: pseudonymize
    input: {stage: pseudo}
    output: {path: out/second}
    columns:
      - {column: clinic_id, key_id: tenant-key}
"""
    )
    spec = workspace.load(chained)
    plan = validate_pipeline(spec, spark=spark)
    assert [s.spec.name for s in plan.stages] == ["pseudo", "second"]
    assert "name_pseudonym" in plan.stages[1].input_schema.fieldNames()
    assert not (workspace.root / "out").exists()
    manifest = run_pipeline(spec, spark=spark, progress=False)
    assert [s.rows_out for s in manifest.stages] == [5, 5]
    # a later stage referencing a column only the earlier stage removes is caught before any run
    broken = load_spec(workspace.write_spec(chained.replace("column: clinic_id", "column: name"), file="b.yaml"))
    with pytest.raises(SpecError, match="column 'name' is not in the input") as info:
        validate_pipeline(broken, spark=spark, overwrite=True)
    assert info.value.stage == "second"


def test_run_context_is_recorded(workspace, spark):
    spec = workspace.load(PSEUDO_STAGE)
    ctx = RunContext(run_key="airflow/dag/run-1/task", orchestrator="airflow", partition="2025-01-01", attempt=2)
    manifest = run_pipeline(spec, spark=spark, context=ctx, progress=False).to_dict()
    assert (manifest["run_key"], manifest["orchestrator"], manifest["partition"], manifest["attempt"]) == (
        "airflow/dag/run-1/task",
        "airflow",
        "2025-01-01",
        2,
    )
    json.dumps(manifest)  # JSON-safe: what goes to XCom / Dagster metadata


def test_overwrite_keeps_previous_output_when_a_guard_blocks(workspace, spark):
    spec = workspace.load(PSEUDO_STAGE)
    run_pipeline(spec, spark=spark, progress=False)
    out = workspace.root / "out" / "visits"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    blocked = workspace.load(
        PSEUDO_STAGE.replace("output: {path: out/visits}", "output: {path: out/visits, mode: overwrite}").replace(
            "    columns:",
            "    expect_after:\n"
            "      - {type: expect_table_row_count_to_be_between, kwargs: {max_value: 2}}\n"
            "    columns:",
        ),
        file="blocked.yaml",
    )
    with pytest.raises(GuardFailed, match="after-guards blocked the stage"):
        run_pipeline(blocked, spark=spark, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert set(os.listdir(workspace.root / "out")) == {"visits"}  # no staging left behind


def test_a_retry_with_the_same_run_key_reconnects_to_the_committed_output(workspace, spark):
    spec = workspace.load(PSEUDO_STAGE)
    ctx = RunContext(run_key="airflow/dag/run-7/pseudo", orchestrator="airflow")
    first = run_pipeline(spec, spark=spark, context=ctx, progress=False)
    out = workspace.root / "out" / "visits"
    files = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    retry = run_pipeline(spec, spark=spark, context=RunContext(run_key=ctx.run_key, attempt=2), progress=False)
    (stage,) = retry.stages
    assert stage.status == "reused"
    assert (stage.rows_in, stage.rows_out) == (first.stages[0].rows_in, first.stages[0].rows_out)
    assert [g.to_dict() for g in stage.guards] == [g.to_dict() for g in first.stages[0].guards]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == files  # nothing rewritten

    # another run key still finds the output taken
    with pytest.raises(SpecError, match="exists"):
        run_pipeline(spec, spark=spark, context=RunContext(run_key="airflow/dag/run-8/pseudo"), progress=False)
