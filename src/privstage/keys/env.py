"""Keys from environment variables: ``<PREFIX><ID>`` and ``<PREFIX><ID>_V<N>``, base64 values."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from privstage.errors import KeyUnavailable
from privstage.keys.base import Key, decode_key_text

__all__ = ["EnvKeyProvider"]


def env_name(prefix: str, key_id: str) -> str:
    """Variable name for a key id: upper case, other characters become '_'."""
    return prefix + re.sub(r"[^A-Z0-9]", "_", key_id.upper())


class EnvKeyProvider:
    """Reads keys from the environment.

    ``PRIVSTAGE_KEY_PSEUDONYM_KEY_V2`` holds version 2 of key ``pseudonym-key``; a plain
    ``PRIVSTAGE_KEY_PSEUDONYM_KEY`` is version 1 unless ``..._V1`` exists (so adding a version
    keeps the old one readable).
    """

    def __init__(self, prefix: str = "PRIVSTAGE_KEY_", environ: Mapping[str, str] | None = None) -> None:
        self.prefix = prefix
        self._environ = environ

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def _variables(self, key_id: str) -> dict[int, str]:
        base = env_name(self.prefix, key_id)
        found: dict[int, str] = {}
        pattern = re.compile(re.escape(base) + r"_V([1-9][0-9]*)$")
        for name in self.environ:
            m = pattern.match(name)
            if m:
                found[int(m.group(1))] = name
        if 1 not in found and base in self.environ:
            found[1] = base  # the plain variable is version 1 unless <NAME>_V1 exists
        return found

    def versions(self, key_id: str) -> list[int]:
        return sorted(self._variables(key_id))

    def get(self, key_id: str, version: int | None = None) -> Key:
        variables = self._variables(key_id)
        if not variables:
            raise KeyUnavailable(
                f"key '{key_id}' not found: set {env_name(self.prefix, key_id)} (base64)", key_id=key_id
            )
        chosen = max(variables) if version is None else version
        if chosen not in variables:
            raise KeyUnavailable(f"key '{key_id}' has no version {chosen} in the environment", key_id=key_id)
        name = variables[chosen]
        material = decode_key_text(self.environ[name], key_id=key_id, where=f"environment variable {name}")
        return Key(key_id, chosen, material)

    def describe(self) -> str:
        return f"environment variables {self.prefix}*"
