"""The Airflow 3 front door, end to end: real ``dag.test()`` runs against the metadata DB.

``dag.test()`` runs each task in this process and this thread (``run_task_in_process``), so the
operators reuse the session ``spark`` fixture through ``get_session()``. The metadata DB is SQLite in
the temporary ``AIRFLOW_HOME`` that the root conftest sets. ``dag.test()`` only runs DAGs it finds
in the DAGs folder, so the clinic_visits DAG is symlinked there and the probe DAGs of this module are
written there.

Helpers (:func:`prepare_base_dir`, :func:`run_dag`, :func:`load_dag`) are importable by other
front-door tests that compare Airflow with the CLI and Dagster.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from testsupport import CANARY_SSN

if TYPE_CHECKING:  # pragma: no cover
    from airflow.models.dagrun import DagRun
    from airflow.sdk import DAG

REPO = Path(__file__).resolve().parents[1]
CLINIC_DIR = REPO / "pipelines" / "clinic_visits"
CLINIC_SPEC = CLINIC_DIR / "pipeline.yaml"
CLINIC_DAG_ID = "privstage_clinic_visits"
CLINIC_TASK_ID = "pseudonymize_visits"
CLINIC_DP_TASK_ID = "dp_visits_monthly"
CLINIC_OUTPUT = "output/visits_pseudonymized"
# The monthly DAG's logical date is the first day of the month it releases (the sample data ends 2025-12).
CLINIC_MONTH = datetime(2025, 12, 1, tzinfo=UTC)
CLINIC_LEDGER_KEY = "clinic_visits/dp_visits_monthly/clinic_visits/2025/2025-12"
KEY_ID = "pseudonym-key"
N_ROWS = 120

# Probe DAGs: the spec (or the operator arguments) come from run conf; retries without delay so a
# retried task runs again at once inside dag.test().
PROBE_DAGS_SOURCE = '''\
"""privstage probe DAGs for integration_tests/test_airflow.py."""
from datetime import timedelta

from airflow.sdk import DAG, Param

from privstage_airflow import PrivacyPipelineOperator, PseudonymizeOperator

RETRY_AT_ONCE = {"retries": 2, "retry_delay": timedelta(0)}

with DAG(
    "privstage_probe_pipeline",
    schedule=None,
    catchup=False,
    default_args=RETRY_AT_ONCE,
    params={"spec_path": Param("", type="string"), "base_dir": Param("", type="string")},
) as pipeline_dag:
    PrivacyPipelineOperator(
        task_id="run", spec_path="{{ params.spec_path }}", base_dir="{{ params.base_dir }}"
    )

with DAG(
    "privstage_probe_pseudonymize",
    schedule=None,
    catchup=False,
    default_args=RETRY_AT_ONCE,
    params={"base_dir": Param("", type="string"), "key_id": Param("pseudonym-key", type="string")},
) as pseudonymize_dag:
    PseudonymizeOperator(
        task_id="pseudonymize",
        input_path="data/visits",
        output_path="output/pseudonymized",
        columns=["patient_id", "ssn", {"column": "email", "case_fold": True}],
        key_id="{{ params.key_id }}",
        base_dir="{{ params.base_dir }}",
        sensitive_columns=["name", "date_of_birth", "zip_code"],
        expect_after=[
            {
                "type": "expect_column_values_to_match_regex",
                "kwargs": {"column": "ssn", "regex": "^[0-9a-f]{64}$"},
            }
        ],
    )
'''


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def prepare_base_dir(
    base: Path, spark: Any, *, key_b64: str | None = None, keyring: bool = True, negative_cost: bool = False
) -> Path:
    """A base folder for clinic_visits: ``data/visits`` (canary SSN planted) and the dev keyring.

    Args:
        base: the folder to fill (created).
        spark: the session that writes the dataset.
        key_b64: the pseudonym key (standard base64); default a fresh random key.
        keyring: False leaves the keyring out (runs then fail with KeyUnavailable).
        negative_cost: plant a negative cost, which the spec's ``expect_before`` guard rejects.
    """
    from privstage.keys import LocalKeyring
    from privstage.sample_data import CLINIC_VISITS_SCHEMA, generate_clinic_visits_pandas

    visits = generate_clinic_visits_pandas(N_ROWS, seed=7)
    first_patient = visits["patient_id"] == visits["patient_id"].iloc[0]
    visits.loc[first_patient, "ssn"] = CANARY_SSN
    if negative_cost:
        visits.loc[0, "cost"] = -1.0
    base.mkdir(parents=True, exist_ok=True)
    spark.createDataFrame(visits, schema=CLINIC_VISITS_SCHEMA).coalesce(1).write.parquet(str(base / "data/visits"))
    if keyring:
        ring = LocalKeyring.init(base / ".privstage/dev-keyring.json", key_ids=(), warn=False)
        ring.import_key(KEY_ID, key_b64 or base64.b64encode(secrets.token_bytes(32)).decode())
        ring.create("visits-kek")  # the KEK of the pipeline's encrypt_visits stage
    return base


def load_dag(path: Path, dag_id: str) -> DAG:
    """Import a DAG file (as the DAG processor would) and return the DAG named ``dag_id``."""
    from airflow.sdk import DAG

    module_name = f"privstage_test_dags_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    (dag,) = [v for v in vars(module).values() if isinstance(v, DAG) and v.dag_id == dag_id]
    return dag


def run_dag(
    dag: DAG, *, logical_date: datetime | None = None, mark_success_pattern: str | None = None, **conf: Any
) -> tuple[DagRun, float]:
    """One ``dag.test()`` run with ``conf`` as params; returns the run and its wall time in seconds.

    ``logical_date`` defaults to now, as ``dag.test()`` does; tasks matching ``mark_success_pattern`` are
    marked successful without running (Airflow's own option, for tests about the other tasks).
    """
    started = time.perf_counter()
    options: dict[str, Any] = {"run_conf": conf, "mark_success_pattern": mark_success_pattern}
    if logical_date is not None:
        options["logical_date"] = logical_date
    dag_run = dag.test(**options)
    return dag_run, time.perf_counter() - started


def query(sql: str, **params: Any) -> list[dict[str, Any]]:
    """Rows of a query on the Airflow metadata DB."""
    from airflow import settings
    from sqlalchemy import text

    with settings.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(text(sql), params)]


def task_attempts(dag_run: DagRun, task_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The task instance row and its earlier attempts (task_instance_history), oldest first."""
    keys = {"d": dag_run.dag_id, "r": dag_run.run_id, "t": task_id}
    (ti,) = query(
        "SELECT state, try_number, max_tries FROM task_instance WHERE dag_id=:d AND run_id=:r AND task_id=:t",
        **keys,
    )
    history = query(
        "SELECT state, try_number FROM task_instance_history "
        "WHERE dag_id=:d AND run_id=:r AND task_id=:t ORDER BY try_number",
        **keys,
    )
    return ti, history


def xcom_manifest(dag_run: DagRun, task_id: str) -> tuple[str, dict[str, Any]]:
    """The raw ``return_value`` XCom column of a task and the manifest it decodes to."""
    (row,) = query(
        "SELECT value FROM xcom WHERE dag_id=:d AND run_id=:r AND task_id=:t AND key='return_value'",
        d=dag_run.dag_id,
        r=dag_run.run_id,
        t=task_id,
    )
    # SQLite hands back the JSON text; PostgreSQL's JSON column a decoded value.
    raw = row["value"] if isinstance(row["value"], str) else json.dumps(row["value"])
    return raw, json.loads(raw)


def sorted_rows(spark: Any, path: Path, columns: list[str] | None = None) -> list[tuple[Any, ...]]:
    frame = spark.read.parquet(str(path))
    if columns:
        frame = frame.select("visit_id", *columns)
    return sorted(tuple(r) for r in frame.collect())


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def airflow_dags(test_root: Path) -> dict[str, DAG]:
    """Metadata DB created once; DAG files in the DAGs folder; the DAG objects by id."""
    from airflow.configuration import conf
    from airflow.utils.db import initdb

    dags_folder = Path(conf.get("core", "dags_folder"))
    assert dags_folder.is_relative_to(test_root), "conftest must point Airflow at the test root"
    initdb()
    clinic = dags_folder / "privstage_clinic_visits.py"
    if not clinic.exists():
        clinic.symlink_to(CLINIC_DIR / "airflow_dag.py")
    probes = dags_folder / "privstage_probe_dags.py"
    probes.write_text(PROBE_DAGS_SOURCE, encoding="utf-8")
    return {
        CLINIC_DAG_ID: load_dag(clinic, CLINIC_DAG_ID),
        "privstage_probe_pipeline": load_dag(probes, "privstage_probe_pipeline"),
        "privstage_probe_pseudonymize": load_dag(probes, "privstage_probe_pseudonymize"),
    }


@pytest.fixture(autouse=True)
def _clean_privstage_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's keyring or base folder must not leak into these runs.
    for name in ("PRIVSTAGE_KEYRING", "PRIVSTAGE_BASE_DIR", "SPARK_REMOTE", "AIRFLOW_CONN_PRIVSTAGE_DEFAULT"):
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_clinic_visits_dag_writes_the_pseudonyms_the_engine_writes_then_the_months_dp_release(
    airflow_dags: dict[str, DAG], spark: Any, tmp_path: Path, record_property: Any
) -> None:
    from privstage.budget import BudgetLedger
    from privstage.engine import run_pipeline
    from privstage.spec import load_spec

    key = base64.b64encode(secrets.token_bytes(32)).decode()
    via_airflow = prepare_base_dir(tmp_path / "airflow", spark, key_b64=key)
    direct = prepare_base_dir(tmp_path / "direct", spark, key_b64=key)

    dag_run, seconds = run_dag(airflow_dags[CLINIC_DAG_ID], logical_date=CLINIC_MONTH, base_dir=str(via_airflow))
    run_pipeline(load_spec(CLINIC_SPEC, base_dir=direct), stages=[CLINIC_TASK_ID], spark=spark, progress=False)

    assert dag_run.state == "success"
    _, manifest = xcom_manifest(dag_run, CLINIC_TASK_ID)
    record_property("dag_test_seconds", round(seconds, 2))
    record_property("pipeline_seconds", manifest["duration_s"])
    assert manifest["status"] == "succeeded"
    assert manifest["orchestrator"] == "airflow"
    assert manifest["run_key"] == f"airflow/{CLINIC_DAG_ID}/{dag_run.run_id}/{CLINIC_TASK_ID}"
    assert manifest["partition"] == dag_run.logical_date.isoformat()
    assert manifest["attempt"] == 1
    (stage,) = manifest["stages"]
    assert (stage["rows_in"], stage["rows_out"]) == (N_ROWS, N_ROWS)
    assert stage["key_ids"] == [KEY_ID]
    assert stage["output"] == str(via_airflow / CLINIC_OUTPUT)

    airflow_rows = sorted_rows(spark, via_airflow / CLINIC_OUTPUT)
    assert airflow_rows == sorted_rows(spark, direct / CLINIC_OUTPUT)
    # Not vacuous: the identifiers really were replaced.
    raw = {r.patient_id for r in spark.read.parquet(str(via_airflow / "data/visits")).collect()}
    out = spark.read.parquet(str(via_airflow / CLINIC_OUTPUT))
    assert not raw & {r.patient_id for r in out.collect()}
    assert out.where(out.ssn == CANARY_SSN).count() == 0

    # pseudonymize >> DP release: the logical date 2025-12-01 is the month the release aggregates.
    _, dp_manifest = xcom_manifest(dag_run, CLINIC_DP_TASK_ID)
    release = dp_manifest["dp_release"]
    assert dp_manifest["partition"] == CLINIC_MONTH.isoformat()
    assert (release["ledger_key"], release["epsilon_spent"], release["reused"]) == (CLINIC_LEDGER_KEY, "0.5", False)
    (dp_stage,) = dp_manifest["stages"]
    assert dp_stage["rows_out"] == 40 * 327, "every public (diagnosis, ZIP3) group of the month is released"
    published = (Path(release["output"]) / "_privstage_release.json").read_bytes()
    assert hashlib.sha256(published).hexdigest() == release["release_sha256"]
    # No ledger configured: the engine's default, the SQLite file under the base folder's state directory.
    with BudgetLedger(f"sqlite:///{via_airflow / '.privstage' / 'ledger.db'}") as ledger:
        (spend,) = ledger.spends()
    assert (str(spend.key), spend.state, spend.release_sha256) == (
        CLINIC_LEDGER_KEY,
        "committed",
        release["release_sha256"],
    )

    # pseudonymize >> research release: the XCom says what the release cost, without a value.
    _, research_manifest = xcom_manifest(dag_run, "anonymize_research")
    summary = research_manifest["anonymization"]
    assert summary["model"] == "5-anonymity with distinct 2-diversity on 'diagnosis_code'"
    assert summary["smallest_class"] >= 5 and summary["smallest_l"] >= 2
    assert summary["rows_in"] == N_ROWS and summary["rows_out"] == N_ROWS - summary["suppressed_rows"]
    (research_stage,) = research_manifest["stages"]
    checks = {o["check"]: o["success"] for g in research_stage["guards"] for o in g["outcomes"]}
    assert checks["expect_k_anonymity"] and checks["expect_l_diversity"] and checks["expect_no_plaintext_pii"]
    released = spark.read.parquet(summary["output"])
    assert released.count() == summary["rows_out"]
    assert released.groupBy("age_band", "zip3", "sex", "visit_month").count().agg({"count": "min"}).first()[0] >= 5
    assert CANARY_SSN not in json.dumps(research_manifest)


def test_pseudonymize_operator_matches_the_spec_driven_pipeline(
    airflow_dags: dict[str, DAG], spark: Any, tmp_path: Path
) -> None:
    from privstage.engine import run_pipeline
    from privstage.spec import load_spec

    key = base64.b64encode(secrets.token_bytes(32)).decode()
    base = prepare_base_dir(tmp_path / "op", spark, key_b64=key)
    direct = prepare_base_dir(tmp_path / "direct", spark, key_b64=key)

    dag_run, _ = run_dag(airflow_dags["privstage_probe_pseudonymize"], base_dir=str(base))
    run_pipeline(load_spec(CLINIC_SPEC, base_dir=direct), stages=[CLINIC_TASK_ID], spark=spark, progress=False)

    assert dag_run.state == "success"
    _, manifest = xcom_manifest(dag_run, "pseudonymize")
    assert manifest["stages"][0]["kind"] == "pseudonymize"
    columns = ["patient_id", "ssn", "email"]
    assert sorted_rows(spark, base / "output/pseudonymized", columns) == sorted_rows(
        spark, direct / CLINIC_OUTPUT, columns
    )


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("spec file with an unknown key", "SpecError"),
        ("blocking guard fails on the input", "GuardFailed"),
        ("PseudonymizeOperator given a key instead of a key id", "SpecError"),
    ],
)
def test_non_retryable_errors_fail_the_task_without_retries(
    airflow_dags: dict[str, DAG],
    spark: Any,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    case: str,
    error: str,
) -> None:
    if case == "spec file with an unknown key":
        spec = tmp_path / "pipeline.yaml"
        spec.write_text(
            CLINIC_SPEC.read_text(encoding="utf-8").replace("kind: pseudonymize", "kind: pseudonymize\n    colums: []")
        )
        dag, task_id, conf = airflow_dags["privstage_probe_pipeline"], "run", {"spec_path": str(spec)}
    elif case == "blocking guard fails on the input":
        base = prepare_base_dir(tmp_path / "base", spark, negative_cost=True)
        dag, task_id = airflow_dags["privstage_probe_pipeline"], "run"
        conf = {"spec_path": str(CLINIC_SPEC), "base_dir": str(base)}
    else:
        base = prepare_base_dir(tmp_path / "base", spark)
        key_b64 = base64.b64encode(secrets.token_bytes(32)).decode()
        dag, task_id = airflow_dags["privstage_probe_pseudonymize"], "pseudonymize"
        conf = {"base_dir": str(base), "key_id": key_b64.rstrip("=")}

    dag_run, _ = run_dag(dag, **conf)

    assert dag_run.state == "failed"
    ti, history = task_attempts(dag_run, task_id)
    assert ti["max_tries"] == 2, "the task had retries left"
    assert (ti["state"], ti["try_number"]) == ("failed", 1)
    assert history == []
    logs = "".join(capfd.readouterr())
    assert "AirflowFailException" in logs
    assert f"privstage.errors.{error}" in logs
    assert "direct cause of the following exception" in logs  # raised `from` the privstage error
    if case.startswith("PseudonymizeOperator"):
        assert key_b64.rstrip("=") not in logs


def test_retryable_errors_are_retried_under_one_run_key(
    airflow_dags: dict[str, DAG], spark: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    base = prepare_base_dir(tmp_path / "base", spark, keyring=False)  # KeyUnavailable: retryable

    dag_run, _ = run_dag(airflow_dags["privstage_probe_pipeline"], spec_path=str(CLINIC_SPEC), base_dir=str(base))

    assert dag_run.state == "failed"
    ti, history = task_attempts(dag_run, "run")
    assert (ti["state"], ti["try_number"]) == ("failed", 3)
    assert [h["try_number"] for h in history] == [1, 2]
    logs = "".join(capfd.readouterr())
    assert logs.count("privstage.errors.KeyUnavailable") >= 3
    assert "AirflowFailException" not in logs
    run_key = f"airflow/privstage_probe_pipeline/{dag_run.run_id}/run"
    for attempt in (1, 2, 3):
        assert (
            f"privstage pipeline clinic_visits failed (run key {run_key}, "
            f"partition {dag_run.logical_date.isoformat()}, attempt {attempt}," in logs
        )


@pytest.mark.slow
def test_no_key_or_raw_ssn_reaches_xcom_metadata_db_or_logs(
    airflow_dags: dict[str, DAG],
    spark: Any,
    tmp_path: Path,
    test_root: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from airflow.configuration import conf

    key = secrets.token_bytes(32)
    canaries = {
        "raw SSN": CANARY_SSN,
        "key base64": base64.b64encode(key).decode().rstrip("="),
        "key base64url": base64.urlsafe_b64encode(key).decode().rstrip("="),
        "key hex": key.hex(),
        "key HEX": key.hex().upper(),
    }
    base = prepare_base_dir(tmp_path / "base", spark, key_b64=base64.b64encode(key).decode())

    dag_run, _ = run_dag(airflow_dags[CLINIC_DAG_ID], logical_date=CLINIC_MONTH, base_dir=str(base))

    assert dag_run.state == "success"
    raw_xcom, manifest = xcom_manifest(dag_run, CLINIC_TASK_ID)
    raw_dp_xcom, dp_manifest = xcom_manifest(dag_run, CLINIC_DP_TASK_ID)
    raw_xcom += raw_dp_xcom
    logs = "".join(capfd.readouterr()) + caplog.text
    log_dir = Path(conf.get("logging", "base_log_folder"))
    if log_dir.exists():
        logs += "".join(p.read_text(errors="replace") for p in log_dir.rglob("*") if p.is_file())
    db_path = Path(conf.get("database", "sql_alchemy_conn").removeprefix("sqlite:///"))
    assert db_path.is_relative_to(test_root)
    db_bytes = b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))
    # The captures hold the task's own log lines, so their absence below means something.
    assert f"privstage pipeline clinic_visits succeeded (run key {manifest['run_key']}" in logs
    assert f"stage pseudonymize_visits (pseudonymize) succeeded: rows {N_ROWS} -> {N_ROWS}" in logs
    assert f"DP release {CLINIC_LEDGER_KEY}, epsilon spent by this run 0.5" in logs
    assert dp_manifest["dp_release"]["ledger_key"] == CLINIC_LEDGER_KEY

    for name, canary in canaries.items():
        assert canary not in raw_xcom, f"{name} in the XCom"
        assert canary not in logs, f"{name} in the task logs"
        assert canary.encode() not in db_bytes, f"{name} in the metadata DB"
