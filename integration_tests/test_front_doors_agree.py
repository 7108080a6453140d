"""One spec, one dataset, one keyring: the CLI (a real process), Airflow's dag.test() and Dagster's
materialize() write identical pseudonyms."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from test_airflow import CLINIC_DAG_ID, airflow_dags, run_dag  # noqa: F401  (airflow_dags is a fixture)

from privstage.keys import LocalKeyring
from privstage.sample_data import write_clinic_visits

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
    return sorted(tuple(r) for r in df.select(sorted(df.columns)).collect())


@pytest.mark.slow
def test_cli_airflow_and_dagster_write_identical_pseudonyms(spark, tmp_path, monkeypatch, airflow_dags):  # noqa: F811
    shared = tmp_path / "shared" / "visits"
    write_clinic_visits(str(shared), 600, spark=spark)
    keyring = tmp_path / "keyring.json"
    LocalKeyring.init(keyring, warn=False)
    monkeypatch.setenv("PRIVSTAGE_KEYRING", str(keyring))
    monkeypatch.delenv("SPARK_REMOTE", raising=False)

    cli_base = _base(tmp_path, "cli", shared)
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("privstage")),
            "run",
            str(SPEC),
            "--base-dir",
            str(cli_base),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]

    airflow_base = _base(tmp_path, "airflow", shared)
    dag_run, _ = run_dag(airflow_dags[CLINIC_DAG_ID], base_dir=str(airflow_base))
    assert dag_run.state == "success"

    dagster_base = _base(tmp_path, "dagster", shared)
    monkeypatch.setenv("PRIVSTAGE_BASE_DIR", str(dagster_base))
    defs = runpy.run_path(str(REPO / "pipelines" / "clinic_visits" / "dagster_defs.py"))["defs"]
    with dg.DagsterInstance.ephemeral() as instance:
        assert dg.materialize(list(defs.assets), resources=defs.resources, instance=instance).success

    cli_rows = _rows(spark, cli_base / OUTPUT)
    assert len(cli_rows) == 600
    assert _rows(spark, airflow_base / OUTPUT) == cli_rows
    assert _rows(spark, dagster_base / OUTPUT) == cli_rows
    raw_ids = {r.patient_id for r in spark.read.parquet(str(shared)).select("patient_id").collect()}
    assert not raw_ids & {r.patient_id for r in spark.read.parquet(str(cli_base / OUTPUT)).collect()}
