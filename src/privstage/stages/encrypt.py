"""The ``encrypt`` stage: AES-256-GCM envelope encryption at rest, in file or field mode.

* ``mode: file``: Parquet Modular Encryption of the staged files (column keys for the chosen columns,
  every other column under the footer key, encrypted footer) through privstage's Java KMS client; see
  :mod:`privstage.crypto.file`.
* ``mode: field``: the chosen columns replaced by per-value AEAD ciphertexts bound to (dataset, column,
  row key), optionally with one data key per subject for crypto-shredding; see :mod:`privstage.crypto.field`.

The stage uses the engine's optional I/O hooks (documented in :mod:`privstage.stages`): ``write`` adds the
Parquet encryption options and writes the sealed :class:`~privstage.crypto.EncryptionManifest` into the
staged output before the post-guards run, ``read_staged`` reads a file-mode output back through the
decryption, and ``close`` removes a per-run key directory. Data keys are created at planning, wrapped by
the KEK's current version, and reach executors only as a broadcast relation (field mode) or not at all
(file mode: the JVM KMS client reads KEKs from a key directory, the plan and configuration hold its path).

After-guards: the staged files match the sealed manifest; field mode: every encrypted value is a
well-formed ciphertext and no input value appears in the output column; file mode: every footer is
encrypted and no file opens without keys.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from privstage.crypto.envelope import (
    ColumnKey,
    EncryptionManifest,
    FieldEncryptionSpec,
    FileEncryptionSpec,
    file_entries,
    seal_manifest,
    write_manifest,
)
from privstage.crypto.guards import (
    CiphertextWellFormedGuard,
    FilesMatchManifestGuard,
    NoPlaintextInOutputGuard,
)
from privstage.errors import KeyUnavailable, SpecError
from privstage.guards.base import GuardContext, GuardOutcome
from privstage.guards.builtin import NoNullsGuard, RowCountPreservedGuard
from privstage.keys.base import KeyProvider

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from privstage.crypto.field import FieldKeys
    from privstage.crypto.file import KeyDirectory
    from privstage.crypto.subjects import SubjectKeyStore
    from privstage.guards.base import Guard
    from privstage.spec import EncryptStage, PipelineSpec

__all__ = [
    "ENCRYPTED_METADATA",
    "EncryptPlan",
    "apply",
    "builtin_guards",
    "close",
    "output_schema",
    "plan",
    "read_staged",
    "subject_store_path",
    "write",
]

#: StructField metadata key on a field-mode ciphertext column: {"dataset", "spark_type"}. A decrypt stage
#: planned in the same run (before the manifest exists) restores column types from it.
ENCRYPTED_METADATA = "privstage_encrypted"


def subject_store_path(subject_keys: str | None, dataset: str, pipeline: PipelineSpec | None) -> Path:
    """Where a dataset's per-subject keys live: ``subject_keys`` (relative to the pipeline's base directory)
    or ``<state_dir>/subject-keys/<dataset>.json``."""
    if pipeline is None:
        if subject_keys is None:
            raise SpecError("per-subject keys need subject_keys (no pipeline state directory is known)")
        return Path(subject_keys)
    if subject_keys is not None:
        return Path(pipeline.resolve_path(subject_keys))
    return pipeline.state_path() / "subject-keys" / f"{dataset}.json"


@dataclass
class EncryptPlan:
    """What the stage resolved before reading data. Holds clear data keys: never serialize it."""

    stage: EncryptStage
    keys: KeyProvider = field(repr=False)
    key_versions: dict[str, int]
    field_keys: FieldKeys | None = field(default=None, repr=False)
    subject_store: Path | None = None
    staged: Path | None = None
    manifest: EncryptionManifest | None = None
    _resources: ExitStack = field(default_factory=ExitStack, repr=False)
    _key_dir: KeyDirectory | None = field(default=None, repr=False)

    @property
    def spec(self) -> FieldEncryptionSpec | FileEncryptionSpec:
        return self.stage.encryption

    def key_dir(self) -> KeyDirectory:
        """The directory the Java KMS client reads KEKs from (per run unless the provider is one)."""
        if self._key_dir is None:
            from privstage.crypto.file import KeyDirectory

            self._key_dir = self._resources.enter_context(KeyDirectory.for_provider(self.keys, self.stage.key_ids()))
        return self._key_dir

    def subjects(self) -> SubjectKeyStore | None:
        if self.subject_store is None:
            return None
        from privstage.crypto.subjects import SubjectKeyStore

        return SubjectKeyStore(self.subject_store, self.keys, self.spec.kek_id)

    def __reduce__(self) -> object:
        raise TypeError("an encrypt plan holds clear data keys and cannot be pickled")


def plan(stage: EncryptStage, schema: StructType, keys: KeyProvider, *, env: Any = None) -> EncryptPlan:
    """Check columns and fetch the KEKs; in field mode create the data keys (wrapped). No data is read.

    Raises:
        SpecError: an unknown column or unsupported type.
        KeyUnavailable: a KEK cannot be fetched (fails closed: nothing is written).
    """
    spec = stage.encryption
    names = schema.fieldNames()
    try:
        if isinstance(spec, FieldEncryptionSpec):
            from privstage.crypto.field import plan_encrypt

            field_keys = plan_encrypt(spec, schema, keys)
            store = (
                subject_store_path(stage.subject_keys, spec.dataset, env.spec if env else None)
                if spec.subject_column
                else None
            )
            return EncryptPlan(
                stage=stage,
                keys=keys,
                key_versions={spec.kek_id: keys.get(spec.kek_id).version},
                field_keys=field_keys,
                subject_store=store,
            )
        for name in spec.columns:
            if name not in names:
                raise SpecError(f"column '{name}' is not in the input (columns: {', '.join(names)})")
        versions = {key_id: keys.get(key_id).version for key_id in sorted(stage.key_ids())}
        return EncryptPlan(stage=stage, keys=keys, key_versions=versions)
    except (SpecError, KeyUnavailable) as exc:
        exc.stage = exc.stage or stage.name
        raise


def output_schema(p: EncryptPlan, input_schema: StructType) -> StructType:
    """File mode: the input schema (PME is transparent to readers with keys). Field mode: encrypted
    columns become BINARY, carrying their original type in :data:`ENCRYPTED_METADATA`."""
    from pyspark.sql.types import BinaryType, StructField, StructType

    if p.field_keys is None:
        return input_schema
    encrypted = set(p.spec.columns)
    return StructType(
        [
            StructField(f.name, BinaryType(), False, _metadata(p, f.name, f.dataType.simpleString()))
            if f.name in encrypted
            else f
            for f in input_schema.fields
        ]
    )


def _metadata(p: EncryptPlan, column: str, spark_type: str) -> dict[str, Any]:
    return {ENCRYPTED_METADATA: {"dataset": p.spec.dataset, "column": column, "spark_type": spark_type}}


def apply(df: DataFrame, p: EncryptPlan, *, spark: SparkSession) -> DataFrame:
    """The frame to stage (lazy). Field mode: ciphertext columns; file mode: ``df`` itself, encrypted by
    :func:`write`. Per-subject keys of new subjects are created (wrapped) in the subject store here."""
    from pyspark.sql import functions as F

    if p.field_keys is None:
        return df
    from privstage.crypto.field import encrypt

    types = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    out = encrypt(df, p.field_keys, spark=spark, subjects=p.subjects())
    encrypted = set(p.spec.columns)
    return out.select(
        *[F.col(c).alias(c, metadata=_metadata(p, c, types[c])) if c in encrypted else F.col(c) for c in out.columns]
    )


def write(df: DataFrame, staging: str, p: EncryptPlan, *, spark: SparkSession) -> dict[str, Any]:
    """Write the staged output (PME options in file mode) and its sealed manifest; returns report details."""
    spec = p.spec
    if p.field_keys is not None:
        from privstage.crypto.field import translating

        with translating(stage=p.stage.name, what="field encryption"):
            df.write.mode("error").parquet(staging)
        manifest = p.field_keys.manifest
    else:
        from privstage.crypto.file import translating, write_options

        assert isinstance(spec, FileEncryptionSpec)
        with translating(stage=p.stage.name):
            df.write.mode("error").options(**write_options(spec, p.key_dir())).parquet(staging)
        manifest = EncryptionManifest(
            dataset=spec.dataset,
            mode="file",
            kek_id=spec.kek_id,
            columns=tuple(ColumnKey(column=c, spark_type=df.schema[c].dataType.simpleString()) for c in spec.columns),
            file_kms={"columns": spec.kek_id, "footer": spec.footer_kek_id or spec.kek_id},
        )
    manifest = seal_manifest(manifest.model_copy(update={"files": file_entries(staging)}), p.keys)
    write_manifest(staging, manifest)
    p.staged, p.manifest = Path(staging), manifest
    return {
        "encryption": {
            "dataset": manifest.dataset,
            "mode": manifest.mode,
            "algorithm": manifest.algorithm,
            "kek_id": manifest.kek_id,
            "kek_version": manifest.seal.kek_version if manifest.seal else None,
            "columns": [c.column for c in manifest.columns],
            "files": len(manifest.files),
            "per_subject_keys": manifest.subject_column is not None,
        }
    }


def read_staged(staging: str, p: EncryptPlan, *, spark: SparkSession) -> DataFrame:
    """The staged output as the post-guards see it (file mode: read through the decryption)."""
    if p.field_keys is not None:
        return spark.read.parquet(staging)
    from privstage.crypto.file import read_options

    return spark.read.options(**read_options(p.key_dir())).parquet(staging)


def close(p: EncryptPlan) -> None:
    """Remove the per-run key directory, if one was made."""
    p._resources.close()
    p._key_dir = None


@dataclass(frozen=True)
class StagedManifestGuard:
    """The staged directory matches its sealed manifest (and, in file mode, every footer is encrypted)."""

    plan: EncryptPlan = field(repr=False)
    name: str = "encryption"

    def check(self, ctx: GuardContext) -> list[GuardOutcome]:
        if self.plan.staged is None:
            return [GuardOutcome(self.name, "files_match_manifest", False, details={"error": "nothing staged"})]
        return FilesMatchManifestGuard(self.plan.staged, self.plan.keys, name=self.name).check(ctx)


@dataclass(frozen=True)
class UnreadableWithoutKeysGuard:
    """File mode: no staged file opens without keys (an independent reader, pyarrow, with no decryption
    properties must fail on every footer): the file-mode form of 'no input value in the output'."""

    plan: EncryptPlan = field(repr=False)
    name: str = "encryption"

    def check(self, ctx: GuardContext) -> list[GuardOutcome]:
        import pyarrow.parquet as pq

        readable = 0
        manifest = self.plan.manifest
        for entry in manifest.files if manifest and self.plan.staged else ():
            try:
                pq.read_metadata(self.plan.staged / entry.name)
            except Exception:  # noqa: S112 - the expected case: the footer is encrypted
                continue
            readable += 1
        ok = manifest is not None and readable == 0
        return [GuardOutcome(self.name, "unreadable_without_keys", ok, details={"readable_files": readable})]


def builtin_guards(p: EncryptPlan) -> tuple[list[Guard], list[Guard]]:
    """Before: the row key (and subject column) hold no nulls. After: see the module docstring."""
    spec = p.spec
    before: list[Guard] = []
    after: list[Guard] = [RowCountPreservedGuard(), StagedManifestGuard(p)]
    if isinstance(spec, FieldEncryptionSpec):
        before.append(NoNullsGuard(tuple(c for c in (spec.row_key, spec.subject_column) if c)))
        assert p.field_keys is not None
        after += [CiphertextWellFormedGuard(p.field_keys.manifest), NoPlaintextInOutputGuard(spec.columns)]
    else:
        after.append(UnreadableWithoutKeysGuard(p))
    return before, after
