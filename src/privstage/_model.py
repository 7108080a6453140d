"""The base of every spec model (frozen, closed, no inline secrets), shared by :mod:`privstage.spec` and the
config models it embeds (:mod:`privstage.crypto.envelope`) without an import cycle."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["INLINE_SECRET_FIELDS", "KEY_ID_PATTERN", "StrictModel"]

KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Field names that would carry key material inline; they are refused with a pointed message.
INLINE_SECRET_FIELDS = frozenset({"key", "secret", "key_material", "key_value", "password", "hmac_key"})


class StrictModel(BaseModel):
    """Frozen, closed model: unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _refuse_inline_secrets(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for name in data:
                if str(name).lower() in INLINE_SECRET_FIELDS:
                    raise ValueError(
                        f"inline key material ('{name}') is not allowed in a spec; "
                        "store the key with the key provider and reference it with key_id"
                    )
        return data
