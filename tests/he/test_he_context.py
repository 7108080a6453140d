"""Key separation: public exports hold no secret key, roles refuse secret contexts, the secret context is sealed."""

from __future__ import annotations

import pickle

import pytest
import tenseal as ts
from he_support import clinic_layout, key, secret_key_probes

from privstage.errors import HEParameterError, IntegrityError, KeyUnavailable
from privstage.he import DEFAULT_BFV, DEFAULT_CKKS, Aggregator, CKKSParams, KeyHolder, Party, PublicContext


def test_exported_public_context_has_no_secret_key(holder):
    exported = holder.public_context()
    ctx = ts.context_from(exported.data)
    assert not ctx.has_secret_key() and ctx.is_public() and not ctx.is_private()
    assert not any(p in exported.data for p in secret_key_probes(holder))
    # it can encrypt but not decrypt
    vector = (ts.ckks_vector if holder.params.scheme == "ckks" else ts.bfv_vector)(ctx, [1, 2, 3])
    with pytest.raises(ValueError, match="secret"):
        vector.decrypt()
    # the export is deterministic, so its fingerprint names the context
    assert holder.public_context().fingerprint == exported.fingerprint == holder.fingerprint


def _secret_bytes(holder: KeyHolder) -> bytes:
    return holder._context.serialize(save_secret_key=True)


@pytest.mark.parametrize("role", ["party", "aggregator"])
def test_roles_refuse_secret_key_material(holder, role):
    plan = clinic_layout(holder.params).plan(holder.params, parties=3)
    build = (
        (lambda ctx: Party("clinic-0", ctx, plan=plan, key=key("k")))
        if role == "party"
        else (lambda ctx: Aggregator("hub", ctx, plan=plan, key=key("k")))
    )
    with pytest.raises(HEParameterError, match=f"the {role} was handed a context that holds a secret key"):
        build(_secret_bytes(holder))
    with pytest.raises(HEParameterError, match="holds a secret key"):
        build(holder._context)  # a live TenSEAL context object with its secret key
    assert build(holder.public_context().data).context.fingerprint == holder.fingerprint


def test_public_context_must_match_the_declared_parameters(ckks_holder):
    other = CKKSParams(8192, (60, 60), scale_bits=25)
    with pytest.raises(HEParameterError, match="does not match the declared parameters: global scale"):
        PublicContext.from_bytes(ckks_holder.public_context().data, other, role="party")
    with pytest.raises(HEParameterError, match="scheme is not BFV"):
        PublicContext.from_bytes(ckks_holder.public_context().data, DEFAULT_BFV, role="party")
    with pytest.raises(HEParameterError, match="not a TenSEAL context"):
        PublicContext.from_bytes(b"\x00" * 64, DEFAULT_CKKS, role="party")
    with pytest.raises(IntegrityError, match="fingerprint"):
        PublicContext.from_bytes(ckks_holder.public_context().data, DEFAULT_CKKS, role="party", fingerprint="0" * 64)


def test_sealed_secret_context_round_trip(ckks_holder):
    storage_key = key("he-keyholder-storage")
    sealed = ckks_holder.seal(storage_key)
    assert not any(p in sealed for p in secret_key_probes(ckks_holder))
    reopened = KeyHolder.unseal(sealed, storage_key, DEFAULT_CKKS)
    assert reopened.fingerprint == ckks_holder.fingerprint
    ciphertext = ts.ckks_vector(ckks_holder.public_context().context, [1.5] * DEFAULT_CKKS.slots).serialize()
    assert reopened.decrypt_chunk(ciphertext)[:2] == pytest.approx([1.5, 1.5], abs=1e-4)
    wrong = key("he-keyholder-storage")
    with pytest.raises(KeyUnavailable) as info:
        KeyHolder.unseal(sealed, wrong, DEFAULT_CKKS)
    assert "he-keyholder-storage" in str(info.value) and wrong.material().hex() not in str(info.value)
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(KeyUnavailable):
        KeyHolder.unseal(bytes(tampered), storage_key, DEFAULT_CKKS)


def test_key_holder_cannot_be_pickled_or_printed(ckks_holder):
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(ckks_holder)
    assert "redacted" in repr(ckks_holder)
    with pytest.raises(HEParameterError, match="needs a context with a secret key"):
        KeyHolder(ckks_holder.public_context().context, DEFAULT_CKKS)


def test_a_ciphertext_under_other_parameters_does_not_decrypt(ckks_holder, bfv_holder):
    other = KeyHolder.create(CKKSParams(4096, (40, 40), scale_bits=20))
    foreign = ts.ckks_vector(other.public_context().context, [1.0] * 2048).serialize()
    with pytest.raises(IntegrityError, match="does not deserialize"):
        ckks_holder.decrypt_chunk(foreign)
    with pytest.raises(IntegrityError, match="does not deserialize"):
        ckks_holder.decrypt_chunk(foreign[:-100])
