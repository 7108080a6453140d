"""A key provider that serves only some key ids: the keys one consumer (a downstream asset, a task) is allowed."""

from __future__ import annotations

from collections.abc import Iterable

from privstage.errors import KeyUnavailable
from privstage.keys.base import Key, KeyProvider

__all__ = ["RestrictedKeyProvider"]


class RestrictedKeyProvider:
    """Wraps a provider; a key id outside ``allowed`` is :class:`~privstage.errors.KeyUnavailable` for ``holder``."""

    def __init__(self, provider: KeyProvider, allowed: Iterable[str], *, holder: str) -> None:
        self.provider = provider
        self.allowed = frozenset(allowed)
        self.holder = holder

    def _check(self, key_id: str) -> None:
        if key_id not in self.allowed:
            raise KeyUnavailable(f"{self.holder} is not allowed key '{key_id}'", key_id=key_id)

    def get(self, key_id: str, version: int | None = None) -> Key:
        self._check(key_id)
        return self.provider.get(key_id, version)

    def versions(self, key_id: str) -> list[int]:
        return self.provider.versions(key_id) if key_id in self.allowed else []

    def describe(self) -> str:
        return f"{self.provider.describe()} (only {', '.join(sorted(self.allowed)) or 'no keys'} for {self.holder})"
