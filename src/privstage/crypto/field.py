"""Field mode: per-value AES-256-GCM of chosen columns, bound to (dataset, column, row key).

Byte format (version 1), any AES-GCM library decrypts it::

    ciphertext = 0x01 || u32be(dek_version) || nonce[12] || body || tag[16]
    body, tag  = AES-256-GCM(DEK, nonce, aad, plaintext)
    plaintext  = 0x00 (the value was null) | 0x01 || UTF-8(CAST(value AS STRING))
    aad        = ciphertext[0:5] || lp(dataset) || lp(column) || lp(row_key)
    lp(s)      = u32be(len(UTF-8(s))) || UTF-8(s)

So a ciphertext is 34 bytes longer than the UTF-8 value. Nulls are encrypted too (a dropped or
nulled ciphertext is detected, and nullness is hidden). The row key is the value of a declared
non-null column cast to string. Decryption restores the column's original type from the manifest.

How it runs: the JVM functions of privstage's jar (``FieldEncrypt`` / ``FieldDecrypt``) with one
cached ``Cipher`` per task. DEKs reach executors as a column of a broadcast relation (one row, or
one row per subject with per-subject keys), never as a literal in the plan. A value that does not
authenticate makes the JVM function throw; :func:`translating` turns that into
:class:`~privstage.errors.IntegrityError` (naming dataset, column and row key) or, for a subject
whose key was shredded, :class:`~privstage.errors.KeyUnavailable`. Never NULL, never garbage.
"""

from __future__ import annotations

import re
import shutil
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from privstage.crypto.envelope import (
    ColumnKey,
    EncryptionManifest,
    FieldEncryptionSpec,
    file_entries,
    new_dek,
    read_manifest,
    seal_manifest,
    unwrap_dek,
    verify_files,
    wrap_dek,
    write_manifest,
)
from privstage.crypto.subjects import MAX_SUBJECTS, SubjectKeyStore
from privstage.errors import IntegrityError, KeyUnavailable, PrivstageError, SpecError, wrap_library_error
from privstage.keys.base import KeyProvider

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import StructType

__all__ = [
    "FORMAT_VERSION",
    "OVERHEAD",
    "FieldKeys",
    "aad",
    "decrypt",
    "decrypt_dataset",
    "encrypt",
    "encrypt_dataset",
    "plan_decrypt",
    "plan_encrypt",
    "translating",
]

FORMAT_VERSION = 1
HEADER = 5
NONCE = 12
TAG = 16
#: Bytes a ciphertext adds to the UTF-8 value (header, nonce, tag and the null flag).
OVERHEAD = HEADER + NONCE + TAG + 1
_KEY_PREFIX = "__privstage_dek"
_SUBJECT_COL = "__privstage_subject"
_MARKER = re.compile(
    r"PRIVSTAGE_(INTEGRITY|KEY_UNAVAILABLE)\[dataset=(.*?)\|column=(.*?)\|row_key=(.*?)\|reason=(.*?)\]"
)


def aad(header: bytes, dataset: str, column: str, row_key: str) -> bytes:
    """The associated data of a field ciphertext (for independent decryptors)."""

    def lp(s: str) -> bytes:
        b = s.encode("utf-8")
        return struct.pack(">I", len(b)) + b

    return header[:HEADER] + lp(dataset) + lp(column) + lp(row_key)


@dataclass(frozen=True)
class FieldKeys:
    """A manifest and its clear DEKs, resolved before any data is read. Never serialize it."""

    manifest: EncryptionManifest
    deks: Mapping[str, bytes] = field(repr=False)
    subject_deks: Mapping[str, bytes] | None = field(default=None, repr=False)

    def __reduce__(self) -> object:
        raise TypeError("FieldKeys hold clear data keys and cannot be pickled")


def _check_columns(spec: FieldEncryptionSpec, schema: StructType) -> None:
    names = schema.fieldNames()
    wanted = [*spec.columns, spec.row_key] + ([spec.subject_column] if spec.subject_column else [])
    for name in wanted:
        if name not in names:
            raise SpecError(f"column '{name}' is not in the input (columns: {', '.join(names)})")
    from pyspark.sql.types import ArrayType, BinaryType, MapType
    from pyspark.sql.types import StructType as ST

    for name in spec.columns:
        dtype = schema[name].dataType
        if isinstance(dtype, BinaryType | MapType | ST | ArrayType):
            raise SpecError(f"column '{name}' has type {dtype.simpleString()}; field mode takes scalar columns")


def plan_encrypt(spec: FieldEncryptionSpec, schema: StructType, keys: KeyProvider) -> FieldKeys:
    """Fresh DEKs for each column, wrapped by the KEK's current version. No data is read.

    With ``spec.subject_column`` the per-subject DEKs are created by :func:`encrypt` from the subject
    store; the manifest then records no column DEKs.

    Raises:
        SpecError: unknown column or unsupported type.
        KeyUnavailable: the KEK cannot be fetched (fails closed: nothing is written).
    """
    _check_columns(spec, schema)
    kek = keys.get(spec.kek_id)
    deks: dict[str, bytes] = {}
    columns = []
    for name in spec.columns:
        spark_type = schema[name].dataType.simpleString()
        if spec.subject_column:
            columns.append(ColumnKey(column=name, spark_type=spark_type))
            continue
        deks[name] = new_dek()
        wrapped = wrap_dek(kek, deks[name], context=f"{spec.dataset}/{name}")
        columns.append(ColumnKey(column=name, spark_type=spark_type, wrapped_dek=wrapped))
    manifest = EncryptionManifest(
        dataset=spec.dataset,
        mode="field",
        kek_id=spec.kek_id,
        columns=tuple(columns),
        row_key=spec.row_key,
        subject_column=spec.subject_column,
    )
    return FieldKeys(manifest=manifest, deks=deks)


def plan_decrypt(manifest: EncryptionManifest, keys: KeyProvider) -> FieldKeys:
    """Unwrap the manifest's DEKs (per-subject keys are looked up by :func:`decrypt`).

    Raises:
        KeyUnavailable: a KEK version is missing or disabled.
        IntegrityError: a wrapped DEK fails authentication.
    """
    if manifest.mode != "field":
        raise SpecError(f"dataset '{manifest.dataset}' is encrypted in {manifest.mode} mode, not field mode")
    deks = {}
    for col in manifest.columns:
        if col.wrapped_dek is not None:
            deks[col.column] = unwrap_dek(keys, col.wrapped_dek, expected_context=f"{manifest.dataset}/{col.column}")
    return FieldKeys(manifest=manifest, deks=deks)


def _require_jvm(spark: SparkSession) -> None:
    from privstage.jvm import field_udfs_available

    if not field_udfs_available(spark):
        raise SpecError("field encryption needs privstage's jar on the Spark classpath (build it with `make jvm`)")


def _distinct_subjects(df: DataFrame, column: str) -> list[str]:
    from pyspark.sql import functions as F

    c = F.col(column).cast("string")
    rows = df.select(c.alias("s")).where(c.isNotNull()).distinct().limit(MAX_SUBJECTS + 1).collect()
    if len(rows) > MAX_SUBJECTS:
        raise SpecError(f"subject_column '{column}' has more than {MAX_SUBJECTS} distinct subjects")
    return [r[0] for r in rows]


def _with_keys(
    df: DataFrame, keys: FieldKeys, spark: SparkSession, subject_deks: Mapping[str, bytes] | None
) -> DataFrame:
    """``df`` joined with the broadcast key relation: one column per column DEK, or the subject's DEK.

    The relation is built from an Arrow table (a LocalRelation: no Python worker, and plans show its
    column names only, never its values).
    """
    import pyarrow as pa
    from pyspark.sql import functions as F

    m = keys.manifest
    if m.subject_column is None:
        names = [c.column for c in m.columns]
        table = pa.table({f"{_KEY_PREFIX}{i}": pa.array([keys.deks[n]], pa.binary()) for i, n in enumerate(names)})
        return df.crossJoin(F.broadcast(spark.createDataFrame(table)))
    items = sorted((subject_deks or {}).items())
    table = pa.table(
        {
            _SUBJECT_COL: pa.array([s for s, _ in items], pa.string()),
            _KEY_PREFIX: pa.array([k for _, k in items], pa.binary()),
        }
    )
    rel = spark.createDataFrame(table)
    return df.join(F.broadcast(rel), df[m.subject_column].cast("string") == rel[_SUBJECT_COL], "left")


def _dek_col(joined: DataFrame, m: EncryptionManifest, index: int) -> Any:
    return joined[_KEY_PREFIX] if m.subject_column else joined[f"{_KEY_PREFIX}{index}"]


def _builtin_ciphertext(value: Any, dek: Any, version: int, dataset: str, column: str, row_key: Any) -> Any:
    """The same byte format composed from Spark's ``aes_encrypt`` (GCM, random IV, AAD), whose output is
    ``iv || body || tag``: prefixing the header gives exactly the documented ciphertext."""
    from pyspark.sql import functions as F

    def lp_literal(text: str) -> bytes:
        raw = text.encode("utf-8")
        return struct.pack(">I", len(raw)) + raw

    header = bytes([FORMAT_VERSION]) + struct.pack(">I", version)
    rk = F.encode(row_key, "UTF-8")
    rk_len = F.unhex(F.lpad(F.hex(F.octet_length(rk)), 8, "0"))
    aad_expr = F.concat(F.lit(header + lp_literal(dataset) + lp_literal(column)), rk_len, rk)
    plain = F.when(value.isNull(), F.lit(b"\x00")).otherwise(F.concat(F.lit(b"\x01"), F.encode(value, "UTF-8")))
    sealed = F.concat(F.lit(header), F.aes_encrypt(plain, dek, F.lit("GCM"), F.lit("DEFAULT"), F.lit(b""), aad_expr))
    where = f"dataset={dataset}|column={column}|row_key="
    return (
        F.when(row_key.isNull(), F.raise_error(F.lit(f"PRIVSTAGE_INTEGRITY[{where}null|reason=the row key is null]")))
        .when(
            dek.isNull(),
            F.raise_error(
                F.concat(
                    F.lit(f"PRIVSTAGE_KEY_UNAVAILABLE[{where}"), row_key, F.lit("|reason=no data key for this row]")
                )
            ),
        )
        .otherwise(sealed)
    )


def encrypt(
    df: DataFrame,
    keys: FieldKeys,
    *,
    spark: SparkSession,
    subjects: SubjectKeyStore | None = None,
    impl: str | None = None,
) -> DataFrame:
    """The DataFrame with each chosen column replaced (same name, same place) by BINARY ciphertext. Lazy.

    Args:
        impl: ``jvm`` (privstage's ``FieldEncrypt``, one cached Cipher per task; the default when the jar
            is loaded) or ``builtin`` (Spark's ``aes_encrypt`` in GCM mode with the same header and AAD, the
            fallback without the jar; measured about 1.5x slower than ``jvm``). Same bytes either way.

    Raises:
        SpecError: the jar is missing, or per-subject keys are configured without a subject store.
    """
    from pyspark.sql import functions as F

    from privstage.jvm import FIELD_ENCRYPT_UDF, field_udfs_available

    if impl is None:
        impl = "jvm" if field_udfs_available(spark) else "builtin"
    if impl not in ("builtin", "jvm"):
        raise SpecError(f"impl must be 'builtin' or 'jvm', not {impl!r}")
    if impl == "jvm":
        _require_jvm(spark)
    m = keys.manifest
    joined = _with_keys(df, keys, spark, _subject_deks(df, m, subjects, create=True))

    def ciphertext(name: str, col: Any, i: int) -> Column:
        row_key = joined[m.row_key].cast("string")
        value = joined[name].cast("string")
        if impl == "builtin":
            return _builtin_ciphertext(value, _dek_col(joined, m, i), col.dek_version, m.dataset, name, row_key)
        return F.call_udf(
            FIELD_ENCRYPT_UDF,
            value,
            _dek_col(joined, m, i),
            F.lit(col.dek_version),
            F.lit(m.dataset),
            F.lit(name),
            row_key,
        )

    return _replace_encrypted(df, joined, m, ciphertext)


def decrypt(
    df: DataFrame, keys: FieldKeys, *, spark: SparkSession, subjects: SubjectKeyStore | None = None
) -> DataFrame:
    """The DataFrame with each encrypted column decrypted to its original type. Lazy: run actions
    inside :func:`translating` to get IntegrityError / KeyUnavailable instead of Spark errors."""
    from pyspark.sql import functions as F

    from privstage.jvm import FIELD_DECRYPT_UDF

    _require_jvm(spark)
    m = keys.manifest
    subject_deks = _subject_deks(df, m, subjects, create=False)
    for col in m.columns:
        if col.column not in df.columns:
            raise IntegrityError(f"dataset '{m.dataset}': encrypted column '{col.column}' is missing")
    joined = _with_keys(df, keys, spark, subject_deks)

    def clear_value(name: str, col: Any, i: int) -> Column:
        clear = F.call_udf(
            FIELD_DECRYPT_UDF,
            joined[name],
            _dek_col(joined, m, i),
            F.lit(col.dek_version),
            F.lit(m.dataset),
            F.lit(name),
            joined[m.row_key].cast("string"),
        )
        return clear if col.spark_type == "string" else clear.cast(col.spark_type)

    return _replace_encrypted(df, joined, m, clear_value)


def _subject_deks(df: DataFrame, m: Any, subjects: SubjectKeyStore | None, *, create: bool) -> Any:
    """Per-subject DEKs of the subjects in ``df`` (created when encrypting, looked up when decrypting)."""
    if not m.subject_column:
        return None
    if subjects is None:
        raise SpecError(f"dataset '{m.dataset}' uses per-subject keys: a SubjectKeyStore is required")
    ids = _distinct_subjects(df, m.subject_column)
    return subjects.ensure(ids) if create else subjects.lookup(ids)


def _replace_encrypted(df: DataFrame, joined: DataFrame, m: Any, column_for: Any) -> DataFrame:
    """``df``'s columns in order, each of the manifest's columns replaced by ``column_for(name, col, index)``."""
    index = {c.column: i for i, c in enumerate(m.columns)}
    return joined.select(
        *[
            joined[name] if name not in index else column_for(name, m.columns[index[name]], index[name]).alias(name)
            for name in df.columns
        ]
    )


def _java_messages(exc: BaseException) -> str:
    parts = [str(exc)]
    java = getattr(exc, "java_exception", None)
    if java is not None:  # Py4JJavaError
        parts.append(str(java.toString()))
        cause = java.getCause()
        while cause is not None:
            parts.append(str(cause.toString()))
            cause = cause.getCause()
    return "\n".join(parts)


def translate(exc: BaseException, *, stage: str | None = None) -> PrivstageError | None:
    """IntegrityError / KeyUnavailable for a Spark error raised by privstage's field functions, else None."""
    match = _MARKER.search(_java_messages(exc))
    if match is None:
        from privstage.crypto.file import translate as translate_file  # a damaged Parquet file

        return translate_file(exc)
    kind, dataset, column, row_key, reason = match.groups()
    where = f"dataset '{dataset}', column '{column}', row key '{row_key}'"
    if kind == "KEY_UNAVAILABLE":
        return KeyUnavailable(f"{where}: {reason} (the subject's key was shredded or never created)", stage=stage)
    return IntegrityError(f"{where}: {reason}", stage=stage)


@contextmanager
def translating(*, stage: str | None = None, what: str = "field decryption") -> Iterator[None]:
    """Run Spark actions with privstage's crypto failures raised as IntegrityError / KeyUnavailable."""
    try:
        yield
    except PrivstageError:
        raise
    except Exception as exc:
        translated = translate(exc, stage=stage)
        if translated is not None:
            raise translated from None
        raise wrap_library_error(exc, f"{what} failed in Spark ({type(exc).__name__})", stage=stage) from None


# ------------------------------------------------------------------------------- whole datasets
def encrypt_dataset(
    df: DataFrame,
    path: str | Path,
    spec: FieldEncryptionSpec,
    keys: KeyProvider,
    *,
    spark: SparkSession,
    subjects: SubjectKeyStore | None = None,
) -> EncryptionManifest:
    """Encrypt ``df`` into Parquet at ``path`` (a new local directory) with its manifest.

    The manifest (written last) lists every data file with size and SHA-256. A failure leaves no
    directory behind.
    """
    target = Path(path)
    if target.exists():
        raise SpecError(f"output {target} exists already")
    plan = plan_encrypt(spec, df.schema, keys)
    try:
        with translating(what="field encryption"):
            encrypt(df, plan, spark=spark, subjects=subjects).write.parquet(str(target))
        manifest = seal_manifest(plan.manifest.model_copy(update={"files": file_entries(target)}), keys)
        write_manifest(target, manifest)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return manifest


def decrypt_dataset(
    path: str | Path,
    out: str | Path,
    keys: KeyProvider,
    *,
    spark: SparkSession,
    subjects: SubjectKeyStore | None = None,
) -> EncryptionManifest:
    """Verify the files of ``path`` against its manifest, decrypt, and write Parquet at ``out``.

    Nothing is left at ``out`` when anything fails.

    Raises:
        SpecError: no manifest.
        IntegrityError: the manifest's seal fails; a file is missing, extra or replaced; a value does not
            authenticate.
        KeyUnavailable: a KEK version is unavailable or a subject's key was shredded.
    """
    manifest = read_manifest(path)
    verify_files(path, manifest, keys)
    plan = plan_decrypt(manifest, keys)
    target = Path(out)
    if target.exists():
        raise SpecError(f"output {target} exists already")
    try:
        with translating():
            decrypt(spark.read.parquet(str(path)), plan, spark=spark, subjects=subjects).write.parquet(str(target))
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return manifest
