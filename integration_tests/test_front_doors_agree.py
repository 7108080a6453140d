"""One spec, one dataset, one keyring, one budget ledger: the CLI, Airflow's dag.test() and
Dagster's materialize() write identical pseudonyms and publish the same DP release.

The three front doors cannot each draw noise for the same month: that would be three releases of one
month, three spends. The CLI publishes December 2025 first; Airflow (the run for logical date 2025-12-01)
and Dagster (partition 2025-12-01) find that release committed in the shared ledger under the same ledger
key, write its bytes, and spend nothing.
"""

from __future__ import annotations

import hashlib
import json
import runpy
from pathlib import Path

import dagster as dg
import pytest
from test_airflow import (  # noqa: F401  (airflow_dags is a fixture)
    CLINIC_DAG_ID,
    CLINIC_DP_TASK_ID,
    CLINIC_LEDGER_KEY,
    CLINIC_MONTH,
    airflow_dags,
    run_dag,
    xcom_manifest,
)

from privstage.budget import BudgetLedger
from privstage.cli import main
from privstage.keys import LocalKeyring
from privstage.sample_data import write_clinic_visits
from privstage.stages.dp_aggregate import RELEASE_NAME

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "pipelines" / "clinic_visits" / "pipeline.yaml"
OUTPUT = Path("output") / "visits_pseudonymized"


def _base(root: Path, name: str, shared_data: Path) -> Path:
    base = root / name
    (base / "data").mkdir(parents=True)
    (base / "data" / "visits").symlink_to(shared_data)
    return base


def _rows(spark, path: Path) -> list[tuple]:
    df = spark.read.parquet(str(path))
    return sorted((tuple(r) for r in df.select(sorted(df.columns)).collect()), key=repr)  # repr: None sorts too


@pytest.mark.slow
def test_cli_airflow_and_dagster_write_identical_pseudonyms_and_publish_one_dp_release(
    spark,
    tmp_path,
    monkeypatch,
    airflow_dags,  # noqa: F811
):
    shared = tmp_path / "shared" / "visits"
    write_clinic_visits(str(shared), 600, spark=spark)
    keyring = tmp_path / "keyring.json"
    LocalKeyring.init(keyring, ("pseudonym-key", "visits-kek"), warn=False)
    ledger_url = f"sqlite:///{tmp_path / 'shared' / 'ledger.db'}"
    monkeypatch.setenv("PRIVSTAGE_KEYRING", str(keyring))
    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    monkeypatch.delenv("PRIVSTAGE_LEDGER_URL_FILE", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_PRIVSTAGE_LEDGER_DEFAULT", raising=False)

    cli_base = _base(tmp_path, "cli", shared)
    report = cli_base / "report.json"
    # The CLI's entry point in this process (the console script in its own process is test_cli_e2e's).
    args = ["run", str(SPEC), "--base-dir", str(cli_base), "--partition", "2025-12", "--ledger", ledger_url]
    args += ["--report", str(report), "--no-progress"]
    # The stages this test compares (the research release and the encryption have their own front-door tests).
    args += ["--stage", "pseudonymize_visits", "--stage", "dp_visits_monthly"]
    assert main(args) == 0
    cli_dp = json.loads(report.read_text())["stages"][1]
    assert (cli_dp["name"], cli_dp["details"]["dp"]["ledger_key"]) == ("dp_visits_monthly", CLINIC_LEDGER_KEY)
    cli_release = (Path(cli_dp["output"]) / RELEASE_NAME).read_bytes()

    # Airflow and Dagster take the ledger from the engine's default variable (no connection, no resource URL).
    monkeypatch.setenv("PRIVSTAGE_LEDGER_URL", ledger_url)
    airflow_base = _base(tmp_path, "airflow", shared)
    # The research release and the encryption at rest have their own front-door tests: marked done here.
    dag_run, _ = run_dag(
        airflow_dags[CLINIC_DAG_ID],
        logical_date=CLINIC_MONTH,
        mark_success_pattern="^(anonymize_research|encrypt_visits)$",
        base_dir=str(airflow_base),
    )
    assert dag_run.state == "success"
    _, airflow_dp = xcom_manifest(dag_run, CLINIC_DP_TASK_ID)

    dagster_base = _base(tmp_path, "dagster", shared)
    monkeypatch.setenv("PRIVSTAGE_BASE_DIR", str(dagster_base))
    defs = runpy.run_path(str(REPO / "pipelines" / "clinic_visits" / "dagster_defs.py"))["defs"]
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            list(defs.assets),
            selection=["pseudonymize_visits", "dp_visits_monthly"],
            resources=defs.resources,
            instance=instance,
            partition_key="2025-12-01",
        )
        assert result.success
        (dagster_dp,) = [
            e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "dp_visits_monthly"
        ]
        dagster_dp = {k: v.value for k, v in dagster_dp.materialization.metadata.items()}

    # Pseudonyms: identical.
    cli_rows = _rows(spark, cli_base / OUTPUT)
    assert len(cli_rows) == 600
    assert _rows(spark, airflow_base / OUTPUT) == cli_rows
    assert _rows(spark, dagster_base / OUTPUT) == cli_rows
    raw_ids = {r.patient_id for r in spark.read.parquet(str(shared)).select("patient_id").collect()}
    assert not raw_ids & {r.patient_id for r in spark.read.parquet(str(cli_base / OUTPUT)).collect()}

    # The DP release: one spend (the CLI's), one release, the same bytes behind all three front doors.
    digest = hashlib.sha256(cli_release).hexdigest()
    assert (airflow_dp["dp_release"]["ledger_key"], dagster_dp["privstage/ledger_key"]) == (CLINIC_LEDGER_KEY,) * 2
    assert (airflow_dp["dp_release"]["epsilon_spent"], airflow_dp["dp_release"]["reused"]) == ("0", True)
    assert (dagster_dp["epsilon_spent"], dagster_dp["reused_release"]) == ("0", True)
    assert airflow_dp["dp_release"]["release_sha256"] == dagster_dp["release_sha256"] == digest
    # One release, one place: every front door names the output by the month, whatever partition text it passed.
    assert Path(airflow_dp["dp_release"]["output"]).name == Path(dagster_dp["output"]).name == "2025-12"
    assert (Path(airflow_dp["dp_release"]["output"]) / RELEASE_NAME).read_bytes() == cli_release
    assert (Path(dagster_dp["output"]) / RELEASE_NAME).read_bytes() == cli_release
    assert _rows(spark, Path(airflow_dp["dp_release"]["output"])) == _rows(spark, Path(cli_dp["output"]))
    with BudgetLedger(ledger_url) as ledger:
        (spend,) = ledger.spends()
        (status,) = ledger.budgets("clinic_visits", "2025")
    assert (str(spend.key), spend.state, spend.release_sha256) == (CLINIC_LEDGER_KEY, "committed", digest)
    assert str(status.committed.epsilon) == "0.5" and status.reserved.is_zero
