"""What the key holder releases: checked, rounded sums, optionally with differential-privacy noise.

A raw CKKS decryption is never published: its low-order digits are the encryption noise, which is a
function of the secret key (Li and Micciancio, "On the Security of Homomorphic Encryption on
Approximate Numbers", EUROCRYPT 2021, recover the key from decryptions). :func:`release` publishes
only values on the declared grid ``10^-decimals``: :func:`~privstage.he.roles.decrypt_sums` has
already rounded each CKKS decryption to the grid and checked it lay within the plan's error bound of
it, so for on-grid inputs the released value is the exact sum and carries no noise bits. BFV sums
are exact integers already.

DP hook: ``noise`` maps a measure to a mechanism from :mod:`privstage.dp.mechanisms`. Integer
mechanisms (``GeometricNoise``, ``DiscreteGaussianNoise``) act on the exact scaled integers, so their
sensitivity is in grid units (``10^-decimals``); ``SnappingNoise`` acts on the real values in release
units and its output is put back on the grid. Budget accounting (the ledger) is the caller's: this
function spends nothing by itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from privstage.errors import SpecError
from privstage.he.layout import GroupLayout
from privstage.he.roles import DecryptedSums

__all__ = ["Release", "release"]


@dataclass(frozen=True)
class Release:
    """Released sums on each measure's grid.

    Attributes:
        scheme: ``"ckks"`` or ``"bfv"``.
        decimals: Per measure, the grid's decimals.
        scaled: Per measure, int64 array: value = scaled / 10^decimals (per group key or vector position).
        keys: The group keys (``None`` for a vector layout).
        error_bound: Per measure, the plan's error bound before rounding (0 for BFV).
        noise: Per noised measure, the mechanism's description (``NoiseDescription.to_dict()``).
        parties: Contributing party ids.
        rows: Rows over all parties.
    """

    scheme: str
    decimals: dict[str, int]
    scaled: dict[str, np.ndarray] = field(repr=False)
    keys: tuple[str, ...] | None
    error_bound: dict[str, float]
    noise: dict[str, dict[str, Any]]
    parties: tuple[str, ...]
    rows: int

    def value(self, measure: str, key: str | int) -> Decimal:
        """The released value of a measure for a group key (or a vector position), exactly."""
        index = self.keys.index(key) if self.keys is not None and isinstance(key, str) else int(key)
        return Decimal(int(self.scaled[measure][index])).scaleb(-self.decimals[measure])

    def values(self, measure: str) -> dict[str, Decimal]:
        """Group key -> value (group layouts)."""
        if self.keys is None:
            raise SpecError("values() needs a group layout; use scaled[...] for vectors")
        return {k: self.value(measure, k) for k in self.keys}

    def ratio(self, numerator: str, denominator: str, *, decimals: int = 2) -> dict[str, Decimal | None]:
        """Per group, numerator / denominator rounded half-even to ``decimals`` (None where the denominator is 0).

        For the average cost per diagnosis: ``ratio("cost", "visits")``. Computed from released (and, when
        noised, already private) values only.
        """
        out: dict[str, Decimal | None] = {}
        quantum = Decimal(1).scaleb(-decimals)
        for key, num in self.values(numerator).items():
            den = self.value(denominator, key)
            out[key] = None if den <= 0 else (num / den).quantize(quantum)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe release (values as decimal strings)."""
        body: dict[str, Any] = {
            "scheme": self.scheme,
            "parties": list(self.parties),
            "error_bound": dict(self.error_bound),
            "noise": dict(self.noise),
        }
        if self.keys is not None:
            body["values"] = {m: {k: str(v) for k, v in self.values(m).items()} for m in self.scaled}
        return body


def release(sums: DecryptedSums, *, noise: Mapping[str, Any] | None = None) -> Release:
    """Round-checked sums ready to leave the key holder, with optional DP noise per measure.

    Args:
        sums: The output of :func:`~privstage.he.roles.decrypt_sums` (already rounded to the grid and checked).
        noise: Measure name -> mechanism (``GeometricNoise`` / ``DiscreteGaussianNoise`` in grid units, or
            ``SnappingNoise`` in release units).

    Raises:
        SpecError: noise for an unknown measure, or an object that is no privstage mechanism.
    """
    from privstage.dp.mechanisms import DiscreteGaussianNoise, GeometricNoise, SnappingNoise

    scaled = {m: a.copy() for m, a in sums.scaled.items()}
    decimals = {m.name: m.decimals for m in sums.layout.measures}
    described: dict[str, dict[str, Any]] = {}
    for name, mechanism in (noise or {}).items():
        if name not in scaled:
            raise SpecError(f"noise names unknown measure '{name}'")
        if isinstance(mechanism, GeometricNoise | DiscreteGaussianNoise):
            scaled[name] = np.asarray(mechanism.add_many(scaled[name], quantity=name), dtype=np.int64)
            described[name] = mechanism.describe(resolution=_fraction_grid(decimals[name])).to_dict()
        elif isinstance(mechanism, SnappingNoise):
            pow10 = 10 ** decimals[name]
            noisy = mechanism.add_many(scaled[name] / pow10, quantity=name)
            scaled[name] = np.rint(noisy * pow10).astype(np.int64)
            described[name] = mechanism.describe().to_dict()
        else:
            raise SpecError(f"noise for '{name}' must be a privstage.dp.mechanisms mechanism")
    return Release(
        scheme=sums.plan.params.scheme,
        decimals=decimals,
        scaled=scaled,
        keys=sums.layout.keys if isinstance(sums.layout, GroupLayout) else None,
        error_bound=dict(sums.plan.error_bound),
        noise=described,
        parties=sums.parties,
        rows=sums.rows,
    )


def _fraction_grid(decimals: int) -> Any:
    from fractions import Fraction

    return Fraction(1, 10**decimals)
