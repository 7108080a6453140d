"""The local development keyring: one JSON file, mode 0600, created by ``privstage keys init``.

For development and demos only: keys sit unencrypted on disk. Production uses the key directory
(a mounted Kubernetes Secret) or a KMS-backed provider.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from privstage.errors import KeyUnavailable, SpecError
from privstage.keys.base import Key, decode_key_text

__all__ = ["DEV_WARNING", "LocalKeyring"]

FORMAT = "privstage-dev-keyring/1"
DEV_WARNING = (
    "privstage dev keyring: keys are stored unencrypted in a local file. "
    "For development and demos only; use a key directory (Kubernetes Secret) or a KMS in production."
)


class LocalKeyring:
    """A JSON keyring file. Refuses to load a file that others can read."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # ---------------------------------------------------------------- creation
    @classmethod
    def init(
        cls, path: str | Path, key_ids: tuple[str, ...] = ("pseudonym-key",), *, warn: bool = True
    ) -> LocalKeyring:
        """Create a new keyring with one random 256-bit key per id.

        Raises:
            SpecError: the file exists already (it is never overwritten).
        """
        keyring = cls(path)
        if keyring.path.exists():
            raise SpecError(f"keyring {keyring.path} exists already; it is never overwritten")
        keyring.path.parent.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {"format": FORMAT, "warning": DEV_WARNING, "keys": {}}
        for key_id in key_ids:
            data["keys"][key_id] = {"versions": {"1": cls._new_version()}}
        # O_EXCL: never clobber a file created concurrently.
        fd = os.open(keyring.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
        if warn:
            print(f"WARNING: {DEV_WARNING}", file=sys.stderr)
        return keyring

    @staticmethod
    def _new_version() -> dict[str, Any]:
        return {
            "material": base64.b64encode(secrets.token_bytes(32)).decode(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "enabled": True,
        }

    # ---------------------------------------------------------------- storage
    def _load(self) -> dict[str, Any]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise KeyUnavailable(
                f"dev keyring {self.path} does not exist; create it with 'privstage keys init --path {self.path}'"
            ) from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyUnavailable(
                f"dev keyring {self.path} is accessible by other users (mode {stat.S_IMODE(st.st_mode):o}); "
                f"run 'chmod 600 {self.path}'"
            )
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise KeyUnavailable(f"dev keyring {self.path} cannot be read ({type(exc).__name__})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise KeyUnavailable(f"{self.path} is not a privstage dev keyring ({FORMAT})")
        return data

    def _store(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
        os.replace(tmp, self.path)

    # ---------------------------------------------------------------- provider API
    def versions(self, key_id: str) -> list[int]:
        entry = self._load()["keys"].get(key_id)
        if not entry:
            return []
        return sorted(int(v) for v, meta in entry["versions"].items() if meta.get("enabled", True))

    def get(self, key_id: str, version: int | None = None) -> Key:
        entry = self._load()["keys"].get(key_id)
        if not entry:
            raise KeyUnavailable(
                f"key '{key_id}' is not in dev keyring {self.path}; add it with 'privstage keys create {key_id}'",
                key_id=key_id,
            )
        enabled = {int(v): meta for v, meta in entry["versions"].items() if meta.get("enabled", True)}
        if not enabled:
            raise KeyUnavailable(f"key '{key_id}' has no enabled version in {self.path}", key_id=key_id)
        chosen = max(enabled) if version is None else version
        if chosen not in enabled:
            raise KeyUnavailable(f"key '{key_id}' version {chosen} is missing or disabled", key_id=key_id)
        material = decode_key_text(enabled[chosen]["material"], key_id=key_id, where=str(self.path))
        return Key(key_id, chosen, material)

    def describe(self) -> str:
        return f"dev keyring {self.path}"

    # ---------------------------------------------------------------- management
    def create(self, key_id: str) -> Key:
        """Add a new key (version 1). Raises SpecError when the id exists."""
        data = self._load()
        if key_id in data["keys"]:
            raise SpecError(f"key '{key_id}' exists already in {self.path}")
        data["keys"][key_id] = {"versions": {"1": self._new_version()}}
        self._store(data)
        return self.get(key_id)

    def rotate(self, key_id: str) -> Key:
        """Add a new version of a key; older versions stay readable."""
        data = self._load()
        entry = data["keys"].get(key_id)
        if not entry:
            raise KeyUnavailable(f"key '{key_id}' is not in dev keyring {self.path}", key_id=key_id)
        new = max(int(v) for v in entry["versions"]) + 1
        entry["versions"][str(new)] = self._new_version()
        self._store(data)
        return self.get(key_id, new)

    def list(self) -> dict[str, list[int]]:
        """Key ids and their enabled versions (no material)."""
        return {key_id: self.versions(key_id) for key_id in self._load()["keys"]}

    def import_key(self, key_id: str, text: str) -> None:
        """Store a given base64 key (tests and migrations)."""
        data = self._load()
        if key_id in data["keys"]:
            raise SpecError(f"key '{key_id}' exists already in {self.path}")
        decode_key_text(text, key_id=key_id, where="imported key")
        entry = self._new_version()
        entry["material"] = text.strip()
        data["keys"][key_id] = {"versions": {"1": entry}}
        self._store(data)
