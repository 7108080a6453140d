"""The durable replay guard: nonces consumed in the ledger's database (SQLite and PostgreSQL)."""

from __future__ import annotations

import os

import pytest

from privstage.budget import BudgetLedger
from privstage.errors import IntegrityError
from privstage.he.manifest import CONTRIBUTION_FORMAT, Manifest
from privstage.he.nonces import NonceStore
from privstage.keys import Key


def _manifest(party: str) -> Manifest:
    key = Key(key_id=f"he-party-{party}", version=1, _material=os.urandom(32))
    return Manifest.sign({"format": CONTRIBUTION_FORMAT, "party_id": party, "round_id": "r1"}, key)


def test_consumed_nonces_survive_the_process_and_only_the_consuming_run_may_retry(ledger_url):
    a, b = _manifest("clinic-a"), _manifest("clinic-b")
    with BudgetLedger(ledger_url) as ledger:
        first = NonceStore(ledger, verifier="aggregator:hub", consumer="run-1")
        first.check(a)
        first.consume([a, b])
        first.consume([a, b])  # the same run again (a retry that died before its commit): idempotent
        assert first.consumed() == 2
    with BudgetLedger(ledger_url) as reopened:  # a new connection, as another process would open
        retry = NonceStore(reopened, verifier="aggregator:hub", consumer="run-1")
        retry.check(a)
        other = NonceStore(reopened, verifier="aggregator:hub", consumer="run-2")
        with pytest.raises(IntegrityError, match=r"party 'clinic-b': contribution .* already consumed .* \(replay\)"):
            other.check(b)
        with pytest.raises(IntegrityError, match="party 'clinic-a'"):
            other.consume([a])
        # another verifier (the key holder) keeps its own nonces
        NonceStore(reopened, verifier="key-holder:p/release", consumer="run-2").consume([a])
        assert other.consumed() == 2
