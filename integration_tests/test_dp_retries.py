"""DP releases through the real orchestrators: one spend, one release, identical bytes.

Airflow runs are real ``dag.test()`` runs (tasks in this process, retries through Airflow's own retry
path); Dagster runs are real ``execute_job`` / ``materialize`` runs on a persistent instance. Every
ledger test runs on both backends (the root conftest's ``ledger_url``: SQLite in ``tmp_path``,
PostgreSQL in a fresh schema). The ledger is read back with plain SQL, independently of privstage.

The spec is a small monthly release (visit counts and mean cost per sex, three public groups) over the
raw sample visits, so a release costs one short Spark job; the clinic_visits pipeline itself runs in
test_airflow.py, test_dagster.py and test_front_doors_agree.py.

Faults are real filesystem errors, cleared by the task's ``on_retry_callback`` (which first records the
ledger as the failed attempt left it), as an operator fixing a volume would:

* after reserving: the output's staging area is a symlink into procfs, where nothing can be created
  (root included), so Spark's staging write fails after the budget was reserved and the noise drawn;
* after publishing: the run report's folder is a regular file, so the task fails after the ledger and
  output commits, before Airflow records success.

A reservation left by a worker that died between reserve and commit is the row the ledger API writes for
such an attempt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from privstage_dagster import BudgetLedgerResource, KeyProviderResource, SparkResource, build_privstage_assets
from sqlalchemy.engine import make_url
from test_airflow import (  # noqa: F401  (airflow_dags is a fixture)
    airflow_dags,
    load_dag,
    prepare_base_dir,
    task_attempts,
    xcom_manifest,
)

from privstage.budget import BudgetLedger, LedgerKey, PrivacyBudget
from privstage.stages.dp_aggregate import RELEASE_NAME
from testsupport import CANARY_SSN

pytestmark = pytest.mark.slow

DP_SPEC = """\
version: 1
name: clinic_dp
keys: {provider: local}
stages:
  - name: dp_monthly
    kind: dp_aggregate
    description: Monthly visits and mean cost per sex (small, for the retry tests).
    input: {path: data/visits}
    output: {path: "output/dp_monthly/{partition}"}
    sensitive_columns: [name, email, ssn, date_of_birth, zip_code]
    privacy_unit: patient_id
    partition: {column: visit_date, granularity: month}
    group_by: [sex]
    groups: {public: {sex: [F, M, X]}}
    max_groups_per_unit: 1
    max_rows_per_group: 2
    queries:
      - {name: visits, type: count, epsilon: 0.3}
      - {name: mean_cost, type: mean, column: cost, lower: 0, upper: 10000, epsilon: 0.2}
    budget:
      dataset: clinic_visits
      period: "{year}"
      total: {epsilon: 1, delta: 1e-6}
"""
STAGE = "dp_monthly"
DEC_1 = datetime(2025, 12, 1, tzinfo=UTC)
KEY = LedgerKey("clinic_dp", STAGE, "clinic_visits", "2025", "2025-12")
RELEASE_BUDGET = PrivacyBudget("0.5")
DECLARED = PrivacyBudget(1, "1e-6")

PROBE_DAG_ID = "privstage_probe_dp"
PROBE_DAG_SOURCE = '''\
"""privstage DP probe DAG for integration_tests/test_dp_retries.py."""
import json
import os
from datetime import timedelta
from pathlib import Path

from airflow.sdk import DAG, Param

from privstage_airflow import DPAggregateOperator


def between_attempts(context):
    """on_retry_callback: record the ledger as the failed attempt left it, then clear the injected fault."""
    from privstage.budget import BudgetLedger

    base = Path(context["params"]["base_dir"])
    with BudgetLedger(os.environ["PRIVSTAGE_TEST_LEDGER_URL"]) as ledger:
        spends = [spend.to_dict() for spend in ledger.spends()]
    (base / "ledger_between_attempts.json").write_text(json.dumps(spends))
    fault = base / context["params"]["fault"]
    if context["params"]["fault"] and (fault.is_symlink() or fault.is_file()):
        fault.unlink()


with DAG(
    "privstage_probe_dp",
    schedule=None,
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(0)},
    params={
        "spec_path": Param("", type="string"),
        "base_dir": Param("", type="string"),
        "partition": Param("", type="string"),
        "fault": Param("", type="string"),
        "report_path": Param("", type="string"),
    },
) as dp_dag:
    DPAggregateOperator(
        task_id="release",
        spec_path="{{ params.spec_path }}",
        stage="dp_monthly",
        base_dir="{{ params.base_dir }}",
        partition="{{ params.partition }}",
        report_path="{{ params.report_path }}",
        ledger_conn_id="privstage_test_ledger",
        on_retry_callback=between_attempts,
    )
'''


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def airflow_connection(url: str) -> str:
    """The ledger URL as an Airflow connection (JSON, as ``AIRFLOW_CONN_<ID>`` takes it)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return json.dumps({"conn_type": "sqlite", "host": parsed.database})
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": parsed.host,
            "port": parsed.port,
            "login": parsed.username,
            "password": parsed.password,
            "schema": parsed.database,
            "extra": dict(parsed.query),
        }
    )


def ledger_rows(url: str) -> list[dict[str, Any]]:
    """Every spend row, read with plain SQL (not through privstage)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT ledger_key, state, attempt_id, epsilon, delta, release, release_sha256 "
                    "FROM privstage_spends ORDER BY ledger_key"
                )
            )
            return [{**row._mapping, "release": None if row.release is None else bytes(row.release)} for row in rows]
    finally:
        engine.dispose()


def budget_status(url: str) -> tuple[PrivacyBudget, PrivacyBudget]:
    """(committed, reserved) of the 2025 clinic_visits budget."""
    with BudgetLedger(url) as ledger:
        (status,) = ledger.budgets("clinic_visits", "2025")
    return status.committed, status.reserved


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def committed_elsewhere(url: str, *partitions: str) -> None:
    """Months published by earlier runs: each spent ε = 0.5 of the year's 1."""
    with BudgetLedger(url) as ledger:
        ledger.declare("clinic_visits", "2025", DECLARED)
        for partition in partitions:
            key = LedgerKey("clinic_dp", STAGE, "clinic_visits", "2025", partition)
            ledger.commit(ledger.reserve(key, RELEASE_BUDGET), b'{"earlier": true}')


def release_rows(spark: Any, output: Path) -> list[tuple[Any, ...]]:
    return sorted(tuple(r) for r in spark.read.parquet(str(output)).collect())


def decoded(release: bytes) -> list[tuple[Any, ...]]:
    return sorted(tuple(row) for row in json.loads(release)["rows"])


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _clean_privstage_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "PRIVSTAGE_KEYRING",
        "PRIVSTAGE_BASE_DIR",
        "PRIVSTAGE_LEDGER_URL",
        "PRIVSTAGE_LEDGER_URL_FILE",
        "SPARK_REMOTE",
        "AIRFLOW_CONN_PRIVSTAGE_DEFAULT",
        "AIRFLOW_CONN_PRIVSTAGE_LEDGER_DEFAULT",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def dp_dag(airflow_dags: dict[str, Any]) -> Any:  # noqa: F811
    """The probe DAG, written to the DAGs folder (the metadata DB exists: airflow_dags created it)."""
    from airflow.configuration import conf

    path = Path(conf.get("core", "dags_folder")) / "privstage_dp_probe_dags.py"
    path.write_text(PROBE_DAG_SOURCE, encoding="utf-8")
    return load_dag(path, PROBE_DAG_ID)


@pytest.fixture()
def base(tmp_path: Path, spark: Any) -> Path:
    """Sample visits (canary SSN planted; 10 visits in December 2025) and the spec."""
    folder = prepare_base_dir(tmp_path / "base", spark)
    (folder / "pipeline.yaml").write_text(DP_SPEC, encoding="utf-8")
    return folder


@pytest.fixture()
def ledger_env(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test ledger as the Airflow connection ``privstage_test_ledger`` and as ``$PRIVSTAGE_TEST_LEDGER_URL``."""
    monkeypatch.setenv("AIRFLOW_CONN_PRIVSTAGE_TEST_LEDGER", airflow_connection(ledger_url))
    monkeypatch.setenv("PRIVSTAGE_TEST_LEDGER_URL", ledger_url)
    return ledger_url


def conf(base: Path, *, partition: str = "", fault: str = "", report_path: str = "") -> dict[str, str]:
    return {
        "spec_path": str(base / "pipeline.yaml"),
        "base_dir": str(base),
        "partition": partition,
        "fault": fault,
        "report_path": report_path,
    }


# --------------------------------------------------------------------------------------------- (a)
OUTPUT = "output/dp_monthly/2025-12"


def test_an_airflow_task_failing_after_reserving_is_retried_and_spends_once(
    dp_dag: Any, base: Path, ledger_env: str, spark: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    fault = "output/dp_monthly/.privstage-staging"
    (base / fault).parent.mkdir(parents=True)
    (base / fault).symlink_to("/proc/self")  # nothing can be created there: the staging write fails

    dag_run = dp_dag.test(logical_date=DEC_1, run_conf=conf(base, partition="2025-12", fault=fault))

    assert dag_run.state == "success"
    ti, history = task_attempts(dag_run, "release")
    assert (ti["state"], ti["try_number"]) == ("success", 2)
    assert [h["try_number"] for h in history] == [1]
    logs = "".join(capfd.readouterr())
    assert "privstage.errors.StageExecutionError" in logs  # attempt 1: retryable, so Airflow retried
    assert "AirflowFailException" not in logs
    # Attempt 1 had reserved ε = 0.5 (and drawn its noise) before the write failed; it released the
    # reservation and published nothing.
    (between,) = json.loads((base / "ledger_between_attempts.json").read_text())
    assert (between["ledger_key"], between["state"], between["epsilon"]) == (str(KEY), "released", "0.5")
    assert between["release_sha256"] is None
    # Attempt 2 reserved again and committed: one spend.
    (row,) = ledger_rows(ledger_env)
    assert row["state"] == "committed" and row["attempt_id"] != between["attempt_id"]
    assert budget_status(ledger_env) == (RELEASE_BUDGET, PrivacyBudget.zero())
    published = (base / OUTPUT / RELEASE_NAME).read_bytes()
    assert published == row["release"] and sha256(published) == row["release_sha256"]
    assert release_rows(spark, base / OUTPUT) == decoded(published)
    _, xcom = xcom_manifest(dag_run, "release")
    assert xcom["attempt"] == 2
    assert xcom["dp_release"] == {
        "ledger_key": str(KEY),
        "dataset": "clinic_visits",
        "period": "2025",
        "partition": "2025-12",
        "budget": {"epsilon": "0.5", "delta": "0"},
        "epsilon_spent": "0.5",
        "delta_spent": "0",
        "release_sha256": row["release_sha256"],
        "reused": False,
        "output": str(base / OUTPUT),
    }


def test_an_airflow_task_failing_after_publishing_is_retried_and_returns_the_committed_release(
    dp_dag: Any, base: Path, ledger_env: str, capfd: pytest.CaptureFixture[str]
) -> None:
    (base / "reports").write_text("a file where the report folder should be", encoding="utf-8")
    run_conf = conf(base, partition="2025-12", fault="reports", report_path=str(base / "reports" / "dp.json"))

    dag_run = dp_dag.test(logical_date=DEC_1, run_conf=run_conf)

    assert dag_run.state == "success"
    ti, history = task_attempts(dag_run, "release")
    assert (ti["try_number"], [h["try_number"] for h in history]) == (2, [1])
    assert "AirflowFailException" not in "".join(capfd.readouterr())
    # Attempt 1 had committed its spend and its release before it failed.
    (between,) = json.loads((base / "ledger_between_attempts.json").read_text())
    assert (between["state"], between["epsilon"]) == ("committed", "0.5")
    # Attempt 2 spent nothing and drew no new noise: the published bytes are attempt 1's.
    (row,) = ledger_rows(ledger_env)
    assert (row["attempt_id"], row["release_sha256"]) == (between["attempt_id"], between["release_sha256"])
    assert (base / OUTPUT / RELEASE_NAME).read_bytes() == row["release"]
    assert budget_status(ledger_env) == (RELEASE_BUDGET, PrivacyBudget.zero())
    _, xcom = xcom_manifest(dag_run, "release")
    assert xcom["stages"][0]["status"] == "reused"
    assert (xcom["dp_release"]["epsilon_spent"], xcom["dp_release"]["reused"]) == ("0", True)
    assert xcom["dp_release"]["release_sha256"] == row["release_sha256"]
    report = json.loads((base / "reports" / "dp.json").read_text())
    assert (report["attempt"], report["stages"][0]["status"]) == (2, "reused")


def test_a_reservation_left_by_a_dead_attempt_is_taken_over_by_the_next_attempt_spending_once(
    dp_dag: Any, base: Path, ledger_env: str
) -> None:
    # What a worker killed between reserve and commit leaves behind: a live reservation, no release.
    with BudgetLedger(ledger_env) as ledger:
        ledger.declare("clinic_visits", "2025", DECLARED)
        ledger.reserve(KEY, RELEASE_BUDGET, attempt_id="killed-worker-attempt-1")
    assert budget_status(ledger_env) == (PrivacyBudget.zero(), RELEASE_BUDGET)

    dag_run = dp_dag.test(logical_date=DEC_1, run_conf=conf(base, partition="2025-12"))

    assert dag_run.state == "success"
    (row,) = ledger_rows(ledger_env)
    assert row["state"] == "committed" and row["attempt_id"] != "killed-worker-attempt-1"
    assert budget_status(ledger_env) == (RELEASE_BUDGET, PrivacyBudget.zero()), "one spend, not two"
    _, xcom = xcom_manifest(dag_run, "release")
    assert (xcom["dp_release"]["epsilon_spent"], xcom["dp_release"]["reused"]) == ("0.5", False)
    assert (base / OUTPUT / RELEASE_NAME).read_bytes() == row["release"]


# --------------------------------------------------------------------------------------------- (b)
def test_runs_for_the_same_logical_date_return_the_committed_release_and_spend_nothing(
    dp_dag: Any, base: Path, ledger_env: str, spark: Any
) -> None:
    first = dp_dag.test(logical_date=DEC_1, run_conf=conf(base))  # partition: the logical date's month
    assert first.state == "success"
    _, manifest = xcom_manifest(first, "release")
    output = Path(manifest["dp_release"]["output"])
    published = (output / RELEASE_NAME).read_bytes()
    assert manifest["partition"] == DEC_1.isoformat()
    assert manifest["dp_release"]["ledger_key"] == str(KEY), "the logical date 2025-12-01 is the month 2025-12"
    assert (manifest["dp_release"]["epsilon_spent"], manifest["dp_release"]["reused"]) == ("0.5", False)

    # dag.test() for the same logical date replaces the run: a new run id, so a new run key.
    second = dp_dag.test(logical_date=DEC_1, run_conf=conf(base))
    assert second.state == "success" and second.run_id != first.run_id
    _, again = xcom_manifest(second, "release")
    assert again["run_key"] != manifest["run_key"]
    assert (again["dp_release"]["epsilon_spent"], again["dp_release"]["reused"]) == ("0", True)
    assert again["stages"][0]["status"] == "reused"  # the committed output is this release
    assert (output / RELEASE_NAME).read_bytes() == published

    # The published folder is lost; a third run rebuilds it from the ledger's copy, byte for byte.
    shutil.rmtree(output)
    third = dp_dag.test(logical_date=DEC_1, run_conf=conf(base))
    assert third.state == "success"
    _, rebuilt = xcom_manifest(third, "release")
    assert rebuilt["stages"][0]["status"] == "succeeded"
    assert (rebuilt["dp_release"]["epsilon_spent"], rebuilt["dp_release"]["reused"]) == ("0", True)
    assert (output / RELEASE_NAME).read_bytes() == published
    assert release_rows(spark, output) == decoded(published)

    (row,) = ledger_rows(ledger_env)
    assert row["release"] == published and row["release_sha256"] == manifest["dp_release"]["release_sha256"]
    assert budget_status(ledger_env) == (RELEASE_BUDGET, PrivacyBudget.zero())


# --------------------------------------------------------------------------------------------- (c)
_SPEC_ENV = "PRIVSTAGE_TEST_DP_SPEC"
MONTHS = dg.MonthlyPartitionsDefinition(start_date="2025-01-01", end_date="2026-01-01", timezone="UTC")
DAGSTER_PARTITION = "2025-12-01"


def dagster_resources() -> dict[str, Any]:
    return {
        "spark": SparkResource(),
        "privstage_keys": KeyProviderResource(),
        "privstage_ledger": BudgetLedgerResource(url=dg.EnvVar("PRIVSTAGE_TEST_LEDGER_URL")),
    }


def dp_assets(retries: int = 0) -> list[dg.AssetsDefinition]:
    policy = dg.RetryPolicy(max_retries=retries) if retries else None
    return build_privstage_assets(os.environ[_SPEC_ENV], dp_partitions_def=MONTHS, retry_policy=policy)


def dp_job(spec_path: str) -> dg.JobDefinition:
    """Module level so that Dagster can reconstruct it for a re-execution; runs in this process.

    Built with ``build_reconstructable_job(..., reconstructable_args=(spec_path,))``: Dagster caches the
    most recent reconstructed job per target, and the argument keeps each test's job (and spec) its own.
    """
    assets = build_privstage_assets(spec_path, dp_partitions_def=MONTHS)
    job = dg.define_asset_job("privstage_dp", selection=dg.AssetSelection.all(), partitions_def=MONTHS)
    defs = dg.Definitions(assets=assets, jobs=[job], resources=dagster_resources(), executor=dg.in_process_executor)
    return defs.resolve_job_def("privstage_dp")


@pytest.fixture()
def instance(tmp_path: Path) -> Any:
    folder = tmp_path / "dagster-instance"
    folder.mkdir()
    with dg.DagsterInstance.local_temp(str(folder), overrides={"telemetry": {"enabled": False}}) as inst:
        yield inst


def _materialized(result: Any) -> dict[str, Any]:
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_dagster_reexecution_and_rematerialization_of_a_partition_spend_once_and_return_the_same_bytes(
    base: Path, ledger_env: str, instance: Any, monkeypatch: pytest.MonkeyPatch, spark: Any
) -> None:
    monkeypatch.setenv(_SPEC_ENV, str(base / "pipeline.yaml"))
    job = dg.build_reconstructable_job(__name__, "dp_job", reconstructable_args=(str(base / "pipeline.yaml"),))
    tags = {"dagster/partition": DAGSTER_PARTITION}

    with dg.execute_job(job, instance=instance, tags=tags) as first:
        assert first.success
        meta = _materialized(first)
    output = Path(meta["output"])
    published = (output / RELEASE_NAME).read_bytes()
    assert meta["run_key"] == f"dagster/{first.run_id}/{STAGE}"
    assert (meta["partition"], meta["privstage/ledger_key"]) == (DAGSTER_PARTITION, str(KEY))
    assert (meta["epsilon_spent"], meta["reused_release"]) == ("0.5", False)
    assert meta["release_sha256"] == sha256(published)

    options = dg.ReexecutionOptions(parent_run_id=first.run_id)
    with dg.execute_job(job, instance=instance, reexecution_options=options, tags=first.dagster_run.tags) as second:
        assert second.success
        again = _materialized(second)
    assert second.dagster_run.root_run_id == first.run_id
    assert again["run_key"] == meta["run_key"], "a re-execution is the same logical run"
    assert (again["epsilon_spent"], again["reused_release"], again["release_sha256"]) == (
        "0",
        True,
        meta["release_sha256"],
    )

    # A new run (not a re-execution) of the same partition: another run key, the same ledger key.
    third = dg.materialize(
        dp_assets(), resources=dagster_resources(), instance=instance, partition_key=DAGSTER_PARTITION
    )
    assert third.success
    fresh = _materialized(third)
    assert fresh["run_key"] != meta["run_key"]
    assert (fresh["epsilon_spent"], fresh["reused_release"], fresh["release_sha256"]) == (
        "0",
        True,
        meta["release_sha256"],
    )

    assert (output / RELEASE_NAME).read_bytes() == published
    assert release_rows(spark, output) == decoded(published)
    (row,) = ledger_rows(ledger_env)
    assert (row["release"], row["state"]) == (published, "committed")
    assert budget_status(ledger_env) == (RELEASE_BUDGET, PrivacyBudget.zero())


# --------------------------------------------------------------------------------------------- (d)
def test_budget_exceeded_fails_the_airflow_task_without_retries(
    dp_dag: Any, base: Path, ledger_env: str, capfd: pytest.CaptureFixture[str]
) -> None:
    committed_elsewhere(ledger_env, "2025-10", "2025-11")  # the year's ε = 1 is spent

    dag_run = dp_dag.test(logical_date=DEC_1, run_conf=conf(base, partition="2025-12"))

    assert dag_run.state == "failed"
    ti, history = task_attempts(dag_run, "release")
    assert ti["max_tries"] == 2, "the task had retries left"
    assert (ti["state"], ti["try_number"], history) == ("failed", 1, [])
    logs = "".join(capfd.readouterr())
    assert "AirflowFailException" in logs and "privstage.errors.BudgetExceeded" in logs
    assert f"ledger key {KEY}" in logs  # requested versus remaining, and where
    assert [r["ledger_key"] for r in ledger_rows(ledger_env)] == [
        "clinic_dp/dp_monthly/clinic_visits/2025/2025-10",
        "clinic_dp/dp_monthly/clinic_visits/2025/2025-11",
    ]
    assert not (base / OUTPUT).exists()


def test_budget_exceeded_is_a_dagster_failure_that_bypasses_the_retry_policy(
    base: Path, ledger_env: str, instance: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_SPEC_ENV, str(base / "pipeline.yaml"))
    committed_elsewhere(ledger_env, "2025-10", "2025-11")

    result = dg.materialize(
        dp_assets(retries=2),
        resources=dagster_resources(),
        instance=instance,
        partition_key=DAGSTER_PARTITION,
        raise_on_error=False,
    )

    assert not result.success
    assert result.retry_attempts_for_node(STAGE) == 0
    (failure,) = result.get_step_failure_events()
    data = failure.step_failure_data
    assert data.error is not None and data.error.cls_name == "Failure"
    assert data.error.cause is not None and data.error.cause.cls_name == "BudgetExceeded"
    assert data.user_failure_data is not None
    metadata = {k: v.value for k, v in data.user_failure_data.metadata.items()}
    assert (metadata["error"], metadata["retryable"], metadata["ledger_key"]) == ("BudgetExceeded", False, str(KEY))
    assert len(ledger_rows(ledger_env)) == 2
    assert not (base / "output/dp_monthly").exists()


# --------------------------------------------------------------------------------------------- (e)
PASSWORD = "canary-ledger-pw-5c81e0"  # noqa: S105 - a planted test value; trust auth ignores it


@pytest.fixture()
def secret_ledger_url(postgres_schema: Any) -> str:
    """A PostgreSQL ledger URL with a password (the server trusts local connections and ignores it)."""
    return make_url(postgres_schema()).set(password=PASSWORD).render_as_string(hide_password=False)


def _lists(value: Any) -> Any:
    """Every list inside a JSON value."""
    if isinstance(value, list):
        yield value
        for item in value:
            yield from _lists(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _lists(item)


def raw_canaries(spark: Any, base: Path) -> list[str]:
    """Raw values of the input's identifiers and sensitive columns (the DP stage reads the raw visits)."""
    frame = spark.read.parquet(str(base / "data/visits")).select("patient_id", "ssn", "email", "name")
    values = {v for row in frame.collect() for v in row if v}  # 120 test rows
    return sorted(values | {CANARY_SSN})


@pytest.mark.postgres
def test_no_ledger_password_or_raw_value_reaches_xcom_logs_or_the_metadata_db(
    dp_dag: Any,
    base: Path,
    spark: Any,
    secret_ledger_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    test_root: Path,
) -> None:
    from airflow.configuration import conf as airflow_conf

    monkeypatch.setenv("AIRFLOW_CONN_PRIVSTAGE_TEST_LEDGER", airflow_connection(secret_ledger_url))
    monkeypatch.setenv("PRIVSTAGE_TEST_LEDGER_URL", secret_ledger_url)
    canaries = [PASSWORD, *raw_canaries(spark, base)]
    capfd.readouterr()

    dag_run = dp_dag.test(logical_date=DEC_1, run_conf=conf(base, partition="2025-12"))

    assert dag_run.state == "success"
    raw_xcom, xcom = xcom_manifest(dag_run, "release")
    logs = "".join(capfd.readouterr()) + caplog.text
    log_dir = Path(airflow_conf.get("logging", "base_log_folder"))
    if log_dir.exists():
        logs += "".join(p.read_text(errors="replace") for p in log_dir.rglob("*") if p.is_file())
    db_path = Path(airflow_conf.get("database", "sql_alchemy_conn").removeprefix("sqlite:///"))
    assert db_path.is_relative_to(test_root)
    db_bytes = b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))
    # Positive controls: the scans see the task's log lines and its XCom, and the ledger really was PostgreSQL.
    assert f"DP release {KEY}, epsilon spent by this run 0.5" in logs
    assert xcom["dp_release"]["ledger_key"] == str(KEY) and str(KEY).encode() in db_bytes
    (row,) = ledger_rows(secret_ledger_url)
    assert row["release_sha256"] == xcom["dp_release"]["release_sha256"]
    # XCom carries the manifest, not the release: none of its rows, and no copy of its bytes.
    published_rows = json.loads(row["release"])["rows"]
    assert len(published_rows) == 3 and not [r for r in published_rows if r in list(_lists(xcom))]
    assert row["release"].decode() not in raw_xcom

    for canary in canaries:
        assert canary not in raw_xcom, f"{canary[:4]}… in the XCom"
        assert canary not in logs, f"{canary[:4]}… in the task logs"
        assert canary.encode() not in db_bytes, f"{canary[:4]}… in the metadata DB"


@pytest.mark.postgres
def test_no_ledger_password_or_raw_value_reaches_dagster_events_or_storage(
    base: Path,
    spark: Any,
    secret_ledger_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(_SPEC_ENV, str(base / "pipeline.yaml"))
    monkeypatch.setenv("PRIVSTAGE_TEST_LEDGER_URL", secret_ledger_url)
    canaries = [PASSWORD, *raw_canaries(spark, base)]
    folder = tmp_path / "dagster-canary"
    folder.mkdir()
    capfd.readouterr()

    with dg.DagsterInstance.local_temp(str(folder), overrides={"telemetry": {"enabled": False}}) as inst:
        result = dg.materialize(
            dp_assets(), resources=dagster_resources(), instance=inst, partition_key=DAGSTER_PARTITION
        )
        assert result.success
        records = inst.get_records_for_run(result.run_id).records
        event_log = "\n".join(dg.serialize_value(r.event_log_entry) for r in records)
    console = capfd.readouterr()
    stored = b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())

    # Positive controls: the release's ledger key and sha256 are in the stored events.
    (row,) = ledger_rows(secret_ledger_url)
    assert str(KEY) in event_log and row["release_sha256"].encode() in stored
    for canary in canaries:
        assert canary not in event_log, f"{canary[:4]}… in the event log"
        assert canary.encode() not in stored, f"{canary[:4]}… in the instance storage"
        assert canary not in console.out and canary not in console.err, f"{canary[:4]}… on the console"
