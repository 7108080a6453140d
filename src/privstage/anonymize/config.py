"""Typed anonymization config: frozen pydantic models that become the ``kind: anonymize`` stage spec.

Every column of the input is named by exactly one rule (``ColumnRule``, tagged by ``action``); a column
no rule names is dropped or refused (``unlisted``), never passed through. Quasi-identifiers carry a
generalization hierarchy (tagged by ``type``) whose level the lattice search chooses; the privacy model
(``k``, ``l`` on ``sensitive``, ``max_suppression``, ``null_policy``) is validated here, before any data
is read.
"""

from __future__ import annotations

import csv
import datetime as dt
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from privstage.spec import KeyId, StrictModel, validate_key_id

__all__ = [
    "TOP",
    "AgeHierarchy",
    "AnonymizeConfig",
    "CategoricalHierarchy",
    "ColumnRule",
    "DateHierarchy",
    "DateShiftRule",
    "DropRule",
    "GeneralizeRule",
    "Hierarchy",
    "IntervalHierarchy",
    "KeepRule",
    "MaskRule",
    "PrefixHierarchy",
    "PseudonymizeRule",
    "QuasiIdentifierRule",
    "SensitiveRule",
    "SuppressRule",
    "TopBottomCodeRule",
    "load_csv_hierarchy",
]

#: The label of the top level of every hierarchy (and of values outside a hierarchy).
TOP = "*"


# --------------------------------------------------------------------------------------------
# Hierarchies. Level 0 is the finest (the value itself, or for ``age`` the age in years); the
# last level is always TOP. Values a hierarchy does not cover map to TOP at every level.
# --------------------------------------------------------------------------------------------
class IntervalHierarchy(StrictModel):
    """Numbers: level 0 the number, level i the interval ``[lo, lo + widths[i-1])`` aligned on ``lower``.

    Values outside ``[lower, upper)`` (an age of 130) and non-numbers are TOP at every level.
    """

    type: Literal["interval"]
    lower: float = Field(description="Smallest value covered (inclusive).")
    upper: float = Field(description="Largest value covered (exclusive).")
    widths: tuple[float, ...] = Field(min_length=1, description="Interval widths, one level each, increasing.")

    @model_validator(mode="after")
    def _check(self) -> IntervalHierarchy:
        if self.upper <= self.lower:
            raise ValueError("upper must be greater than lower")
        if any(w <= 0 for w in self.widths) or list(self.widths) != sorted(set(self.widths)):
            raise ValueError("widths must be positive and strictly increasing")
        for small, big in zip(self.widths, self.widths[1:], strict=False):
            if Fraction(str(big)) % Fraction(str(small)) != 0:
                raise ValueError(f"width {big} is not a multiple of {small}: levels must nest")
        return self

    @property
    def levels(self) -> int:
        return len(self.widths) + 2


class AgeHierarchy(StrictModel):
    """Dates of birth: level 0 the age in whole years at a reference date, then age bands, then TOP.

    The raw date never appears at any level. Ages outside ``[0, max_age)`` are TOP.
    """

    type: Literal["age"]
    reference_date: dt.date | None = Field(None, description="Age at this fixed date.")
    reference_column: str | None = Field(None, description="Age at this row's date column (e.g. visit_date).")
    widths: tuple[int, ...] = Field((5, 10, 20), min_length=1, description="Band widths in years, nesting.")
    max_age: int = Field(120, ge=1, le=200)

    @model_validator(mode="after")
    def _check(self) -> AgeHierarchy:
        if (self.reference_date is None) == (self.reference_column is None):
            raise ValueError("give exactly one of reference_date and reference_column")
        if any(w <= 0 for w in self.widths) or list(self.widths) != sorted(set(self.widths)):
            raise ValueError("widths must be positive and strictly increasing")
        for small, big in zip(self.widths, self.widths[1:], strict=False):
            if big % small:
                raise ValueError(f"band width {big} is not a multiple of {small}: levels must nest")
        return self

    @property
    def levels(self) -> int:
        return len(self.widths) + 2


class DateHierarchy(StrictModel):
    """Dates: level 0 the day, then the given calendar units (``month``, ``quarter``, ``year``), then TOP."""

    type: Literal["date"]
    units: tuple[Literal["month", "quarter", "year"], ...] = ("month", "year")

    @field_validator("units")
    @classmethod
    def _ordered(cls, units: tuple[str, ...]) -> tuple[str, ...]:
        order = ["month", "quarter", "year"]
        if not units or [order.index(u) for u in units] != sorted({order.index(u) for u in units}):
            raise ValueError("units must be a non-empty, increasing subset of month, quarter, year")
        return units

    @property
    def levels(self) -> int:
        return len(self.units) + 2


class PrefixHierarchy(StrictModel):
    """Codes such as ZIP codes: level i keeps the first ``keep[i-1]`` characters and pads with ``*``.

    Values that do not match ``pattern`` (a Java regular expression of the whole value) are TOP.
    """

    type: Literal["prefix"]
    keep: tuple[int, ...] = Field(min_length=1, description="Characters kept per level, decreasing.")
    pattern: str = Field(r"[0-9]{5}", description="Values of the domain (whole match); others are TOP.")
    pad: bool = Field(True, description="Pad to the value's length with '*' (94107 -> 941**).")

    @field_validator("keep")
    @classmethod
    def _decreasing(cls, keep: tuple[int, ...]) -> tuple[int, ...]:
        if any(n < 1 for n in keep) or list(keep) != sorted(set(keep), reverse=True):
            raise ValueError("keep must be positive and strictly decreasing")
        return keep

    @property
    def levels(self) -> int:
        return len(self.keep) + 2


class CategoricalHierarchy(StrictModel):
    """Categories: each value's chain of ancestors, inline or from an ARX-style CSV.

    ``values`` maps a value to its labels at levels 1.. (all chains the same length; a final TOP is
    added when missing). ``csv`` names a file whose rows are ``value;level1;...`` as ARX exports.
    Unseen values are TOP at every level.
    """

    type: Literal["categorical"]
    values: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    csv: str | None = Field(None, description="ARX hierarchy CSV (';' separated, no header).")
    delimiter: str = Field(";", min_length=1, max_length=1)

    @model_validator(mode="after")
    def _check(self) -> CategoricalHierarchy:
        if bool(self.values) == bool(self.csv):
            raise ValueError("give exactly one of values and csv")
        if self.values:
            _check_chains(self.values)
        return self

    def chains(self) -> dict[str, tuple[str, ...]]:
        """Value -> labels at levels 1..top (TOP last), read from ``csv`` when given."""
        raw = self.values or load_csv_hierarchy(self.csv, delimiter=self.delimiter)  # type: ignore[arg-type]
        depth = len(next(iter(raw.values())))
        ends_top = all(chain and chain[-1] == TOP for chain in raw.values())
        return {v: tuple(c) if ends_top else (*c, TOP) for v, c in raw.items()} if depth else {v: (TOP,) for v in raw}

    @property
    def levels(self) -> int:
        return len(next(iter(self.chains().values()))) + 1


def _check_chains(chains: dict[str, tuple[str, ...]]) -> None:
    lengths = {len(c) for c in chains.values()}
    if len(lengths) != 1:
        raise ValueError("every value needs the same number of ancestor levels")
    depth = lengths.pop()
    for level in range(depth):  # a label at one level must have one parent at the next (levels nest)
        parent: dict[str, str] = {}
        for chain in chains.values():
            if level + 1 < depth and parent.setdefault(chain[level], chain[level + 1]) != chain[level + 1]:
                raise ValueError(f"label at level {level + 1} has two parents: levels must nest")


def load_csv_hierarchy(path: str | Path, *, delimiter: str = ";") -> dict[str, tuple[str, ...]]:
    """Read an ARX hierarchy CSV (``value;level1;...;*`` per row) into value -> ancestor labels.

    Raises:
        ValueError: empty file, ragged rows, duplicate values or levels that do not nest.
    """
    with Path(path).open(encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.reader(handle, delimiter=delimiter) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"hierarchy file {Path(path).name} is empty")
    chains: dict[str, tuple[str, ...]] = {}
    for row in rows:
        value, *ancestors = (cell.strip() for cell in row)
        if value in chains:
            raise ValueError(f"hierarchy file {Path(path).name} lists a value twice")
        chains[value] = tuple(ancestors)
    _check_chains(chains)
    return chains


Hierarchy = Annotated[
    IntervalHierarchy | AgeHierarchy | DateHierarchy | PrefixHierarchy | CategoricalHierarchy,
    Field(discriminator="type"),
]


# --------------------------------------------------------------------------------------------
# Column rules
# --------------------------------------------------------------------------------------------
class _Rule(StrictModel):
    column: str = Field(min_length=1)


class _Renamable(_Rule):
    output_column: str | None = Field(None, description="Write under this name; the input name is gone.")


class KeepRule(_Rule):
    """Passed through unchanged (an explicit decision: the column is not personal data)."""

    action: Literal["keep"]


class DropRule(_Rule):
    """Removed from the output."""

    action: Literal["drop"]


class SuppressRule(_Rule):
    """Kept as a column of nulls (the schema stays, the values go)."""

    action: Literal["suppress"]


class PseudonymizeRule(_Renamable):
    """Replaced by the keyed pseudonym of :mod:`privstage.stages.pseudonymize` (HMAC-SHA-256)."""

    action: Literal["pseudonymize"]
    key_id: KeyId
    case_fold: bool = False
    encoding: Literal["hex", "base64url"] = "hex"
    bits: int = Field(256, ge=128, le=256, multiple_of=8)

    @field_validator("key_id")
    @classmethod
    def _check_key_id(cls, value: str) -> str:
        return validate_key_id(value)


class MaskRule(_Renamable):
    """Characters replaced: ``keep_last`` (all but the last N), ``fixed`` (all) or ``shape`` (A/a/9 classes).

    With ``keep_separators`` only letters and digits are masked (``123-45-6789`` -> ``***-**-6789``).
    """

    action: Literal["mask"]
    mode: Literal["keep_last", "fixed", "shape"] = "keep_last"
    keep_last: int = Field(4, ge=0, le=8)
    char: str = Field("*", min_length=1, max_length=1)
    keep_separators: bool = True


class GeneralizeRule(_Renamable):
    """Generalized to a fixed ``level`` of a hierarchy (not searched; for attributes outside the QIs)."""

    action: Literal["generalize"]
    hierarchy: Hierarchy
    level: int = Field(ge=0)

    @model_validator(mode="after")
    def _level(self) -> GeneralizeRule:
        if self.level >= self.hierarchy.levels:
            raise ValueError(f"level {self.level} is above the hierarchy's top ({self.hierarchy.levels - 1})")
        return self


class DateShiftRule(_Renamable):
    """Dates moved by a keyed offset per subject: ``HMAC(derive(key), subject) mod (2 max_days + 1) - max_days``.

    Every date of one subject moves by the same number of days, so intervals within a subject stay true.
    Rows without a subject get a null date.
    """

    action: Literal["date_shift"]
    subject_column: str
    key_id: KeyId
    max_days: int = Field(182, ge=1, le=3650)

    @field_validator("key_id")
    @classmethod
    def _check_key_id(cls, value: str) -> str:
        return validate_key_id(value)


class TopBottomCodeRule(_Renamable):
    """Numbers clamped into ``[bottom, top]`` (values beyond are recoded to the bound)."""

    action: Literal["top_bottom_code"]
    bottom: float | None = None
    top: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> TopBottomCodeRule:
        if self.bottom is None and self.top is None:
            raise ValueError("give bottom, top or both")
        if self.bottom is not None and self.top is not None and self.bottom > self.top:
            raise ValueError("bottom is greater than top")
        return self


class QuasiIdentifierRule(_Renamable):
    """A quasi-identifier: generalized by its hierarchy at the level the lattice search chooses."""

    action: Literal["quasi_identifier"]
    hierarchy: Hierarchy
    min_level: int = Field(0, ge=0, description="Never release finer than this level.")
    max_level: int | None = Field(None, ge=0, description="Never generalize beyond this level (default: TOP).")

    @model_validator(mode="after")
    def _levels(self) -> QuasiIdentifierRule:
        top = self.hierarchy.levels - 1
        high = top if self.max_level is None else self.max_level
        if not self.min_level <= high <= top:
            raise ValueError(f"need min_level <= max_level <= {top} (the hierarchy's top)")
        return self

    @property
    def level_range(self) -> tuple[int, int]:
        return self.min_level, self.hierarchy.levels - 1 if self.max_level is None else self.max_level


class SensitiveRule(_Rule):
    """The sensitive attribute of l-diversity; released unchanged."""

    action: Literal["sensitive"]


ColumnRule = Annotated[
    KeepRule
    | DropRule
    | SuppressRule
    | PseudonymizeRule
    | MaskRule
    | GeneralizeRule
    | DateShiftRule
    | TopBottomCodeRule
    | QuasiIdentifierRule
    | SensitiveRule,
    Field(discriminator="action"),
]


class AnonymizeConfig(StrictModel):
    """The whole anonymization: one rule per column and the privacy model to enforce.

    Suppressed records are removed from the release (they never form an equivalence class of
    their own) and count against ``max_suppression``.
    """

    columns: tuple[ColumnRule, ...] = Field(min_length=1)
    k: int = Field(ge=1, le=1_000_000, description="Every released QI combination occurs at least k times.")
    l: int | None = Field(None, ge=2, description="Distinct sensitive values per class (needs a sensitive rule).")  # noqa: E741
    max_suppression: float = Field(0.0, ge=0.0, lt=1.0, description="Share of input rows that may be removed.")
    null_policy: Literal["top", "suppress", "error"] = Field(
        "top",
        description="A null quasi-identifier is TOP at every level ('top'), suppresses its row ('suppress') "
        "or fails the run ('error').",
    )
    unlisted: Literal["drop", "error"] = Field("error", description="Columns no rule names: dropped or refused.")
    max_lattice_nodes: int = Field(20_000, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> AnonymizeConfig:
        names = [r.column for r in self.columns]
        if len(set(names)) != len(names):
            raise ValueError("a column has more than one rule")
        outs = [getattr(r, "output_column", None) or r.column for r in self.columns if r.action != "drop"]
        if len(set(outs)) != len(outs):
            raise ValueError("two rules write the same output column")
        if not self.quasi_identifiers:
            raise ValueError("declare at least one quasi_identifier column")
        sensitive = [r.column for r in self.columns if r.action == "sensitive"]
        if len(sensitive) > 1:
            raise ValueError("declare at most one sensitive column")
        if self.l is not None and not sensitive:
            raise ValueError("l-diversity needs a column with action: sensitive")
        lattice = 1
        for rule in self.quasi_identifiers:
            low, high = rule.level_range
            lattice *= high - low + 1
        if lattice > self.max_lattice_nodes:
            raise ValueError(f"the lattice has {lattice} nodes, above max_lattice_nodes={self.max_lattice_nodes}")
        return self

    @property
    def quasi_identifiers(self) -> tuple[QuasiIdentifierRule, ...]:
        return tuple(r for r in self.columns if isinstance(r, QuasiIdentifierRule))

    @property
    def sensitive(self) -> str | None:
        return next((r.column for r in self.columns if r.action == "sensitive"), None)

    def key_ids(self) -> frozenset[str]:
        return frozenset(r.key_id for r in self.columns if isinstance(r, PseudonymizeRule | DateShiftRule))

    def rule(self, column: str) -> ColumnRule | None:
        return next((r for r in self.columns if r.column == column), None)
