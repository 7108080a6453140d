"""Durable replay protection: consumed manifest nonces in a table of the budget ledger's database.

Why the ledger's database (SQLAlchemy: SQLite by default, PostgreSQL in production) rather than a file:
the engine already opens it for every run (``PlanEnv.ledger()``), it is the one durable store an
orchestrated deployment already backs up and shares between workers, and a primary key on
``(verifier, nonce)`` makes "consume" a single transaction that two concurrent aggregators cannot both
win (a file store would need its own locking across hosts). SQLite takes the write lock at ``BEGIN``
(the ledger's engine issues ``BEGIN IMMEDIATE``), PostgreSQL rejects the second insert.

A nonce is consumed *by* a consumer (the engine's run key). A retry of the same run that committed
nothing, or died between consuming and committing, presents the same run key and is not mistaken for
a replay; any other run presenting a consumed nonce is a replay (:class:`~privstage.errors.IntegrityError`
naming the party or aggregator). The store has the same ``check`` / ``consume`` shape as
:class:`~privstage.he.manifest.ReplayGuard`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from privstage.errors import IntegrityError, StageExecutionError

if TYPE_CHECKING:  # pragma: no cover
    from privstage.budget import BudgetLedger
    from privstage.he.manifest import Manifest

__all__ = ["NonceStore"]

_metadata = sa.MetaData()
nonces_table = sa.Table(
    "privstage_he_nonces",
    _metadata,
    sa.Column("verifier", sa.String(255), primary_key=True),
    sa.Column("nonce", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("round_id", sa.String(255), nullable=False),
    sa.Column("consumer", sa.String(512), nullable=False),
    sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=False),
)


class NonceStore:
    """Consumed nonces of one verifier (``"aggregator:<id>"``, ``"key-holder:<pipeline>"``) in the ledger's database.

    Args:
        ledger: The open budget ledger whose database holds the table (created on first use).
        verifier: Who consumes: nonces are scoped per verifier, so the key holder checking an aggregate
            does not collide with the aggregator having consumed the parties' nonces.
        consumer: The run that consumes (the engine's run key).
    """

    def __init__(self, ledger: BudgetLedger, *, verifier: str, consumer: str) -> None:
        self._engine = ledger.engine
        self._where = ledger.url
        self.verifier = verifier
        self.consumer = consumer
        self._ready = False

    def __repr__(self) -> str:
        return f"NonceStore({self._where!r}, verifier={self.verifier!r})"

    def _ensure(self) -> None:
        if not self._ready:
            with self._errors():
                _metadata.create_all(self._engine)
            self._ready = True

    def _errors(self) -> _DatabaseErrors:
        return _DatabaseErrors(self._where)

    def _consumers(self, conn: sa.Connection, nonces: Sequence[str]) -> dict[str, str]:
        rows = conn.execute(
            sa.select(nonces_table.c.nonce, nonces_table.c.consumer).where(
                nonces_table.c.verifier == self.verifier, nonces_table.c.nonce.in_(list(nonces))
            )
        ).all()
        return {r.nonce: r.consumer for r in rows}

    def check(self, manifest: Manifest) -> None:
        """Raise if another run consumed this manifest's nonce.

        Raises:
            IntegrityError: a replay, naming the party (or aggregator).
        """
        self._ensure()
        nonce = str(manifest.body.get("nonce"))
        with self._errors(), self._engine.connect() as conn:
            consumer = self._consumers(conn, [nonce]).get(nonce)
        if consumer is not None and consumer != self.consumer:
            raise IntegrityError(
                f"{manifest.role} '{manifest.owner}': contribution {nonce[:8]}… was already consumed by another "
                "run (replay)"
            )

    def consume(self, manifests: Sequence[Manifest]) -> None:
        """Record the manifests' nonces as consumed by this run, in one transaction (idempotent per run).

        Raises:
            IntegrityError: another run consumed one of them first (a replay, or a concurrent run).
        """
        self._ensure()
        by_nonce = {str(m.body.get("nonce")): m for m in manifests}
        now = datetime.now(UTC)
        try:
            with self._errors(), self._engine.begin() as conn:
                taken = self._consumers(conn, list(by_nonce))
                for nonce, consumer in taken.items():
                    if consumer != self.consumer:
                        m = by_nonce[nonce]
                        raise IntegrityError(
                            f"{m.role} '{m.owner}': contribution {nonce[:8]}… was already consumed by another "
                            "run (replay)"
                        )
                fresh = [
                    {
                        "verifier": self.verifier,
                        "nonce": nonce,
                        "owner": m.owner,
                        "round_id": str(m.body.get("round_id")),
                        "consumer": self.consumer,
                        "consumed_at": now,
                    }
                    for nonce, m in by_nonce.items()
                    if nonce not in taken
                ]
                if fresh:
                    conn.execute(sa.insert(nonces_table), fresh)
        except sa.exc.IntegrityError:  # a concurrent run inserted the same nonce first
            owners = ", ".join(sorted({f"'{m.owner}'" for m in manifests}))
            raise IntegrityError(
                f"contributions of {owners} were consumed concurrently by another run (replay)"
            ) from None

    def consumed(self) -> int:
        """How many nonces this verifier has consumed (for reports and tests)."""
        self._ensure()
        with self._errors(), self._engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(nonces_table).where(nonces_table.c.verifier == self.verifier)
                ).scalar_one()
            )


class _DatabaseErrors:
    """Database failures become retryable StageExecutionErrors without SQL or parameters."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc is not None and isinstance(exc, sa.exc.DBAPIError) and not isinstance(exc, sa.exc.IntegrityError):
            raise StageExecutionError(
                f"the HE nonce store in {self.where} failed: {type(exc.orig or exc).__name__}"
            ) from None
        return False
