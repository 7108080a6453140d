"""The ``decrypt`` stage: verify an encrypted dataset against its sealed manifest, then decrypt it.

Before any value is decrypted the stage checks the manifest's seal (an HMAC keyed from the KEK) and that
the input directory holds exactly the manifest's files, byte for byte: a deleted part file, an added one or
one replaced by an older file of the same dataset is an :class:`~privstage.errors.IntegrityError`. Then
every value (field mode: AES-GCM with AAD = dataset, column, row key) or page and footer (file mode: Parquet
Modular Encryption) is authenticated while the output is written; a flipped byte, a swapped or moved value
is an IntegrityError naming dataset, column and row key (or file), a shredded subject is
:class:`~privstage.errors.KeyUnavailable`. Either way the engine discards the staging directory: nothing
is written.

Pre-guards: the manifest is present and every KEK version it names resolves in the key provider. When the
manifest already exists at planning (the usual case: the input is a committed dataset), its keys are
resolved then, before the run reads anything.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from privstage.crypto.envelope import ENCRYPTION_MANIFEST, EncryptionManifest, read_manifest, verify_files
from privstage.crypto.guards import DecryptReadyGuard
from privstage.errors import IntegrityError, KeyUnavailable, SpecError
from privstage.guards.builtin import RowCountPreservedGuard
from privstage.keys.base import KeyProvider
from privstage.stages.encrypt import ENCRYPTED_METADATA, subject_store_path

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from privstage.crypto.file import KeyDirectory
    from privstage.guards.base import Guard
    from privstage.spec import DecryptStage

__all__ = ["DecryptPlan", "apply", "builtin_guards", "close", "input_options", "output_schema", "plan", "read_schema"]


@dataclass
class DecryptPlan:
    """What the stage resolved before reading data (key ids and versions, never clear keys)."""

    stage: DecryptStage
    keys: KeyProvider = field(repr=False)
    input_path: Path
    output_schema: Any
    key_versions: dict[str, int]
    state_dir: Path | None = None
    _env: Any = field(default=None, repr=False)
    _resources: ExitStack = field(default_factory=ExitStack, repr=False)
    _key_dir: KeyDirectory | None = field(default=None, repr=False)

    def key_dir(self, manifest: EncryptionManifest) -> KeyDirectory:
        if self._key_dir is None:
            from privstage.crypto.file import KeyDirectory

            ids = set(manifest.file_kms.values()) or {manifest.kek_id}
            self._key_dir = self._resources.enter_context(KeyDirectory.for_provider(self.keys, ids))
        return self._key_dir


def _manifest_or_none(path: Path) -> EncryptionManifest | None:
    return read_manifest(path) if path.joinpath(ENCRYPTION_MANIFEST).is_file() else None


def _check_manifest(stage: DecryptStage, manifest: EncryptionManifest) -> None:
    if manifest.mode != stage.mode:
        raise SpecError(f"dataset '{manifest.dataset}' is encrypted in {manifest.mode} mode, not {stage.mode} mode")
    if stage.dataset is not None and manifest.dataset != stage.dataset:
        raise SpecError(f"the input holds dataset '{manifest.dataset}', not '{stage.dataset}'")
    if stage.kek_id is not None and manifest.kek_id != stage.kek_id:
        raise SpecError(
            f"dataset '{manifest.dataset}' is encrypted under key '{manifest.kek_id}', not '{stage.kek_id}'"
        )


def read_schema(stage: DecryptStage, spark: SparkSession, path: str, keys: KeyProvider, *, env: Any = None) -> Any:
    """The input's schema. File mode reads the encrypted footer with a key directory that lives only
    for this read; a footer that does not authenticate is an IntegrityError here, before any data is read."""
    target = Path(path)
    if not target.exists():
        raise SpecError(f"input dataset {path} does not exist", stage=stage.name)
    manifest = _manifest_or_none(target)
    try:
        if manifest is not None:
            _check_manifest(stage, manifest)
        if stage.mode == "field":
            return spark.read.parquet(path).schema
        if manifest is None:
            raise SpecError(f"{target}: the dataset has no encryption manifest (file mode needs its key ids)")
        from privstage.crypto.file import KeyDirectory, read_options, translating

        with (
            KeyDirectory.for_provider(keys, set(manifest.file_kms.values()) or {manifest.kek_id}) as key_dir,
            translating(manifest, stage=stage.name),
        ):
            return spark.read.options(**read_options(key_dir)).parquet(path).schema
    except (SpecError, KeyUnavailable) as exc:
        exc.stage = exc.stage or stage.name
        raise


def _restored_schema(stage: DecryptStage, schema: StructType, manifest: EncryptionManifest | None) -> StructType:
    from pyspark.sql.types import BinaryType, DataType, StructField, StructType

    types: dict[str, str] = {}
    if manifest is not None:
        types = {c.column: c.spark_type for c in manifest.columns}
    else:  # planned in the same run as its encrypt stage: the manifest does not exist yet
        for f in schema.fields:
            meta = f.metadata.get(ENCRYPTED_METADATA)
            if meta:
                types[f.name] = meta["spark_type"]
    if not types:
        raise SpecError(
            "the input is not a privstage field-encrypted dataset (no manifest, no encrypted columns)", stage=stage.name
        )
    names = schema.fieldNames()
    for name in types:
        if name not in names or not isinstance(schema[name].dataType, BinaryType):
            raise IntegrityError(f"encrypted column '{name}' is missing or not binary in the input", stage=stage.name)
    return StructType(
        [StructField(f.name, DataType.fromDDL(types[f.name]), True) if f.name in types else f for f in schema.fields]
    )


def plan(stage: DecryptStage, schema: StructType, keys: KeyProvider, *, env: Any = None) -> DecryptPlan:
    """Resolve the manifest's key versions (when it exists already) and the output schema. No data is read.

    Raises:
        SpecError: wrong mode, dataset or key id; not an encrypted dataset.
        KeyUnavailable: a KEK version the manifest needs is missing or disabled.
    """
    if env is None:
        raise SpecError("the decrypt stage is planned by the engine (it needs the pipeline)", stage=stage.name)
    input_path = Path(env.spec.input_path(stage))
    manifest = _manifest_or_none(input_path)
    versions: dict[str, int] = {}
    try:
        if manifest is not None:
            _check_manifest(stage, manifest)
            needed = manifest.kek_versions() or {manifest.kek_id: []}
            if manifest.seal is not None:
                needed.setdefault(manifest.kek_id, []).append(manifest.seal.kek_version)
            for key_id, wanted in sorted(needed.items()):
                for version in sorted(set(wanted)) or [None]:
                    versions[key_id] = max(versions.get(key_id, 0), keys.get(key_id, version).version)
        out = schema if stage.mode == "file" else _restored_schema(stage, schema, manifest)
    except (SpecError, KeyUnavailable) as exc:
        exc.stage = exc.stage or stage.name
        raise
    return DecryptPlan(
        stage=stage,
        keys=keys,
        input_path=input_path,
        output_schema=out,
        key_versions=versions,
        state_dir=env.spec.state_path(),
        _env=env,
    )


def output_schema(p: DecryptPlan, input_schema: StructType) -> StructType:
    return p.output_schema


def input_options(p: DecryptPlan) -> dict[str, str]:
    """File mode: the Parquet decryption settings (a key directory path and a cache scope, no keys).

    Nothing when the manifest is missing or a key is unavailable: the pre-guards then block the stage
    with the reason, before anything is read.
    """
    if p.stage.mode != "file":
        return {}
    from privstage.crypto.file import read_options

    try:
        manifest = _manifest_or_none(p.input_path)
        return read_options(p.key_dir(manifest)) if manifest is not None else {}
    except KeyUnavailable:
        return {}


def apply(df: DataFrame, p: DecryptPlan, *, spark: SparkSession) -> DataFrame:
    """Verify seal and files, then the decrypted frame (lazy; :func:`write` authenticates every value).

    Raises:
        IntegrityError: the seal fails, or a file is missing, extra or changed.
        KeyUnavailable: a KEK version is unavailable.
    """
    stage = p.stage
    manifest = read_manifest(p.input_path)
    _check_manifest(stage, manifest)
    verify_files(p.input_path, manifest, p.keys)
    if stage.mode == "file":
        return df
    from privstage.crypto.field import decrypt, plan_decrypt
    from privstage.crypto.subjects import SubjectKeyStore

    subjects = None
    if manifest.subject_column:
        path = subject_store_path(stage.subject_keys, manifest.dataset, p._env.spec)
        subjects = SubjectKeyStore(path, p.keys, manifest.kek_id)
    return decrypt(df, plan_decrypt(manifest, p.keys), spark=spark, subjects=subjects)


def write(df: DataFrame, staging: str, p: DecryptPlan, *, spark: SparkSession) -> dict[str, Any]:
    """Write the clear output; authentication failures become IntegrityError / KeyUnavailable."""
    if p.stage.mode == "field":
        from privstage.crypto.field import translating

        with translating(stage=p.stage.name):
            df.write.mode("error").parquet(staging)
    else:
        from privstage.crypto.file import translating as translating_file

        with translating_file(read_manifest(p.input_path), stage=p.stage.name):
            df.write.mode("error").parquet(staging)
    return {"decryption": {"mode": p.stage.mode, "verified_files": True}}


def close(p: DecryptPlan) -> None:
    p._resources.close()
    p._key_dir = None


def builtin_guards(p: DecryptPlan) -> tuple[list[Guard], list[Guard]]:
    """Before: the manifest is present and its key versions resolve. After: no row was lost."""
    return [DecryptReadyGuard(p.input_path, p.keys)], [RowCountPreservedGuard()]
