"""Shared test set-up: one Spark session per test run, isolated Airflow and Dagster homes.

Environment variables are set at import time, before any test module imports airflow or dagster.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

import pytest

_TEST_ROOT = Path(tempfile.mkdtemp(prefix="privstage-tests-"))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ["AIRFLOW_HOME"] = str(_TEST_ROOT / "airflow")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_TEST_ROOT / "airflow" / "dags")
os.environ["DAGSTER_HOME"] = str(_TEST_ROOT / "dagster")
(_TEST_ROOT / "airflow" / "dags").mkdir(parents=True)
(_TEST_ROOT / "dagster").mkdir(parents=True)
# Tests must never pick up a developer's Spark Connect endpoint by accident.
os.environ.pop("SPARK_REMOTE", None)

# py4j logs "Closing down clientserver connection" from __del__ after pytest closed its streams.
logging.getLogger("py4j").setLevel(logging.WARNING)

SPARK_EVENT_LOG_DIR = _TEST_ROOT / "spark-events"
SPARK_EVENT_LOG_DIR.mkdir()


@pytest.fixture(scope="session")
def test_root() -> Path:
    """The temporary folder holding this run's AIRFLOW_HOME, DAGSTER_HOME and Spark event log."""
    return _TEST_ROOT


@pytest.fixture(scope="session")
def spark_event_log_dir() -> Path:
    return SPARK_EVENT_LOG_DIR


@pytest.fixture(scope="session")
def spark():
    """The one classic SparkSession of the run: local[2], two shuffle partitions, UI off, event log on."""
    from privstage.spark import get_session

    session = get_session(
        conf={
            "spark.master": "local[2]",
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.eventLog.enabled": "true",
            "spark.eventLog.dir": str(SPARK_EVENT_LOG_DIR),
        }
    )
    yield session
    session.stop()


# ---------------------------------------------------------------------------------------------
# A small workspace: dev keyring + tiny visits dataset + a spec writer
# ---------------------------------------------------------------------------------------------
CANARY_SSN = "078-05-1120"  # planted raw SSN; must never leak anywhere
TINY_ROWS = [
    # visit_id, patient_id, name, email, ssn, clinic_id, cost
    ("V1", "P001", "  Zoë Ångström ", "zoe@example.org", CANARY_SSN, "C01", 120.5),
    ("V2", "P002", "Jose\u0301 Müller", "JOSE@EXAMPLE.ORG", "219-09-9999", "C01", 80.0),
    ("V3", "P003", None, None, "457-55-5462", "C02", 42.0),
    ("V4", "P001", "ZOË ÅNGSTRÖM", "Zoe@Example.org", CANARY_SSN, "C02", 310.25),
    ("V5", "P004", "Straße", "strasse@example.org", "123-45-6789", "C02", 15.0),
]
TINY_SCHEMA = "visit_id string, patient_id string, name string, email string, ssn string, clinic_id string, cost double"


class Workspace:
    """A temp folder with a dev keyring, a tiny input dataset and helpers to write specs."""

    def __init__(self, root: Path, spark) -> None:
        from privstage.keys import LocalKeyring

        self.root = root
        self.spark = spark
        self.keyring_path = root / "keyring.json"
        self.keyring = LocalKeyring.init(self.keyring_path, ("pseudonym-key", "tenant-key"), warn=False)
        self.input = root / "data" / "visits"
        spark.createDataFrame(TINY_ROWS, TINY_SCHEMA).coalesce(1).write.parquet(str(self.input))

    def key(self, key_id: str = "pseudonym-key") -> bytes:
        return self.keyring.get(key_id).material()

    def spec_text(self, stages_yaml: str, *, name: str = "tiny") -> str:
        return f"name: {name}\nkeys: {{provider: local, path: {self.keyring_path}}}\nstages:\n{stages_yaml}"

    def write_spec(self, stages_yaml: str, *, name: str = "tiny", file: str = "pipeline.yaml") -> Path:
        path = self.root / file
        path.write_text(self.spec_text(stages_yaml, name=name), encoding="utf-8")
        return path

    def load(self, stages_yaml: str, **kw):
        from privstage.spec import load_spec

        return load_spec(self.write_spec(stages_yaml, **kw))

    def read(self, rel: str):
        return self.spark.read.parquet(str(self.root / rel))


PSEUDO_STAGE = """\
  - name: pseudo
    kind: pseudonymize
    input: {path: data/visits}
    output: {path: out/visits}
    sensitive_columns: [ssn, name, email]
    columns:
      - {column: patient_id, key_id: pseudonym-key}
      - {column: ssn, key_id: pseudonym-key}
      - {column: name, key_id: pseudonym-key, case_fold: true, bits: 128, encoding: base64url,
         output_column: name_pseudonym}
"""


@pytest.fixture()
def workspace(tmp_path: Path, spark) -> Workspace:
    return Workspace(tmp_path, spark)
