"""Homomorphic summation across parties (TenSEAL CKKS and BFV) over Spark DataFrames.

Three roles, each holding only the key material it needs:

* key holder (:class:`KeyHolder`): creates the context from checked :mod:`~privstage.he.params`,
  exports a public context (verified to hold no secret key), decrypts the aggregate
  (:func:`decrypt_sums`) and releases checked, rounded sums (:func:`release`);
* party (:class:`Party`): packs per-group sums (or a value vector) into ciphertexts under the public
  context in executors and writes an authenticated ciphertext dataset;
* aggregator (:class:`Aggregator`): verifies contributions and adds them slot by slot in executors.

Plan first (:func:`plan_sum` / ``layout.plan(...)``): insecure parameters, BFV overflow, CKKS scale or
depth exhaustion and an unmeetable precision contract raise before any key or data exists.
Importing this package imports TenSEAL lazily (on first use of a context).
"""

from __future__ import annotations

from privstage.he.context import KeyHolder, PublicContext, context_fingerprint
from privstage.he.layout import GroupLayout, Layout, Measure, VectorLayout
from privstage.he.manifest import Manifest, ReplayGuard
from privstage.he.params import (
    DEFAULT_BFV,
    DEFAULT_CKKS,
    MAX_COEFF_MODULUS_BITS_128,
    BFVParams,
    CKKSParams,
    HEParams,
    SumPlan,
    plan_sum,
)
from privstage.he.release import Release, release
from privstage.he.roles import Aggregator, CiphertextDataset, DecryptedSums, Party, decrypt_sums

__all__ = [
    "DEFAULT_BFV",
    "DEFAULT_CKKS",
    "MAX_COEFF_MODULUS_BITS_128",
    "Aggregator",
    "BFVParams",
    "CKKSParams",
    "CiphertextDataset",
    "DecryptedSums",
    "GroupLayout",
    "HEParams",
    "KeyHolder",
    "Layout",
    "Manifest",
    "Measure",
    "Party",
    "PublicContext",
    "Release",
    "ReplayGuard",
    "SumPlan",
    "VectorLayout",
    "context_fingerprint",
    "decrypt_sums",
    "plan_sum",
    "release",
]
