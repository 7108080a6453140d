"""Authenticated manifests of ciphertext datasets, and replay protection.

Each party's contribution and the aggregator's output carry a manifest: who made it (party id and
the id/version of the key that authenticates it), for which aggregation round, under which public
context (fingerprint) and slot layout (layout id), how many rows, values and ciphertexts it holds,
and the SHA-256 of every ciphertext. The manifest is canonical JSON authenticated with
HMAC-SHA-256 under a key derived (HKDF) from the party's privstage key, with the role and party id
in the derivation so that one party's key cannot vouch for another party.

Verifiers (aggregator, key holder) decide which key id belongs to which party; a manifest cannot
choose its own key. They detect: a forged manifest (bad MAC), a forged, tampered, truncated or
duplicated ciphertext (digests checked in Spark against the manifest), a replay (the round id is
not the current round, the nonce was consumed before, or the same party or nonce appears twice),
and a mismatched context or layout. Each raises :class:`~privstage.errors.IntegrityError` naming
the party.

HMAC is symmetric: a verifier holding a party's key could forge that party's manifest. Where the
aggregator is not trusted with that power, give it no party keys and let the key holder verify the
party manifests embedded in the aggregate manifest (or move to signatures).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from privstage.errors import IntegrityError, KeyUnavailable

if TYPE_CHECKING:  # pragma: no cover
    from privstage.keys import Key, KeyProvider

__all__ = [
    "AGGREGATE_FORMAT",
    "CONTRIBUTION_FORMAT",
    "MANIFEST_FILE",
    "Manifest",
    "ReplayGuard",
    "canonical_json",
    "resolve_key",
]

CONTRIBUTION_FORMAT = "privstage-he-contribution/1"
AGGREGATE_FORMAT = "privstage-he-aggregate/1"
#: The manifest's file name inside a ciphertext dataset directory (Spark's readers skip ``_`` files).
MANIFEST_FILE = "_he_manifest.json"


def canonical_json(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _mac_key(key: Key, role: str, owner: str) -> bytes:
    return key.derive("he/manifest", f"{role}/{owner}".encode())


@dataclass(frozen=True)
class Manifest:
    """A contribution or aggregate manifest (``body`` is everything but the MAC)."""

    body: dict[str, Any]
    mac: str

    @property
    def format(self) -> str:
        return str(self.body.get("format"))

    @property
    def owner(self) -> str:
        """Party id (contribution) or aggregator id (aggregate)."""
        return str(self.body.get("party_id") or self.body.get("aggregator_id") or "?")

    @property
    def role(self) -> str:
        return "aggregator" if self.format == AGGREGATE_FORMAT else "party"

    def __getitem__(self, name: str) -> Any:
        return self.body[name]

    @property
    def digest(self) -> str:
        """SHA-256 of the signed manifest (names it inside an aggregate manifest)."""
        return hashlib.sha256(canonical_json({"body": self.body, "mac": self.mac})).hexdigest()

    @classmethod
    def sign(cls, body: dict[str, Any], key: Key) -> Manifest:
        """Authenticate ``body`` with the owner's key (adds key id, version, nonce and time if missing)."""
        full = dict(body)
        full.setdefault("nonce", secrets.token_hex(16))
        full.setdefault("created_at", datetime.now(UTC).isoformat())
        full["key_id"], full["key_version"] = key.key_id, key.version
        role = "aggregator" if full.get("format") == AGGREGATE_FORMAT else "party"
        owner = str(full.get("party_id") or full.get("aggregator_id"))
        mac = hmac.new(_mac_key(key, role, owner), canonical_json(full), hashlib.sha256).hexdigest()
        return cls(body=full, mac=mac)

    def verify(self, key: Key) -> None:
        """Check the MAC with the key the verifier holds for this owner.

        Raises:
            IntegrityError: the MAC does not verify (forged or altered manifest), naming the owner.
        """
        if (key.key_id, key.version) != (self.body.get("key_id"), self.body.get("key_version")):
            raise IntegrityError(
                f"{self.role} '{self.owner}': manifest is authenticated with key '{self.body.get('key_id')}' "
                f"v{self.body.get('key_version')}, expected '{key.key_id}' v{key.version}"
            )
        expected = hmac.new(_mac_key(key, self.role, self.owner), canonical_json(self.body), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, self.mac):
            raise IntegrityError(f"{self.role} '{self.owner}': manifest authentication failed (forged or altered)")

    def to_dict(self) -> dict[str, Any]:
        return {"body": self.body, "mac": self.mac}

    @classmethod
    def from_dict(cls, data: Any, *, where: str) -> Manifest:
        if not isinstance(data, dict) or not isinstance(data.get("body"), dict) or not isinstance(data.get("mac"), str):
            raise IntegrityError(f"{where}: not a privstage HE manifest")
        if data["body"].get("format") not in (CONTRIBUTION_FORMAT, AGGREGATE_FORMAT):
            raise IntegrityError(f"{where}: unknown manifest format")
        return cls(body=data["body"], mac=data["mac"])

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST_FILE
        tmp = path.with_name(f".{MANIFEST_FILE}.{secrets.token_hex(4)}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, directory: str | Path, *, who: str) -> Manifest:
        path = Path(directory) / MANIFEST_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise IntegrityError(f"{who}: the ciphertext dataset has no manifest") from None
        except (OSError, ValueError):
            raise IntegrityError(f"{who}: the manifest is unreadable") from None
        return cls.from_dict(data, where=who)


def resolve_key(keys: KeyProvider | Mapping[str, Key], key_id: str, version: Any, *, who: str) -> Key:
    """The verifier's key for ``key_id`` at the manifest's version (a Mapping is used as given)."""
    if isinstance(keys, Mapping):
        key = keys.get(key_id)
        if key is None:
            raise KeyUnavailable(f"{who}: no verification key '{key_id}'", key_id=key_id)
        return key
    if isinstance(version, bool) or not isinstance(version, int):
        raise IntegrityError(f"{who}: manifest names no key version")
    return keys.get(key_id, version)


@dataclass
class ReplayGuard:
    """Nonces already consumed (in memory, or persisted one per line in ``path``).

    The aggregator and key holder call :meth:`check` before using a manifest and :meth:`consume`
    after committing, so a retried run is not mistaken for a replay of itself before it finishes.
    """

    path: Path | None = None
    _seen: set[str] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.path is not None:
            self.path = Path(self.path)
            if self.path.exists():
                self._seen.update(line.strip() for line in self.path.read_text().splitlines() if line.strip())

    def check(self, manifest: Manifest) -> None:
        nonce = str(manifest.body.get("nonce"))
        with self._lock:
            if nonce in self._seen:
                raise IntegrityError(
                    f"{manifest.role} '{manifest.owner}': contribution {nonce[:8]}… was already consumed (replay)"
                )

    def consume(self, manifests: list[Manifest]) -> None:
        nonces = [str(m.body.get("nonce")) for m in manifests]
        with self._lock:
            self._seen.update(nonces)
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write("".join(n + "\n" for n in nonces))
                    handle.flush()
                    os.fsync(handle.fileno())
