"""Whole-dataset encryption for callers outside a pipeline (the Dagster IO manager): write a DataFrame
encrypted and committed atomically, read a dataset back verified and decrypted.

Both are thin compositions of :mod:`privstage.crypto.field` / :mod:`privstage.crypto.file` with the engine's
staging and commit (:mod:`privstage.io`), so the guarantees are the stages': a write leaves the old dataset
or the new one, never half of one; a read checks the sealed manifest and every file before decrypting and
authenticates every value or page, raising IntegrityError / KeyUnavailable instead of returning data.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from privstage.crypto.envelope import (
    EncryptionManifest,
    FieldEncryptionSpec,
    FileEncryptionSpec,
    read_manifest,
    verify_files,
)
from privstage.io import commit, discard, new_staging_path

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

    from privstage.crypto.subjects import SubjectKeyStore
    from privstage.keys.base import KeyProvider

__all__ = ["read_decrypted", "write_encrypted"]


def write_encrypted(
    df: DataFrame,
    path: str | Path,
    spec: FieldEncryptionSpec | FileEncryptionSpec,
    keys: KeyProvider,
    *,
    spark: SparkSession,
    subjects: SubjectKeyStore | None = None,
    overwrite: bool = True,
) -> EncryptionManifest:
    """Encrypt ``df`` into a staging directory beside ``path`` and commit it there atomically.

    Raises:
        SpecError: unknown column, or ``path`` exists and ``overwrite`` is false.
        KeyUnavailable: the KEK cannot be fetched (fails closed: nothing is written).
    """
    staging = new_staging_path(str(path), uuid.uuid4().hex[:12])
    try:
        if isinstance(spec, FileEncryptionSpec):
            from privstage.crypto.file import KeyDirectory, encrypt_dataset

            ids = {spec.kek_id, spec.footer_kek_id or spec.kek_id}
            with KeyDirectory.for_provider(keys, ids) as key_dir:
                manifest = encrypt_dataset(df, staging, spec, key_dir, keys)
        else:
            from privstage.crypto.field import encrypt_dataset as encrypt_fields

            manifest = encrypt_fields(df, staging, spec, keys, spark=spark, subjects=subjects)
        commit(staging, str(path), overwrite=overwrite)
    except BaseException:
        discard(staging)
        raise
    return manifest


def read_decrypted(
    path: str | Path, keys: KeyProvider, *, spark: SparkSession, subjects: SubjectKeyStore | None = None
) -> DataFrame:
    """The dataset at ``path``, verified against its sealed manifest and decrypted.

    The result is checkpointed eagerly (``localCheckpoint``), so every value is authenticated here and the
    caller gets either the whole clear dataset or an error, never a lazy frame that fails later (and a
    per-run key directory can be removed on return).

    Raises:
        SpecError: no manifest.
        IntegrityError: the seal fails, a file is missing / extra / changed, a value or page does not
            authenticate.
        KeyUnavailable: a KEK version is unavailable, or a subject's key was shredded.
    """
    manifest = read_manifest(path)
    verify_files(path, manifest, keys)
    if manifest.mode == "field":
        from privstage.crypto.field import decrypt, plan_decrypt, translating

        with translating():
            return decrypt(
                spark.read.parquet(str(path)), plan_decrypt(manifest, keys), spark=spark, subjects=subjects
            ).localCheckpoint(eager=True)
    from privstage.crypto.file import KeyDirectory
    from privstage.crypto.file import read_dataset as read_file_dataset
    from privstage.crypto.file import translating as translating_file

    with KeyDirectory.for_provider(keys, set(manifest.file_kms.values())) as key_dir, translating_file(manifest):
        return read_file_dataset(spark, path, key_dir).localCheckpoint(eager=True)
