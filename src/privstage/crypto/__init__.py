"""Encryption at rest: envelope keys, field-level AEAD, Parquet Modular Encryption, crypto-shredding."""

from __future__ import annotations

from privstage.crypto.envelope import (
    ALGORITHM,
    ENCRYPTION_MANIFEST,
    ColumnKey,
    EncryptionManifest,
    EncryptionSpec,
    FieldEncryptionSpec,
    FileEncryptionSpec,
    FileEntry,
    WrappedKey,
    parse_encryption_spec,
    read_manifest,
    rewrap,
    unwrap_dek,
    verify_files,
    wrap_dek,
    write_manifest,
)
from privstage.crypto.subjects import SubjectKeyStore

__all__ = [
    "ALGORITHM",
    "ENCRYPTION_MANIFEST",
    "ColumnKey",
    "EncryptionManifest",
    "EncryptionSpec",
    "FieldEncryptionSpec",
    "FileEncryptionSpec",
    "FileEntry",
    "SubjectKeyStore",
    "WrappedKey",
    "parse_encryption_spec",
    "read_manifest",
    "rewrap",
    "unwrap_dek",
    "verify_files",
    "wrap_dek",
    "write_manifest",
]
