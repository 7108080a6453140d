"""Slot layouts: which value goes into which slot of which ciphertext, declared in public.

Parties that never talk to each other must put the same quantity into the same slot, so the mapping
cannot depend on anyone's data. A layout is declared up front (a public, ordered set of group keys
and the measures summed per group; or, for vectors, a public length) and identified by its
``layout_id``, a SHA-256 over its canonical JSON. Every ciphertext dataset carries the id, and the
aggregator and key holder refuse a contribution packed under another layout.

Position ``p`` lives in ciphertext ``chunk = p // slots`` at slot ``p % slots``. In a
:class:`GroupLayout` the measures are laid out one after another: position ``m·K + k`` holds measure
``m`` of key ``k``. Slots past the last position are padding: they are encrypted as zeros, and the
key holder checks they decrypt to zero (a forged ciphertext rarely does).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from privstage.errors import HEParameterError, SpecError
from privstage.he.params import HEParams, SumPlan, plan_sum

__all__ = ["GroupLayout", "Layout", "Measure", "VectorLayout"]

_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


@dataclass(frozen=True)
class Measure:
    """One summed quantity.

    Attributes:
        name: Name of the measure in the release (``cost``, ``visits``).
        kind: ``"sum"`` of a column, or ``"count"`` of rows.
        column: The summed column (``None`` for counts).
        decimals: Release grid 10^-decimals; values are quantized to it before encryption (0 for counts).
        bound: Declared bound on the absolute value one party contributes to one slot (for a group:
            the party's group total), in release units. Checked by the party before it ships anything.
    """

    name: str
    kind: Literal["sum", "count"]
    bound: Decimal
    column: str | None = None
    decimals: int = 0

    def __post_init__(self) -> None:
        if not self.name or not set(self.name) <= _NAME_OK:
            raise SpecError(f"measure name {self.name!r} must be non-empty letters, digits, '_', '-' or '.'")
        if self.kind not in ("sum", "count"):
            raise SpecError(f"measure '{self.name}': kind must be 'sum' or 'count', got {self.kind!r}")
        if self.kind == "sum" and not self.column:
            raise SpecError(f"measure '{self.name}': a sum needs a column")
        if self.kind == "count" and self.decimals != 0:
            raise SpecError(f"measure '{self.name}': counts have 0 decimals")
        try:
            bound = Decimal(str(self.bound))
        except ArithmeticError:
            raise SpecError(f"measure '{self.name}': bound must be a number") from None
        if not bound.is_finite() or bound <= 0:
            raise SpecError(f"measure '{self.name}': bound must be a positive finite number")
        object.__setattr__(self, "bound", bound)
        if isinstance(self.decimals, bool) or not isinstance(self.decimals, int) or not 0 <= self.decimals <= 12:
            raise SpecError(f"measure '{self.name}': decimals must be an integer in [0, 12]")

    @classmethod
    def sum(cls, name: str, column: str, *, bound: Decimal | int | str, decimals: int = 2) -> Measure:
        return cls(name=name, kind="sum", column=column, bound=Decimal(str(bound)), decimals=decimals)

    @classmethod
    def count(cls, name: str, *, bound: int) -> Measure:
        return cls(name=name, kind="count", bound=Decimal(bound), decimals=0)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "column": self.column,
            "decimals": self.decimals,
            "bound": str(self.bound),
        }


def _layout_id(payload: dict[str, object]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class _LayoutBase:
    slots: int
    measures: tuple[Measure, ...]

    @property
    def size(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def chunks(self) -> int:
        """Ciphertexts per contribution."""
        return max(1, math.ceil(self.size / self.slots))

    def measure_named(self, name: str) -> Measure:
        for m in self.measures:
            if m.name == name:
                return m
        raise SpecError(f"layout has no measure '{name}'")

    def check_params(self, params: HEParams) -> None:
        """The layout must be built for the parameters' slot count."""
        if params.slots != self.slots:
            raise HEParameterError(
                f"layout {self.layout_id} has {self.slots} slots per ciphertext; "  # type: ignore[attr-defined]
                f"{params.scheme.upper()} with N={params.poly_modulus_degree} has {params.slots}"
            )

    def plan(self, params: HEParams, *, parties: int, ciphertexts_per_party: int = 1) -> SumPlan:
        """:func:`~privstage.he.params.plan_sum` with this layout's measures."""
        self.check_params(params)
        return plan_sum(
            params,
            parties=parties,
            bounds={m.name: m.bound for m in self.measures},
            decimals={m.name: m.decimals for m in self.measures},
            ciphertexts_per_party=ciphertexts_per_party,
        )


@dataclass(frozen=True)
class GroupLayout(_LayoutBase):
    """Per-group sums over a public, ordered key set.

    Attributes:
        keys: The declared group keys (strings), in slot order; duplicates are refused.
        measures: The measures summed per key.
        slots: Slots per ciphertext (``params.slots``).
    """

    keys: tuple[str, ...]
    measures: tuple[Measure, ...]
    slots: int

    def __post_init__(self) -> None:
        keys = tuple(self.keys)
        if not keys:
            raise SpecError("a group layout needs at least one declared key")
        if any(not isinstance(k, str) for k in keys):
            raise SpecError("group keys must be strings (declare them as they appear after a cast to string)")
        if len(set(keys)) != len(keys):
            raise SpecError("group keys must be unique")
        measures = tuple(self.measures)
        if not measures or len({m.name for m in measures}) != len(measures):
            raise SpecError("a layout needs at least one measure, with unique names")
        if isinstance(self.slots, bool) or not isinstance(self.slots, int) or self.slots < 1:
            raise SpecError("slots must be a positive integer")
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "measures", measures)

    @classmethod
    def declare(cls, keys: Iterable[str], measures: Sequence[Measure], params: HEParams) -> GroupLayout:
        return cls(keys=tuple(keys), measures=tuple(measures), slots=params.slots)

    kind: Literal["groups"] = "groups"

    @property
    def size(self) -> int:
        return len(self.keys) * len(self.measures)

    @property
    def layout_id(self) -> str:
        return _layout_id(self.to_dict())

    def position(self, measure_index: int, key_index: int) -> int:
        return measure_index * len(self.keys) + key_index

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": "groups",
            "keys": list(self.keys),
            "measures": [m.to_dict() for m in self.measures],
            "slots": self.slots,
        }


@dataclass(frozen=True)
class VectorLayout(_LayoutBase):
    """A vector of public length: each party contributes values at integer positions ``[0, length)``.

    Attributes:
        length: Number of positions.
        measure: What the vector holds (its bound applies per position and ciphertext).
        slots: Slots per ciphertext (``params.slots``).
    """

    length: int
    measure: Measure  # type: ignore[assignment]
    slots: int

    kind: Literal["vector"] = "vector"

    def __post_init__(self) -> None:
        if isinstance(self.length, bool) or not isinstance(self.length, int) or self.length < 1:
            raise SpecError("a vector layout needs a positive integer length")
        if isinstance(self.slots, bool) or not isinstance(self.slots, int) or self.slots < 1:
            raise SpecError("slots must be a positive integer")

    @classmethod
    def declare(cls, length: int, measure: Measure, params: HEParams) -> VectorLayout:
        return cls(length=length, measure=measure, slots=params.slots)

    @property
    def measures(self) -> tuple[Measure, ...]:  # type: ignore[override]
        return (self.measure,)

    @property
    def size(self) -> int:
        return self.length

    @property
    def layout_id(self) -> str:
        return _layout_id(self.to_dict())

    def to_dict(self) -> dict[str, object]:
        return {"kind": "vector", "length": self.length, "measure": self.measure.to_dict(), "slots": self.slots}


Layout = GroupLayout | VectorLayout


def layout_from_dict(data: dict[str, object]) -> Layout:
    """Rebuild a layout from its ``to_dict`` form (as carried in manifests)."""

    def measure(d: dict[str, object]) -> Measure:
        return Measure(
            name=str(d["name"]),
            kind=d["kind"],  # type: ignore[arg-type]
            column=d.get("column"),  # type: ignore[arg-type]
            decimals=int(d.get("decimals", 0)),  # type: ignore[arg-type]
            bound=Decimal(str(d["bound"])),
        )

    if data.get("kind") == "groups":
        return GroupLayout(
            keys=tuple(data["keys"]),  # type: ignore[arg-type]
            measures=tuple(measure(m) for m in data["measures"]),  # type: ignore[union-attr]
            slots=int(data["slots"]),  # type: ignore[arg-type]
        )
    if data.get("kind") == "vector":
        return VectorLayout(
            length=int(data["length"]),  # type: ignore[arg-type]
            measure=measure(data["measure"]),  # type: ignore[arg-type]
            slots=int(data["slots"]),  # type: ignore[arg-type]
        )
    raise SpecError(f"unknown layout kind {data.get('kind')!r}")
