"""Validated homomorphic-encryption parameters and the plan-time checks of a summation.

Nothing here imports TenSEAL: parameters are checked (and a sum is planned) before any key exists or
any data is read, so the engine can validate a spec on a machine without the ``he`` extra.

Where each bound comes from
---------------------------
**Security.** :data:`MAX_COEFF_MODULUS_BITS_128` is the 128-bit *classical* row of the
HomomorphicEncryption.org security standard (Albrecht et al., "Homomorphic Encryption Security
Standard", 2018, the tables for uniform ternary secrets, error sigma ≈ 3.2): the largest total bit length
of the coefficient modulus ``q`` (special prime included) for each ring degree ``N``. It is the
table SEAL enforces for ``sec_level_type::tc128``; checking it here gives the limit in the message
instead of SEAL's bare ``ValueError``. Each prime is at most 60 bits (SEAL's ``CoeffModulus``
limit); at least two primes are needed because the last one is the *special* prime used only for
key switching, and TenSEAL refuses contexts without key switching.

**CKKS headroom ("scale exhaustion").** A slot holding ``x`` is stored as ``round(Δ·x) + e`` modulo
the data modulus ``Q`` (all primes but the special one, minus one prime per rescale), and decodes
correctly only while ``|Δ·x + e| < Q/2``. A ``b``-bit prime is at least ``2^(b-1)``, so
``log2 Q >= Σ(b_i - 1)``; the plan demands ``|total|·Δ <= 2^(sum(b_i-1) - 2)`` (one more bit of margin
for the noise), where ``|total| <= contributions * per-contribution bound``. Violations raise
:class:`~privstage.errors.OverflowRisk` (a subclass of ``HEParameterError``).

**CKKS depth.** Every multiplication consumes one intermediate prime (rescale), whose size must equal
the scale or the scale drifts. Sums need depth 0; a declared ``depth`` d needs at least ``d + 1``
data primes, the d consumed ones of exactly ``scale_bits`` bits.

**CKKS error bound (the precision contract).** Public-key encryption of a message ``m`` yields a
decryption ``Δ·m + v`` with the noise polynomial ``v = u·e_pk + e_1 + e_2·s`` (``u``, ``s`` uniform
ternary, variance 2/3; ``e_*`` Gaussian with sigma = 3.2). Its coefficients have variance
``sigma²(4N/3 + 1)``; the encoder's rounding to integers adds ``1/12``. Decoding evaluates the polynomial
at roots of unity, so the real part of a slot's error has variance ``N/2`` times the coefficient
variance (``Σ cos²`` over ``N`` terms), divided by ``Δ²``. The ``C`` summed ciphertexts are
independent, so the variances add::

    sigma_slot = sqrt(C · N/2 · (sigma²(4N/3 + 1) + 1/12)) / Δ
    bound      = Z · sigma_slot + fp,   Z = 9

This is the central-limit (Gaussian) model of canonical-embedding noise used by Costache, Curtis,
Hales, Murphy, Ogilvie and Player, "On the precision loss in approximate homomorphic encryption"
(2022). ``P(|N(0,1)| > 9) ≈ 2·10^-19`` per slot, so even billions of slots stay inside the bound
with overwhelming probability. ``fp`` covers the double-precision FFTs of encoding and decoding:
``(C + 1) · log2(N) · sqrt(N/2) · 2^-53 · |total|`` (the FFT's relative error times the vector's
2-norm, worst case). SEAL 4 encrypts at the key level and divides by the special prime, which
shrinks the noise far below this model: the bound is conservative, and the tests check the
measured error against it. The declared ``decimals`` fix the release grid ``10^-decimals``; the plan
refuses parameters whose bound is not below half a grid step, so rounding a decryption to the grid
recovers the exact sum of on-grid inputs (parties quantize to the grid before encrypting).

**BFV overflow.** BFV sums wrap modulo the plain modulus ``t`` silently; batched slots hold signed
values in ``[-(t-1)/2, (t-1)/2]``. The plan demands ``contributions * per-contribution bound <=
(t-1)/2`` (else ``OverflowRisk``). Batching needs ``t`` prime with ``t ≡ 1 (mod 2N)``.

**BFV noise budget.** Decryption is exact while the coefficient noise stays below ``Q/(2t)``. Each
fresh ciphertext carries noise of standard deviation ``sigma·sqrt(4N/3 + 1)`` per coefficient plus at
most 1/2 from encoding (SEAL encodes ``round(Q·m/t)``, so sums that wrap modulo ``t`` add no ``Q mod t``
term); ``C`` additions add them, so the plan demands ``C · (Z·sigma·sqrt(4N/3 + 1) + 1) < 2^(Σ(b_i - 1)) / (2t)``.
SEAL's own ``invariant_noise_budget`` is larger than this bound (about 6 bits at N=8192, one 60-bit data
prime, a 40-bit t): the check is conservative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from privstage.errors import HEParameterError, OverflowRisk

__all__ = [
    "DEFAULT_BFV",
    "DEFAULT_CKKS",
    "ERROR_SIGMA",
    "MAX_COEFF_MODULUS_BITS_128",
    "MAX_PRIME_BITS",
    "TAIL_Z",
    "BFVParams",
    "CKKSParams",
    "HEParams",
    "SumPlan",
    "is_prime",
    "plan_sum",
]

#: HomomorphicEncryption.org standard, 128-bit classical security, ternary secret: N -> max log2(q).
MAX_COEFF_MODULUS_BITS_128: dict[int, int] = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
#: SEAL's largest coefficient-modulus prime.
MAX_PRIME_BITS = 60
#: SEAL's smallest prime we accept (smaller primes exist but make no sense for these schemes).
MIN_PRIME_BITS = 20
#: Standard deviation of SEAL's error distribution.
ERROR_SIGMA = 3.2
#: Tail multiplier of the noise bounds (P(|Z| > 9) ≈ 2e-19 for a standard normal).
TAIL_Z = 9.0
_MAX_DECIMALS = 12


def is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin for n < 3.3·10^24 (enough for plain moduli up to 60 bits)."""
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    for p in small:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in small:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _check_ring(n: int, bit_sizes: Sequence[int], scheme: str) -> tuple[int, ...]:
    if isinstance(n, bool) or not isinstance(n, int) or n not in MAX_COEFF_MODULUS_BITS_128:
        raise HEParameterError(
            f"{scheme}: poly_modulus_degree must be one of {sorted(MAX_COEFF_MODULUS_BITS_128)}, got {n!r}"
        )
    sizes = tuple(bit_sizes)
    if len(sizes) < 2:
        raise HEParameterError(
            f"{scheme}: coeff_mod_bit_sizes needs at least two primes (data primes, then the special prime), "
            f"got {list(sizes)}"
        )
    for b in sizes:
        if isinstance(b, bool) or not isinstance(b, int) or not MIN_PRIME_BITS <= b <= MAX_PRIME_BITS:
            raise HEParameterError(
                f"{scheme}: each coefficient-modulus prime must have {MIN_PRIME_BITS} to {MAX_PRIME_BITS} bits, "
                f"got {list(sizes)}"
            )
    limit = MAX_COEFF_MODULUS_BITS_128[n]
    if sum(sizes) > limit:
        raise HEParameterError(
            f"{scheme}: total coefficient modulus of {sum(sizes)} bits is below 128-bit security for "
            f"poly_modulus_degree {n}: the HomomorphicEncryption.org standard allows at most {limit} bits"
        )
    return sizes


@dataclass(frozen=True)
class CKKSParams:
    """CKKS parameters for approximate sums of real values.

    Attributes:
        poly_modulus_degree: Ring degree N (slots = N/2).
        coeff_mod_bit_sizes: Bit sizes of the coefficient-modulus primes; the last is the special prime.
        scale_bits: log2 of the encoding scale Δ.
        depth: Multiplicative depth the computation needs (0 for sums).
    """

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    depth: int = 0
    scheme: Literal["ckks"] = field(default="ckks", init=False)

    def __post_init__(self) -> None:
        sizes = _check_ring(self.poly_modulus_degree, self.coeff_mod_bit_sizes, "CKKS")
        object.__setattr__(self, "coeff_mod_bit_sizes", sizes)
        if isinstance(self.scale_bits, bool) or not isinstance(self.scale_bits, int) or not 1 <= self.scale_bits:
            raise HEParameterError(f"CKKS: scale_bits must be a positive integer, got {self.scale_bits!r}")
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 0:
            raise HEParameterError(f"CKKS: depth must be a non-negative integer, got {self.depth!r}")
        data = sizes[:-1]
        if len(data) < self.depth + 1:
            raise HEParameterError(
                f"CKKS depth exhaustion: depth {self.depth} needs at least {self.depth + 1} data primes "
                f"(one per rescale plus the last), coeff_mod_bit_sizes {list(sizes)} has {len(data)}"
            )
        consumed = data[len(data) - self.depth :] if self.depth else ()
        if any(b != self.scale_bits for b in consumed):
            raise HEParameterError(
                f"CKKS: the {self.depth} primes consumed by rescaling must have scale_bits={self.scale_bits} bits "
                f"each, got {list(consumed)}"
            )
        if self.headroom_bits < 1:
            raise HEParameterError(
                f"CKKS scale exhaustion: scale 2^{self.scale_bits} leaves no room for the integer part in the "
                f"{self.remaining_modulus_bits}-bit data modulus left after depth {self.depth}"
            )

    @property
    def slots(self) -> int:
        """Values per ciphertext."""
        return self.poly_modulus_degree // 2

    @property
    def scale(self) -> float:
        return float(2**self.scale_bits)

    @property
    def remaining_modulus_bits(self) -> int:
        """Guaranteed log2 of the data modulus after ``depth`` rescales (each b-bit prime is >= 2^(b-1))."""
        data = self.coeff_mod_bit_sizes[:-1]
        kept = data[: len(data) - self.depth] if self.depth else data
        return sum(b - 1 for b in kept)

    @property
    def headroom_bits(self) -> int:
        """log2 of the largest |total| that decodes correctly (one margin bit for the noise, one for the sign)."""
        return self.remaining_modulus_bits - self.scale_bits - 2

    @property
    def max_abs_total(self) -> float:
        return float(2**self.headroom_bits)

    def error_bound(self, contributions: int, max_abs_total: float) -> float:
        """Absolute error bound of one slot after summing ``contributions`` fresh ciphertexts (see module doc)."""
        n = self.poly_modulus_degree
        coeff_var = ERROR_SIGMA**2 * (4 * n / 3 + 1) + 1 / 12
        sigma = math.sqrt(contributions * n / 2 * coeff_var) / self.scale
        fp = (contributions + 1) * math.log2(n) * math.sqrt(n / 2) * 2.0**-53 * max_abs_total
        return TAIL_Z * sigma + fp

    def to_dict(self) -> dict[str, object]:
        return {
            "scheme": "ckks",
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "scale_bits": self.scale_bits,
            "depth": self.depth,
        }


@dataclass(frozen=True)
class BFVParams:
    """BFV parameters for exact sums of integers (batched: N slots per ciphertext).

    Attributes:
        poly_modulus_degree: Ring degree N (slots = N).
        coeff_mod_bit_sizes: Bit sizes of the coefficient-modulus primes; the last is the special prime.
        plain_modulus: Prime t with t ≡ 1 (mod 2N); slots hold signed values in [-(t-1)/2, (t-1)/2].
    """

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    plain_modulus: int
    scheme: Literal["bfv"] = field(default="bfv", init=False)

    def __post_init__(self) -> None:
        sizes = _check_ring(self.poly_modulus_degree, self.coeff_mod_bit_sizes, "BFV")
        object.__setattr__(self, "coeff_mod_bit_sizes", sizes)
        t = self.plain_modulus
        if isinstance(t, bool) or not isinstance(t, int) or t < 3 or t.bit_length() > MAX_PRIME_BITS:
            raise HEParameterError(f"BFV: plain_modulus must be an integer of 2 to {MAX_PRIME_BITS} bits, got {t!r}")
        if not is_prime(t) or t % (2 * self.poly_modulus_degree) != 1:
            raise HEParameterError(
                f"BFV: plain_modulus {t} must be a prime ≡ 1 (mod 2N = {2 * self.poly_modulus_degree}) for batching"
            )
        if self.noise_budget_bits(1) <= 0:
            raise HEParameterError(
                f"BFV: a {self.data_modulus_bits}-bit data modulus leaves no noise budget for a "
                f"{t.bit_length()}-bit plain modulus; add or widen data primes"
            )

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree

    @property
    def max_abs_slot(self) -> int:
        """The largest |value| a slot represents without wrapping: (t-1)/2."""
        return (self.plain_modulus - 1) // 2

    @property
    def data_modulus_bits(self) -> int:
        """Guaranteed log2 of the data modulus Q (all primes but the special one)."""
        return sum(b - 1 for b in self.coeff_mod_bit_sizes[:-1])

    def noise_budget_bits(self, contributions: int) -> float:
        """log2 of the margin between Q/(2t) and the noise bound after ``contributions`` additions."""
        n = self.poly_modulus_degree
        per_ct = TAIL_Z * ERROR_SIGMA * math.sqrt(4 * n / 3 + 1) + 1
        return self.data_modulus_bits - 1 - math.log2(self.plain_modulus) - math.log2(contributions * per_ct)

    def to_dict(self) -> dict[str, object]:
        return {
            "scheme": "bfv",
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "plain_modulus": self.plain_modulus,
        }


HEParams = CKKSParams | BFVParams

#: Sums of reals: one 60-bit data prime and a 60-bit special prime (120 of 218 bits allowed at N=8192),
#: scale 2^30: totals up to 2^27 (about 1.3·10^8) and, for 20 parties, an error bound near 10^-3.
DEFAULT_CKKS = CKKSParams(poly_modulus_degree=8192, coeff_mod_bit_sizes=(60, 60), scale_bits=30)
#: Exact integer sums: a 40-bit batching prime (slots up to ±5.5·10^11), two 60-bit data primes for noise.
DEFAULT_BFV = BFVParams(poly_modulus_degree=8192, coeff_mod_bit_sizes=(60, 60, 60), plain_modulus=1099511480321)


def params_from_dict(data: dict[str, object]) -> HEParams:
    """Rebuild parameters from :meth:`CKKSParams.to_dict` / :meth:`BFVParams.to_dict` output."""
    scheme = data.get("scheme")
    sizes = tuple(data.get("coeff_mod_bit_sizes", ()))  # type: ignore[arg-type]
    if scheme == "ckks":
        return CKKSParams(
            int(data["poly_modulus_degree"]),  # type: ignore[arg-type]
            sizes,
            int(data["scale_bits"]),  # type: ignore[arg-type]
            int(data.get("depth", 0)),  # type: ignore[arg-type]
        )
    if scheme == "bfv":
        return BFVParams(int(data["poly_modulus_degree"]), sizes, int(data["plain_modulus"]))  # type: ignore[arg-type]
    raise HEParameterError(f"unknown HE scheme {scheme!r}; expected 'ckks' or 'bfv'")


@dataclass(frozen=True)
class SumPlan:
    """The checked plan of one homomorphic summation.

    Attributes:
        params: The scheme parameters.
        parties: Number of contributing parties.
        ciphertexts_per_party: At most this many ciphertexts per party add into one slot (1 when each
            party packs each slot once, as the group packer does).
        bounds: Per measure, the declared bound on |one ciphertext's value in a slot| in release units.
        decimals: Per measure, the release grid 10^-decimals (BFV: values are integers * 10^decimals).
        error_bound: Per measure, the absolute error bound of a released total (0 for BFV).
    """

    params: HEParams
    parties: int
    ciphertexts_per_party: int
    bounds: dict[str, Decimal]
    decimals: dict[str, int]
    error_bound: dict[str, float]

    @property
    def contributions(self) -> int:
        """Ciphertexts that may add into one slot: parties * ciphertexts_per_party."""
        return self.parties * self.ciphertexts_per_party

    def max_abs_total(self, measure: str) -> Decimal:
        return self.bounds[measure] * self.contributions

    def to_dict(self) -> dict[str, object]:
        return {
            "params": self.params.to_dict(),
            "parties": self.parties,
            "ciphertexts_per_party": self.ciphertexts_per_party,
            "bounds": {k: str(v) for k, v in self.bounds.items()},
            "decimals": dict(self.decimals),
            "error_bound": dict(self.error_bound),
        }


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HEParameterError(f"{name} must be a positive integer, got {value!r}")
    return value


def plan_sum(
    params: HEParams,
    *,
    parties: int,
    bounds: dict[str, Decimal | int | str],
    decimals: dict[str, int],
    ciphertexts_per_party: int = 1,
) -> SumPlan:
    """Check that a sum of ``parties`` contributions can be computed correctly, before any key or data exists.

    Args:
        params: CKKS or BFV parameters (already checked against the security table).
        parties: Number of parties.
        bounds: Per measure, the declared bound on the absolute value a party contributes to one slot
            (for a per-group sum: the party's group total), in release units.
        decimals: Per measure, the number of decimals of the release grid (0 for counts).
        ciphertexts_per_party: Ciphertexts per party that may add into one slot.

    Returns:
        The plan, with each measure's error bound.

    Raises:
        OverflowRisk: BFV: parties * bound * 10^decimals exceeds (t-1)/2; CKKS: the total exceeds the
            scale's headroom (scale exhaustion).
        HEParameterError: CKKS: the error bound cannot meet the declared decimals; BFV: the noise budget is
            exhausted; or a bad argument.
    """
    _positive_int(parties, "parties")
    _positive_int(ciphertexts_per_party, "ciphertexts_per_party")
    if set(bounds) != set(decimals) or not bounds:
        raise HEParameterError("bounds and decimals must name the same, non-empty set of measures")
    exact_bounds: dict[str, Decimal] = {}
    checked_decimals: dict[str, int] = {}
    for name, raw in bounds.items():
        try:
            bound = Decimal(str(raw))
        except ArithmeticError:
            raise HEParameterError(f"measure '{name}': bound must be a number, got {raw!r}") from None
        if not bound.is_finite() or bound <= 0:
            raise HEParameterError(f"measure '{name}': bound must be a positive finite number, got {raw!r}")
        d = decimals[name]
        if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= _MAX_DECIMALS:
            raise HEParameterError(f"measure '{name}': decimals must be an integer in [0, {_MAX_DECIMALS}], got {d!r}")
        exact_bounds[name], checked_decimals[name] = bound, d

    contributions = parties * ciphertexts_per_party
    errors: dict[str, float] = {}
    for name, bound in exact_bounds.items():
        d = checked_decimals[name]
        total = bound * contributions
        if isinstance(params, BFVParams):
            scaled = total * (Decimal(10) ** d)
            if scaled > params.max_abs_slot:
                raise OverflowRisk(
                    f"BFV overflow risk for measure '{name}': {contributions} contributions * bound {bound} "
                    f"* 10^{d} = {scaled:f} exceeds the plain modulus limit (t-1)/2 = {params.max_abs_slot}; "
                    "use a larger plain_modulus or a smaller declared bound"
                )
            if params.noise_budget_bits(contributions) <= 0:
                raise HEParameterError(
                    f"BFV noise budget exhausted for {contributions} contributions: the data modulus "
                    f"({params.data_modulus_bits} bits) must exceed 2t times the summed noise"
                )
            errors[name] = 0.0
        else:
            if total > Decimal(params.max_abs_total):
                raise OverflowRisk(
                    f"CKKS scale exhaustion for measure '{name}': {contributions} contributions * bound {bound} "
                    f"= {total:f} exceeds the headroom 2^{params.headroom_bits} = {params.max_abs_total:.0f} at "
                    f"scale 2^{params.scale_bits}; lower scale_bits or add a data prime"
                )
            if total * (Decimal(10) ** d) >= 2**62:
                raise HEParameterError(
                    f"measure '{name}': totals of {total:f} at {d} decimals do not fit the release's 62-bit integers"
                )
            bound_err = params.error_bound(contributions, float(total))
            half_step = 0.5 * 10.0**-d
            if not bound_err < half_step:
                raise HEParameterError(
                    f"CKKS precision contract for measure '{name}' cannot be met: the error bound {bound_err:.3g} "
                    f"for {contributions} contributions at scale 2^{params.scale_bits}, N={params.poly_modulus_degree} "
                    f"must be below half the declared precision ({half_step:g} for {d} decimals); "
                    "raise scale_bits or declare fewer decimals"
                )
            errors[name] = bound_err
    return SumPlan(
        params=params,
        parties=parties,
        ciphertexts_per_party=ciphertexts_per_party,
        bounds=exact_bounds,
        decimals=checked_decimals,
        error_bound=errors,
    )
