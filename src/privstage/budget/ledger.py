"""The durable, retry-safe privacy-budget ledger (SQLAlchemy 2: SQLite embedded, PostgreSQL in production).

A pipeline declares a total (ε, δ) per dataset and period; every run spends from it in three steps,
each one transaction::

    ledger = BudgetLedger("sqlite:///.privstage/ledger.db")      # or postgresql+psycopg://...
    ledger.declare("visits", "2026", PrivacyBudget(3, "1e-6"))    # idempotent; a different total is an error
    key = LedgerKey("clinic_visits", "dp_visits", "visits", "2026", partition="2026-03")
    held = ledger.reserve(key, plan_total)                        # BudgetExceeded when it does not fit
    if held.committed:
        publish(held.release)                                     # a retry: the first release, byte for byte
    else:
        try:
            release = noisy_release()                             # noise only after the reservation
            ledger.commit(held, release)                          # then publish the committed bytes
        except BaseException:
            ledger.release(held)                                  # frees the reservation (never a commit)
            raise
        publish(release)

Keys. A :class:`LedgerKey` names the logical release, (pipeline, stage, dataset, period[, partition]),
not the orchestrator's run id: an Airflow retry, a second DAG run for the same logical date and a
Dagster re-execution of the same partition all present the same key, so they share one spend and
one release.

Idempotence. A key spends at most once. When a key is already committed, :meth:`BudgetLedger.reserve`
returns the committed release and spends nothing. When a key holds a reservation of an earlier attempt
(that attempt died between reserve and commit), the new attempt takes the reservation over: still one
spend. The earlier attempt is fenced off: its ``commit`` raises :class:`ReservationLost`, so a
zombie cannot publish a second, differently noised figure.

Concurrency. Every transaction that changes the ledger first locks the budget row of its
(dataset, period): ``SELECT ... FOR UPDATE`` on PostgreSQL (READ COMMITTED, so the sums read after the
lock see every committed spend), ``BEGIN IMMEDIATE`` on SQLite (one writer at a time; WAL lets readers
continue). Two runs racing for the last of a budget are serialized; exactly one fits.

Exactness. ε and δ are stored as exact decimal or fraction text and summed as fractions
(:mod:`privstage.budget.values`): committed plus reserved never exceeds the declared total by rounding.

Secrets. The URL's password never appears in ``repr``, messages or logs (SQLAlchemy's
``render_as_string(hide_password=True)``); database errors are wrapped without the SQL statement or
its parameters.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url

from privstage.budget.values import Delta, Epsilon, InvalidBudgetValue, PrivacyBudget
from privstage.errors import BudgetExceeded, IntegrityError, SpecError, StageExecutionError

__all__ = [
    "SCHEMA_VERSION",
    "BudgetLedger",
    "BudgetStatus",
    "LedgerKey",
    "LedgerUnavailable",
    "Reservation",
    "ReservationLost",
    "Spend",
    "SpendState",
    "default_ledger_url",
]

log = logging.getLogger("privstage.budget")

#: Version of the ledger's tables; stored in ``privstage_ledger_meta`` on first use.
SCHEMA_VERSION = 1

SpendState = Literal["reserved", "committed", "released"]
RESERVED: SpendState = "reserved"
COMMITTED: SpendState = "committed"
RELEASED: SpendState = "released"

_MAX_NAME = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A fixed advisory-lock id (the first 8 bytes of sha256("privstage-ledger-schema"), signed): concurrent
# first uses on PostgreSQL create the tables one after the other.
_PG_SCHEMA_LOCK = int.from_bytes(hashlib.sha256(b"privstage-ledger-schema").digest()[:8], "big", signed=True)
_READ_ONLY = "privstage_read_only"


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
class LedgerUnavailable(StageExecutionError):
    """The ledger database could not be reached or did not complete a transaction. Retryable."""


class ReservationLost(StageExecutionError):
    """This attempt no longer holds its reservation (taken over, released or committed elsewhere).

    Retryable: the retry reserves again and either gets the committed release or a fresh reservation.
    """


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------
def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_NAME or _CONTROL.search(value):
        raise ValueError(f"{what} must be a string of 1 to {_MAX_NAME} printable characters, got {value!r}")
    return value


@dataclass(frozen=True)
class LedgerKey:
    """The identity of one release: at most one spend and one committed release per key.

    Args:
        pipeline: Pipeline name.
        stage: Stage name.
        dataset: The dataset whose budget is charged.
        period: The budget period charged (for example the year ``"2026"``).
        partition: The run's data partition when finer than the period (an Airflow logical date,
            a Dagster partition key such as ``"2026-03"``); ``None`` when the period is the partition.
    """

    pipeline: str
    stage: str
    dataset: str
    period: str
    partition: str | None = None

    def __post_init__(self) -> None:
        for name in ("pipeline", "stage", "dataset", "period"):
            _check_name(getattr(self, name), name)
        if self.partition is not None:
            _check_name(self.partition, "partition")

    def __str__(self) -> str:
        parts = [self.pipeline, self.stage, self.dataset, self.period]
        if self.partition is not None:
            parts.append(self.partition)
        return "/".join(quote(part, safe="-_.~:@+=, ") for part in parts)

    @classmethod
    def parse(cls, text: str) -> LedgerKey:
        """Read the text form ``pipeline/stage/dataset/period[/partition]`` (components %-escaped)."""
        parts = [unquote(part) for part in text.split("/")]
        if len(parts) not in (4, 5):
            raise ValueError(f"a ledger key has 4 or 5 '/'-separated parts, got {len(parts)}: {text!r}")
        return cls(*parts)


@dataclass(frozen=True)
class Reservation:
    """What :meth:`BudgetLedger.reserve` and :meth:`BudgetLedger.commit` return.

    ``state == "committed"`` on a fresh ``reserve`` means the key was already committed: publish
    ``release`` (the committed bytes) and draw no new noise.
    """

    key: LedgerKey
    budget: PrivacyBudget
    attempt_id: str
    state: Literal["reserved", "committed"]
    reserved_at: datetime
    committed_at: datetime | None = None
    release: bytes | None = field(default=None, repr=False)
    release_sha256: str | None = None
    took_over_from: str | None = None

    @property
    def committed(self) -> bool:
        """True when the key is committed (``release`` holds the committed bytes)."""
        return self.state == COMMITTED

    @property
    def ledger_key(self) -> str:
        """The key's text form."""
        return str(self.key)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary for manifests (the release itself is left out: its sha256 and size only)."""
        return {
            "ledger_key": str(self.key),
            "state": self.state,
            "budget": self.budget.to_dict(),
            "attempt_id": self.attempt_id,
            "reserved_at": self.reserved_at.isoformat(),
            "committed_at": self.committed_at.isoformat() if self.committed_at else None,
            "release_sha256": self.release_sha256,
            "release_size": None if self.release is None else len(self.release),
            "took_over_from": self.took_over_from,
        }


@dataclass(frozen=True)
class Spend:
    """One row of the ledger as ``privstage budget show`` lists it (without the release bytes)."""

    key: LedgerKey
    budget: PrivacyBudget
    state: SpendState
    attempt_id: str
    reserved_at: datetime
    committed_at: datetime | None
    released_at: datetime | None
    updated_at: datetime
    release_sha256: str | None
    release_size: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "ledger_key": str(self.key),
            "pipeline": self.key.pipeline,
            "stage": self.key.stage,
            "dataset": self.key.dataset,
            "period": self.key.period,
            "partition": self.key.partition,
            "epsilon": str(self.budget.epsilon),
            "delta": str(self.budget.delta),
            "state": self.state,
            "attempt_id": self.attempt_id,
            "reserved_at": self.reserved_at.isoformat(),
            "committed_at": self.committed_at.isoformat() if self.committed_at else None,
            "released_at": self.released_at.isoformat() if self.released_at else None,
            "updated_at": self.updated_at.isoformat(),
            "release_sha256": self.release_sha256,
            "release_size": self.release_size,
        }


@dataclass(frozen=True)
class BudgetStatus:
    """A declared budget with what is committed and reserved against it."""

    dataset: str
    period: str
    total: PrivacyBudget
    committed: PrivacyBudget
    reserved: PrivacyBudget

    @property
    def remaining(self) -> PrivacyBudget:
        """Total minus committed minus reserved (never below zero)."""
        return _remaining(self.total, self.committed, self.reserved)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "dataset": self.dataset,
            "period": self.period,
            "total": self.total.to_dict(),
            "committed": self.committed.to_dict(),
            "reserved": self.reserved.to_dict(),
            "remaining": self.remaining.to_dict(),
        }


def _remaining(total: PrivacyBudget, *used: PrivacyBudget) -> PrivacyBudget:
    eps = total.epsilon.fraction - sum((u.epsilon.fraction for u in used), Fraction(0))
    delta = total.delta.fraction - sum((u.delta.fraction for u in used), Fraction(0))
    return PrivacyBudget(Epsilon._from_fraction(max(eps, Fraction(0))), Delta._from_fraction(max(delta, Fraction(0))))


def _enable_wal(cursor: Any, timeout: float) -> None:
    """Switch a SQLite file to WAL. Switching needs a moment of exclusive access and SQLite does not
    wait for it (no busy handler): when connections race on a new file, retry until ``timeout``."""
    import sqlite3
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)  # library back-off while another connection holds the file


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def default_ledger_url(state_dir: str | os.PathLike[str]) -> str:
    """The embedded default: a SQLite file ``ledger.db`` in the state directory (absolute path)."""
    return f"sqlite:///{(Path(state_dir).resolve() / 'ledger.db').as_posix()}"


def resolve_ledger_url(
    state_dir: str | os.PathLike[str], url: str | None = None, environ: Mapping[str, str] | None = None
) -> str:
    """Where the ledger lives, first match wins.

    1. ``url`` (an explicit setting);
    2. ``PRIVSTAGE_LEDGER_URL``;
    3. the file named by ``PRIVSTAGE_LEDGER_URL_FILE`` (how the Helm chart mounts the URL from a
       Secret: the URL, and so its password, never sits in the environment);
    4. the embedded default, ``<state_dir>/ledger.db`` (SQLite).

    Raises:
        SpecError: the URL file cannot be read (the message names the file, never its content).
    """
    env = os.environ if environ is None else environ
    if url:
        return url
    if env.get("PRIVSTAGE_LEDGER_URL"):
        return env["PRIVSTAGE_LEDGER_URL"]
    url_file = env.get("PRIVSTAGE_LEDGER_URL_FILE")
    if url_file:
        try:
            text = Path(url_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(f"cannot read the ledger URL file {url_file} ({type(exc).__name__})") from None
        if not text:
            raise SpecError(f"the ledger URL file {url_file} is empty")
        return text
    return default_ledger_url(state_dir)


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------
metadata = sa.MetaData()

meta_table = sa.Table(
    "privstage_ledger_meta",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)

budgets_table = sa.Table(
    "privstage_budgets",
    metadata,
    sa.Column("dataset", sa.String(_MAX_NAME), primary_key=True),
    sa.Column("period", sa.String(_MAX_NAME), primary_key=True),
    sa.Column("epsilon", sa.Text, nullable=False, comment="exact decimal or fraction text"),
    sa.Column("delta", sa.Text, nullable=False, comment="exact decimal or fraction text"),
    sa.Column("declared_at", sa.DateTime(timezone=True), nullable=False),
)

spends_table = sa.Table(
    "privstage_spends",
    metadata,
    sa.Column("ledger_key", sa.String(1400), primary_key=True),
    sa.Column("pipeline", sa.String(_MAX_NAME), nullable=False),
    sa.Column("stage", sa.String(_MAX_NAME), nullable=False),
    sa.Column("dataset", sa.String(_MAX_NAME), nullable=False),
    sa.Column("period", sa.String(_MAX_NAME), nullable=False),
    sa.Column("partition_key", sa.String(_MAX_NAME), nullable=True),
    sa.Column("epsilon", sa.Text, nullable=False),
    sa.Column("delta", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempt_id", sa.String(_MAX_NAME), nullable=False),
    sa.Column("release", sa.LargeBinary, nullable=True),
    sa.Column("release_sha256", sa.String(64), nullable=True),
    sa.Column("reserved_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("committed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(
        ["dataset", "period"], ["privstage_budgets.dataset", "privstage_budgets.period"], name="privstage_spends_budget"
    ),
    sa.CheckConstraint("state IN ('reserved', 'committed', 'released')", name="privstage_spends_state"),
    sa.CheckConstraint(
        "state <> 'committed' OR (release IS NOT NULL AND release_sha256 IS NOT NULL)",
        name="privstage_spends_committed_release",
    ),
    sa.Index("privstage_spends_by_budget", "dataset", "period", "state"),
)


# ---------------------------------------------------------------------------------------------
# The ledger
# ---------------------------------------------------------------------------------------------
class BudgetLedger:
    """A durable privacy-budget ledger over SQLAlchemy 2 (see the module docstring for the protocol).

    Args:
        url: SQLAlchemy URL: ``sqlite:///path/ledger.db`` (embedded default; the folder is created) or
            ``postgresql+psycopg://user:password@host:5432/db`` (production). Tables are created on
            first use. To keep them in a PostgreSQL schema, add ``?options=-csearch_path%3D<schema>``.
        timeout: Seconds to wait for a connection (PostgreSQL) or for SQLite's write lock.

    Raises:
        SpecError: the URL cannot be parsed or names a backend other than SQLite or PostgreSQL.
    """

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        try:
            parsed: URL = make_url(url)
        except Exception:  # the parser's message quotes the URL, password included
            raise SpecError(
                "the budget ledger URL is not a valid SQLAlchemy URL "
                "(expected sqlite:///path/ledger.db or postgresql+psycopg://user@host:5432/db)"
            ) from None
        self._display_url = parsed.render_as_string(hide_password=True)
        self._secret = parsed.password if isinstance(parsed.password, str) and parsed.password else None
        self._backend = parsed.get_backend_name()
        if self._backend not in ("sqlite", "postgresql"):
            raise SpecError(
                f"the budget ledger supports sqlite and postgresql, not {self._backend!r} ({self._display_url})"
            )
        try:
            if self._backend == "sqlite":
                self._engine = self._sqlite_engine(parsed, timeout)
            else:
                self._engine = sa.create_engine(
                    parsed, pool_pre_ping=True, connect_args={"connect_timeout": max(1, int(timeout))}
                )
        except Exception as exc:  # a missing driver module, bad query options
            raise SpecError(
                f"cannot open the budget ledger {self._display_url}: {type(exc).__name__}: {self._scrub(str(exc))}"
            ) from None
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    @staticmethod
    def _sqlite_engine(url: URL, timeout: float) -> Engine:
        database = url.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": timeout})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
            cursor = dbapi_connection.cursor()
            try:
                if database and database != ":memory:":
                    _enable_wal(cursor, timeout)
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute("PRAGMA synchronous=FULL")
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # IMMEDIATE takes the write lock at BEGIN: the read-check-write of reserve cannot interleave.
            read_only = conn.get_execution_options().get(_READ_ONLY, False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The URL with its password hidden."""
        return self._display_url

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for tables that share the ledger's database, e.g. the HE nonce store)."""
        return self._engine

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._backend

    def __repr__(self) -> str:
        return f"BudgetLedger({self._display_url!r})"

    def close(self) -> None:
        """Close the ledger's connections."""
        self._engine.dispose()

    def __enter__(self) -> BudgetLedger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> None:
        raise TypeError("a BudgetLedger holds a connection pool and its URL; pass the URL and open one per process")

    def _scrub(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "***")
            text = text.replace(quote(self._secret, safe=""), "***")
        return text

    @contextmanager
    def _database_errors(self) -> Iterator[None]:
        try:
            yield
        except sa.exc.DBAPIError as exc:
            original = exc.orig if exc.orig is not None else exc
            detail = self._scrub(str(original).strip().splitlines()[0] if str(original).strip() else "")[:300]
            error = LedgerUnavailable(
                f"the budget ledger {self._display_url} failed: {type(original).__name__}"
                + (f": {detail}" if detail else "")
            )
            error.original = exc  # type: ignore[attr-defined]
            raise error from None

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            with self._database_errors(), self._engine.begin() as conn:
                if self._backend == "postgresql":
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_SCHEMA_LOCK)))
                metadata.create_all(conn)
                version = conn.execute(
                    sa.select(meta_table.c.value).where(meta_table.c.name == "schema_version")
                ).scalar_one_or_none()
                if version is None:
                    conn.execute(sa.insert(meta_table).values(name="schema_version", value=str(SCHEMA_VERSION)))
                elif version != str(SCHEMA_VERSION):
                    raise SpecError(
                        f"the budget ledger {self._display_url} has schema version {version}; this privstage "
                        f"reads version {SCHEMA_VERSION} (upgrade privstage or use another ledger)"
                    )
            self._schema_ready = True

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[Connection]:
        self._ensure_schema()
        engine = self._engine if write else self._engine.execution_options(**{_READ_ONLY: True})
        with self._database_errors(), engine.begin() as conn:
            yield conn

    def _insert(self, table: sa.Table) -> Any:
        if self._backend == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    @staticmethod
    def _total(conn: Connection, dataset: str, period: str, *, lock: bool) -> PrivacyBudget:
        query = sa.select(budgets_table.c.epsilon, budgets_table.c.delta).where(
            budgets_table.c.dataset == dataset, budgets_table.c.period == period
        )
        if lock:
            query = query.with_for_update()  # PostgreSQL row lock; SQLite holds the database write lock
        row = conn.execute(query).one_or_none()
        if row is None:
            raise SpecError(
                f"no privacy budget is declared for dataset {dataset!r}, period {period!r}; "
                "declare the total before spending from it"
            )
        return PrivacyBudget(row.epsilon, row.delta)

    @staticmethod
    def _usage(
        conn: Connection, dataset: str, period: str, *, exclude: str | None = None
    ) -> tuple[PrivacyBudget, PrivacyBudget]:
        query = sa.select(spends_table.c.epsilon, spends_table.c.delta, spends_table.c.state).where(
            spends_table.c.dataset == dataset,
            spends_table.c.period == period,
            spends_table.c.state.in_((RESERVED, COMMITTED)),
        )
        if exclude is not None:
            query = query.where(spends_table.c.ledger_key != exclude)
        sums = {RESERVED: [Fraction(0), Fraction(0)], COMMITTED: [Fraction(0), Fraction(0)]}
        for eps, delta, state in conn.execute(query):
            sums[state][0] += Epsilon(eps).fraction
            sums[state][1] += Delta(delta).fraction
        committed, reserved = (
            PrivacyBudget(Epsilon._from_fraction(eps), Delta._from_fraction(delta))
            for eps, delta in (sums[COMMITTED], sums[RESERVED])
        )
        return committed, reserved

    def _verified_release(self, row: Any) -> bytes:
        data = bytes(row.release)
        if hashlib.sha256(data).hexdigest() != row.release_sha256:
            raise IntegrityError(
                f"the committed release of ledger key {row.ledger_key} does not match its recorded sha256; "
                "the ledger row was altered"
            )
        return data

    @staticmethod
    def _key_of(row: Any) -> LedgerKey:
        return LedgerKey(row.pipeline, row.stage, row.dataset, row.period, row.partition_key)

    @staticmethod
    def _check_budget(budget: Any, what: str) -> PrivacyBudget:
        if not isinstance(budget, PrivacyBudget):
            raise TypeError(f"{what} must be a PrivacyBudget, got {type(budget).__name__}")
        if budget.epsilon.is_zero:
            raise InvalidBudgetValue(f"{what} needs an epsilon greater than 0, got {budget}")
        return budget

    # -- API ---------------------------------------------------------------------------------
    def declare(self, dataset: str, period: str, total: PrivacyBudget) -> PrivacyBudget:
        """Declare the total budget of ``dataset`` for ``period`` (idempotent for the same total).

        Args:
            dataset: Dataset name.
            period: Budget period (for example ``"2026"``).
            total: The total (ε, δ) the period may spend.

        Returns:
            The declared total.

        Raises:
            SpecError: a different total is already declared for this dataset and period.
        """
        _check_name(dataset, "dataset")
        _check_name(period, "period")
        total = self._check_budget(total, "a declared total")
        with self._transaction() as conn:
            conn.execute(
                self._insert(budgets_table)
                .values(
                    dataset=dataset,
                    period=period,
                    epsilon=str(total.epsilon),
                    delta=str(total.delta),
                    declared_at=_now(),
                )
                .on_conflict_do_nothing(index_elements=["dataset", "period"])
            )
            existing = self._total(conn, dataset, period, lock=False)
        if existing != total:
            raise SpecError(
                f"dataset {dataset!r}, period {period!r} already has a declared budget of {existing}; "
                f"it cannot be re-declared as {total} (a ledger total never changes once declared)"
            )
        return total

    def declared(self, dataset: str, period: str) -> PrivacyBudget | None:
        """The declared total of ``dataset`` for ``period``, or ``None`` when none is declared."""
        with self._transaction(write=False) as conn:
            try:
                return self._total(conn, dataset, period, lock=False)
            except SpecError:
                return None

    def remaining(self, dataset: str, period: str) -> PrivacyBudget:
        """The declared total minus everything committed or reserved (ε may be zero).

        Raises:
            SpecError: no budget is declared for this dataset and period.
        """
        with self._transaction(write=False) as conn:
            total = self._total(conn, dataset, period, lock=False)
            committed, reserved = self._usage(conn, dataset, period)
        return _remaining(total, committed, reserved)

    def reserve(self, key: LedgerKey, budget: PrivacyBudget, *, attempt_id: str | None = None) -> Reservation:
        """Reserve ``budget`` for ``key``, or return the key's committed release.

        In one transaction, under the budget's lock: if ``key`` is committed, returns a committed
        :class:`Reservation` holding the stored release (publish it; draw no new noise; nothing is
        spent). Otherwise checks that ``budget`` fits in the declared total minus what other keys
        hold (committed or reserved) and records the reservation. A live reservation of another
        attempt for the same key is taken over (``took_over_from``): the key still spends once.

        Args:
            key: The release's ledger key.
            budget: The (ε, δ) to reserve (ε > 0).
            attempt_id: This attempt's id (default: a random one). Re-calling with the same id is a no-op.

        Returns:
            A :class:`Reservation` with ``state`` ``"reserved"`` (go on: noise, then :meth:`commit`) or
            ``"committed"`` (a retry: publish ``release``).

        Raises:
            BudgetExceeded: ``budget`` does not fit; states requested, remaining and the ledger key.
            SpecError: no budget is declared for the key's dataset and period.
            LedgerUnavailable: the database failed (retryable).
        """
        if not isinstance(key, LedgerKey):
            raise TypeError(f"key must be a LedgerKey, got {type(key).__name__}")
        budget = self._check_budget(budget, "a reservation")
        attempt = _check_name(attempt_id, "attempt_id") if attempt_id is not None else uuid.uuid4().hex
        ledger_key = str(key)
        with self._transaction() as conn:
            total = self._total(conn, key.dataset, key.period, lock=True)
            row = conn.execute(sa.select(spends_table).where(spends_table.c.ledger_key == ledger_key)).one_or_none()
            if row is not None and row.state == COMMITTED:
                release = self._verified_release(row)
                log.info("ledger key %s is already committed: returning its release, spending nothing", ledger_key)
                if PrivacyBudget(row.epsilon, row.delta) != budget:
                    log.warning(
                        "ledger key %s was committed with %s; this run asked for %s (the committed release stands)",
                        ledger_key,
                        PrivacyBudget(row.epsilon, row.delta),
                        budget,
                    )
                return Reservation(
                    key=key,
                    budget=PrivacyBudget(row.epsilon, row.delta),
                    attempt_id=row.attempt_id,
                    state=COMMITTED,
                    reserved_at=_utc(row.reserved_at),  # type: ignore[arg-type]
                    committed_at=_utc(row.committed_at),
                    release=release,
                    release_sha256=row.release_sha256,
                )
            live = row is not None and row.state == RESERVED
            if live and row.attempt_id == attempt and PrivacyBudget(row.epsilon, row.delta) == budget:
                return Reservation(key, budget, attempt, RESERVED, reserved_at=_utc(row.reserved_at))  # type: ignore[arg-type]
            committed, reserved = self._usage(conn, key.dataset, key.period, exclude=ledger_key)
            remaining = _remaining(total, committed, reserved)
            if not budget.fits_within(remaining):
                raise BudgetExceeded(
                    f"privacy budget exceeded for dataset {key.dataset!r}, period {key.period!r}: "
                    f"requested {budget}, remaining {remaining} (declared {total}; committed {committed}; "
                    f"reserved by other runs {reserved}); ledger key {ledger_key}",
                    stage=key.stage,
                    requested=budget,
                    remaining=remaining,
                    ledger_key=ledger_key,
                )
            now = _now()
            values = {
                "epsilon": str(budget.epsilon),
                "delta": str(budget.delta),
                "state": RESERVED,
                "attempt_id": attempt,
                "release": None,
                "release_sha256": None,
                "reserved_at": now,
                "committed_at": None,
                "released_at": None,
                "updated_at": now,
            }
            if row is None:
                conn.execute(
                    sa.insert(spends_table).values(
                        ledger_key=ledger_key,
                        pipeline=key.pipeline,
                        stage=key.stage,
                        dataset=key.dataset,
                        period=key.period,
                        partition_key=key.partition,
                        **values,
                    )
                )
            else:
                conn.execute(sa.update(spends_table).where(spends_table.c.ledger_key == ledger_key).values(**values))
        took_over = row.attempt_id if live and row.attempt_id != attempt else None
        if took_over:
            log.warning(
                "ledger key %s: attempt %s took over the reservation of attempt %s", ledger_key, attempt, took_over
            )
        log.info("ledger key %s: reserved %s (attempt %s)", ledger_key, budget, attempt)
        return Reservation(key, budget, attempt, RESERVED, reserved_at=now, took_over_from=took_over)

    def commit(self, reservation: Reservation, release: bytes) -> Reservation:
        """Store ``release`` and mark the reservation committed, in one transaction.

        Idempotent for the same attempt and the same bytes. Checks that committed plus reserved
        does not exceed the declared total after the commit.

        Args:
            reservation: What :meth:`reserve` returned to this attempt.
            release: The serialized release, exactly the bytes that will be published.

        Returns:
            The committed :class:`Reservation` (with ``release`` and its sha256).

        Raises:
            ReservationLost: this attempt no longer holds the reservation (another attempt took it
                over or committed, or it was released); publish nothing.
            IntegrityError: the ledger would exceed its declared total (the ledger was altered).
        """
        if not isinstance(reservation, Reservation):
            raise TypeError(f"expected a Reservation, got {type(reservation).__name__}")
        if not isinstance(release, bytes | bytearray | memoryview):
            raise TypeError(f"a release is bytes, got {type(release).__name__}")
        data = bytes(release)
        digest = hashlib.sha256(data).hexdigest()
        key, ledger_key = reservation.key, reservation.ledger_key
        with self._transaction() as conn:
            total = self._total(conn, key.dataset, key.period, lock=True)
            row = conn.execute(sa.select(spends_table).where(spends_table.c.ledger_key == ledger_key)).one_or_none()
            if row is None:
                raise ReservationLost(f"ledger key {ledger_key} has no reservation to commit", stage=key.stage)
            if row.state == COMMITTED:
                if row.attempt_id == reservation.attempt_id and row.release_sha256 == digest:
                    return Reservation(
                        key,
                        PrivacyBudget(row.epsilon, row.delta),
                        row.attempt_id,
                        COMMITTED,
                        reserved_at=_utc(row.reserved_at),  # type: ignore[arg-type]
                        committed_at=_utc(row.committed_at),
                        release=self._verified_release(row),
                        release_sha256=row.release_sha256,
                    )
                raise ReservationLost(
                    f"ledger key {ledger_key} is already committed by attempt {row.attempt_id}; this attempt's "
                    "release was not recorded and must not be published (a retry returns the committed release)",
                    stage=key.stage,
                )
            if row.state != RESERVED or row.attempt_id != reservation.attempt_id:
                holder = "was released" if row.state == RELEASED else f"is now held by attempt {row.attempt_id}"
                raise ReservationLost(
                    f"the reservation of ledger key {ledger_key} by attempt {reservation.attempt_id} {holder}; "
                    "this attempt's release must not be published",
                    stage=key.stage,
                )
            committed, reserved = self._usage(conn, key.dataset, key.period)
            if not PrivacyBudget.total([committed, reserved]).fits_within(total):
                raise IntegrityError(
                    f"committing ledger key {ledger_key} would leave dataset {key.dataset!r}, period {key.period!r} "
                    f"over its declared budget {total} (committed {committed}, reserved {reserved}); "
                    "the ledger was altered outside privstage"
                )
            now = _now()
            conn.execute(
                sa.update(spends_table)
                .where(spends_table.c.ledger_key == ledger_key)
                .values(state=COMMITTED, release=data, release_sha256=digest, committed_at=now, updated_at=now)
            )
            budget = PrivacyBudget(row.epsilon, row.delta)
            reserved_at = _utc(row.reserved_at)
        log.info("ledger key %s: committed %s (release sha256 %s)", ledger_key, budget, digest)
        return Reservation(
            key,
            budget,
            reservation.attempt_id,
            COMMITTED,
            reserved_at=reserved_at,  # type: ignore[arg-type]
            committed_at=now,
            release=data,
            release_sha256=digest,
            took_over_from=reservation.took_over_from,
        )

    def release(self, reservation: Reservation) -> bool:
        """Free this attempt's reservation after a failure. Never undoes a commit.

        Safe in every clean-up path: it returns ``False`` (and changes nothing) when the key is
        committed, already released, or held by another attempt.

        Returns:
            True when this call freed the reservation.
        """
        if not isinstance(reservation, Reservation):
            raise TypeError(f"expected a Reservation, got {type(reservation).__name__}")
        return self._free(reservation.key, attempt_id=reservation.attempt_id)

    def abandon(self, key: LedgerKey) -> bool:
        """Free a live reservation whatever attempt holds it (for a run that will never be retried).

        Returns:
            True when a reservation was freed; committed spends are never touched.
        """
        if not isinstance(key, LedgerKey):
            raise TypeError(f"key must be a LedgerKey, got {type(key).__name__}")
        return self._free(key, attempt_id=None)

    def _free(self, key: LedgerKey, *, attempt_id: str | None) -> bool:
        ledger_key = str(key)
        with self._transaction() as conn:
            self._total(conn, key.dataset, key.period, lock=True)
            condition = sa.and_(spends_table.c.ledger_key == ledger_key, spends_table.c.state == RESERVED)
            if attempt_id is not None:
                condition = sa.and_(condition, spends_table.c.attempt_id == attempt_id)
            now = _now()
            freed = conn.execute(
                sa.update(spends_table).where(condition).values(state=RELEASED, released_at=now, updated_at=now)
            ).rowcount
        if freed:
            log.info("ledger key %s: reservation released", ledger_key)
        return bool(freed)

    def spend(self, key: LedgerKey) -> Spend | None:
        """The ledger row of ``key`` (any state), or ``None`` when the key never reserved."""
        rows = [s for s in self.spends(key.dataset, key.period, ledger_key=str(key))]
        return rows[0] if rows else None

    def spends(
        self, dataset: str | None = None, period: str | None = None, *, ledger_key: str | None = None
    ) -> list[Spend]:
        """Every ledger row (reserved, committed, released), optionally for one dataset and/or period.

        Ordered by dataset, period, reservation time and key; release bytes are left out.
        """
        size = sa.func.length(spends_table.c.release).label("release_size")
        columns = [c for c in spends_table.c if c.name != "release"]
        query = sa.select(*columns, size)
        if dataset is not None:
            query = query.where(spends_table.c.dataset == dataset)
        if period is not None:
            query = query.where(spends_table.c.period == period)
        if ledger_key is not None:
            query = query.where(spends_table.c.ledger_key == ledger_key)
        query = query.order_by(
            spends_table.c.dataset, spends_table.c.period, spends_table.c.reserved_at, spends_table.c.ledger_key
        )
        with self._transaction(write=False) as conn:
            rows = conn.execute(query).all()
        return [
            Spend(
                key=self._key_of(row),
                budget=PrivacyBudget(row.epsilon, row.delta),
                state=row.state,
                attempt_id=row.attempt_id,
                reserved_at=_utc(row.reserved_at),  # type: ignore[arg-type]
                committed_at=_utc(row.committed_at),
                released_at=_utc(row.released_at),
                updated_at=_utc(row.updated_at),  # type: ignore[arg-type]
                release_sha256=row.release_sha256,
                release_size=row.release_size,
            )
            for row in rows
        ]

    def budgets(self, dataset: str | None = None, period: str | None = None) -> list[BudgetStatus]:
        """Declared budgets with their committed and reserved totals, ordered by dataset and period."""
        query = sa.select(budgets_table.c.dataset, budgets_table.c.period).order_by(
            budgets_table.c.dataset, budgets_table.c.period
        )
        if dataset is not None:
            query = query.where(budgets_table.c.dataset == dataset)
        if period is not None:
            query = query.where(budgets_table.c.period == period)
        result = []
        with self._transaction(write=False) as conn:
            for ds, pd in conn.execute(query).all():
                total = self._total(conn, ds, pd, lock=False)
                committed, reserved = self._usage(conn, ds, pd)
                result.append(BudgetStatus(ds, pd, total, committed, reserved))
        return result
