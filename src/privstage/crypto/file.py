"""File mode: Parquet Modular Encryption (PME) with column keys for chosen columns and an encrypted footer.

Every other column is encrypted with the footer key (``complete.columns``), so that every page of the
file is authenticated: PME leaves unlisted columns' pages plaintext and unauthenticated otherwise.

Spark writes and reads through parquet-mr's ``PropertiesDrivenCryptoFactory`` and privstage's
``io.privstage.spark.DirectoryKmsClient`` (Java, in privstage's jar). All settings go as options of
one read or write (Spark copies them into that job's Hadoop configuration); none is a session setting,
and none holds key material: the KMS client gets only a directory path.

Where the KMS client finds KEKs (:class:`KeyDirectory`):

* ``KeyDirectory.mounted(path)``: the provider's own key directory (``<id>.v<N>`` base64 files, the
  layout of :class:`privstage.keys.FileKeyProvider`), typically a Kubernetes Secret mounted into the
  driver and every executor pod. Nothing is copied; rotation is a new file in the Secret.
* ``KeyDirectory.materialized(keys, key_ids)``: for any other provider (env, dev keyring, a KMS
  adapter), a per-run directory (mode 0700 under ``/dev/shm`` when it exists, files 0600) holding the
  enabled versions of just the KEKs the run needs, deleted when the run ends. Executors must share the
  driver's filesystem (local mode); on a cluster mount the Secret instead.

The directory was chosen over a key-service reference because the key provider privstage ships for
clusters *is* a directory (a mounted Secret), so the JVM reads exactly what Python reads, with no
network service to secure; the materialized form adapts every other provider to it.

KMS caches: parquet-mr caches KMS clients and unwrapped KEKs per access token for
``parquet.encryption.cache.lifetime.seconds`` (600 s by default). privstage sends a fresh random token
(a cache scope, not a credential) with every read and write, so a key disabled, rotated or shredded
in between is seen by the next job, and sets the lifetime to 60 s to bound how long clear KEKs stay in
JVM memory.

Wrapping of Parquet's keys (the same in Java and in :class:`PyArrowKmsClient`)::

    kek     = HKDF-SHA-256(master key, info = "privstage/pme/master/")
    wrapped = "v" + N + ":" + base64(nonce[12] || AES-256-GCM(kek, nonce, aad, key) || tag[16])
    aad     = UTF-8("privstage/pme/v1/" + master_key_id + ".v" + N)
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from privstage.crypto.envelope import (
    ColumnKey,
    EncryptionManifest,
    FileEncryptionSpec,
    file_entries,
    read_manifest,
    seal_manifest,
    verify_files,
    write_manifest,
)
from privstage.errors import IntegrityError, KeyUnavailable, PrivstageError, SpecError, wrap_library_error
from privstage.keys.base import KeyProvider

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "CRYPTO_FACTORY",
    "KeyDirectory",
    "PyArrowKmsClient",
    "decrypt_dataset",
    "encrypt_dataset",
    "pyarrow_decryption_properties",
    "pyarrow_encryption_properties",
    "read_options",
    "translating",
    "write_options",
]

CRYPTO_FACTORY = "org.apache.parquet.crypto.keytools.PropertiesDrivenCryptoFactory"
KEY_DIR_SETTING = "privstage.kms.key.dir"
CACHE_LIFETIME_SECONDS = 60
_PME_INFO = "pme/master"
_WRAPPED = re.compile(r"v([1-9][0-9]{0,8}):([A-Za-z0-9+/=]+)")


@dataclass(frozen=True)
class KeyDirectory:
    """A directory of ``<id>.v<N>`` base64 KEK files the Java KMS client reads. Holds no key bytes itself."""

    path: Path
    owned: bool = False

    @classmethod
    def mounted(cls, path: str | Path) -> KeyDirectory:
        """The provider's own key directory (a mounted Kubernetes Secret)."""
        p = Path(path)
        if not p.is_dir():
            raise KeyUnavailable(f"key directory {p} does not exist")
        return cls(p)

    @classmethod
    @contextmanager
    def materialized(cls, keys: KeyProvider, key_ids: Iterable[str]) -> Iterator[KeyDirectory]:
        """A per-run 0700 directory with the enabled versions of ``key_ids``, removed on exit.

        Raises:
            KeyUnavailable: a key id has no enabled version (nothing is written then).
        """
        wanted = {key_id: keys.versions(key_id) for key_id in sorted(set(key_ids))}
        for key_id, versions in wanted.items():
            if not versions:
                raise KeyUnavailable(f"key '{key_id}' not found in {keys.describe()}", key_id=key_id)
        shm = "/dev/shm"  # noqa: S108 - memory-backed; mkdtemp makes a private 0700 directory inside it
        base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
        path = Path(tempfile.mkdtemp(prefix="privstage-kms-", dir=base))  # mkdtemp: mode 0700
        try:
            for key_id, versions in wanted.items():
                for version in versions:
                    material = keys.get(key_id, version).material()
                    fd = os.open(path / f"{key_id}.v{version}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as fh:
                        fh.write(base64.b64encode(material))
            yield cls(path, owned=True)
        finally:
            shutil.rmtree(path, ignore_errors=True)

    @classmethod
    @contextmanager
    def for_provider(cls, keys: KeyProvider, key_ids: Iterable[str]) -> Iterator[KeyDirectory]:
        """The provider's own directory when it is a :class:`~privstage.keys.FileKeyProvider` (a mounted
        Secret: nothing copied), else a :meth:`materialized` one for the duration of the block."""
        from privstage.keys.files import FileKeyProvider

        if isinstance(keys, FileKeyProvider):
            for key_id in sorted(set(key_ids)):
                keys.get(key_id)  # fail closed: KeyUnavailable before Spark touches a file
            yield cls.mounted(keys.directory)
            return
        with cls.materialized(keys, key_ids) as directory:
            yield directory

    def describe(self) -> str:
        return f"key directory {self.path}" + (" (per-run)" if self.owned else "")


def _common_options(key_dir: KeyDirectory) -> dict[str, str]:
    return {
        "parquet.crypto.factory.class": CRYPTO_FACTORY,
        "parquet.encryption.kms.client.class": "io.privstage.spark.DirectoryKmsClient",
        KEY_DIR_SETTING: str(key_dir.path),
        # A fresh cache scope per job: parquet-mr caches KEKs per token for the cache lifetime.
        "parquet.encryption.key.access.token": secrets.token_hex(16),
        "parquet.encryption.cache.lifetime.seconds": str(CACHE_LIFETIME_SECONDS),
    }


def write_options(spec: FileEncryptionSpec, key_dir: KeyDirectory) -> dict[str, str]:
    """Options for ``DataFrameWriter.options(...)``: AES_GCM_V1, encrypted footer, column keys."""
    options = _common_options(key_dir)
    options.update(
        {
            "parquet.encryption.column.keys": f"{spec.kek_id}:{','.join(spec.columns)}",
            "parquet.encryption.footer.key": spec.footer_kek_id or spec.kek_id,
            "parquet.encryption.algorithm": "AES_GCM_V1",
            "parquet.encryption.plaintext.footer": "false",
            # Every other column is encrypted (and so authenticated) with the footer key: with "false",
            # pages of unlisted columns are plaintext and a flipped byte there goes unnoticed by PME.
            "parquet.encryption.complete.columns": "true",
        }
    )
    return options


def read_options(key_dir: KeyDirectory) -> dict[str, str]:
    """Options for ``DataFrameReader.options(...)``."""
    return _common_options(key_dir)


# ------------------------------------------------------------------------------- errors
def _java_chain(exc: BaseException) -> list[str]:
    parts = [str(exc)]
    java = getattr(exc, "java_exception", None) or getattr(exc, "_origin", None)
    seen = 0
    while java is not None and seen < 20:
        try:
            parts.append(f"{java.getClass().getName()}: {java.getMessage()}")
            java = java.getCause()
        except Exception:  # not a py4j object
            break
        seen += 1
    return parts


def translate(exc: BaseException, manifest: EncryptionManifest | None = None) -> PrivstageError | None:
    """KeyUnavailable / IntegrityError for a PME failure in Spark, else None.

    Spark reports a wrong or missing master key as ``FAILED_READ_FILE.CANNOT_READ_FILE_FOOTER`` ("ensure
    that the file is in either ORC or Parquet format"); the real cause is in the Java cause chain.
    """
    chain = _java_chain(exc)
    text = "\n".join(chain)
    dataset = f"dataset '{manifest.dataset}': " if manifest else ""
    match = re.search(
        r"privstage kms: (key '([^']*)'.*?(missing or disabled|not found|unreadable|shorter)[^\n]*)", text
    )
    if match:
        return KeyUnavailable(f"{dataset}{match.group(1)}", key_id=match.group(2))
    match = re.search(r"privstage kms: ([^\n]*(does not unwrap|malformed)[^\n]*)", text)
    if match:
        return IntegrityError(f"{dataset}{match.group(1)}")
    crypto = (
        "ParquetCryptoRuntimeException",
        "AEADBadTagException",
        "Tag mismatch",
        "GCM tag check failed",
        "ChecksumException",  # Hadoop's .crc beside a local file no longer matches it
    )
    if any(word in text for word in crypto):
        reason = next(line for line in [*chain[1:], chain[0]] if any(word in line for word in crypto))
        file_match = re.search(r"file:(/[^\s\]'\"]+)", text)
        where = f" in {Path(file_match.group(1)).name}" if file_match else ""
        return IntegrityError(f"{dataset}Parquet decryption failed{where}: {reason.strip()[:300]}")
    if "CANNOT_READ_FILE_FOOTER" in text or "FAILED_READ_FILE" in text:
        return IntegrityError(f"{dataset}an encrypted Parquet footer cannot be read (tampered or not encrypted)")
    return None


@contextmanager
def translating(manifest: EncryptionManifest | None = None, *, stage: str | None = None) -> Iterator[None]:
    """Run Spark actions with PME failures raised as KeyUnavailable / IntegrityError."""
    try:
        yield
    except PrivstageError:
        raise
    except Exception as exc:
        translated = translate(exc, manifest)
        if translated is not None:
            translated.stage = stage
            raise translated from None
        raise wrap_library_error(
            exc, f"Parquet encryption failed in Spark ({type(exc).__name__})", stage=stage
        ) from None


# ------------------------------------------------------------------------------- datasets
def encrypt_dataset(
    df: DataFrame, path: str | Path, spec: FileEncryptionSpec, key_dir: KeyDirectory, keys: KeyProvider
) -> EncryptionManifest:
    """Write ``df`` as PME-encrypted Parquet at ``path`` (a new local directory) plus its manifest.

    Raises:
        SpecError: a column is unknown, or ``path`` exists.
        KeyUnavailable: the KEK cannot be fetched (checked before anything is written: fails closed).
    """
    names = df.columns
    for name in spec.columns:
        if name not in names:
            raise SpecError(f"column '{name}' is not in the input (columns: {', '.join(names)})")
    target = Path(path)
    if target.exists():
        raise SpecError(f"output {target} exists already")
    for key_id in {spec.kek_id, spec.footer_kek_id or spec.kek_id}:
        keys.get(key_id)  # fail closed before Spark starts writing
    try:
        with translating():
            df.write.options(**write_options(spec, key_dir)).parquet(str(target))
        manifest = EncryptionManifest(
            dataset=spec.dataset,
            mode="file",
            kek_id=spec.kek_id,
            columns=tuple(ColumnKey(column=c, spark_type=df.schema[c].dataType.simpleString()) for c in spec.columns),
            file_kms={"columns": spec.kek_id, "footer": spec.footer_kek_id or spec.kek_id},
            files=file_entries(target),
        )
        manifest = seal_manifest(manifest, keys)
        write_manifest(target, manifest)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return manifest


def read_dataset(spark: SparkSession, path: str | Path, key_dir: KeyDirectory) -> DataFrame:
    """The decrypted dataset (lazy; run actions inside :func:`translating`). Files are not verified here."""
    return spark.read.options(**read_options(key_dir)).parquet(str(path))


def decrypt_dataset(
    spark: SparkSession,
    path: str | Path,
    out: str | Path,
    key_dir: KeyDirectory,
    keys: KeyProvider,
    *,
    verify: bool = True,
) -> EncryptionManifest:
    """Verify ``path`` against its manifest, decrypt it and write plain Parquet at ``out``.

    Raises:
        SpecError: no manifest.
        IntegrityError: missing / extra / replaced file, or a page or footer that fails authentication.
        KeyUnavailable: a master key version is missing or disabled.
    """
    manifest = read_manifest(path)
    if manifest.mode != "file":
        raise SpecError(f"dataset '{manifest.dataset}' is encrypted in {manifest.mode} mode, not file mode")
    if verify:
        verify_files(path, manifest, keys)
    target = Path(out)
    if target.exists():
        raise SpecError(f"output {target} exists already")
    try:
        with translating(manifest):
            read_dataset(spark, path, key_dir).write.parquet(str(target))
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return manifest


# ------------------------------------------------------------------------------- pyarrow
def _aad(master_key_identifier: str, version: int) -> bytes:
    return f"privstage/pme/v1/{master_key_identifier}.v{version}".encode()


def _pyarrow_kms_base() -> type:
    import pyarrow.parquet.encryption as pe

    return pe.KmsClient


class PyArrowKmsClient(_pyarrow_kms_base()):  # type: ignore[misc]
    """pyarrow's KmsClient over a KeyProvider, wrapping keys exactly as the Java DirectoryKmsClient does."""

    def __init__(self, keys: KeyProvider) -> None:
        super().__init__()
        self._keys = keys

    def _kek(self, master_key_identifier: str, version: int | None) -> tuple[int, bytes]:
        key = self._keys.get(master_key_identifier, version)
        return key.version, key.derive(_PME_INFO)

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        version, kek = self._kek(master_key_identifier, None)
        nonce = os.urandom(12)
        sealed = AESGCM(kek).encrypt(nonce, bytes(key_bytes), _aad(master_key_identifier, version))
        return f"v{version}:" + base64.b64encode(nonce + sealed).decode("ascii")

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        match = _WRAPPED.fullmatch(wrapped_key or "")
        if match is None:
            raise IntegrityError(f"the wrapped key for '{master_key_identifier}' is malformed")
        version = int(match.group(1))
        _, kek = self._kek(master_key_identifier, version)
        try:
            raw = base64.b64decode(match.group(2), validate=True)
            return AESGCM(kek).decrypt(raw[:12], raw[12:], _aad(master_key_identifier, version))
        except (InvalidTag, binascii.Error, ValueError):
            raise IntegrityError(
                f"key '{master_key_identifier}' version {version} does not unwrap this file's key "
                "(wrong key or tampered key metadata)"
            ) from None


def _crypto_factory(keys: KeyProvider) -> Any:
    import pyarrow.parquet.encryption as pe

    return pe.CryptoFactory(lambda _config: PyArrowKmsClient(keys))


def pyarrow_encryption_properties(spec: FileEncryptionSpec, keys: KeyProvider) -> Any:
    """pyarrow FileEncryptionProperties equal to what Spark writes (for ``pq.write_table``)."""
    import pyarrow.parquet.encryption as pe

    config = pe.EncryptionConfiguration(
        footer_key=spec.footer_kek_id or spec.kek_id,
        column_keys={spec.kek_id: list(spec.columns)},
        encryption_algorithm="AES_GCM_V1",
        plaintext_footer=False,
        double_wrapping=True,
    )
    kms = pe.KmsConnectionConfig(key_access_token=secrets.token_hex(16))
    return _crypto_factory(keys).file_encryption_properties(kms, config)


def pyarrow_decryption_properties(keys: KeyProvider) -> Any:
    """pyarrow FileDecryptionProperties for files Spark (or pyarrow) wrote with privstage's wrapping."""
    import pyarrow.parquet.encryption as pe

    kms = pe.KmsConnectionConfig(key_access_token=secrets.token_hex(16))
    return _crypto_factory(keys).file_decryption_properties(kms, pe.DecryptionConfiguration())
