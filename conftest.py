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
# Budget ledgers: SQLite in tmp_path, PostgreSQL in a fresh schema per test (dropped at session end).
# The URL selects the schema with libpq's options=-csearch_path=<schema>, so spawned processes reach it
# from the URL alone. PostgreSQL cases carry the ``postgres`` marker and fail (never skip) when it is down.
# ---------------------------------------------------------------------------------------------
import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402

from testsupport import Workspace  # noqa: E402  (after the environment set-up above)

POSTGRES_URL = os.environ.get("PRIVSTAGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture()
def workspace(tmp_path: Path, spark) -> Workspace:
    return Workspace(tmp_path, spark)


@pytest.fixture(scope="session")
def postgres_schema() -> Iterator[Callable[[], str]]:
    """A factory of ledger URLs, each in a new PostgreSQL schema; every schema is dropped at session end."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        pytest.fail(f"PostgreSQL is not reachable at {make_url(POSTGRES_URL)!s}: {type(exc.orig).__name__}")
    prefix = f"privstage_test_{uuid.uuid4().hex[:10]}"
    created: list[str] = []

    def new_schema() -> str:
        name = f"{prefix}_{len(created)}"
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
        created.append(name)
        url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={name}"})
        return url.render_as_string(hide_password=False)

    yield new_schema
    with engine.begin() as conn:
        for name in created:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        left = conn.execute(
            sa.text("SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE :p"),
            {"p": f"{prefix}%"},
        ).scalar_one()
    engine.dispose()
    assert left == 0, "test schemas were left behind"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty ledger store on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'ledger.db'}"
    return request.getfixturevalue("postgres_schema")()


@pytest.fixture()
def ledger(ledger_url: str):
    """An open ledger on each backend, closed after the test."""
    from privstage.budget import BudgetLedger

    with BudgetLedger(ledger_url) as opened:
        yield opened
