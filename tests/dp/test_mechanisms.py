"""The noise layer: distributions match the declared mechanisms, randomness is a CSPRNG, inputs are checked.

Statistical tests use a significance level ALPHA = 1e-4: if the implementation is correct, each such test
fails with probability at most 1e-4 (chi-squared and binomial p-values; normal approximation for the
variance test). Their draws come from seeded_rng with fixed seeds in test configuration, so every run
is deterministic: a pass stays a pass, and the false-failure rate above is the chance that a given seed
is an unlucky one. The "power" assertions show that the same draws reject a 10 % wrong scale.
"""

from __future__ import annotations

import ast
import inspect
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from diffprivlib.mechanisms import GaussianAnalytic, GaussianDiscrete
from scipy import stats

import privstage.dp as dp
from privstage.dp import (
    SEED_ENV_VAR,
    DiscreteGaussianNoise,
    GeometricNoise,
    SeededTestRng,
    SnappingNoise,
    TestConfig,
    integer_noise,
    noisy_count,
    noisy_counts,
    noisy_real,
    noisy_reals,
    noisy_sum_fixed_point,
    noisy_sums_fixed_point,
    secure_rng,
    seeded_rng,
)
from privstage.dp import mechanisms as mechanisms_module
from privstage.errors import SpecError

ALPHA = 1e-4  # false-failure rate of each statistical assertion (see the module docstring)
Z_ALPHA = stats.norm.isf(ALPHA / 2)  # two-sided normal quantile, about 3.89
TEST_CONFIG = TestConfig(allow_seed=True)


def _rng(seed: int) -> SeededTestRng:
    return seeded_rng(seed, config=TEST_CONFIG)


# ---------------------------------------------------------------------------------------------
# Reference distributions, computed in the test independently of the module
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IntegerPmf:
    """An integer distribution on support lo..lo+len(probs)-1 (mass outside is below 1e-15)."""

    lo: int
    probs: np.ndarray

    def coverage(self, half_width: float) -> float:
        ks = np.arange(self.lo, self.lo + len(self.probs))
        return float(self.probs[np.abs(ks) <= half_width].sum())


def geometric_pmf(epsilon: float, sensitivity: int) -> IntegerPmf:
    q = math.exp(-epsilon / sensitivity)
    width = math.ceil(40 * sensitivity / epsilon)  # q^width < 1e-17
    ks = np.arange(-width, width + 1)
    return IntegerPmf(-width, (1 - q) / (1 + q) * q ** np.abs(ks))


def discrete_gaussian_pmf(sigma: float) -> IntegerPmf:
    width = math.ceil(12 * sigma) + 10  # exp(-72) outside
    ks = np.arange(-width, width + 1, dtype=np.float64)
    weights = np.exp(-ks * ks / (2 * sigma * sigma))
    return IntegerPmf(-width, weights / weights.sum())


def chi2_pvalue(samples: np.ndarray, pmf: IntegerPmf, *, min_expected: float = 100.0) -> float:
    """Chi-squared goodness of fit; neighbouring integers and both tails pooled so each bin expects >= min_expected."""
    n = len(samples)
    edges: list[int] = []  # inclusive upper edge of each bin
    expected: list[float] = []
    acc = 0.0
    for offset, p in enumerate(pmf.probs):
        acc += p * n
        if acc >= min_expected:
            edges.append(pmf.lo + offset)
            expected.append(acc)
            acc = 0.0
    expected[-1] += acc
    edges[-1] = np.iinfo(np.int64).max
    observed = np.bincount(np.searchsorted(edges, samples), minlength=len(edges))
    scale = n / sum(expected)  # renormalise the < 1e-15 mass cut off outside the support
    return float(stats.chisquare(observed, np.array(expected) * scale).pvalue)


def theorem7_delta(sigma: float, epsilon: float, sensitivity: int) -> float:
    """Exact δ of N_Z(0, sigma^2) at sensitivity Δ (Canonne, Kamath, Steinke 2020, Theorem 7), by brute force."""
    pmf = discrete_gaussian_pmf(sigma)
    ks = np.arange(pmf.lo, pmf.lo + len(pmf.probs))
    lower = math.floor(epsilon * sigma**2 / sensitivity - sensitivity / 2) + 1
    upper = math.floor(epsilon * sigma**2 / sensitivity + sensitivity / 2) + 1
    return float(pmf.probs[ks >= lower].sum() - math.exp(epsilon) * pmf.probs[ks >= upper].sum())


def laplace_cdf(x: np.ndarray, b: float) -> np.ndarray:
    return np.where(x < 0, 0.5 * np.exp(np.minimum(x, 0) / b), 1 - 0.5 * np.exp(-np.maximum(x, 0) / b))


@dataclass(frozen=True)
class SnappingCase:
    """Snapping at value v: output = centre + grid·j, with P(j) from rounding v + Laplace(b) to the grid."""

    mechanism: SnappingNoise
    value: float
    draws: np.ndarray

    @property
    def centre(self) -> float:
        return (self.mechanism.lower + self.mechanism.upper) / 2

    def lattice_index(self) -> np.ndarray:
        return (self.draws - self.centre) / self.mechanism.grid

    def pmf(self) -> IntegerPmf:
        m = self.mechanism
        width = math.ceil(40 * m.scale / m.grid) + 2
        js = np.arange(-width, width + 1)
        offset = self.value - self.centre  # rounding ties go up: j is chosen on [(j - 1/2)grid, (j + 1/2)grid)
        probs = laplace_cdf((js + 0.5) * m.grid - offset, m.scale) - laplace_cdf((js - 0.5) * m.grid - offset, m.scale)
        return IntegerPmf(-width, probs)


# ---------------------------------------------------------------------------------------------
# Draws shared by the distribution and coverage tests (module scope keeps the file fast)
# ---------------------------------------------------------------------------------------------
GEOMETRIC_CASES = {"eps0.5-sens1": (0.5, 1, 20261124), "eps1-sens3": (1.0, 3, 20261125)}
GAUSSIAN_CASES = {"sens1": (1.0, 1e-6, 1, 20261126), "sens1000": (1.0, 1e-6, 1000, 20261127)}


@pytest.fixture(scope="module")
def geometric_draws() -> dict[str, tuple[GeometricNoise, np.ndarray]]:
    out = {}
    for name, (epsilon, sensitivity, seed) in GEOMETRIC_CASES.items():
        mechanism = GeometricNoise(epsilon=epsilon, sensitivity=sensitivity, rng=_rng(seed))
        out[name] = (mechanism, np.array(mechanism.add_many(np.full(50_000, 1_000))) - 1_000)
    return out


@pytest.fixture(scope="module")
def gaussian_draws() -> dict[str, tuple[DiscreteGaussianNoise, np.ndarray]]:
    out = {}
    for name, (epsilon, delta, sensitivity, seed) in GAUSSIAN_CASES.items():
        mechanism = DiscreteGaussianNoise(epsilon=epsilon, delta=delta, sensitivity=sensitivity, rng=_rng(seed))
        out[name] = (mechanism, np.array(mechanism.add_many(np.full(30_000, 1_000))) - 1_000)
    return out


@pytest.fixture(scope="module")
def snapping_case() -> SnappingCase:
    mechanism = SnappingNoise(epsilon=1.0, lower=-100.0, upper=300.0, sensitivity=2.0, rng=_rng(20261128))
    value = 37.0
    return SnappingCase(mechanism, value, mechanism.add_many(np.full(30_000, value)))


# ---------------------------------------------------------------------------------------------
# Distributions match the declared mechanism and scale
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", GEOMETRIC_CASES)
def test_geometric_noise_follows_the_two_sided_geometric_pmf(case: str, geometric_draws) -> None:
    mechanism, noise = geometric_draws[case]
    epsilon, sensitivity, _ = GEOMETRIC_CASES[case]
    assert mechanism.scale == sensitivity / epsilon
    # false-failure rate ALPHA; 50,000 draws
    assert chi2_pvalue(noise, geometric_pmf(epsilon, sensitivity)) > ALPHA
    # power: the same draws reject a 10 % larger epsilon
    assert chi2_pvalue(noise, geometric_pmf(1.1 * epsilon, sensitivity)) < ALPHA


@pytest.mark.parametrize("case", GAUSSIAN_CASES)
def test_discrete_gaussian_noise_follows_its_pmf(case: str, gaussian_draws) -> None:
    mechanism, noise = gaussian_draws[case]
    sigma = float(mechanism.sigma)
    assert mechanism.scale == sigma
    # false-failure rate ALPHA; 30,000 draws
    assert chi2_pvalue(noise, discrete_gaussian_pmf(sigma)) > ALPHA
    # power: the same draws reject a 10 % larger sigma
    assert chi2_pvalue(noise, discrete_gaussian_pmf(1.1 * sigma)) < ALPHA


def test_snapping_noise_follows_laplace_rounded_to_its_grid(snapping_case: SnappingCase) -> None:
    m = snapping_case.mechanism
    assert m.scale == pytest.approx(m.sensitivity / m.epsilon, rel=1e-9)  # ε_eff differs from ε by ~1e-13
    assert m.grid == m.sensitivity * 2 ** math.ceil(math.log2(m.scale / m.sensitivity))
    index = snapping_case.lattice_index()
    assert np.array_equal(index, np.round(index))  # every output exactly on the grid
    # false-failure rate ALPHA; 30,000 draws
    assert chi2_pvalue(index.astype(np.int64), snapping_case.pmf()) > ALPHA


def test_snapping_variance_is_within_the_bounds_of_its_documented_scale(snapping_case: SnappingCase) -> None:
    m = snapping_case.mechanism
    noise = snapping_case.draws - snapping_case.value
    # Deterministic: snapping moves each Laplace(b) draw by at most grid/2, so by Minkowski's inequality
    # sd(noise) lies in [sqrt(2)·b - grid/2, sqrt(2)·b + grid/2].
    pmf = snapping_case.pmf()
    values = (np.arange(pmf.lo, pmf.lo + len(pmf.probs)) * m.grid) + snapping_case.centre - snapping_case.value
    exact_mean = float((pmf.probs * values).sum())
    exact_var = float((pmf.probs * (values - exact_mean) ** 2).sum())
    fourth = float((pmf.probs * (values - exact_mean) ** 4).sum())
    assert math.sqrt(2) * m.scale - m.grid / 2 <= math.sqrt(exact_var) <= math.sqrt(2) * m.scale + m.grid / 2
    # Statistical: the sample variance matches the exact variance; false-failure rate ALPHA (normal approximation,
    # standard error from the exact fourth central moment).
    standard_error = math.sqrt((fourth - exact_var**2) / len(noise))
    assert abs(float(np.var(noise)) - exact_var) <= Z_ALPHA * standard_error


# ---------------------------------------------------------------------------------------------
# 95 % half-widths come from the parameters and cover ~95 % of draws
# ---------------------------------------------------------------------------------------------
def _assert_covers(noise: np.ndarray, half_width: float, exact_coverage: float) -> None:
    inside = int((np.abs(noise) <= half_width).sum())
    # false-failure rate ALPHA: exact two-sided binomial test against the exact coverage
    assert stats.binomtest(inside, len(noise), exact_coverage).pvalue > ALPHA


@pytest.mark.parametrize("case", GEOMETRIC_CASES)
def test_geometric_half_width_is_the_smallest_95_percent_interval(case: str, geometric_draws) -> None:
    mechanism, noise = geometric_draws[case]
    pmf = geometric_pmf(*GEOMETRIC_CASES[case][:2])
    h = mechanism.ci95_half_width
    assert pmf.coverage(h) >= 0.95 > pmf.coverage(h - 1)
    _assert_covers(noise, h, pmf.coverage(h))


@pytest.mark.parametrize("case", GAUSSIAN_CASES)
def test_discrete_gaussian_half_width_is_the_smallest_95_percent_interval(case: str, gaussian_draws) -> None:
    mechanism, noise = gaussian_draws[case]
    pmf = discrete_gaussian_pmf(float(mechanism.sigma))
    h = mechanism.ci95_half_width
    assert pmf.coverage(h) >= 0.95 > pmf.coverage(h - 1)
    _assert_covers(noise, h, pmf.coverage(h))


def test_snapping_half_width_covers_at_least_95_percent(snapping_case: SnappingCase) -> None:
    m = snapping_case.mechanism
    assert m.ci95_half_width == pytest.approx(m.scale * math.log(20) + m.grid / 2)
    pmf = snapping_case.pmf()
    distances = np.abs(np.arange(pmf.lo, pmf.lo + len(pmf.probs)) * m.grid + snapping_case.centre - snapping_case.value)
    exact_coverage = float(pmf.probs[distances <= m.ci95_half_width].sum())
    assert 0.95 <= exact_coverage < 0.995  # conservative by at most the grid rounding, not wildly so
    _assert_covers(snapping_case.draws - snapping_case.value, m.ci95_half_width, exact_coverage)


def test_half_width_never_exceeds_the_declared_range() -> None:
    narrow = SnappingNoise(epsilon=0.01, lower=0.0, upper=1.0, sensitivity=1.0)
    assert narrow.ci95_half_width == 1.0


def test_descriptions_state_mechanism_scale_and_half_width_in_release_units() -> None:
    fixed = integer_noise("gaussian_discrete", epsilon=1, delta=1e-6, sensitivity=1_000)
    described = fixed.describe(resolution=Fraction(1, 100))
    assert described.mechanism == "gaussian_discrete"
    assert described.sensitivity == Fraction(10)
    assert described.scale == pytest.approx(fixed.scale / 100)
    assert described.ci95_half_width == Fraction(fixed.ci95_half_width, 100)
    assert described.resolution == Fraction(1, 100)
    as_dict = json.loads(json.dumps(described.to_dict()))
    assert as_dict["ci95_half_width_exact"] == str(Fraction(fixed.ci95_half_width, 100))
    # parameters only: a second mechanism with the same parameters describes itself identically
    assert (
        integer_noise("gaussian_discrete", epsilon=1, delta=1e-6, sensitivity=1_000).describe(
            resolution=Fraction(1, 100)
        )
        == described
    )
    geometric = GeometricNoise(epsilon=Fraction(1, 2), sensitivity=1).describe()
    assert (geometric.mechanism, geometric.delta, geometric.scale, geometric.ci95_half_width) == ("geometric", 0, 2, 6)


# ---------------------------------------------------------------------------------------------
# Discrete Gaussian calibration
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("epsilon", "delta", "sensitivity"), [(1.0, 1e-6, 1), (0.3, 1e-9, 7), (1.0, 1e-6, 1000)])
def test_discrete_gaussian_sigma_meets_the_declared_delta_and_is_tight(epsilon, delta, sensitivity) -> None:
    sigma = float(DiscreteGaussianNoise(epsilon=epsilon, delta=delta, sensitivity=sensitivity).sigma)
    assert theorem7_delta(sigma, epsilon, sensitivity) <= delta
    assert theorem7_delta(sigma * (1 - 1e-4), epsilon, sensitivity) > delta


@pytest.mark.parametrize("sensitivity", [1, 10, 100])
def test_discrete_gaussian_sigma_agrees_with_diffprivlib(sensitivity: int) -> None:
    ours = float(DiscreteGaussianNoise(epsilon=1.0, delta=1e-6, sensitivity=sensitivity).sigma)
    theirs = GaussianDiscrete(epsilon=1.0, delta=1e-6, sensitivity=sensitivity)._scale
    assert ours == pytest.approx(theirs, rel=1e-5)


@pytest.mark.parametrize("sensitivity", [10**5, 10**9])
def test_fixed_point_sensitivities_calibrate_fast_and_match_the_analytic_gaussian(sensitivity: int) -> None:
    # diffprivlib's GaussianDiscrete raises "Infinite sum not converging" here; at this scale the discrete
    # Gaussian's sigma is the continuous analytic Gaussian's to within 1e-5.
    start = time.perf_counter()
    sigma = float(DiscreteGaussianNoise(epsilon=0.7, delta=1e-7, sensitivity=sensitivity).sigma)
    assert time.perf_counter() - start < 2.0
    assert sigma == pytest.approx(GaussianAnalytic(epsilon=0.7, delta=1e-7, sensitivity=sensitivity)._scale, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Randomness: CSPRNG by default, seeds only in test configuration
# ---------------------------------------------------------------------------------------------
def _default_mechanisms() -> list[Any]:
    return [
        GeometricNoise(epsilon=0.1, sensitivity=1),
        DiscreteGaussianNoise(epsilon=1.0, delta=1e-6, sensitivity=1),
        SnappingNoise(epsilon=1.0, lower=0.0, upper=100.0, sensitivity=1.0),
    ]


def test_default_randomness_is_the_operating_system_csprng() -> None:
    assert type(secure_rng()) is random.SystemRandom
    for mechanism in _default_mechanisms():
        assert type(mechanism.random_source) is random.SystemRandom
        with pytest.raises(NotImplementedError):  # SystemRandom reads os.urandom: no state to seed or leak
            mechanism.random_source.getstate()


def test_two_fresh_mechanisms_draw_different_streams() -> None:
    # Chance that two independent streams coincide: below 1e-12 for each mechanism (64 draws, the
    # most likely single outcome has probability at most 0.63).
    first, second = _default_mechanisms(), _default_mechanisms()
    for a, b in zip(first, second, strict=True):
        draw_a = [a.add(50) for _ in range(64)]
        draw_b = [b.add(50) for _ in range(64)]
        assert draw_a != draw_b


def test_the_same_seed_reproduces_the_same_noise_in_test_configuration() -> None:
    def draws(seed: int) -> list[Any]:
        return [
            noisy_counts(np.zeros(20, dtype=np.int64), epsilon=0.5, rng=_rng(seed)).tolist(),
            noisy_sums_fixed_point(
                [0] * 20,
                scale=100,
                epsilon=1,
                delta=1e-6,
                sensitivity_scaled=500,
                mechanism="gaussian_discrete",
                rng=_rng(seed),
            ),
            noisy_reals(np.full(20, 5.0), epsilon=1, lower=0, upper=10, sensitivity=1, rng=_rng(seed)).tolist(),
        ]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_seeds_are_refused_outside_test_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SEED_ENV_VAR, raising=False)
    for attempt in (lambda: seeded_rng(1), lambda: seeded_rng(1, config=TestConfig()), lambda: SeededTestRng(1)):
        with pytest.raises(SpecError, match="seeds are accepted only in test configuration"):
            attempt()
    monkeypatch.setenv(SEED_ENV_VAR, "true")  # only exactly "1" switches it on
    with pytest.raises(SpecError, match="seeds are accepted only in test configuration"):
        seeded_rng(1)
    monkeypatch.setenv(SEED_ENV_VAR, "1")
    assert seeded_rng(1).seed == 1


@pytest.mark.parametrize(
    "rng",
    [1234, np.random.RandomState(1), np.random.default_rng(1), random.Random(1)],  # noqa: S311
    ids=["int-seed", "numpy-RandomState", "numpy-Generator", "python-Random"],
)
def test_raw_seeds_and_non_cryptographic_generators_are_refused(rng: Any) -> None:
    calls: list[Callable[[], object]] = [
        lambda: noisy_count(3, epsilon=1, rng=rng),
        lambda: noisy_sum_fixed_point(
            3, scale=10, epsilon=1, delta=1e-6, sensitivity_scaled=10, mechanism="gaussian_discrete", rng=rng
        ),
        lambda: noisy_real(3.0, epsilon=1, lower=0, upper=10, sensitivity=1, rng=rng),
    ]
    for call in calls:
        with pytest.raises(SpecError, match="secure_rng"):
            call()


def test_the_module_never_builds_a_numpy_generator_outside_the_test_rng() -> None:
    tree = ast.parse(inspect.getsource(mechanisms_module))
    forbidden = {"default_rng", "Generator", "PCG64", "MT19937", "seed", "RandomState"}
    offenders = [
        (getattr(top, "name", "<module>"), call.func.attr)
        for top in tree.body
        for call in ast.walk(top)
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr in forbidden
    ]
    # the only such call is the MT19937 of SeededTestRng, which refuses to exist outside test configuration
    assert offenders == [("SeededTestRng", "RandomState")]


# ---------------------------------------------------------------------------------------------
# Input hygiene
# ---------------------------------------------------------------------------------------------
# typed Any: these calls pass deliberately wrong types
NAN: Any = float("nan")
INF: Any = float("inf")
HALF: Any = 2.5
TEXT: Any = "1"
LAPLACE: Any = "laplace"
BOUNDS: Any = {"lower": 0.0, "upper": 10.0, "sensitivity": 1.0}

BAD_INPUTS: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    ("count NaN", lambda: noisy_count(NAN, epsilon=1), ValueError, "count is NaN"),
    ("count inf", lambda: noisy_count(INF, epsilon=1), ValueError, "count is infinite"),
    ("counts NaN", lambda: noisy_counts([1, NAN], epsilon=1), ValueError, r"counts\[1\] is NaN"),
    ("count float", lambda: noisy_count(HALF, epsilon=1), TypeError, "count must be an integer"),
    ("count bool", lambda: noisy_count(True, epsilon=1), TypeError, "count must be an integer"),
    (
        "sum -inf",
        lambda: noisy_sum_fixed_point(-INF, scale=10, epsilon=1, sensitivity_scaled=1),
        ValueError,
        "scaled sum is infinite",
    ),
    ("real NaN", lambda: noisy_real(NAN, epsilon=1, **BOUNDS), ValueError, "value is NaN"),
    ("reals inf", lambda: noisy_reals([0.5, INF], epsilon=1, **BOUNDS), ValueError, r"values\[1\] is infinite"),
    ("real out of bounds", lambda: noisy_real(10.5, epsilon=1, **BOUNDS), ValueError, "outside the declared bounds"),
    ("epsilon 0", lambda: noisy_count(1, epsilon=0), SpecError, "epsilon must be > 0"),
    ("epsilon negative", lambda: noisy_count(1, epsilon=-1), SpecError, "epsilon must be > 0"),
    ("epsilon NaN", lambda: noisy_count(1, epsilon=NAN), SpecError, "epsilon must be finite"),
    ("epsilon inf", lambda: noisy_real(1.0, epsilon=INF, **BOUNDS), SpecError, "epsilon must be finite"),
    ("epsilon text", lambda: noisy_count(1, epsilon=TEXT), SpecError, "epsilon must be a number"),
    (
        "delta 1",
        lambda: noisy_count(1, epsilon=1, delta=1, mechanism="gaussian_discrete"),
        SpecError,
        r"delta must be in \[0, 1\)",
    ),
    (
        "delta negative",
        lambda: noisy_count(1, epsilon=1, delta=-0.1, mechanism="gaussian_discrete"),
        SpecError,
        r"delta must be in \[0, 1\)",
    ),
    (
        "delta NaN",
        lambda: noisy_count(1, epsilon=1, delta=NAN, mechanism="gaussian_discrete"),
        SpecError,
        "delta must be finite",
    ),
    (
        "delta 0 gaussian",
        lambda: noisy_count(1, epsilon=1, mechanism="gaussian_discrete"),
        SpecError,
        "needs delta > 0",
    ),
    ("delta on geometric", lambda: noisy_count(1, epsilon=1, delta=1e-6), SpecError, "pure-epsilon"),
    ("sensitivity 0", lambda: noisy_count(1, epsilon=1, sensitivity=0), SpecError, "sensitivity must be > 0"),
    (
        "sensitivity negative",
        lambda: noisy_sum_fixed_point(1, scale=10, epsilon=1, sensitivity_scaled=-5),
        SpecError,
        "sensitivity must be > 0",
    ),
    (
        "sensitivity float",
        lambda: noisy_count(1, epsilon=1, sensitivity=HALF),
        SpecError,
        "sensitivity must be an integer",
    ),
    (
        "snapping sensitivity 0",
        lambda: noisy_real(1.0, epsilon=1, lower=0, upper=10, sensitivity=0),
        SpecError,
        "sensitivity must be > 0",
    ),
    (
        "scale 0",
        lambda: noisy_sum_fixed_point(1, scale=0, epsilon=1, sensitivity_scaled=1),
        SpecError,
        "scale must be > 0",
    ),
    (
        "no lower bound",
        lambda: noisy_real(1.0, epsilon=1, lower=None, upper=10, sensitivity=1),
        SpecError,
        "never derived from the data",
    ),
    (
        "no upper bound",
        lambda: SnappingNoise(epsilon=1, lower=0, upper=None, sensitivity=1),
        SpecError,
        "never derived from the data",
    ),
    (
        "bounds reversed",
        lambda: noisy_real(1.0, epsilon=1, lower=10, upper=0, sensitivity=1),
        SpecError,
        "lower bound must be < upper bound",
    ),
    (
        "bound NaN",
        lambda: noisy_real(1.0, epsilon=1, lower=NAN, upper=10, sensitivity=1),
        SpecError,
        "lower bound must be finite",
    ),
    ("unknown mechanism", lambda: noisy_count(1, epsilon=1, mechanism=LAPLACE), SpecError, "unknown integer mechanism"),
]


@pytest.mark.parametrize(("call", "error", "match"), [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_inputs_are_refused(call: Callable[[], object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


def test_exact_privacy_parameters_round_towards_more_noise() -> None:
    third = Fraction(1, 3)
    mechanism = GeometricNoise(epsilon=third, sensitivity=1)
    assert Fraction(mechanism.epsilon) <= third
    gaussian = DiscreteGaussianNoise(epsilon=1, delta=third / 10**6, sensitivity=1)
    assert Fraction(gaussian.delta) <= third / 10**6


# ---------------------------------------------------------------------------------------------
# Precision-attack resistance and exactness
# ---------------------------------------------------------------------------------------------
def test_integer_mechanisms_release_exact_integers() -> None:
    rng = _rng(11)
    counts = [noisy_count(41, epsilon=1, rng=rng) for _ in range(200)]
    assert all(type(c) is int for c in counts)
    assert noisy_counts(np.arange(100), epsilon=1, rng=rng).dtype == np.int64
    huge = 2**62 + 1  # beyond float64's 2^53: added exactly, never through a float
    assert abs(noisy_count(huge, epsilon=1, rng=rng) - huge) < 200
    sums = noisy_sums_fixed_point(
        [10**30 + 7] * 50,
        scale=100,
        epsilon=1,
        delta=1e-6,
        sensitivity_scaled=10_000,
        mechanism="gaussian_discrete",
        rng=rng,
    )
    assert all(isinstance(s, Fraction) and (s * 100).denominator == 1 for s in sums)
    assert all(abs(s * 100 - (10**30 + 7)) < 10**6 for s in sums)


def test_snapping_outputs_carry_no_low_order_bits_of_the_input() -> None:
    mechanism = SnappingNoise(epsilon=1.0, lower=-100.0, upper=300.0, sensitivity=2.0, rng=_rng(12))
    centre = (mechanism.lower + mechanism.upper) / 2
    for value in (37.0, 37.0 + 2**-40, math.nextafter(37.0, INF)):
        outputs = mechanism.add_many(np.full(2_000, value))
        index = (outputs - centre) / mechanism.grid
        assert np.array_equal(index, np.round(index))  # on the same power-of-two grid for every input
        assert outputs.min() >= mechanism.lower and outputs.max() <= mechanism.upper


def test_a_thousand_groups_are_noised_quickly() -> None:
    groups = np.arange(1_000, dtype=np.int64)
    timings = {}
    start = time.perf_counter()
    noisy_counts(groups, epsilon=1)
    timings["geometric"] = time.perf_counter() - start
    start = time.perf_counter()
    noisy_sums_fixed_point(
        groups * 10**6, scale=100, epsilon=1, delta=1e-6, sensitivity_scaled=10**7, mechanism="gaussian_discrete"
    )
    timings["gaussian_discrete"] = time.perf_counter() - start
    start = time.perf_counter()
    noisy_reals(np.linspace(0, 10, 1_000), epsilon=1, lower=0, upper=10, sensitivity=1)
    timings["snapping"] = time.perf_counter() - start
    assert max(timings.values()) < 1.0, timings  # measured about 7, 50 and 15 ms


def test_public_api_is_curated() -> None:
    assert sorted(dp.__all__) == sorted(
        [
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
    )
    assert all(getattr(dp, name) is getattr(mechanisms_module, name) for name in dp.__all__)
