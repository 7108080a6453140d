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


from testsupport import Workspace  # noqa: E402  (after the environment set-up above)


@pytest.fixture()
def workspace(tmp_path: Path, spark) -> Workspace:
    return Workspace(tmp_path, spark)
