"""privstage through Dagster: real runs of the asset factory on the session's Spark.

Each run uses its own persistent Dagster instance (SQLite in a temp folder) so that what Dagster
stores can be read back byte for byte. Spark runs in this process: the SparkResource returns the
session of the ``spark`` fixture (the active one).
"""

from __future__ import annotations

import base64
import os
import runpy
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from privstage_dagster import KeyProviderResource, SparkResource, build_privstage_assets

from privstage.engine import run_pipeline
from privstage.keys import LocalKeyring
from privstage.sample_data import write_clinic_visits
from privstage.spec import load_spec
from privstage.stages.pseudonymize import hmac_blocks

REPO = Path(__file__).resolve().parents[1]
CLINIC_SPEC = REPO / "pipelines" / "clinic_visits" / "pipeline.yaml"
CLINIC_DEFS = REPO / "pipelines" / "clinic_visits" / "dagster_defs.py"
RESOURCES = {"spark": SparkResource(), "privstage_keys": KeyProviderResource()}

# The tiny workspace's stage (conftest.PSEUDO_STAGE shape) with guards appended per test.
TINY_STAGE = """\
  - name: pseudo
    kind: pseudonymize
    input: {path: data/visits}
    output: {path: out/visits, mode: OUTPUT_MODE}
    sensitive_columns: [ssn, name, email]
    columns:
      - {column: patient_id, key_id: KEY_ID}
      - {column: ssn, key_id: pseudonym-key}
      - {column: name, key_id: pseudonym-key, case_fold: true, output_column: name_pseudonym}
"""
SSN_FORMAT = r"{type: expect_column_values_to_match_regex, kwargs: {column: ssn, regex: '^\d{3}-\d{2}-\d{4}$'}}"


def tiny_stage(
    *, expect_before: str = "", expect_after: str = "", mode: str = "error", key_id: str = "pseudonym-key"
) -> str:
    text = TINY_STAGE.replace("OUTPUT_MODE", mode).replace("KEY_ID", key_id)
    if expect_before:
        text += f"    expect_before:\n      - {expect_before}\n"
    if expect_after:
        text += f"    expect_after:\n      - {expect_after}\n"
    return text


def _local_instance(folder: Path) -> dg.DagsterInstance:
    """A persistent instance (SQLite storage, captured compute logs) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    # Telemetry off: tests leave nothing behind for an upload, not even hashed run ids.
    return dg.DagsterInstance.local_temp(str(folder), overrides={"telemetry": {"enabled": False}})


@pytest.fixture()
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    with _local_instance(tmp_path / "dagster-instance") as inst:
        yield inst


def _materialized(result: Any) -> dict[str, Any]:
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _rows(spark: Any, path: Path) -> list[tuple[Any, ...]]:
    # Test-only collect of a tiny or pseudonymized dataset, to compare runs exactly.
    df = spark.read.parquet(str(path))
    return sorted(tuple(r) for r in df.select(sorted(df.columns)).collect())


# --------------------------------------------------------------------------------------------- (a)
CLINIC_PARTITION = "2025-12-01"  # the monthly DP asset's partition key: December 2025
CLINIC_LEDGER_KEY = "clinic_visits/dp_visits_monthly/clinic_visits/2025/2025-12"
#: The research release's asset checks: its privacy model, then its expect_after suite.
ANONYMIZE_CHECKS = ("k_anonymity", "l_diversity", "no_plaintext_pii", "expect_after")


@pytest.mark.slow
def test_clinic_visits_materializes_through_its_definitions_like_the_engine_run_directly(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance
) -> None:
    import hashlib

    from privstage.budget import BudgetLedger

    keyring = tmp_path / "keyring.json"
    LocalKeyring.init(keyring, ("pseudonym-key", "visits-kek"), warn=False)
    monkeypatch.setenv("PRIVSTAGE_KEYRING", str(keyring))
    monkeypatch.delenv("PRIVSTAGE_LEDGER_URL", raising=False)
    via_dagster, direct = tmp_path / "via_dagster", tmp_path / "direct"
    for base in (via_dagster, direct):
        write_clinic_visits(str(base / "data" / "visits"), 400)
    monkeypatch.setenv("PRIVSTAGE_BASE_DIR", str(via_dagster))
    defs = runpy.run_path(str(CLINIC_DEFS))["defs"]

    assert SparkResource().get_session() is spark
    started = time.perf_counter()
    # The unpartitioned pseudonymized table and the monthly DP release, in one run for December 2025.
    result = dg.materialize(
        list(defs.assets), resources=defs.resources, instance=instance, partition_key=CLINIC_PARTITION
    )
    dagster_s = time.perf_counter() - started
    started = time.perf_counter()
    run_pipeline(load_spec(CLINIC_SPEC, base_dir=direct), stages=["pseudonymize_visits"], spark=spark, progress=False)
    direct_s = time.perf_counter() - started
    print(f"\nclinic_visits, 400 rows: dagster materialize {dagster_s:.1f} s, engine (pseudonyms) {direct_s:.1f} s")

    assert result.success
    checks = {(e.asset_key.path[-1], e.check_name, e.passed) for e in result.get_asset_check_evaluations()}
    assert checks == {
        (asset, name, True)
        for asset in ("pseudonymize_visits", "dp_visits_monthly")
        for name in ("builtin_before", "builtin_after", "expect_after")
    } | {
        ("pseudonymize_visits", "expect_before", True),
        ("encrypt_visits", "builtin_before", True),
        ("encrypt_visits", "builtin_after", True),
    } | {
        ("anonymize_research", name, True) for name in ANONYMIZE_CHECKS
    }
    events = {e.asset_key.path[-1]: e for e in result.get_asset_materialization_events()}
    metadata = {k: v.value for k, v in events["pseudonymize_visits"].materialization.metadata.items()}
    assert metadata["rows_in"] == metadata["rows_out"] == metadata["dagster/row_count"] == 400
    assert metadata["output"] == str(via_dagster / "output" / "visits_pseudonymized")
    assert metadata["key_ids"] == ["pseudonym-key"]
    assert metadata["run_key"] == f"dagster/{result.run_id}/pseudonymize_visits"
    assert metadata["guards_failed"] == 0 and metadata["guards_passed"] > 0
    # Same data, same key: the Dagster run and the direct engine run produce the same pseudonyms.
    ours = _rows(spark, via_dagster / "output" / "visits_pseudonymized")
    theirs = _rows(spark, direct / "output" / "visits_pseudonymized")
    assert len(ours) == 400 and ours == theirs

    # The DP asset: partition key -> the month's release, charged to the 2025 budget in the default ledger.
    assert events["dp_visits_monthly"].partition == CLINIC_PARTITION
    dp = {k: v.value for k, v in events["dp_visits_monthly"].materialization.metadata.items()}
    assert (dp["partition"], dp["privstage/ledger_key"]) == (CLINIC_PARTITION, CLINIC_LEDGER_KEY)
    assert (dp["epsilon_spent"], dp["reused_release"], dp["release_epsilon"]) == ("0.5", False, "0.5")
    assert dp["rows_out"] == 40 * 327
    published = (Path(dp["output"]) / "_privstage_release.json").read_bytes()
    assert hashlib.sha256(published).hexdigest() == dp["release_sha256"]
    with BudgetLedger(f"sqlite:///{via_dagster / '.privstage' / 'ledger.db'}") as ledger:
        (spend,) = ledger.spends()
    assert (str(spend.key), spend.state, spend.release_sha256) == (CLINIC_LEDGER_KEY, "committed", dp["release_sha256"])

    # The research release: its asset checks are the k / l / no-PII guards, computed on the staged release.
    evaluations = {
        e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key.path[-1] == "anonymize_research"
    }
    k_check = {k: v.value for k, v in evaluations["k_anonymity"].metadata.items()}
    (k_outcome,) = k_check["outcomes"]
    assert k_outcome["check"] == "expect_k_anonymity" and k_outcome["smallest_class"] >= 5
    assert k_outcome["rows_in_small_classes"] == 0
    (l_outcome,) = {k: v.value for k, v in evaluations["l_diversity"].metadata.items()}["outcomes"]
    assert l_outcome["smallest_l"] >= 2
    research = {k: v.value for k, v in events["anonymize_research"].materialization.metadata.items()}
    assert research["smallest_class"] == k_outcome["smallest_class"] and research["smallest_l"] >= 2
    assert set(research["generalization_levels"]) == {"date_of_birth", "zip_code", "sex", "visit_date"}
    release = spark.read.parquet(str(via_dagster / "output" / "research_release"))
    assert release.columns == ["patient_id", "age_band", "zip3", "sex", "visit_month", "diagnosis_code"]
    assert release.groupBy("age_band", "zip3", "sex", "visit_month").count().agg({"count": "min"}).first()[0] >= 5


# --------------------------------------------------------------------------------------------- (b)
def test_a_failing_blocking_guard_fails_the_run_records_the_check_and_commits_nothing(
    workspace: Any, instance: dg.DagsterInstance
) -> None:
    # P001 has two visits, so its (deterministic) pseudonym repeats: uniqueness must fail.
    unique_patients = "{type: expect_column_values_to_be_unique, kwargs: {column: patient_id}}"
    spec = workspace.load(tiny_stage(expect_after=unique_patients))
    assets = build_privstage_assets(spec, retry_policy=dg.RetryPolicy(max_retries=2))

    result = dg.materialize(assets, resources=RESOURCES, instance=instance, raise_on_error=False)

    assert not result.success
    assert result.retry_attempts_for_node("pseudo") == 0
    recorded = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    evaluations = {e.check_name: e for e in (r.dagster_event.event_specific_data for r in recorded)}
    assert {name: ev.passed for name, ev in evaluations.items()} == {
        "builtin_before": True,
        "builtin_after": True,
        "expect_after": False,
    }
    assert evaluations["expect_after"].severity == dg.AssetCheckSeverity.ERROR
    assert evaluations["expect_after"].metadata["outcomes"].value == [
        {"check": "expect_column_values_to_be_unique(patient_id)", "success": False, "element_count": 5,
         "unexpected_count": 2, "unexpected_percent": 40.0, "missing_count": 0, "missing_percent": 0.0}
    ]  # fmt: skip
    assert not (workspace.root / "out" / "visits").exists()
    assert result.get_asset_materialization_events() == []
    (failure,) = result.get_step_failure_events()
    user_failure = failure.step_failure_data.user_failure_data
    assert user_failure is not None and user_failure.metadata["error"].value == "GuardFailed"
    assert "expect_column_values_to_be_unique(patient_id)" in (user_failure.description or "")


# --------------------------------------------------------------------------------------------- (c)
def _error_chain(error: Any) -> list[str]:
    names = []
    while error is not None:
        names.append(error.cls_name)
        error = error.cause
    return names


@pytest.mark.parametrize(
    ("case", "retries", "error_chain"),
    [
        # SpecError is not retryable: Failure(allow_retries=False) bypasses the RetryPolicy.
        ("output exists", 0, ["Failure", "SpecError"]),
        # KeyUnavailable is retryable: it propagates unchanged and the RetryPolicy applies.
        ("key missing", 2, ["RetryRequestedFromPolicy", "KeyUnavailable"]),
    ],
)
def test_only_retryable_errors_are_retried(
    workspace: Any, instance: dg.DagsterInstance, case: str, retries: int, error_chain: list[str]
) -> None:
    if case == "output exists":
        existing = workspace.root / "out" / "visits"
        existing.mkdir(parents=True)
        (existing / "keep.txt").write_text("earlier output", encoding="utf-8")
        spec = workspace.load(tiny_stage())
    else:
        spec = workspace.load(tiny_stage(key_id="absent-key"))
    assets = build_privstage_assets(spec, retry_policy=dg.RetryPolicy(max_retries=2))

    result = dg.materialize(assets, resources=RESOURCES, instance=instance, raise_on_error=False)

    assert not result.success
    assert result.retry_attempts_for_node("pseudo") == retries
    failure = result.get_step_failure_events()[-1].step_failure_data
    assert _error_chain(failure.error) == error_chain
    if case == "output exists":
        assert failure.user_failure_data is not None
        assert failure.user_failure_data.metadata["error"].value == "SpecError"
        assert (workspace.root / "out" / "visits" / "keep.txt").read_text(encoding="utf-8") == "earlier output"


# --------------------------------------------------------------------------------------------- (d)
def _canaries(workspace: Any) -> set[str]:
    """Every raw value of the sensitive columns, and every encoding of the key and its HMAC blocks."""
    raw: set[str] = set()
    for row in workspace.read("data/visits").select("ssn", "email", "name").collect():  # 5 test rows
        for value in row:
            if value:
                for form in ("NFC", "NFD"):
                    raw.add(unicodedata.normalize(form, value.strip()))
    raw |= {ssn.replace("-", "") for ssn in list(raw) if ssn[:3].isdigit()}
    key = workspace.key()
    encodings = {
        base64.b64encode(key).decode(),
        base64.b64encode(key).decode().rstrip("="),
        base64.urlsafe_b64encode(key).decode().rstrip("="),
        key.hex(),
        key.hex().upper(),
        *(block.hex() for block in hmac_blocks(key)),
    }
    return raw | encodings


@pytest.mark.parametrize(
    "expect_before",
    [
        pytest.param(SSN_FORMAT, id="succeeds"),
        # Every SSN is unexpected: the place where a guard would echo raw values if it could.
        pytest.param(
            "{type: expect_column_values_to_be_in_set, kwargs: {column: ssn, value_set: ['000-00-0000']}}",
            id="blocked-by-a-guard-on-ssn",
        ),
    ],
)
def test_dagster_stores_no_raw_value_and_no_key(
    workspace: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str], expect_before: str
) -> None:
    canaries = _canaries(workspace)
    assert "078-05-1120" in canaries and len(canaries) > 20
    spec = workspace.load(tiny_stage(expect_before=expect_before))
    instance_dir = tmp_path / "dagster-instance"
    capfd.readouterr()

    with _local_instance(instance_dir) as instance:
        result = dg.materialize(
            build_privstage_assets(spec), resources=RESOURCES, instance=instance, raise_on_error=False
        )
        assert result.success == (expect_before == SSN_FORMAT)
        records = instance.get_records_for_run(result.run_id).records
        assert len(records) > 10
        event_log = "\n".join(dg.serialize_value(r.event_log_entry) for r in records)
    console = capfd.readouterr()
    # The whole instance folder: run and event storage (SQLite), captured compute logs.
    stored = b"".join(p.read_bytes() for p in sorted(instance_dir.rglob("*")) if p.is_file())

    # Positive control: the scan reads real storage, where a manifest value (the output path) is found.
    output_path = str(workspace.root / "out" / "visits")
    assert output_path in event_log and output_path.encode() in stored
    for canary in canaries:
        assert canary not in event_log, "event log"
        assert canary.encode() not in stored, "instance storage"
        assert canary not in console.out and canary not in console.err, "console"


# --------------------------------------------------------------------------------------------- (e)
_SPEC_ENV = "PRIVSTAGE_TEST_DAGSTER_SPEC"
PARTITION = "2026-11-01"


def reexecutable_job() -> dg.JobDefinition:
    """Module level so that Dagster can reconstruct it; runs in process on the session's Spark."""
    assets = build_privstage_assets(os.environ[_SPEC_ENV], partitions_def=dg.StaticPartitionsDefinition([PARTITION]))
    # A named job: Dagster refuses to reconstruct its implicit __ASSET_JOB (a reserved name).
    job = dg.define_asset_job("privstage_pipeline", selection=dg.AssetSelection.all())
    defs = dg.Definitions(assets=assets, jobs=[job], resources=RESOURCES, executor=dg.in_process_executor)
    return defs.resolve_job_def("privstage_pipeline")


def test_reexecuting_a_run_keeps_its_run_key_and_reproduces_the_output(
    workspace: Any, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_SPEC_ENV, str(workspace.write_spec(tiny_stage(mode="overwrite"))))
    job = dg.reconstructable(reexecutable_job)
    output = workspace.root / "out" / "visits"

    with dg.execute_job(job, instance=instance, tags={"dagster/partition": PARTITION}) as first:
        assert first.success
        first_metadata = _materialized(first)
    first_rows = _rows(workspace.spark, output)

    options = dg.ReexecutionOptions(parent_run_id=first.run_id)
    # execute_job does not copy the parent's tags (the UI does): pass the partition tag again.
    tags = first.dagster_run.tags
    with dg.execute_job(job, instance=instance, reexecution_options=options, tags=tags) as second:
        assert second.success
        second_metadata = _materialized(second)

    assert second.run_id != first.run_id and second.dagster_run.root_run_id == first.run_id
    # One logical run: the engine sees the same run key and the same partition both times.
    assert first_metadata["run_key"] == second_metadata["run_key"] == f"dagster/{first.run_id}/pseudo"
    assert first_metadata["partition"] == second_metadata["partition"] == PARTITION
    assert _rows(workspace.spark, output) == first_rows
    assert len(first_rows) == 5
