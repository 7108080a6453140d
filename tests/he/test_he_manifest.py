"""Manifest authentication and replay bookkeeping (no Spark)."""

from __future__ import annotations

import pytest
from he_support import key

from privstage.errors import IntegrityError
from privstage.he import Manifest, ReplayGuard
from privstage.he.manifest import CONTRIBUTION_FORMAT


def _manifest(party_key, **extra):
    body = {"format": CONTRIBUTION_FORMAT, "party_id": "clinic-0", "round_id": "r1", "rows": 10, **extra}
    return Manifest.sign(body, party_key)


def test_sign_and_verify():
    k = key("he-party-clinic-0")
    m = _manifest(k)
    m.verify(k)
    assert len(m.body["nonce"]) == 32 and m.body["key_id"] == "he-party-clinic-0"
    assert k.material().hex() not in str(m.to_dict())


def test_altered_or_foreign_manifests_fail():
    k = key("he-party-clinic-0")
    m = _manifest(k)
    altered = Manifest(body={**m.body, "rows": 11}, mac=m.mac)
    with pytest.raises(IntegrityError, match="party 'clinic-0': manifest authentication failed"):
        altered.verify(k)
    impostor = key("he-party-clinic-0")  # same id, other material
    with pytest.raises(IntegrityError, match="authentication failed"):
        m.verify(impostor)
    with pytest.raises(IntegrityError, match="expected 'he-party-clinic-1'"):
        m.verify(key("he-party-clinic-1"))
    # the same key cannot vouch for another party: the MAC key is derived per party id
    other_party = Manifest(body={**m.body, "party_id": "clinic-1"}, mac=m.mac)
    with pytest.raises(IntegrityError, match="party 'clinic-1'"):
        other_party.verify(k)


def test_replay_guard_persists(tmp_path):
    k = key("he-party-clinic-0")
    m = _manifest(k)
    guard = ReplayGuard(tmp_path / "nonces")
    guard.check(m)
    guard.consume([m])
    with pytest.raises(IntegrityError, match="already consumed"):
        guard.check(m)
    with pytest.raises(IntegrityError, match="replay"):
        ReplayGuard(tmp_path / "nonces").check(m)
    ReplayGuard(tmp_path / "nonces").check(_manifest(k))
