"""TenSEAL contexts and key separation between the roles.

Only the key holder ever holds a secret key. It builds the context from checked
:mod:`~privstage.he.params`, exports a *public* context (public key only: no secret key, and no
relinearization or Galois keys, which sums do not need and which would grow the context from
about 0.25 MB to 35 MB), and deserializes its own export to prove the secret key is absent before
handing the bytes out. Parties and the aggregator accept contexts only through
:class:`PublicContext`, which refuses bytes or objects that hold a secret key: a role handed more
key material than it needs fails closed instead of quietly carrying it into Spark tasks, files or
logs.

TenSEAL objects do not pickle, so contexts and ciphertexts travel as bytes. The public context's
fingerprint is the SHA-256 of its exact serialization (TenSEAL's serialization is deterministic:
deserializing and re-serializing yields the same bytes), so every party, the aggregator and the
key holder can name the context a ciphertext was made under. The key holder stores its secret
context sealed with AES-256-GCM under a key from a :class:`~privstage.keys.KeyProvider` (HKDF-derived
for this purpose), bound to the public fingerprint as associated data.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from privstage.errors import HEParameterError, IntegrityError, KeyUnavailable
from privstage.he.params import BFVParams, CKKSParams, HEParams

if TYPE_CHECKING:  # pragma: no cover
    import tenseal as ts

    from privstage.keys import Key

__all__ = ["KeyHolder", "PublicContext", "context_fingerprint", "load_context_cached"]

_SEALED_MAGIC = b"PSHE1"
_SEAL_PURPOSE = "he/secret-context"


def _ts() -> Any:
    try:
        import tenseal
    except ImportError as exc:  # pragma: no cover - the he extra is missing
        raise HEParameterError("homomorphic encryption needs TenSEAL: install privstage[he]") from exc
    return tenseal


def _serialize_public(ctx: ts.Context) -> bytes:
    return ctx.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False)


def context_fingerprint(public_bytes: bytes) -> str:
    """The public name of a context: SHA-256 of its public serialization (hex)."""
    return hashlib.sha256(public_bytes).hexdigest()


def _check_matches(ctx: ts.Context, params: HEParams, *, who: str) -> None:
    """The context must be built with exactly the declared (checked) parameters."""
    ts = _ts()
    seal = ctx.seal_context().data
    parms = seal.key_context_data().parms()
    expected_scheme = ts.SCHEME_TYPE.CKKS.value if isinstance(params, CKKSParams) else ts.SCHEME_TYPE.BFV.value
    problems = []
    if parms.scheme() != expected_scheme:
        problems.append(f"scheme is not {params.scheme.upper()}")
    if parms.poly_modulus_degree() != params.poly_modulus_degree:
        problems.append(f"poly_modulus_degree {parms.poly_modulus_degree()} != {params.poly_modulus_degree}")
    total = seal.key_context_data().total_coeff_modulus_bit_count()
    if total != sum(params.coeff_mod_bit_sizes):
        problems.append(
            f"coefficient modulus has {total} bits, the parameters declare {sum(params.coeff_mod_bit_sizes)}"
        )
    if isinstance(params, BFVParams):
        # plain_modulus() returns an unbound seal::Modulus; (t+1)/2 is exposed as an int
        if seal.first_context_data().plain_upper_half_threshold() != (params.plain_modulus + 1) // 2:
            problems.append("plain_modulus differs")
    elif ctx.global_scale != params.scale:
        problems.append(f"global scale is not 2^{params.scale_bits}")
    if problems:
        raise HEParameterError(f"{who}: the context does not match the declared parameters: " + "; ".join(problems))


def _refuse_secret(ctx: ts.Context, role: str) -> None:
    if ctx.has_secret_key() or ctx.is_private():
        raise HEParameterError(
            f"the {role} was handed a context that holds a secret key; the {role} role accepts public "
            "contexts only (export one with KeyHolder.public_context())"
        )


@dataclass(frozen=True)
class PublicContext:
    """Public-context bytes that are verified to hold no secret key and to match the declared parameters.

    Build it with :meth:`from_bytes` (a party or the aggregator receiving bytes) or
    :meth:`KeyHolder.public_context` (the key holder exporting them).

    Attributes:
        data: The serialized public context.
        params: The declared parameters the context was checked against.
        fingerprint: SHA-256 of ``data``.
    """

    data: bytes = field(repr=False)
    params: HEParams
    fingerprint: str = ""
    role: str = "party"

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes | bytearray) or not self.data:
            raise HEParameterError(f"the {self.role} needs public-context bytes")
        object.__setattr__(self, "data", bytes(self.data))
        fp = context_fingerprint(self.data)
        if self.fingerprint and self.fingerprint != fp:
            raise IntegrityError(f"the {self.role}'s public context does not match its declared fingerprint")
        object.__setattr__(self, "fingerprint", fp)
        try:
            ctx = _ts().context_from(self.data, n_threads=1)
        except Exception:
            raise HEParameterError(f"the {self.role} was handed bytes that are not a TenSEAL context") from None
        _refuse_secret(ctx, self.role)
        _check_matches(ctx, self.params, who=self.role)
        object.__setattr__(self, "_ctx", ctx)

    @classmethod
    def from_bytes(cls, data: bytes, params: HEParams, *, role: str, fingerprint: str = "") -> PublicContext:
        """Accept public-context bytes for a role, refusing any that hold a secret key.

        Raises:
            HEParameterError: the bytes hold a secret key, are no context, or do not match ``params``.
            IntegrityError: ``fingerprint`` is given and differs.
        """
        return cls(data=data, params=params, fingerprint=fingerprint, role=role)

    @classmethod
    def accept(cls, value: PublicContext | bytes | Any, params: HEParams, *, role: str) -> PublicContext:
        """A role's entry point: ``PublicContext``, bytes, or a TenSEAL context (refused if it holds a secret key)."""
        if isinstance(value, PublicContext):
            if value.params != params:
                raise HEParameterError(f"the {role}'s public context was checked against other parameters")
            return cls(data=value.data, params=params, fingerprint=value.fingerprint, role=role)
        if isinstance(value, bytes | bytearray):
            return cls(data=bytes(value), params=params, role=role)
        ts = _ts()
        if isinstance(value, ts.Context):
            _refuse_secret(value, role)
            return cls(data=_serialize_public(value), params=params, role=role)
        raise HEParameterError(f"the {role} needs a PublicContext or its bytes, got {type(value).__name__}")

    @property
    def context(self) -> ts.Context:
        """The deserialized public context (for the driver; executors use :func:`load_context_cached`)."""
        return self._ctx  # type: ignore[attr-defined]


# Executors deserialize a context once per Python worker, keyed by fingerprint.
_CACHE: dict[str, Any] = {}
_CACHE_LOCK = threading.Lock()


def load_context_cached(data: bytes, fingerprint: str) -> ts.Context:
    """Deserialize public-context bytes in an executor (cached per worker process; refuses secret keys)."""
    with _CACHE_LOCK:
        ctx = _CACHE.get(fingerprint)
        if ctx is None:
            if context_fingerprint(data) != fingerprint:
                raise IntegrityError("public context bytes do not match their fingerprint")
            ctx = _ts().context_from(data, n_threads=1)
            _refuse_secret(ctx, "executor")
            if len(_CACHE) > 8:
                _CACHE.clear()
            _CACHE[fingerprint] = ctx
        return ctx


class KeyHolder:
    """The only role with the secret key: creates the context, exports the public part, decrypts.

    Build with :meth:`create` (new keys) or :meth:`unseal` (a stored secret context).
    """

    def __init__(self, context: ts.Context, params: HEParams) -> None:
        if not context.has_secret_key():
            raise HEParameterError("the key holder needs a context with a secret key")
        _check_matches(context, params, who="key holder")
        self._context = context
        self.params = params
        self._public = _serialize_public(context)
        self.fingerprint = context_fingerprint(self._public)

    def __repr__(self) -> str:
        return f"KeyHolder(scheme={self.params.scheme}, fingerprint={self.fingerprint[:16]}, secret=<redacted>)"

    def __reduce__(self) -> object:
        raise TypeError("a KeyHolder holds a secret key and cannot be pickled or shipped")

    @classmethod
    def create(cls, params: HEParams) -> KeyHolder:
        """New keys for checked parameters (no relinearization or Galois keys: sums do not need them)."""
        ts = _ts()
        try:
            if isinstance(params, CKKSParams):
                ctx = ts.context(
                    ts.SCHEME_TYPE.CKKS,
                    poly_modulus_degree=params.poly_modulus_degree,
                    coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
                    n_threads=1,
                )
                ctx.global_scale = params.scale
            else:
                ctx = ts.context(
                    ts.SCHEME_TYPE.BFV,
                    poly_modulus_degree=params.poly_modulus_degree,
                    plain_modulus=params.plain_modulus,
                    coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
                    n_threads=1,
                )
        except ValueError:
            raise HEParameterError(f"SEAL refused the {params.scheme.upper()} parameters {params.to_dict()}") from None
        return cls(ctx, params)

    def public_context(self) -> PublicContext:
        """Export the public context, verified to deserialize without a secret key."""
        exported = PublicContext(data=self._public, params=self.params, role="key holder export")
        if exported.context.has_secret_key():  # pragma: no cover - PublicContext already refuses
            raise HEParameterError("exported public context holds a secret key")
        return exported

    def seal(self, key: Key) -> bytes:
        """The secret context encrypted for storage (AES-256-GCM, key derived from ``key``)."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        secret = self._context.serialize(save_public_key=True, save_secret_key=True, save_galois_keys=False)
        nonce = os.urandom(12)
        aad = _SEALED_MAGIC + self.fingerprint.encode()
        blob = AESGCM(key.derive(_SEAL_PURPOSE, self.fingerprint.encode())).encrypt(nonce, secret, aad)
        return _SEALED_MAGIC + self.fingerprint.encode() + nonce + blob

    @classmethod
    def unseal(cls, sealed: bytes, key: Key, params: HEParams) -> KeyHolder:
        """Load a secret context stored with :meth:`seal`.

        Raises:
            KeyUnavailable: wrong key (the message names the key id only) or a damaged blob.
        """
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        head = len(_SEALED_MAGIC) + 64
        if not sealed.startswith(_SEALED_MAGIC) or len(sealed) < head + 12 + 16:
            raise IntegrityError("sealed key-holder context is not in privstage's format")
        fingerprint = sealed[len(_SEALED_MAGIC) : head]
        nonce, blob = sealed[head : head + 12], sealed[head + 12 :]
        try:
            secret = AESGCM(key.derive(_SEAL_PURPOSE, fingerprint)).decrypt(nonce, blob, _SEALED_MAGIC + fingerprint)
        except InvalidTag:
            raise KeyUnavailable(
                f"key '{key.key_id}' v{key.version} does not open the sealed key-holder context", key_id=key.key_id
            ) from None
        holder = cls(_ts().context_from(secret, n_threads=1), params)
        if holder.fingerprint.encode() != fingerprint:
            raise IntegrityError("sealed key-holder context does not match its fingerprint")
        return holder

    def decrypt_chunk(self, ciphertext: bytes) -> np.ndarray:
        """Decrypt one serialized ciphertext to all its slots (float64 for CKKS, int64 for BFV).

        Raises:
            IntegrityError: the bytes are no ciphertext under this context.
        """
        ts = _ts()
        try:
            if isinstance(self.params, CKKSParams):
                vector = ts.ckks_vector_from(self._context, ciphertext)
                return np.asarray(vector.decrypt(), dtype=np.float64)
            vector = ts.bfv_vector_from(self._context, ciphertext)
            return np.asarray(vector.decrypt(), dtype=np.int64)
        except (ValueError, RuntimeError, TypeError):
            raise IntegrityError("a ciphertext does not deserialize under the key holder's context") from None
