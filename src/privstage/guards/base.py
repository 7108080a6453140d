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

__all__ = ["DataStats", "Guard", "GuardContext", "GuardOutcome", "GuardReport", "Phase"]

Phase = Literal["before", "after"]


class DataStats:
    """Row and null counts of one DataFrame, computed in one Spark job and cached.

    Guards and the engine share it so that a stage counts each side once.
    """

    def __init__(self, data: DataFrame) -> None:
        self.data = data
        self._rows: int | None = None
        self._nulls: dict[str, int] = {}

    def counts(self, columns: tuple[str, ...] | list[str] = ()) -> tuple[int, list[int]]:
        """(row count, null count per column)."""
        missing = [c for c in dict.fromkeys(columns) if c not in self._nulls]
        if self._rows is None or missing:
            from pyspark.sql import functions as F

            row = self.data.select(
                F.count(F.lit(1)).alias("rows"),
                *[F.count(F.col(c)).alias(f"c{i}") for i, c in enumerate(missing)],
            ).first()
            self._rows = int(row["rows"]) if row else 0
            for i, c in enumerate(missing):
                self._nulls[c] = self._rows - int(row[f"c{i}"])
        return self._rows, [self._nulls[c] for c in columns]

    @property
    def rows(self) -> int:
        return self.counts(())[0]


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
    stats: DataStats | None = None
    input_stats: DataStats | None = None

    def data_stats(self) -> DataStats:
        return self.stats if self.stats is not None else DataStats(self.data)

    def input_data_stats(self) -> DataStats:
        assert self.input_data is not None, "an after-guard needs the stage input"
        return self.input_stats if self.input_stats is not None else DataStats(self.input_data)


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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GuardReport:
        """Rebuild a report from :meth:`to_dict` output (a committed manifest)."""
        return cls(
            stage=data["stage"],
            phase=data["phase"],
            outcomes=tuple(GuardOutcome(**o) for o in data.get("outcomes", ())),
        )

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
