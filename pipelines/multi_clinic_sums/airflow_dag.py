"""Airflow 3 DAG for one round of the multi-clinic sums: key holder, three clinics, aggregator, key holder.

In production each role runs in its own Airflow (its own keys and data); this DAG puts the round in one
place to show the order and to test it: ``round_keys`` (HEKeygenOperator) publishes the public context,
each clinic's ``encrypt_c0N`` (HEEncryptOperator) encrypts its per-diagnosis sums under it,
``add_contributions`` (HEAggregateOperator) adds them without any secret key, and ``release``
(HEDecryptOperator) verifies, decrypts and releases totals and averages.

Dataset paths and key folders resolve against the run's ``base_dir`` param (prepare one with
``python pipelines/multi_clinic_sums/prepare.py WORKDIR``), else ``$PRIVSTAGE_BASE_DIR``, else this folder.
Integrity and parameter failures fail a task without retries; XComs are run manifests with a public
``he`` summary (round id, context fingerprint, parties), never ciphertexts, contexts or keys.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from airflow.sdk import DAG, Param
from privstage_airflow import HEAggregateOperator, HEDecryptOperator, HEEncryptOperator, HEKeygenOperator

HERE = Path(__file__).resolve().parent
CLINICS = ("c01", "c02", "c03")

with DAG(
    dag_id="privstage_multi_clinic_sums",
    description="Homomorphic sums of three clinics' costs per diagnosis (privstage he_* stages).",
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["privstage", "privacy", "homomorphic-encryption"],
    params={"base_dir": Param("", type="string", description="Folder the specs' relative paths resolve against.")},
) as dag:
    common = {"base_dir": "{{ params.base_dir }}"}
    keygen = HEKeygenOperator(
        task_id="round_keys", spec_path=str(HERE / "key_holder.yaml"), stage="round_keys", **common
    )
    parties = [
        HEEncryptOperator(
            task_id=f"encrypt_{clinic}", spec_path=str(HERE / f"clinic_{clinic}.yaml"), stage="encrypt_sums", **common
        )
        for clinic in CLINICS
    ]
    aggregate = HEAggregateOperator(
        task_id="add_contributions", spec_path=str(HERE / "aggregator.yaml"), stage="add_contributions", **common
    )
    release = HEDecryptOperator(task_id="release", spec_path=str(HERE / "key_holder.yaml"), stage="release", **common)
    keygen >> parties >> aggregate >> release
