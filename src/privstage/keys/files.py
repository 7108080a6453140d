"""Keys from a directory of files, as Kubernetes mounts a Secret.

Each file holds one base64 key. The file name is the key id (version 1, unless ``<id>.v1``
exists) or ``<id>.v<N>`` (version N). Names starting with '.' (Kubernetes' ``..data`` links) are ignored. A version is
disabled by a file ``<id>.v<N>.disabled`` next to it.
"""

from __future__ import annotations

import re
from pathlib import Path

from privstage.errors import KeyUnavailable
from privstage.keys.base import Key, decode_key_text

__all__ = ["FileKeyProvider"]


class FileKeyProvider:
    """Reads keys from ``directory`` on every call (so a rotated Secret is seen without restart)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def _files(self, key_id: str) -> dict[int, Path]:
        if not self.directory.is_dir():
            raise KeyUnavailable(f"key directory {self.directory} does not exist", key_id=key_id)
        found: dict[int, Path] = {}
        pattern = re.compile(re.escape(key_id) + r"\.v([1-9][0-9]*)$")
        for path in self.directory.iterdir():
            if path.name.startswith("."):
                continue
            m = pattern.match(path.name)
            if m and not path.with_name(path.name + ".disabled").exists():
                found[int(m.group(1))] = path
        plain = self.directory / key_id
        if 1 not in found and plain.is_file():
            found[1] = plain  # the plain file is version 1 unless <id>.v1 exists
        return found

    def versions(self, key_id: str) -> list[int]:
        try:
            return sorted(self._files(key_id))
        except KeyUnavailable:
            return []

    def get(self, key_id: str, version: int | None = None) -> Key:
        files = self._files(key_id)
        if not files:
            raise KeyUnavailable(f"key '{key_id}' not found in key directory {self.directory}", key_id=key_id)
        chosen = max(files) if version is None else version
        if chosen not in files:
            raise KeyUnavailable(
                f"key '{key_id}' version {chosen} is missing or disabled in {self.directory}", key_id=key_id
            )
        try:
            text = files[chosen].read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyUnavailable(
                f"key '{key_id}' version {chosen} cannot be read from {self.directory} ({type(exc).__name__})",
                key_id=key_id,
            ) from None
        return Key(key_id, chosen, decode_key_text(text, key_id=key_id, where=str(files[chosen])))

    def describe(self) -> str:
        return f"key directory {self.directory}"
