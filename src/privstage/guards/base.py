"""The guard protocol: checks that run before and after every stage.

A guard looks at a DataFrame (the stage input before the stage, the staged output after it) and
returns :class:`GuardOutcome` records. Outcomes are JSON-safe and hold counts and verdicts only:
never a data value of a sensitive column (and, to be safe, never any row value at all).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame

__all__ = ["Guard", "GuardContext", "GuardOutcome", "GuardReport", "Phase"]

Phase = Literal["before", "after"]


@dataclass(frozen=True)
class GuardContext:
    """What a guard may look at.

    Attributes:
        stage: stage name.
        phase: ``before`` (``data`` is the stage input) or ``after`` (``data`` is the staged output).
        data: the DataFrame to check.
        input_data: for ``after`` guards, the stage input (for guards that compare both sides).
        sensitive_columns: columns whose values must never appear in outcomes.
    """

    stage: str
    phase: Phase
    data: DataFrame
    input_data: DataFrame | None = None
    sensitive_columns: frozenset[str] = frozenset()


@dataclass(frozen=True)
class GuardOutcome:
    """One verdict. ``details`` holds only numbers, column names and expectation arguments."""

    guard: str
    check: str
    success: bool
    blocking: bool = True
    column: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GuardReport:
    """All outcomes of one phase of one stage."""

    stage: str
    phase: Phase
    outcomes: tuple[GuardOutcome, ...]

    @property
    def blocked(self) -> bool:
        return any(o.blocking and not o.success for o in self.outcomes)

    @property
    def failures(self) -> tuple[GuardOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.success)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "phase": self.phase,
            "blocked": self.blocked,
            "outcomes": [o.to_dict() for o in self.outcomes],
        }


@runtime_checkable
class Guard(Protocol):
    """Anything that checks a DataFrame and returns outcomes.

    Implementations raise :class:`~privstage.errors.StageExecutionError` when they cannot run
    (not ``GuardFailed``: the engine decides blocking from the outcomes).
    """

    name: str

    def check(self, ctx: GuardContext) -> list[GuardOutcome]:  # pragma: no cover - protocol
        ...
