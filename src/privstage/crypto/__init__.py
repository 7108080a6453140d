"""Encryption at rest: envelope keys, field-level AEAD, Parquet Modular Encryption, crypto-shredding.

Submodules: :mod:`~privstage.crypto.envelope` (DEKs, KEK wrapping, manifests, rewrap, config models),
:mod:`~privstage.crypto.field` (per-value AES-256-GCM in the JVM), :mod:`~privstage.crypto.file`
(Parquet Modular Encryption and the pyarrow KMS client), :mod:`~privstage.crypto.subjects` (per-subject
keys and shredding), :mod:`~privstage.crypto.guards`. This package imports neither Spark nor Arrow.
"""

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
    ManifestSeal,
    WrappedKey,
    check_seal,
    parse_encryption_spec,
    read_manifest,
    rewrap,
    seal_manifest,
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
    "ManifestSeal",
    "SubjectKeyStore",
    "WrappedKey",
    "check_seal",
    "parse_encryption_spec",
    "read_manifest",
    "rewrap",
    "seal_manifest",
    "unwrap_dek",
    "verify_files",
    "wrap_dek",
    "write_manifest",
]
