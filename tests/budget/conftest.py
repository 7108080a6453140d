"""Budget-ledger fixtures: one ledger URL per backend.

SQLite: a file in the test's tmp_path. PostgreSQL: a fresh schema per test, all created under one
prefix for the test session and dropped at its end; the URL selects the schema with libpq's
``options=-csearch_path=<schema>`` so that spawned processes reach it from the URL alone. PostgreSQL
cases carry the ``postgres`` marker and fail (never skip) when the server is down.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from privstage.budget import BudgetLedger

POSTGRES_URL = os.environ.get("PRIVSTAGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_schema() -> Iterator[Callable[[], str]]:
    """A factory of ledger URLs, each in a new PostgreSQL schema; every schema is dropped at session end."""
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
def ledger(ledger_url: str) -> Iterator[BudgetLedger]:
    """An open ledger on each backend, closed after the test."""
    with BudgetLedger(ledger_url) as opened:
        yield opened
