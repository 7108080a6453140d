"""Per-subject data keys for crypto-shredding.

A :class:`SubjectKeyStore` is one JSON file (mode 0600) that maps a keyed reference of each subject
(``HMAC-SHA-256(HKDF(KEK, "subjects/ref"), UTF-8(subject))``, so the store does not list subject ids in
clear) to that subject's DEK wrapped by the KEK (:func:`privstage.crypto.envelope.wrap_dek`, context
``subject/<ref>``). :meth:`SubjectKeyStore.shred` deletes a subject's wrapped DEK: every ciphertext of
that subject, in every copy of the data, then fails with KeyUnavailable, while other subjects decrypt.

The store must not be backed up beside the data it protects (a backup keeps the shredded key). The
reference key uses the KEK version recorded at creation, so rotating the KEK does not move references.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from privstage.crypto.envelope import WrappedKey, new_dek, unwrap_dek, wrap_dek
from privstage.errors import SpecError
from privstage.keys.base import KeyProvider

__all__ = ["MAX_SUBJECTS", "SubjectKeyStore"]

FORMAT = "privstage-subject-keys/1"
#: Subjects of one encrypt or decrypt (their distinct ids are gathered on the driver to build the key relation).
MAX_SUBJECTS = 1_000_000


class SubjectKeyStore:
    """Wrapped per-subject DEKs in one file. Not thread-safe; one writer at a time."""

    def __init__(self, path: str | Path, keys: KeyProvider, kek_id: str) -> None:
        self.path = Path(path)
        self.keys = keys
        self.kek_id = kek_id

    # ------------------------------------------------------------------ storage
    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"format": FORMAT, "kek_id": self.kek_id, "ref_key_version": None, "subjects": {}}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SpecError(f"subject key store {self.path} cannot be read ({type(exc).__name__})") from None
        if data.get("format") != FORMAT or data.get("kek_id") != self.kek_id:
            raise SpecError(f"{self.path} is not a subject key store for key '{self.kek_id}'")
        return data

    def _store(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def _ref_key(self, data: dict[str, Any]) -> bytes:
        if data["ref_key_version"] is None:
            data["ref_key_version"] = self.keys.get(self.kek_id).version
        return self.keys.get(self.kek_id, data["ref_key_version"]).derive("subjects/ref")

    @staticmethod
    def _ref(ref_key: bytes, subject: str) -> str:
        return hmac.new(ref_key, subject.encode("utf-8"), hashlib.sha256).hexdigest()

    # ------------------------------------------------------------------ API
    def ensure(self, subjects: Iterable[str]) -> dict[str, bytes]:
        """Subject -> DEK for ``subjects``, creating (and storing, wrapped) keys for new subjects.

        Raises:
            KeyUnavailable: the KEK cannot be fetched (nothing is stored then).
        """
        data = self._load()
        ref_key = self._ref_key(data)
        kek = self.keys.get(self.kek_id)
        out: dict[str, bytes] = {}
        changed = False
        for subject in subjects:
            ref = self._ref(ref_key, subject)
            entry = data["subjects"].get(ref)
            if entry is None:
                dek = new_dek()
                data["subjects"][ref] = wrap_dek(kek, dek, context=f"subject/{ref}").model_dump()
                changed = True
            else:
                dek = unwrap_dek(self.keys, WrappedKey.model_validate(entry), expected_context=f"subject/{ref}")
            out[subject] = dek
        if changed:
            self._store(data)
        return out

    def lookup(self, subjects: Iterable[str]) -> dict[str, bytes]:
        """Subject -> DEK for the subjects that still have a key (shredded ones are absent)."""
        data = self._load()
        if data["ref_key_version"] is None:
            return {}
        ref_key = self._ref_key(data)
        out = {}
        for subject in subjects:
            ref = self._ref(ref_key, subject)
            entry = data["subjects"].get(ref)
            if entry is not None:
                out[subject] = unwrap_dek(
                    self.keys, WrappedKey.model_validate(entry), expected_context=f"subject/{ref}"
                )
        return out

    def shred(self, subject: str) -> bool:
        """Destroy ``subject``'s key. True when a key was destroyed, False when there was none."""
        data = self._load()
        if data["ref_key_version"] is None:
            return False
        ref = self._ref(self._ref_key(data), subject)
        if data["subjects"].pop(ref, None) is None:
            return False
        self._store(data)
        return True

    def rewrap(self, new_version: int | None = None) -> int:
        """Re-wrap every subject key under the KEK's ``new_version`` (default current); returns the count."""
        data = self._load()
        kek = self.keys.get(self.kek_id, new_version)
        for ref, entry in data["subjects"].items():
            wrapped = WrappedKey.model_validate(entry)
            dek = unwrap_dek(self.keys, wrapped, expected_context=f"subject/{ref}")
            data["subjects"][ref] = wrap_dek(kek, dek, context=f"subject/{ref}").model_dump()
        self._store(data)
        return len(data["subjects"])

    def __len__(self) -> int:
        return len(self._load()["subjects"])

    def describe(self) -> str:
        return f"subject key store {self.path} (key '{self.kek_id}')"
