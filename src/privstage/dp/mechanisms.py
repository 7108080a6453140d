"""Noise mechanisms that resist floating-point (precision) attacks, drawing from a CSPRNG.

Every released figure gets its noise here, never from plain Laplace or Gaussian noise on raw floats
(Mironov 2012 shows how the low-order bits of such outputs reveal the true value):

* integer quantities (counts, fixed-point sums with an integer scale) get **integer** noise:
  :class:`GeometricNoise` (two-sided geometric, pure ε; diffprivlib's ``Geometric``) or
  :class:`DiscreteGaussianNoise` (discrete Gaussian, (ε, δ); Canonne, Kamath and Steinke 2020).
  The noise is drawn around zero and added to the exact Python ``int``, so large fixed-point sums
  never pass through a float.
* real quantities get :class:`SnappingNoise` (diffprivlib's ``Snapping``): declared bounds, output
  clamped to them and rounded to a power-of-two grid, so its low-order bits carry no information.

Randomness. diffprivlib's mechanisms call ``check_random_state(random_state, secure=True)``: with
``random_state=None`` they draw from ``secrets.SystemRandom`` (``os.urandom``, the kernel CSPRNG); an
``int`` seed becomes a Mersenne-Twister ``numpy.random.RandomState``, which is predictable from its
outputs. A numpy ``Generator`` (PCG64) seeded from ``os.urandom`` is just as predictable once seeded,
so it is no CSPRNG either (diffprivlib's ``Bingham`` and ``Staircase`` silently swap SystemRandom for
``np.random.default_rng()``; this module uses neither). Hence :func:`secure_rng` is a
``random.SystemRandom`` and every mechanism here uses it unless a :class:`SeededTestRng` is passed;
that class can only be built in test configuration (see :func:`seeded_rng`).

Why the discrete Gaussian is not diffprivlib's ``GaussianDiscrete``: its calibration sums the pmf term
by term (1.2 s at sensitivity 1000, 8 s at 10^4, ``ValueError`` from about 3·10^4 on, where fixed-point
sums live) and lands up to 6·10^-6 (relative) above the declared δ; its sampler draws the Laplace
proposal one Bernoulli trial at a time, O(sigma) per draw (16 ms at sigma≈4200). Here sigma is calibrated against
an upper bound of the exact δ of CKS Theorem 7 (exact sums plus integral remainders, O(1)) and drawn
with CKS's exact rational-arithmetic sampler (about 50 µs per draw at any sigma). diffprivlib's sigma is the
cross-check in the tests.

Known residue: diffprivlib's ``Geometric`` maps a 53-bit uniform through ``log``, so |noise| is capped
near 36.7·Δ/ε (a tail of mass about 2^-53 is missing); ``Snapping`` uses ``crlibm``'s correctly
rounded log when installed and ``numpy.log`` otherwise (crlibm is not in this stack).
"""

from __future__ import annotations

import functools
import math
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from numbers import Integral, Real
from typing import Any, ClassVar, Literal, TypeAlias

import numpy as np
from diffprivlib.mechanisms import Geometric, Snapping

from privstage.errors import SpecError

__all__ = [
    "SEED_ENV_VAR",
    "DiscreteGaussianNoise",
    "GeometricNoise",
    "IntegerMechanismName",
    "NoiseDescription",
    "NoiseRng",
    "SeededTestRng",
    "SnappingNoise",
    "TestConfig",
    "integer_noise",
    "noisy_count",
    "noisy_counts",
    "noisy_real",
    "noisy_reals",
    "noisy_sum_fixed_point",
    "noisy_sums_fixed_point",
    "secure_rng",
    "seeded_rng",
]

#: Environment variable that, set to exactly ``"1"``, allows seeded (non-secure) randomness.
SEED_ENV_VAR = "PRIVSTAGE_TEST_SEED_ALLOWED"

IntegerMechanismName: TypeAlias = Literal["geometric", "gaussian_discrete"]

_CI_LEVEL = 0.95
_LN_20 = math.log(20.0)  # P(|Laplace(b)| > b ln 20) = 0.05
_EXACT_TERMS = 1 << 16  # pmf terms summed exactly before an integral bound takes over
_SIGMA_DENOMINATOR = 1 << 20  # the discrete Gaussian's sigma is rounded up to a multiple of 2^-20


# ---------------------------------------------------------------------------------------------
# Randomness
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TestConfig:
    """Test-only switches; the default (all off) is the release configuration.

    Attributes:
        allow_seed: Accept :func:`seeded_rng`. Never set outside tests: a seeded generator makes
            the noise reproducible by anyone who knows or guesses the seed.
    """

    __test__: ClassVar[bool] = False  # not a pytest test class

    allow_seed: bool = False


def _seeds_allowed(config: TestConfig | None) -> bool:
    return (config is not None and config.allow_seed) or os.environ.get(SEED_ENV_VAR) == "1"


class SeededTestRng:
    """A reproducible, NOT cryptographically secure generator (MT19937) for tests only.

    Building one outside test configuration raises :class:`~privstage.errors.SpecError`, so a seed
    can never reach a release by accident.

    Args:
        seed: Non-negative integer seed.
        config: Test configuration; seeds are also allowed when ``PRIVSTAGE_TEST_SEED_ALLOWED=1``.

    Raises:
        SpecError: Not in test configuration, or the seed is not a non-negative integer.
    """

    def __init__(self, seed: int, *, config: TestConfig | None = None) -> None:
        if not _seeds_allowed(config):
            raise SpecError(
                f"seeds are accepted only in test configuration (TestConfig(allow_seed=True) or {SEED_ENV_VAR}=1); "
                "releases draw noise from the operating system's CSPRNG"
            )
        if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
            raise SpecError("seed must be a non-negative integer")
        self.seed = int(seed)
        self.random_state = np.random.RandomState(self.seed)

    def __repr__(self) -> str:
        return f"SeededTestRng(seed={self.seed})"


NoiseRng: TypeAlias = random.SystemRandom | SeededTestRng


def secure_rng() -> random.SystemRandom:
    """The release generator: ``random.SystemRandom`` (``os.urandom``), which has no seed or state to leak."""
    return random.SystemRandom()


def seeded_rng(seed: int, *, config: TestConfig | None = None) -> SeededTestRng:
    """A reproducible generator for tests; refused outside test configuration.

    Args:
        seed: Non-negative integer seed.
        config: ``TestConfig(allow_seed=True)``, or ``None`` to rely on ``PRIVSTAGE_TEST_SEED_ALLOWED=1``.

    Returns:
        A :class:`SeededTestRng` accepted by every mechanism in this module.

    Raises:
        SpecError: "seeds are accepted only in test configuration".
    """
    return SeededTestRng(seed, config=config)


def _resolve_rng(rng: object) -> NoiseRng:
    if rng is None:
        return secure_rng()
    if type(rng) is random.SystemRandom or isinstance(rng, SeededTestRng):
        return rng
    if isinstance(rng, Integral | np.random.RandomState | np.random.Generator | np.random.SeedSequence):
        raise SpecError(
            "seeds are accepted only in test configuration: pass rng=secure_rng() (or nothing) in a release, "
            "seeded_rng(seed, config=TestConfig(allow_seed=True)) in tests"
        )
    raise SpecError(f"rng must come from secure_rng() or seeded_rng(), got {type(rng).__name__}")


def _random_source(rng: NoiseRng) -> random.SystemRandom | np.random.RandomState:
    """The object diffprivlib draws from (never an int, so diffprivlib never seeds anything itself)."""
    return rng.random_state if isinstance(rng, SeededTestRng) else rng


def _randbelow(rng: NoiseRng, n: int) -> int:
    """A uniform integer in [0, n), exact for any n >= 1."""
    if not isinstance(rng, SeededTestRng):
        return rng.randrange(n)
    state = rng.random_state
    if n <= 1 << 62:
        return int(state.randint(0, n, dtype=np.int64))
    bits = n.bit_length()
    while True:  # rejection sampling over 32-bit words
        value = 0
        for _ in range((bits + 31) // 32):
            value = (value << 32) | int(state.randint(0, 1 << 32, dtype=np.uint64))
        value >>= (-bits) % 32
        if value < n:
            return value


# ---------------------------------------------------------------------------------------------
# Parameter and value checks
# ---------------------------------------------------------------------------------------------
def _real(value: object, name: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise SpecError(f"{name} must be a number, got {type(value).__name__}")
    if isinstance(value, Integral):
        return Fraction(int(value))
    as_float = float(value)
    if not math.isfinite(as_float):
        raise SpecError(f"{name} must be finite")
    return Fraction(value) if isinstance(value, Fraction) else Fraction(as_float)


def _float_down(value: Fraction) -> float:
    """The largest float <= value (so a rounded ε or δ never exceeds the declared one)."""
    result = float(value)
    return math.nextafter(result, -math.inf) if Fraction(result) > value else result


def _float_up(value: Fraction) -> float:
    result = float(value)
    return math.nextafter(result, math.inf) if Fraction(result) < value else result


def _check_epsilon(epsilon: object) -> float:
    exact = _real(epsilon, "epsilon")
    if exact <= 0:
        raise SpecError("epsilon must be > 0")
    result = _float_down(exact)
    if result <= 0:
        raise SpecError("epsilon is too small to represent")
    return result


def _check_delta(delta: object) -> float:
    exact = _real(delta, "delta")
    if not 0 <= exact < 1:
        raise SpecError("delta must be in [0, 1)")
    return _float_down(exact)


def _check_level(level: float) -> float:
    if isinstance(level, bool) or not isinstance(level, Real) or not 0 < float(level) < 1:
        raise ValueError(f"a confidence level is strictly between 0 and 1, got {level!r}")
    return float(level)


def _check_int_param(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise SpecError(f"{name} must be an integer (scale fixed-point quantities first), got {type(value).__name__}")
    if value <= 0:
        raise SpecError(f"{name} must be > 0")
    return int(value)


def _non_finite_word(value: float) -> str:
    return "NaN" if math.isnan(value) else "infinite"


def _check_integer_value(value: object, quantity: str) -> int:
    if isinstance(value, float | np.floating) and not math.isfinite(value):
        raise ValueError(f"{quantity} is {_non_finite_word(value)}; it must not reach the noise step")
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{quantity} must be an integer, got {type(value).__name__}")
    return int(value)


def _integer_values(values: Iterable[Any] | np.ndarray, quantity: str) -> list[int]:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{quantity} must be one-dimensional")
    if array.dtype.kind in "iu":
        return [int(v) for v in array.tolist()]
    items = array.tolist()
    for i, v in enumerate(items):  # report a NaN or infinity first: it is the likelier cause of a float here
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{quantity}[{i}] is {_non_finite_word(v)}; it must not reach the noise step")
    return [_check_integer_value(v, f"{quantity}[{i}]") for i, v in enumerate(items)]


def _check_real_value(value: object, quantity: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{quantity} must be a real number, got {type(value).__name__}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{quantity} is {_non_finite_word(result)}; it must not reach the noise step")
    return result


# ---------------------------------------------------------------------------------------------
# Description for the accuracy report
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoiseDescription:
    """What the accuracy report states per released cell; computed from parameters, never from data.

    Attributes:
        mechanism: ``"geometric"``, ``"gaussian_discrete"`` or ``"snapping"``.
        epsilon: ε the mechanism uses (the largest float not above the declared ε).
        delta: δ the mechanism uses (0 for pure-ε mechanisms).
        sensitivity: Sensitivity in release units (``Fraction`` for integer mechanisms).
        scale: Noise scale in release units: geometric Δ/ε (pmf ∝ exp(-|k|·ε/Δ)); discrete Gaussian sigma
            (pmf ∝ exp(-k²/(2·sigma²))); snapping the Laplace scale Δ/ε_eff before snapping.
        ci95_half_width: h with P(|noise| <= h) >= 0.95. Smallest such h for integer mechanisms;
            for snapping b·ln 20 + grid/2 (conservative), capped at upper - lower.
        resolution: Step of the grid released values lie on (1 for counts, 1/scale for fixed point,
            the power-of-two snapping grid in release units).
    """

    mechanism: Literal["geometric", "gaussian_discrete", "snapping"]
    epsilon: float
    delta: float
    sensitivity: Fraction | float
    scale: float
    ci95_half_width: Fraction | float
    resolution: Fraction | float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (floats; exact fractions also as strings)."""
        out: dict[str, Any] = {"mechanism": self.mechanism, "epsilon": self.epsilon, "delta": self.delta}
        for name in ("sensitivity", "scale", "ci95_half_width", "resolution"):
            value = getattr(self, name)
            out[name] = float(value)
            if isinstance(value, Fraction):
                out[f"{name}_exact"] = str(value)
        return out


# ---------------------------------------------------------------------------------------------
# Two-sided geometric (diffprivlib)
# ---------------------------------------------------------------------------------------------
class _IntegerNoise:
    """Adds integer noise draws to exact integers (counts, fixed-point sums)."""

    def noise(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def add(self, value: int, *, quantity: str = "value") -> int:
        """``value`` plus one noise draw, in exact integer arithmetic."""
        return _check_integer_value(value, quantity) + self.noise()

    def add_many(self, values: Iterable[Any] | np.ndarray, *, quantity: str = "values") -> list[int]:
        """Independent noise on each value (one group per element)."""
        return [v + self.noise() for v in _integer_values(values, quantity)]


class GeometricNoise(_IntegerNoise):
    """Two-sided geometric noise, P(k) = (1-q)/(1+q)·q^|k| with q = exp(-ε/Δ): ε-DP for integer sensitivity Δ.

    Args:
        epsilon: ε > 0.
        sensitivity: Integer sensitivity Δ > 0 (in the integer units being noised).
        rng: :func:`secure_rng` (default) or a :class:`SeededTestRng`.

    Raises:
        SpecError: Bad ε, sensitivity or rng.
    """

    name: ClassVar[str] = "geometric"

    def __init__(self, *, epsilon: Real | float | Fraction, sensitivity: int, rng: NoiseRng | None = None) -> None:
        self.epsilon = _check_epsilon(epsilon)
        self.delta = 0.0
        self.sensitivity = _check_int_param(sensitivity, "sensitivity")
        self.rng = _resolve_rng(rng)
        self._mechanism = Geometric(
            epsilon=self.epsilon, sensitivity=self.sensitivity, random_state=_random_source(self.rng)
        )
        self.q = math.exp(-self.epsilon / self.sensitivity)
        self.scale = self.sensitivity / self.epsilon
        self.ci95_half_width = _geometric_half_width(self.q)

    @property
    def random_source(self) -> random.SystemRandom | np.random.RandomState:
        """The generator diffprivlib draws from (for audits: SystemRandom in a release)."""
        return self._mechanism._rng

    def half_width(self, level: float = _CI_LEVEL) -> int:
        """Smallest h with P(|noise| > h) <= 1 - level (integer units)."""
        return _geometric_half_width(self.q, _check_level(level))

    def pmf(self, k: int) -> float:
        """P(noise = k)."""
        return (1 - self.q) / (1 + self.q) * self.q ** abs(k)

    def noise(self) -> int:
        """One integer noise draw."""
        return int(self._mechanism.randomise(0))

    def describe(self, *, resolution: Fraction = Fraction(1)) -> NoiseDescription:
        """The report entry; ``resolution`` converts integer units to release units (1/scale for fixed point)."""
        return NoiseDescription(
            mechanism="geometric",
            epsilon=self.epsilon,
            delta=0.0,
            sensitivity=self.sensitivity * resolution,
            scale=self.scale * float(resolution),
            ci95_half_width=self.ci95_half_width * resolution,
            resolution=resolution,
        )


def _geometric_half_width(q: float, level: float = _CI_LEVEL) -> int:
    """Smallest h with P(|Z| > h) = 2q^(h+1)/(1+q) <= 1 - level (0.05 by default)."""
    if q == 0.0:  # ε/Δ beyond about 745: q underflows and every draw is 0
        return 0
    tail = (1 - level) * (1 + q) / 2
    h = max(0, math.ceil(math.log(tail) / math.log(q)) - 1)
    while h > 0 and 2 * q**h / (1 + q) <= 1 - level:
        h -= 1
    while 2 * q ** (h + 1) / (1 + q) > 1 - level:
        h += 1
    return h


# ---------------------------------------------------------------------------------------------
# Discrete Gaussian (CKS 2020): calibration and exact sampler
# ---------------------------------------------------------------------------------------------
def _gauss_integral(lo: float, hi: float, sigma: float) -> float:
    """∫_lo^hi exp(-x²/(2·sigma²)) dx for 0 <= lo <= hi (hi may be inf)."""
    r = sigma * math.sqrt(2.0)
    upper = 0.0 if math.isinf(hi) else math.erfc(hi / r)
    return sigma * math.sqrt(math.pi / 2) * (math.erfc(lo / r) - upper)


def _gauss_sum_bound(a: int, b: float, sigma: float, *, upper: bool) -> float | None:
    """Upper or lower bound on Σ_{x=a}^{b} exp(-x²/(2·sigma²)) (b may be inf), or None when not bounded here.

    The first terms are summed exactly; the remainder, where the summand is decreasing, is bounded by
    integrals: ∫_c^{b+1} f <= Σ_{x=c}^{b} f(x) <= ∫_{c-1}^{b} f for c >= 1.
    """
    last_exact = min(b, a + _EXACT_TERMS - 1)
    xs = np.arange(a, int(last_exact) + 1, dtype=np.float64)
    total = float(np.exp(-xs * xs / (2 * sigma * sigma)).sum())
    c = a + _EXACT_TERMS
    if b < c:
        return total
    if c < 1:
        return None
    if upper:
        return total + _gauss_integral(c - 1, b, sigma)
    return total + _gauss_integral(c, b + 1, sigma)


def _gauss_norm_lower(sigma: float) -> float:
    """Lower bound on Σ_{k∈Z} exp(-k²/(2·sigma²)) (Poisson summation: sigma√(2π)·(1 + 2Σ_j exp(-2π²·sigma²·j²)))."""
    if sigma < 1:
        ks = np.arange(1, 64, dtype=np.float64)
        return 1 + 2 * float(np.exp(-ks * ks / (2 * sigma * sigma)).sum())
    return sigma * math.sqrt(2 * math.pi) * (1 + 2 * math.exp(-2 * math.pi**2 * sigma**2))


def _discrete_gaussian_delta_bound(sigma: float, epsilon: float, sensitivity: int) -> float:
    """Upper bound on the smallest δ for which N_Z(0, sigma²) is (ε, δ)-DP at sensitivity Δ (CKS Theorem 7).

    δ = P[L <= X < U] - (e^ε - 1)·P[X >= U] with L = ⌊ε·sigma²/Δ - Δ/2⌋ + 1, U = ⌊ε·sigma²/Δ + Δ/2⌋ + 1.
    """
    s2 = sigma * sigma
    lower_limit = math.floor(epsilon * s2 / sensitivity - sensitivity / 2) + 1
    upper_limit = math.floor(epsilon * s2 / sensitivity + sensitivity / 2) + 1
    window = _gauss_sum_bound(lower_limit, upper_limit - 1, sigma, upper=True)
    tail = _gauss_sum_bound(upper_limit, math.inf, sigma, upper=False)
    if window is None or tail is None:
        return 1.0
    return max(0.0, window - math.expm1(epsilon) * tail) / _gauss_norm_lower(sigma)


@functools.lru_cache(maxsize=256)
def _discrete_gaussian_sigma(epsilon: float, delta: float, sensitivity: int) -> Fraction:
    """Smallest sigma (on a 2^-20 grid, rounded up) whose δ bound is within the declared δ."""
    target = delta * (1 - 1e-9)  # margin for floating-point error in the bound itself

    def private(sigma: float) -> bool:
        return _discrete_gaussian_delta_bound(sigma, epsilon, sensitivity) <= target

    hi = float(sensitivity)
    while not private(hi):
        hi *= 2
    lo = hi / 2
    while private(lo):
        hi, lo = lo, lo / 2
    for _ in range(64):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if private(mid):
            hi = mid
        else:
            lo = mid
    sigma = Fraction(math.ceil(hi * _SIGMA_DENOMINATOR), _SIGMA_DENOMINATOR)
    if not private(float(sigma)):  # pragma: no cover - rounding up only adds noise
        raise AssertionError("discrete Gaussian calibration is not monotone")
    return sigma


@functools.lru_cache(maxsize=256)
def _discrete_gaussian_half_width(sigma: float, level: float = _CI_LEVEL) -> int:
    """Smallest h with P(|X| > h) <= 1 - level for X ~ N_Z(0, sigma²), using an upper bound of the tail."""
    norm = _gauss_norm_lower(sigma)

    def covered(h: int) -> bool:
        tail = _gauss_sum_bound(h + 1, math.inf, sigma, upper=True)
        return tail is not None and 2 * tail / norm <= 1 - level

    hi = max(1, math.ceil(2.5 * sigma))
    while not covered(hi):
        hi *= 2
    lo = -1  # invariant: covered(hi), not covered(lo) (h = -1 covers nothing)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if covered(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _bernoulli_exp(num: int, den: int, rng: NoiseRng) -> bool:
    """Bernoulli(exp(-num/den)) for num/den >= 0, exact (CKS Algorithm 1)."""
    while num > den:
        if not _bernoulli_exp_at_most_one(1, 1, rng):
            return False
        num -= den
    return _bernoulli_exp_at_most_one(num, den, rng)


def _bernoulli_exp_at_most_one(num: int, den: int, rng: NoiseRng) -> bool:
    k = 1
    while _randbelow(rng, den * k) < num:  # Bernoulli(num / (den·k))
        k += 1
    return k % 2 == 1


def _geometric_exp(t: int, rng: NoiseRng) -> int:
    """P(X = k) ∝ exp(-k/t), k >= 0, in O(1) expected draws (CKS Algorithm 2)."""
    while True:
        u = _randbelow(rng, t)
        if _bernoulli_exp_at_most_one(u, t, rng):
            break
    v = 0
    while _bernoulli_exp_at_most_one(1, 1, rng):
        v += 1
    return v * t + u


def _discrete_laplace(t: int, rng: NoiseRng) -> int:
    while True:
        negative = _randbelow(rng, 2) == 1
        magnitude = _geometric_exp(t, rng)
        if not (negative and magnitude == 0):
            return -magnitude if negative else magnitude


def _discrete_gaussian(sigma2: Fraction, rng: NoiseRng) -> int:
    """One draw of N_Z(0, sigma²), exact rational arithmetic (CKS Algorithm 3)."""
    p, q = sigma2.numerator, sigma2.denominator
    t = math.isqrt(p // q) + 1
    while True:
        y = _discrete_laplace(t, rng)
        # accept with probability exp(-(|y| - sigma²/t)² / (2·sigma²)) = exp(-(|y|·q·t - p)² / (2·p·q·t²))
        a = abs(y) * q * t - p
        if _bernoulli_exp(a * a, 2 * p * q * t * t, rng):
            return y


class DiscreteGaussianNoise(_IntegerNoise):
    """Discrete Gaussian noise N_Z(0, sigma²), pmf ∝ exp(-k²/(2·sigma²)): (ε, δ)-DP for integer sensitivity Δ.

    sigma is the smallest (on a 2^-20 grid) for which CKS Theorem 7 gives δ at most the declared δ.

    Args:
        epsilon: ε > 0.
        delta: 0 < δ < 1.
        sensitivity: Integer sensitivity Δ > 0.
        rng: :func:`secure_rng` (default) or a :class:`SeededTestRng`.

    Raises:
        SpecError: Bad ε, δ, sensitivity or rng.
    """

    name: ClassVar[str] = "gaussian_discrete"

    def __init__(
        self,
        *,
        epsilon: Real | float | Fraction,
        delta: Real | float | Fraction,
        sensitivity: int,
        rng: NoiseRng | None = None,
    ) -> None:
        self.epsilon = _check_epsilon(epsilon)
        self.delta = _check_delta(delta)
        if self.delta == 0:
            raise SpecError("gaussian_discrete needs delta > 0 (use geometric for pure epsilon)")
        self.sensitivity = _check_int_param(sensitivity, "sensitivity")
        self.rng = _resolve_rng(rng)
        self.sigma = _discrete_gaussian_sigma(self.epsilon, self.delta, self.sensitivity)
        self._sigma2 = self.sigma * self.sigma
        self.scale = float(self.sigma)
        self.ci95_half_width = _discrete_gaussian_half_width(self.scale)

    @property
    def random_source(self) -> random.SystemRandom | np.random.RandomState:
        """The generator the sampler draws from (for audits: SystemRandom in a release)."""
        return _random_source(self.rng)

    def noise(self) -> int:
        """One integer noise draw."""
        return _discrete_gaussian(self._sigma2, self.rng)

    def half_width(self, level: float = _CI_LEVEL) -> int:
        """Smallest h with P(|noise| > h) <= 1 - level (integer units; from an upper bound of the tail)."""
        return _discrete_gaussian_half_width(self.scale, _check_level(level))

    def describe(self, *, resolution: Fraction = Fraction(1)) -> NoiseDescription:
        """The report entry; ``resolution`` converts integer units to release units (1/scale for fixed point)."""
        return NoiseDescription(
            mechanism="gaussian_discrete",
            epsilon=self.epsilon,
            delta=self.delta,
            sensitivity=self.sensitivity * resolution,
            scale=self.scale * float(resolution),
            ci95_half_width=self.ci95_half_width * resolution,
            resolution=resolution,
        )


def integer_noise(
    mechanism: IntegerMechanismName,
    *,
    epsilon: Real | float | Fraction,
    delta: Real | float | Fraction = 0,
    sensitivity: int,
    rng: NoiseRng | None = None,
) -> GeometricNoise | DiscreteGaussianNoise:
    """The integer mechanism named in a spec.

    Args:
        mechanism: ``"geometric"`` (pure ε; δ must be 0) or ``"gaussian_discrete"`` (δ > 0).
        epsilon: ε > 0.
        delta: δ in [0, 1).
        sensitivity: Integer sensitivity Δ > 0.
        rng: :func:`secure_rng` (default) or a :class:`SeededTestRng`.

    Raises:
        SpecError: Unknown mechanism, or parameters it does not accept.
    """
    if mechanism == "geometric":
        if _check_delta(delta) != 0:
            raise SpecError("geometric is a pure-epsilon mechanism: delta must be 0 (δ would be spent for nothing)")
        return GeometricNoise(epsilon=epsilon, sensitivity=sensitivity, rng=rng)
    if mechanism == "gaussian_discrete":
        return DiscreteGaussianNoise(epsilon=epsilon, delta=delta, sensitivity=sensitivity, rng=rng)
    raise SpecError(f"unknown integer mechanism {mechanism!r}; expected 'geometric' or 'gaussian_discrete'")


# ---------------------------------------------------------------------------------------------
# Snapping (diffprivlib)
# ---------------------------------------------------------------------------------------------
class SnappingNoise:
    """Mironov's snapping mechanism for bounded real values: ε-DP, output on a power-of-two grid in [lower, upper].

    Args:
        epsilon: ε > 0.
        lower: Declared lower bound of the released quantity (never derived from data).
        upper: Declared upper bound, > lower.
        sensitivity: Sensitivity Δ > 0 in the quantity's units.
        rng: :func:`secure_rng` (default) or a :class:`SeededTestRng`.

    Raises:
        SpecError: Missing or bad bounds, bad ε, sensitivity or rng.
    """

    name: ClassVar[str] = "snapping"

    def __init__(
        self,
        *,
        epsilon: Real | float | Fraction,
        lower: Real | float | None,
        upper: Real | float | None,
        sensitivity: Real | float | Fraction,
        rng: NoiseRng | None = None,
    ) -> None:
        if lower is None or upper is None:
            raise SpecError("snapping needs declared lower and upper bounds; bounds are never derived from the data")
        self.epsilon = _check_epsilon(epsilon)
        exact_lower, exact_upper = _real(lower, "lower bound"), _real(upper, "upper bound")
        if not exact_lower < exact_upper:
            raise SpecError("lower bound must be < upper bound")
        exact_sensitivity = _real(sensitivity, "sensitivity")
        if exact_sensitivity <= 0:
            raise SpecError("sensitivity must be > 0")
        self.lower, self.upper = _float_down(exact_lower), _float_up(exact_upper)
        self.sensitivity = _float_up(exact_sensitivity)
        self.rng = _resolve_rng(rng)
        self._mechanism = Snapping(
            epsilon=self.epsilon,
            sensitivity=self.sensitivity,
            lower=self.lower,
            upper=self.upper,
            random_state=_random_source(self.rng),
        )
        self.effective_epsilon = float(self._mechanism.effective_epsilon())
        unit_scale = 1.0 / self.effective_epsilon
        self.scale = self.sensitivity * unit_scale  # Laplace scale in the quantity's units
        self.grid = self.sensitivity * float(self._mechanism._get_nearest_power_of_2(unit_scale))
        self.ci95_half_width = min(self.scale * _LN_20 + self.grid / 2, self.upper - self.lower)

    @property
    def random_source(self) -> random.SystemRandom | np.random.RandomState:
        """The generator diffprivlib draws from (for audits: SystemRandom in a release)."""
        return self._mechanism._rng

    def add(self, value: float, *, quantity: str = "value") -> float:
        """The snapped noisy value of ``value``, which must lie within the declared bounds."""
        checked = _check_real_value(value, quantity)
        if not self.lower <= checked <= self.upper:
            raise ValueError(f"{quantity} is outside the declared bounds; clamp it before noising")
        return float(self._mechanism.randomise(checked))

    def add_many(self, values: Iterable[Any] | np.ndarray, *, quantity: str = "values") -> np.ndarray:
        """Independent snapped noise on each value; float64 array."""
        array = np.asarray(values)
        if array.ndim != 1:
            raise ValueError(f"{quantity} must be one-dimensional")
        return np.array([self.add(v, quantity=f"{quantity}[{i}]") for i, v in enumerate(array.tolist())])

    def describe(self) -> NoiseDescription:
        """The report entry (release units)."""
        return NoiseDescription(
            mechanism="snapping",
            epsilon=self.epsilon,
            delta=0.0,
            sensitivity=self.sensitivity,
            scale=self.scale,
            ci95_half_width=self.ci95_half_width,
            resolution=self.grid,
        )


# ---------------------------------------------------------------------------------------------
# Convenience functions for the dp_aggregate stage
# ---------------------------------------------------------------------------------------------
def noisy_count(
    value: int,
    *,
    epsilon: Real | float | Fraction,
    sensitivity: int = 1,
    delta: Real | float | Fraction = 0,
    mechanism: IntegerMechanismName = "geometric",
    rng: NoiseRng | None = None,
) -> int:
    """A count plus integer noise (geometric by default). Negative results are not clipped here.

    Raises:
        SpecError: Bad parameters. ValueError / TypeError: ``value`` is NaN, infinite or not an integer.
    """
    noise = integer_noise(mechanism, epsilon=epsilon, delta=delta, sensitivity=sensitivity, rng=rng)
    return noise.add(value, quantity="count")


def noisy_counts(
    values: Iterable[Any] | np.ndarray,
    *,
    epsilon: Real | float | Fraction,
    sensitivity: int = 1,
    delta: Real | float | Fraction = 0,
    mechanism: IntegerMechanismName = "geometric",
    rng: NoiseRng | None = None,
) -> np.ndarray:
    """Counts of many groups, each with independent integer noise; int64 array."""
    noise = integer_noise(mechanism, epsilon=epsilon, delta=delta, sensitivity=sensitivity, rng=rng)
    return np.array(noise.add_many(values, quantity="counts"), dtype=np.int64)


def noisy_sum_fixed_point(
    value_scaled: int,
    *,
    scale: int,
    epsilon: Real | float | Fraction,
    delta: Real | float | Fraction = 0,
    sensitivity_scaled: int,
    mechanism: IntegerMechanismName = "geometric",
    rng: NoiseRng | None = None,
) -> Fraction:
    """A fixed-point sum (``value_scaled`` = exact sum * ``scale``) plus integer noise, as an exact Fraction.

    Args:
        value_scaled: The exact scaled integer sum.
        scale: Fixed-point scale (e.g. 100 for cents); the result is ``(value_scaled + noise) / scale``.
        epsilon: ε > 0.
        delta: δ (0 for geometric, > 0 for gaussian_discrete).
        sensitivity_scaled: Sensitivity in scaled integer units.
        mechanism: ``"geometric"`` or ``"gaussian_discrete"``.
        rng: :func:`secure_rng` (default) or a :class:`SeededTestRng`.
    """
    fixed_scale = _check_int_param(scale, "scale")
    noise = integer_noise(mechanism, epsilon=epsilon, delta=delta, sensitivity=sensitivity_scaled, rng=rng)
    return Fraction(noise.add(value_scaled, quantity="scaled sum"), fixed_scale)


def noisy_sums_fixed_point(
    values_scaled: Iterable[Any] | np.ndarray,
    *,
    scale: int,
    epsilon: Real | float | Fraction,
    delta: Real | float | Fraction = 0,
    sensitivity_scaled: int,
    mechanism: IntegerMechanismName = "geometric",
    rng: NoiseRng | None = None,
) -> list[Fraction]:
    """:func:`noisy_sum_fixed_point` over many groups (independent noise per group)."""
    fixed_scale = _check_int_param(scale, "scale")
    noise = integer_noise(mechanism, epsilon=epsilon, delta=delta, sensitivity=sensitivity_scaled, rng=rng)
    return [Fraction(v, fixed_scale) for v in noise.add_many(values_scaled, quantity="scaled sums")]


def noisy_real(
    value: float,
    *,
    epsilon: Real | float | Fraction,
    lower: Real | float | None,
    upper: Real | float | None,
    sensitivity: Real | float | Fraction,
    rng: NoiseRng | None = None,
) -> float:
    """A bounded real value through the snapping mechanism (see :class:`SnappingNoise`)."""
    noise = SnappingNoise(epsilon=epsilon, lower=lower, upper=upper, sensitivity=sensitivity, rng=rng)
    return noise.add(value)


def noisy_reals(
    values: Iterable[Any] | np.ndarray,
    *,
    epsilon: Real | float | Fraction,
    lower: Real | float | None,
    upper: Real | float | None,
    sensitivity: Real | float | Fraction,
    rng: NoiseRng | None = None,
) -> np.ndarray:
    """:func:`noisy_real` over many groups (independent noise per group); float64 array."""
    noise = SnappingNoise(epsilon=epsilon, lower=lower, upper=upper, sensitivity=sensitivity, rng=rng)
    return noise.add_many(values)
