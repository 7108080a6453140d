"""Privacy budgets: exact (ε, δ) value objects and the durable, retry-safe budget ledger.

:mod:`privstage.budget.values` holds :class:`Epsilon`, :class:`Delta` and :class:`PrivacyBudget`
(exact fractions; pydantic field types for the spec). :mod:`privstage.budget.ledger` holds
:class:`BudgetLedger` (SQLite or PostgreSQL through SQLAlchemy 2): declare a total per dataset and
period, then reserve -> commit (or release) per :class:`LedgerKey`.

The ledger's names load on first access, so spec models can use the value types without importing
SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from privstage.budget.values import Delta, Epsilon, InvalidBudgetValue, PrivacyBudget, RationalLike, to_fraction

if TYPE_CHECKING:  # pragma: no cover
    from privstage.budget.ledger import (
        SCHEMA_VERSION,
        BudgetLedger,
        BudgetStatus,
        LedgerKey,
        LedgerUnavailable,
        Reservation,
        ReservationLost,
        Spend,
        SpendState,
        default_ledger_url,
        resolve_ledger_url,
    )

__all__ = [
    "SCHEMA_VERSION",
    "BudgetLedger",
    "BudgetStatus",
    "Delta",
    "Epsilon",
    "InvalidBudgetValue",
    "LedgerKey",
    "LedgerUnavailable",
    "PrivacyBudget",
    "RationalLike",
    "Reservation",
    "ReservationLost",
    "Spend",
    "SpendState",
    "default_ledger_url",
    "resolve_ledger_url",
    "to_fraction",
]

_LEDGER_NAMES = frozenset(
    {
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
        "resolve_ledger_url",
    }
)


def __getattr__(name: str) -> Any:
    if name in _LEDGER_NAMES:
        value = getattr(importlib.import_module("privstage.budget.ledger"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'privstage.budget' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LEDGER_NAMES)
