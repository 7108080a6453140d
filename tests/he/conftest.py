"""HE fixtures: one key holder per scheme for the whole run (key generation is the slow part)."""

from __future__ import annotations

import pytest

from privstage.he import DEFAULT_BFV, DEFAULT_CKKS, KeyHolder


@pytest.fixture(scope="session")
def ckks_holder() -> KeyHolder:
    return KeyHolder.create(DEFAULT_CKKS)


@pytest.fixture(scope="session")
def bfv_holder() -> KeyHolder:
    return KeyHolder.create(DEFAULT_BFV)


@pytest.fixture(params=["ckks", "bfv"])
def holder(request, ckks_holder, bfv_holder) -> KeyHolder:
    return ckks_holder if request.param == "ckks" else bfv_holder


@pytest.fixture(scope="session")
def clinic_run(spark, ckks_holder, bfv_holder, tmp_path_factory):
    """A cached three-role run per (scheme, parties) on the clinic data: (release, run details, rows).

    Several tests read the same committed artifacts (sums, secret-key scan, tampering copies), so each
    configuration runs once per session.
    """
    from he_support import SCHEMA, clinic_layout, clinic_rows, run_sum

    cache: dict[tuple[str, int], tuple] = {}

    def get(scheme: str, parties: int):
        if (scheme, parties) not in cache:
            holder = ckks_holder if scheme == "ckks" else bfv_holder
            rows = [clinic_rows(i, n=25 + 5 * i) for i in range(parties)]
            frames = [spark.createDataFrame(r, SCHEMA) for r in rows]
            root = tmp_path_factory.mktemp(f"clinic-{scheme}-{parties}")
            result, run = run_sum(spark, holder, frames, clinic_layout(holder.params), root=root)
            cache[(scheme, parties)] = (result, run, rows)
        return cache[(scheme, parties)]

    return get
