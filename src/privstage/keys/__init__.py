"""Key providers: environment variables, a key directory (Kubernetes Secret), a local dev keyring."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from privstage.keys.base import MIN_KEY_BYTES, Key, KeyProvider, decode_key_text
from privstage.keys.env import EnvKeyProvider
from privstage.keys.files import FileKeyProvider
from privstage.keys.local import DEV_WARNING, LocalKeyring

if TYPE_CHECKING:  # pragma: no cover
    from privstage.spec import KeysSpec

__all__ = [
    "DEV_WARNING",
    "MIN_KEY_BYTES",
    "EnvKeyProvider",
    "FileKeyProvider",
    "Key",
    "KeyProvider",
    "LocalKeyring",
    "decode_key_text",
    "default_keyring_path",
    "provider_from_spec",
]


def default_keyring_path(state_dir: str | Path) -> Path:
    """``$PRIVSTAGE_KEYRING`` or ``<state_dir>/dev-keyring.json``."""
    env = os.environ.get("PRIVSTAGE_KEYRING")
    return Path(env) if env else Path(state_dir) / "dev-keyring.json"


def provider_from_spec(spec: KeysSpec, *, state_dir: str | Path, base_dir: str | Path = ".") -> KeyProvider:
    """Build the provider a spec's ``keys`` section names. Relative paths resolve against base_dir."""

    def resolve(p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else Path(base_dir) / path

    if spec.provider == "env":
        return EnvKeyProvider(prefix=spec.prefix)
    if spec.provider == "files":
        return FileKeyProvider(resolve(spec.directory))
    return LocalKeyring(resolve(spec.path) if spec.path else default_keyring_path(state_dir))
