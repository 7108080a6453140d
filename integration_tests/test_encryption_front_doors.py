"""Encryption at rest behind Airflow and Dagster, on clinic_visits data, in both modes.

* Airflow: one ``dag.test()`` of a DAG with EncryptOperator >> DecryptOperator per mode; the rows come back
  exactly, the XComs are manifests, and neither XComs nor task logs hold a KEK or a DEK.
* Dagster: one ``materialize`` of two assets stored by :class:`EncryptedParquetIOManager` (field mode with
  per-patient keys, file mode), a downstream asset granted the key (it reads the rows decrypted) and one that
  is not (it fails without retries on KeyUnavailable); no event holds a KEK or a DEK.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from privstage_dagster import EncryptedParquetIOManager, KeyProviderResource, SparkResource
from test_airflow import airflow_dags, load_dag, run_dag, xcom_manifest  # noqa: F401  (airflow_dags: fixture)

from privstage.crypto import envelope as env
from privstage.crypto.field import plan_decrypt
from privstage.crypto.subjects import SubjectKeyStore
from privstage.keys import FileKeyProvider
from privstage.sample_data import CLINIC_VISITS_SCHEMA, generate_clinic_visits_pandas

ROWS = 80
FIELD = {
    "mode": "field",
    "kek_id": "visits-kek",
    "columns": ["name", "email", "ssn", "date_of_birth"],
    "row_key": "visit_id",
    "subject_column": "patient_id",
}
FILE = {"mode": "file", "kek_id": "visits-kek", "columns": ["name", "email", "ssn"]}

ENCRYPTION_DAG = '''\
"""privstage encryption round-trip DAG (integration_tests/test_encryption_front_doors.py)."""
from airflow.sdk import DAG, Param

from privstage_airflow import DecryptOperator, EncryptOperator

with DAG(
    "privstage_probe_encryption",
    schedule=None,
    catchup=False,
    params={"spec_path": Param("", type="string")},
) as dag:
    for mode in ("field", "file"):
        spec = "{{ params.spec_path }}"
        encrypt = EncryptOperator(task_id=f"encrypt_{mode}", spec_path=spec, stage=f"encrypt_{mode}")
        decrypt = DecryptOperator(task_id=f"decrypt_{mode}", spec_path=spec, stage=f"decrypt_{mode}")
        encrypt >> decrypt
'''


def _rows(df) -> list[tuple]:
    return sorted((tuple(r) for r in df.select(sorted(df.columns)).collect()), key=repr)


def _encodings(secret: bytes) -> list[str]:
    b64 = base64.b64encode(secret).decode()
    url = base64.urlsafe_b64encode(secret).decode()
    return [secret.hex(), secret.hex().upper(), b64, b64.rstrip("="), url.rstrip("=")]


def _leaks(text: str, secrets: list[bytes]) -> list[str]:
    return [form[:6] + "..." for s in secrets for form in _encodings(s) if form in text]


@pytest.fixture()
def clinic(spark, tmp_path: Path) -> tuple[Path, Any]:
    """A base folder with a key directory (one KEK) and the clinic_visits sample as data/visits."""
    (tmp_path / "keys").mkdir(mode=0o700)
    (tmp_path / "keys" / "visits-kek.v1").write_text(base64.b64encode(os.urandom(32)).decode())
    visits = spark.createDataFrame(generate_clinic_visits_pandas(ROWS), schema=CLINIC_VISITS_SCHEMA)
    visits.coalesce(2).write.parquet(str(tmp_path / "data" / "visits"))
    return tmp_path, spark.read.parquet(str(tmp_path / "data" / "visits"))


def test_airflow_encrypts_and_decrypts_clinic_visits_in_both_modes(
    airflow_dags,  # noqa: F811
    clinic,
    spark,
    capfd,
):
    from airflow.configuration import conf

    base, visits = clinic
    stages = []
    for mode, config in (("field", FIELD), ("file", FILE)):
        stages += [
            {
                "name": f"encrypt_{mode}",
                "kind": "encrypt",
                "input": {"path": "data/visits"},
                "output": {"path": f"enc/{mode}"},
                "encryption": {**config, "dataset": f"visits_{mode}"},
            },
            {
                "name": f"decrypt_{mode}",
                "kind": "decrypt",
                "mode": mode,
                "dataset": f"visits_{mode}",
                "input": {"stage": f"encrypt_{mode}"},
                "output": {"path": f"clear/{mode}"},
            },
        ]
    spec = base / "pipeline.yaml"
    spec.write_text(
        json.dumps({"name": "clinic_encryption", "keys": {"provider": "files", "directory": "keys"}, "stages": stages})
    )
    dag_file = Path(conf.get("core", "dags_folder")) / "privstage_probe_encryption.py"
    dag_file.write_text(ENCRYPTION_DAG)

    dag_run, _ = run_dag(load_dag(dag_file, "privstage_probe_encryption"), spec_path=str(spec))

    assert dag_run.state == "success"
    expected = _rows(visits)
    for mode in ("field", "file"):
        assert _rows(spark.read.parquet(str(base / "clear" / mode))) == expected
    _, decrypted = xcom_manifest(dag_run, "decrypt_file")
    checks = {o["check"] for g in decrypted["stages"][0]["guards"] for o in g["outcomes"]}
    assert {"manifest_present", "keys_resolvable", "row_count_preserved"} <= checks
    raw, manifest = xcom_manifest(dag_run, "encrypt_field")
    (stage,) = manifest["stages"]
    assert stage["details"]["encryption"]["per_subject_keys"] and stage["key_versions"] == {"visits-kek": 1}
    keys = FileKeyProvider(base / "keys")
    store = SubjectKeyStore(base / ".privstage" / "subject-keys" / "visits_field.json", keys, "visits-kek")
    patients = [r[0] for r in visits.select("patient_id").distinct().collect()]
    deks = list(store.lookup(patients).values())
    assert len(deks) == len(patients) > 1  # one key per patient
    texts = [raw, xcom_manifest(dag_run, "decrypt_file")[0], "".join(capfd.readouterr())]
    assert _leaks("\n".join(texts), [keys.get("visits-kek").material(), *deks]) == []


def test_dagster_io_manager_stores_encrypted_and_loads_only_for_granted_assets(clinic, spark):
    base, visits = clinic

    @dg.asset(metadata={"privstage/encryption": FIELD})
    def visits_fields():
        return spark.read.parquet(str(base / "data" / "visits"))

    @dg.asset(metadata={"privstage/encryption": FILE})
    def visits_files():
        return spark.read.parquet(str(base / "data" / "visits"))

    seen: dict[str, Any] = {}

    @dg.asset
    def visit_report(visits_fields, visits_files) -> dg.MaterializeResult:
        seen["fields"], seen["files"] = _rows(visits_fields), _rows(visits_files)
        return dg.MaterializeResult(metadata={"rows": visits_fields.count()})

    @dg.asset
    def marketing_export(visits_fields) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"rows": visits_fields.count()})

    io_manager = EncryptedParquetIOManager(
        base_dir=str(base / "assets"),
        key_provider=KeyProviderResource(provider="files", directory=str(base / "keys")),
        spark=SparkResource(),
        grants={"visit_report": ["visits-kek"]},
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [visits_fields, visits_files, visit_report, marketing_export],
            resources={"io_manager": io_manager},
            instance=instance,
            raise_on_error=False,
        )
        events = instance.all_logs(result.run_id)

    expected = _rows(visits)
    assert seen == {"fields": expected, "files": expected}  # the granted asset read every row, decrypted
    materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert materialized == {"visits_fields", "visits_files", "visit_report"}
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "marketing_export"
    assert "asset marketing_export is not allowed key 'visits-kek'" in str(failure.event_specific_data.error)
    stored = base / "assets" / "visits_fields"
    assert {f.dataType.simpleString() for f in spark.read.parquet(str(stored)).schema if f.name == "ssn"} == {"binary"}
    assert all(p.read_bytes()[-4:] == b"PARE" for p in (base / "assets" / "visits_files").glob("part-*"))

    keys = FileKeyProvider(base / "keys")
    store = SubjectKeyStore(base / "assets" / ".privstage" / "subject-keys" / "visits_fields.json", keys, "visits-kek")
    deks = list(store.lookup([r[0] for r in visits.select("patient_id").distinct().collect()]).values())
    assert deks and plan_decrypt(env.read_manifest(stored), keys).deks == {}  # per-patient keys only
    text = "\n".join(repr(e) for e in events)
    assert _leaks(text, [keys.get("visits-kek").material(), *deks]) == []
