"""The curated public API of privstage.he and its import boundary."""

from __future__ import annotations

import json
import subprocess
import sys

import privstage.he

EXPECTED = {
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
}


def test_exported_names():
    assert set(privstage.he.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(privstage.he, name) is not None


def test_planning_loads_neither_tenseal_nor_spark():
    """Parameters and plans are checked before keys or data exist, on machines without the he extra."""
    code = (
        "import privstage.he as he\n"
        "layout = he.GroupLayout.declare(['a'], [he.Measure.count('n', bound=5)], he.DEFAULT_BFV)\n"
        "layout.plan(he.DEFAULT_BFV, parties=3)\n"
        "import sys, json; print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = set(json.loads(out.stdout.strip().splitlines()[-1]))
    for top in ("tenseal", "pyspark", "diffprivlib", "airflow", "dagster", "great_expectations"):
        assert not any(m == top or m.startswith(top + ".") for m in modules), top
