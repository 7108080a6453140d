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
