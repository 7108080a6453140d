"""The multi-clinic sums round through Airflow's ``dag.test()`` and Dagster's ``materialize``, across all roles.

Both run the example's DAG / Definitions files over a prepared working folder (each clinic's sample data and
per-role keys) on the session ``spark`` fixture, and must release exactly the plaintext sums (BFV).
"""

from __future__ import annotations

import base64
import json
import runpy
import sys
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
import pytest
from test_airflow import airflow_dags, load_dag, run_dag, xcom_manifest  # noqa: F401 - fixture

EXAMPLE = Path(__file__).resolve().parents[1] / "pipelines" / "multi_clinic_sums"
sys.path.insert(0, str(EXAMPLE))
from prepare import PARTIES, prepare  # noqa: E402

DAG_ID = "privstage_multi_clinic_sums"


def _plain(root: Path) -> dict[str, tuple[Decimal, int]]:
    cost: dict[str, Decimal] = defaultdict(Decimal)
    visits: dict[str, int] = defaultdict(int)
    for clinic in ("C01", "C02", "C03"):
        for row in pq.read_table(root / "data" / clinic / "visits").to_pylist():
            cost[row["diagnosis_code"]] += Decimal(str(row["cost"]))
            visits[row["diagnosis_code"]] += 1
    return {k: (cost[k], visits[k]) for k in visits}


def _check_release(root: Path) -> None:
    plain = _plain(root)
    released = pq.read_table(root / "key_holder" / "release").to_pylist()
    assert len(released) == 40
    for row in released:
        cost, count = plain.get(row["diagnosis_code"], (Decimal("0.00"), 0))
        assert (row["total_cost"], row["visits"]) == (cost, count)
        assert row["average_cost"] == (None if count == 0 else (cost / count).quantize(Decimal("0.01")))


def _key_texts(root: Path) -> list[str]:
    texts = []
    for path in (root / "keys").rglob("*"):
        if path.is_file():
            raw = base64.b64decode(path.read_text().strip())
            texts += [path.read_text().strip(), raw.hex(), base64.urlsafe_b64encode(raw).decode().rstrip("=")]
    return texts


@pytest.fixture(autouse=True)
def _no_base_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PRIVSTAGE_BASE_DIR", "PRIVSTAGE_LEDGER_URL", "SPARK_REMOTE", "AIRFLOW_CONN_PRIVSTAGE_DEFAULT"):
        monkeypatch.delenv(name, raising=False)


def test_airflow_runs_the_round_across_roles(airflow_dags: Any, spark: Any, tmp_path: Path) -> None:  # noqa: F811
    from airflow.configuration import conf

    dags_folder = Path(conf.get("core", "dags_folder"))
    link = dags_folder / "privstage_multi_clinic_sums.py"
    if not link.exists():
        link.symlink_to(EXAMPLE / "airflow_dag.py")
    dag = load_dag(link, DAG_ID)
    root = prepare(tmp_path / "work", rows=400)

    dag_run, _ = run_dag(dag, base_dir=str(root))

    assert dag_run.state == "success"
    _check_release(root)
    secrets = _key_texts(root)
    fingerprints = set()
    for task_id in ["round_keys", "encrypt_c01", "encrypt_c02", "encrypt_c03", "add_contributions", "release"]:
        raw, manifest = xcom_manifest(dag_run, task_id)
        assert manifest["status"] == "succeeded" and manifest["orchestrator"] == "airflow"
        assert not any(s in raw for s in secrets), task_id  # XComs never carry keys
        fingerprints.add(manifest["he"]["context_fingerprint"])
    assert len(fingerprints) == 1  # every role worked under the one public context of the round
    _, release = xcom_manifest(dag_run, "release")
    assert release["he"]["role"] == "key holder" and release["he"]["parties"] == sorted(PARTIES.values())


def test_dagster_materializes_the_round_across_roles(spark: Any, tmp_path: Path, monkeypatch: Any) -> None:
    root = prepare(tmp_path / "work", rows=400)
    monkeypatch.setenv("PRIVSTAGE_BASE_DIR", str(root))
    defs = runpy.run_path(str(EXAMPLE / "dagster_defs.py"))["defs"]
    (tmp_path / "instance").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "instance"), overrides={"telemetry": {"enabled": False}}) as inst:
        result = dg.materialize(list(defs.assets), resources=defs.resources, instance=inst)

    assert result.success
    _check_release(root)
    events = {tuple(e.asset_key.path): e for e in result.get_asset_materialization_events()}
    assert set(events) == {
        ("key_holder", "round_keys"),
        ("clinic_c01", "encrypt_sums"),
        ("clinic_c02", "encrypt_sums"),
        ("clinic_c03", "encrypt_sums"),
        ("aggregator", "add_contributions"),
        ("key_holder", "release"),
    }
    metadata = {k: {n: v.value for n, v in e.materialization.metadata.items()} for k, e in events.items()}
    assert metadata[("aggregator", "add_contributions")]["privstage/he_role"] == "aggregator"
    assert len({m["privstage/he_context_fingerprint"] for m in metadata.values()}) == 1
    secrets = _key_texts(root)
    assert not any(s in json.dumps(list(metadata.values()), default=str) for s in secrets)
