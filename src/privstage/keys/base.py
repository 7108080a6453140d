"""Key material and the KeyProvider protocol.

A :class:`Key` holds secret bytes and never shows them: ``repr``/``str`` print the key id and
version only, and it refuses to be pickled (so it cannot ride into a Spark closure or an XCom).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from privstage.errors import KeyUnavailable

__all__ = ["MIN_KEY_BYTES", "Key", "KeyProvider", "decode_key_text"]

#: Keys shorter than 256 bits are refused.
MIN_KEY_BYTES = 32


@dataclass(frozen=True, eq=False)
class Key:
    """A versioned secret key. The material is reachable only through :meth:`material`."""

    key_id: str
    version: int
    _material: bytes = field(repr=False)

    def material(self) -> bytes:
        """The raw key bytes. Use only to derive or apply keys; never log or serialize them."""
        return self._material

    def fingerprint(self) -> str:
        """A public identifier of the key: HMAC of a fixed label, safe to publish (16 hex chars)."""
        return hmac.new(self._material, b"privstage/key-fingerprint/v1", hashlib.sha256).hexdigest()[:16]

    def derive(self, purpose: str, context: bytes = b"") -> bytes:
        """HKDF-SHA-256 of this key for a purpose (domain separation), 32 bytes."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        info = b"privstage/" + purpose.encode() + b"/" + context
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(self._material)

    def __repr__(self) -> str:
        return f"Key(key_id={self.key_id!r}, version={self.version}, material=<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> object:
        raise TypeError("privstage keys cannot be pickled or shipped; send key ids instead")


def decode_key_text(text: str, *, key_id: str, where: str) -> bytes:
    """Decode a base64 (standard or url-safe) key and check its length.

    Raises:
        KeyUnavailable: the text is not base64 or the key is shorter than 256 bits. The message
            names the key id and location, never the text.
    """
    cleaned = "".join(text.split())
    try:
        raw = base64.b64decode(cleaned.replace("-", "+").replace("_", "/") + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise KeyUnavailable(f"key '{key_id}' in {where} is not base64 text", key_id=key_id) from None
    if len(raw) < MIN_KEY_BYTES:
        raise KeyUnavailable(
            f"key '{key_id}' in {where} is {len(raw) * 8} bits; at least {MIN_KEY_BYTES * 8} are required",
            key_id=key_id,
        )
    return raw


@runtime_checkable
class KeyProvider(Protocol):
    """Where keys come from. Implementations raise KeyUnavailable, never return None."""

    def get(self, key_id: str, version: int | None = None) -> Key:
        """The key's given version, or its current (highest enabled) version."""
        ...  # pragma: no cover

    def versions(self, key_id: str) -> list[int]:
        """Enabled versions of a key, ascending. Empty when the key does not exist."""
        ...  # pragma: no cover

    def describe(self) -> str:
        """Where keys come from, for messages and reports (no secrets)."""
        ...  # pragma: no cover
