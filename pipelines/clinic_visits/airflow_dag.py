"""Airflow 3 DAG for the clinic_visits pipeline: one task runs every stage of ``pipeline.yaml``.

Put this file (or a symlink to it) in the DAGs folder; the spec is found next to the real file.
Dataset paths resolve against, in order: the run's ``base_dir`` param (``airflow dags trigger
--conf '{"base_dir": "/data/clinic"}'``), ``$PRIVSTAGE_BASE_DIR``, this folder. The task's XCom is the
run manifest (paths, row counts, key ids, guard outcomes), never data or keys.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from airflow.sdk import DAG, Param
from privstage_airflow import PrivacyPipelineOperator

# resolve(): a symlink in the DAGs folder still finds the spec beside the real file.
SPEC_PATH = Path(__file__).resolve().parent / "pipeline.yaml"

with DAG(
    dag_id="privstage_clinic_visits",
    description="Pseudonymize direct identifiers of clinic visits (privstage).",
    schedule=None,
    catchup=False,
    tags=["privstage", "privacy"],
    params={
        "base_dir": Param(
            "",
            type="string",
            description="Folder the spec's relative paths resolve against; empty: $PRIVSTAGE_BASE_DIR, "
            "else the spec's folder.",
        )
    },
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
) as dag:
    PrivacyPipelineOperator(
        task_id="pseudonymize_visits",
        spec_path=str(SPEC_PATH),
        base_dir="{{ params.base_dir }}",
    )
