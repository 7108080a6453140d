"""Differential-privacy building blocks: noise mechanisms that resist floating-point attacks.

The ``dp_aggregate`` stage calls this package; see :mod:`privstage.dp.mechanisms` for the choice of
mechanisms and of the random generator.
"""

from __future__ import annotations

from privstage.dp.mechanisms import (
    SEED_ENV_VAR,
    DiscreteGaussianNoise,
    GeometricNoise,
    IntegerMechanismName,
    NoiseDescription,
    NoiseRng,
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
