"""Envelope keys: random data keys (DEKs) wrapped by a key-encryption key (KEK) from the KeyProvider.

Every DEK is 32 random bytes from the OS CSPRNG, used for one (dataset, column) of one write (or one
subject, see :mod:`privstage.crypto.subjects`), and stored only wrapped::

    wrapping key = HKDF-SHA-256(KEK, info = "privstage/envelope/wrap/")      (domain separation)
    wrapped      = base64(nonce[12] || AES-256-GCM(wrapping key, nonce, aad, DEK) || tag[16])
    aad          = UTF-8("privstage/envelope/v1|" + kek_id + "|v" + kek_version + "|" + context)

``context`` names what the DEK is for (``dataset/column``), so a wrapped DEK copied to another column
or dataset in a manifest does not unwrap. A :class:`EncryptionManifest` records key ids, KEK versions,
algorithm and wrapped DEKs, never a clear key; :func:`rewrap` re-wraps every DEK under another KEK
version without touching data files.

Only AES-256-GCM is accepted: the config models reject ECB, CBC, GCM-CTR, caller-supplied IVs or
nonces and plaintext footers with a :class:`~privstage.errors.SpecError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError, model_validator

from privstage._model import KEY_ID_PATTERN, StrictModel
from privstage.errors import IntegrityError, SpecError
from privstage.keys.base import Key, KeyProvider

__all__ = [
    "ALGORITHM",
    "DEK_BYTES",
    "ENCRYPTION_MANIFEST",
    "ColumnKey",
    "EncryptionManifest",
    "EncryptionSpec",
    "FieldEncryptionSpec",
    "FileEncryptionSpec",
    "FileEntry",
    "ManifestSeal",
    "WrappedKey",
    "check_seal",
    "file_entries",
    "new_dek",
    "parse_encryption_spec",
    "read_manifest",
    "refuse_weak_settings",
    "rewrap",
    "seal_manifest",
    "unwrap_dek",
    "verify_files",
    "wrap_dek",
    "write_manifest",
]

ALGORITHM = "AES-256-GCM"
DEK_BYTES = 32
MANIFEST_FORMAT = "privstage-encryption/1"
#: The manifest's file name inside an encrypted dataset directory (Spark and pyarrow skip '_' files).
ENCRYPTION_MANIFEST = "_privstage_encryption.json"
_NONCE = 12
_WRAP_PURPOSE = "envelope/wrap"
_NAME = r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$"

#: Words that name a mode or setting privstage refuses, with the reason given in the SpecError.
_REFUSED_ALGORITHMS = {
    "ECB": "ECB leaks equal blocks",
    "CBC": "CBC is unauthenticated (tampering goes unnoticed)",
    "CTR": "CTR modes are unauthenticated; AES_GCM_CTR_V1 leaves Parquet pages without integrity",
}
_REFUSED_FIELDS = {
    "iv": "IVs are never supplied by users: privstage draws a fresh random nonce per value",
    "nonce": "nonces are never supplied by users: privstage draws a fresh random nonce per value",
    "plaintext_footer": "plaintext Parquet footers are refused: the footer is always encrypted",
}


def refuse_weak_settings(data: Any) -> Any:
    """Refuse ECB / CBC / CTR algorithms, user IVs or nonces and plaintext footers (a ValueError naming why)."""
    if not isinstance(data, Mapping):
        return data
    for name, value in data.items():
        lowered = str(name).lower()
        if lowered in _REFUSED_FIELDS and value not in (None, False):
            raise ValueError(_REFUSED_FIELDS[lowered])
    algorithm = str(data.get("algorithm", ALGORITHM)).upper().replace("_", "-")
    for word, reason in _REFUSED_ALGORITHMS.items():
        if word in algorithm.split("-") or (word == "CTR" and "CTR" in algorithm):
            raise ValueError(f"algorithm '{data.get('algorithm')}' is refused: {reason}; use {ALGORITHM}")
    if str(data.get("footer", "encrypted")).lower() != "encrypted":
        raise ValueError(_REFUSED_FIELDS["plaintext_footer"])
    return data


class _EncryptionBase(StrictModel):
    dataset: str = Field(pattern=_NAME, description="Dataset id, bound into every ciphertext (AAD) and manifest.")
    kek_id: str = Field(description="Key id of the KEK in the KeyProvider that wraps the data keys.")
    columns: tuple[str, ...] = Field(min_length=1, description="Columns to encrypt.")
    algorithm: Literal["AES-256-GCM"] = Field(ALGORITHM, description="The only algorithm privstage offers.")

    @model_validator(mode="before")
    @classmethod
    def _refuse_weak_settings(cls, data: Any) -> Any:
        return refuse_weak_settings(data)

    @model_validator(mode="after")
    def _check(self) -> _EncryptionBase:
        if not KEY_ID_PATTERN.match(self.kek_id):
            raise ValueError(f"kek_id '{self.kek_id}' is not a key id")
        if len(set(self.columns)) != len(self.columns):
            raise ValueError("columns are listed twice")
        return self


class FieldEncryptionSpec(_EncryptionBase):
    """Per-value AEAD of chosen columns (see :mod:`privstage.crypto.field` for the byte format)."""

    mode: Literal["field"] = "field"
    row_key: str = Field(description="A non-null column that identifies a row; bound into every ciphertext.")
    subject_column: str | None = Field(
        None, description="With it, each subject (e.g. patient id) gets its own data key, for crypto-shredding."
    )

    @model_validator(mode="after")
    def _check_field(self) -> FieldEncryptionSpec:
        if self.row_key in self.columns:
            raise ValueError(f"row_key '{self.row_key}' cannot itself be encrypted: it is bound into the AAD")
        if self.subject_column is not None and self.subject_column in self.columns:
            raise ValueError(f"subject_column '{self.subject_column}' must stay readable to find its key")
        return self


class FileEncryptionSpec(_EncryptionBase):
    """Parquet Modular Encryption: column keys for chosen columns and an encrypted footer."""

    mode: Literal["file"] = "file"
    footer: Literal["encrypted"] = Field("encrypted", description="Plaintext footers are refused.")
    footer_kek_id: str | None = Field(None, description="KEK of the footer key (default: kek_id).")


EncryptionSpec = Annotated[FieldEncryptionSpec | FileEncryptionSpec, Field(discriminator="mode")]
_SPEC_ADAPTER: TypeAdapter[Any] = TypeAdapter(EncryptionSpec)


def parse_encryption_spec(data: Mapping[str, Any]) -> FieldEncryptionSpec | FileEncryptionSpec:
    """Validate an encryption config; every problem is a SpecError naming the field.

    Raises:
        SpecError: unknown keys, a refused algorithm / IV / plaintext footer, bad ids.
    """
    try:
        return _SPEC_ADAPTER.validate_python(dict(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        message = str(first["msg"]).removeprefix("Value error, ")
        raise SpecError(message, path=where) from None


# ------------------------------------------------------------------------------------------ wrapping
class WrappedKey(StrictModel):
    """A DEK wrapped by one KEK version. Holds no clear key material."""

    kek_id: str
    kek_version: int = Field(ge=1)
    algorithm: Literal["AES-256-GCM"] = ALGORITHM
    context: str
    wrapped: str = Field(description="base64(nonce || ciphertext || tag)")


def new_dek() -> bytes:
    """A fresh 256-bit data key from the OS CSPRNG."""
    return secrets.token_bytes(DEK_BYTES)


def _aad(kek_id: str, version: int, context: str) -> bytes:
    return f"privstage/envelope/v1|{kek_id}|v{version}|{context}".encode()


def wrap_dek(kek: Key, dek: bytes, *, context: str) -> WrappedKey:
    """Wrap ``dek`` under ``kek`` for ``context`` (``dataset/column`` or a subject reference)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if len(dek) != DEK_BYTES:
        raise ValueError("data keys are 256 bits")
    nonce = os.urandom(_NONCE)
    sealed = AESGCM(kek.derive(_WRAP_PURPOSE)).encrypt(nonce, dek, _aad(kek.key_id, kek.version, context))
    return WrappedKey(
        kek_id=kek.key_id,
        kek_version=kek.version,
        context=context,
        wrapped=base64.b64encode(nonce + sealed).decode("ascii"),
    )


def unwrap_dek(keys: KeyProvider, wrapped: WrappedKey, *, expected_context: str | None = None) -> bytes:
    """The clear DEK of ``wrapped``.

    Raises:
        KeyUnavailable: the KEK version is missing or disabled (from the provider).
        IntegrityError: the wrapped key fails authentication (tampered, or moved to another context).
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    context = wrapped.context if expected_context is None else expected_context
    kek = keys.get(wrapped.kek_id, wrapped.kek_version)
    try:
        raw = base64.b64decode(wrapped.wrapped, validate=True)
        return AESGCM(kek.derive(_WRAP_PURPOSE)).decrypt(
            raw[:_NONCE], raw[_NONCE:], _aad(kek.key_id, kek.version, context)
        )
    except (InvalidTag, binascii.Error, ValueError):
        raise IntegrityError(
            f"wrapped data key for '{context}' does not authenticate under key '{wrapped.kek_id}' "
            f"version {wrapped.kek_version} (tampered manifest or wrong key)"
        ) from None


# ------------------------------------------------------------------------------------------ manifest
class ColumnKey(StrictModel):
    """One encrypted column: its data key (wrapped), DEK version and original type."""

    column: str
    spark_type: str = Field(description="The column's type before encryption (Spark DDL), restored on decrypt.")
    dek_version: int = Field(1, ge=1, description="Written into every field ciphertext's header.")
    wrapped_dek: WrappedKey | None = Field(
        None, description="None with per-subject keys (they live in the subject store)."
    )


class FileEntry(StrictModel):
    """One data file of the dataset, so that a deleted, added or replaced file is detected."""

    name: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ManifestSeal(StrictModel):
    """``HMAC-SHA-256(HKDF(KEK version, "manifest/seal"), canonical JSON of the manifest without seal and
    created)``: an edited file list (a deleted part file, a replaced file) or column list is detected
    even when the attacker also edits the manifest."""

    kek_version: int = Field(ge=1)
    mac: str = Field(pattern=r"^[0-9a-f]{64}$")


class EncryptionManifest(StrictModel):
    """What a reader needs to decrypt a dataset, minus the KEK. Safe to log and ship (no clear keys)."""

    format: Literal["privstage-encryption/1"] = MANIFEST_FORMAT
    dataset: str
    mode: Literal["field", "file"]
    algorithm: Literal["AES-256-GCM"] = ALGORITHM
    kek_id: str
    columns: tuple[ColumnKey, ...]
    row_key: str | None = None
    subject_column: str | None = None
    file_kms: dict[str, str] = Field(
        default_factory=dict, description="File mode: master key id per column and for the footer."
    )
    files: tuple[FileEntry, ...] = ()
    seal: ManifestSeal | None = Field(None, description="HMAC over the manifest's content, keyed from the KEK.")
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def column(self, name: str) -> ColumnKey:
        for col in self.columns:
            if col.column == name:
                return col
        raise SpecError(f"column '{name}' is not encrypted in dataset '{self.dataset}'")

    def kek_versions(self) -> dict[str, list[int]]:
        """KEK id -> versions that wrap this manifest's DEKs."""
        out: dict[str, set[int]] = {}
        for col in self.columns:
            if col.wrapped_dek is not None:
                out.setdefault(col.wrapped_dek.kek_id, set()).add(col.wrapped_dek.kek_version)
        return {k: sorted(v) for k, v in out.items()}


def _seal_mac(manifest: EncryptionManifest, kek: Key) -> str:
    body = manifest.model_dump(mode="json", exclude={"seal", "created"})
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(kek.derive("manifest/seal"), canonical, hashlib.sha256).hexdigest()


def seal_manifest(manifest: EncryptionManifest, keys: KeyProvider, version: int | None = None) -> EncryptionManifest:
    """The manifest with a seal under the KEK's ``version`` (default: current)."""
    kek = keys.get(manifest.kek_id, version)
    return manifest.model_copy(update={"seal": ManifestSeal(kek_version=kek.version, mac=_seal_mac(manifest, kek))})


def check_seal(manifest: EncryptionManifest, keys: KeyProvider) -> None:
    """Verify the manifest's seal.

    Raises:
        IntegrityError: no seal, or it does not match (the manifest was edited).
        KeyUnavailable: the sealing KEK version cannot be fetched.
    """
    if manifest.seal is None:
        raise IntegrityError(f"dataset '{manifest.dataset}': the encryption manifest is not sealed")
    kek = keys.get(manifest.kek_id, manifest.seal.kek_version)
    if not hmac.compare_digest(_seal_mac(manifest, kek), manifest.seal.mac):
        raise IntegrityError(f"dataset '{manifest.dataset}': the encryption manifest was modified (seal mismatch)")


def rewrap(manifest: EncryptionManifest, keys: KeyProvider, new_version: int | None = None) -> EncryptionManifest:
    """The manifest with every DEK re-wrapped under ``new_version`` (default: the KEK's current version).

    Data files are not touched: the DEKs stay the same, only their wrapping changes.

    Raises:
        KeyUnavailable: the old or the new KEK version cannot be fetched.
        IntegrityError: a wrapped DEK fails authentication.
    """
    new_kek = keys.get(manifest.kek_id, new_version)
    columns = []
    for col in manifest.columns:
        if col.wrapped_dek is None:
            columns.append(col)
            continue
        dek = unwrap_dek(keys, col.wrapped_dek)
        columns.append(col.model_copy(update={"wrapped_dek": wrap_dek(new_kek, dek, context=col.wrapped_dek.context)}))
    if manifest.seal is not None:
        check_seal(manifest, keys)  # never re-seal an edited manifest
    rewrapped = manifest.model_copy(update={"columns": tuple(columns), "seal": None})
    return seal_manifest(rewrapped, keys, new_kek.version) if manifest.seal is not None else rewrapped


def write_manifest(directory: str | Path, manifest: EncryptionManifest) -> Path:
    """Write ``manifest`` into the dataset directory atomically (temp file + rename)."""
    path = Path(directory) / ENCRYPTION_MANIFEST
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_manifest(directory: str | Path) -> EncryptionManifest:
    """The dataset's manifest.

    Raises:
        SpecError: no manifest (the dataset was not written by privstage's encrypt) or it is malformed.
    """
    path = Path(directory) / ENCRYPTION_MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{path} is missing: the dataset has no encryption manifest") from None
    except (OSError, ValueError) as exc:
        raise SpecError(f"{path} cannot be read ({type(exc).__name__})") from None
    try:
        return EncryptionManifest.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"{path} is not a privstage encryption manifest ({exc.error_count()} errors)") from None


def _data_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith(("_", ".")))


def file_entries(directory: str | Path) -> tuple[FileEntry, ...]:
    """Name, size and SHA-256 of every data file in ``directory`` (not ``_``/``.`` files)."""
    entries = []
    for path in _data_files(Path(directory)):
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        entries.append(FileEntry(name=path.name, size=path.stat().st_size, sha256=digest.hexdigest()))
    return tuple(entries)


def verify_files(directory: str | Path, manifest: EncryptionManifest, keys: KeyProvider | None = None) -> None:
    """Check the manifest's seal (with ``keys``) and that the directory holds exactly its files, byte for byte.

    Raises:
        KeyUnavailable: the sealing KEK version cannot be fetched.
        IntegrityError: a file is missing, extra, or differs (for instance an older file of the same
            dataset put in its place); the message names the dataset and file.
    """
    if keys is not None:
        check_seal(manifest, keys)
    expected = {f.name: f for f in manifest.files}
    actual = {f.name: f for f in file_entries(directory)}
    for name in sorted(expected.keys() - actual.keys()):
        raise IntegrityError(f"dataset '{manifest.dataset}': file {name} listed in the manifest is missing")
    for name in sorted(actual.keys() - expected.keys()):
        raise IntegrityError(f"dataset '{manifest.dataset}': file {name} is not in the manifest")
    for name, entry in sorted(expected.items()):
        if actual[name] != entry:
            raise IntegrityError(
                f"dataset '{manifest.dataset}': file {name} does not match the manifest (modified or replaced)"
            )
