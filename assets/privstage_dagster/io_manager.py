"""An IO manager that stores Spark DataFrame assets encrypted at rest and loads them decrypted.

Thin: writing and reading are :func:`privstage.crypto.store.write_encrypted` / ``read_decrypted`` (the same
field and file encryption, sealed manifests and atomic commits as the ``encrypt`` / ``decrypt`` stages); this
module picks the path, the encryption config and the keys a consumer may use, and translates errors.

* An asset says what to encrypt in its definition metadata, ``privstage/encryption``: a privstage encryption
  config (``mode: field`` or ``file``, ``kek_id``, ``columns``, ...; ``dataset`` defaults to the asset key).
  It is stored under ``<base_dir>/<asset key path>``.
* A downstream asset loads the upstream decrypted only with a grant: ``grants`` maps the consuming asset's key
  (``"a/b"``) to the key ids it may use. Without one, loading raises ``Failure(allow_retries=False)`` from
  :class:`~privstage.errors.KeyUnavailable`; the keys never reach it.

What Dagster records is the manifest summary (dataset, mode, key id and version, columns, file count): never
data, keys or wrapped keys.

.. code-block:: python

    defs = dg.Definitions(
        assets=[visits, monthly_report],
        resources={
            "io_manager": EncryptedParquetIOManager(
                base_dir="/data/assets",
                key_provider=KeyProviderResource(provider="files", directory="/var/run/secrets/privstage"),
                spark=SparkResource(),
                grants={"monthly_report": ["visits-kek"]},
            )
        },
    )
"""

# No ``from __future__ import annotations``: Dagster reads resource field annotations at definition time.

from pathlib import Path
from typing import Any

from dagster import ConfigurableIOManager, Failure, InputContext, OutputContext
from pydantic import Field

from privstage.errors import PrivstageError
from privstage_dagster._errors import failure_from
from privstage_dagster.resources import KeyProviderResource, SparkResource

__all__ = ["ENCRYPTION_METADATA", "EncryptedParquetIOManager"]

#: The definition-metadata key under which an asset declares its encryption config.
ENCRYPTION_METADATA = "privstage/encryption"


class EncryptedParquetIOManager(ConfigurableIOManager):
    """Stores assets as encrypted Parquet (field or file mode) and loads them decrypted for granted consumers."""

    base_dir: str = Field(description="Root folder; an asset lives under <base_dir>/<asset key path>.")
    key_provider: KeyProviderResource = Field(
        description="Where KEKs come from (a key directory in production; provider 'spec' means the dev "
        "keyring under <base_dir>/.privstage); never the keys themselves."
    )
    spark: SparkResource = Field(description="The Spark session to use.")
    grants: dict[str, list[str]] = Field(
        default_factory=dict, description="Consuming asset key ('a/b') -> key ids it may decrypt with."
    )
    subject_keys: str | None = Field(
        None, description="Per-subject key store (field mode with subject_column); default <base_dir>/.privstage."
    )

    def _path(self, asset_path: list[str]) -> Path:
        return Path(self.base_dir) / Path(*asset_path)

    def _provider(self) -> Any:
        from privstage.spec import LocalKeyringSpec

        state = Path(self.base_dir) / ".privstage"
        return self.key_provider.get_provider(state, base_dir=self.base_dir, default=LocalKeyringSpec())

    def _subjects(self, keys: Any, config: Any) -> Any:
        if getattr(config, "subject_column", None) is None:
            return None
        from privstage.crypto.subjects import SubjectKeyStore

        default = Path(self.base_dir) / ".privstage" / "subject-keys" / f"{config.dataset}.json"
        return SubjectKeyStore(self.subject_keys or default, keys, config.kek_id)

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        from privstage.crypto.envelope import parse_encryption_spec
        from privstage.crypto.store import write_encrypted

        declared = (context.definition_metadata or {}).get(ENCRYPTION_METADATA)
        if not isinstance(declared, dict):
            raise Failure(
                description=f"asset {context.asset_key.to_user_string()} declares no '{ENCRYPTION_METADATA}' metadata "
                "(what to encrypt and under which key)",
                allow_retries=False,
            )
        try:
            config = parse_encryption_spec({"dataset": "_".join(context.asset_key.path), **declared})
            keys = self._provider()
            manifest = write_encrypted(
                obj,
                self._path(context.asset_key.path),
                config,
                keys,
                spark=self.spark.get_session(),
                subjects=self._subjects(keys, config),
            )
        except PrivstageError as exc:
            if exc.retryable:
                raise
            raise failure_from(exc) from exc
        context.add_output_metadata(
            {
                "privstage/dataset": manifest.dataset,
                "privstage/encryption_mode": manifest.mode,
                "privstage/kek_id": manifest.kek_id,
                "privstage/kek_version": manifest.seal.kek_version if manifest.seal else None,
                "privstage/encrypted_columns": [c.column for c in manifest.columns],
                "privstage/files": len(manifest.files),
                "path": str(self._path(context.asset_key.path)),
            }
        )

    def load_input(self, context: InputContext) -> Any:
        from privstage.crypto.envelope import read_manifest
        from privstage.crypto.store import read_decrypted
        from privstage.keys.restricted import RestrictedKeyProvider

        consumer = context.op_def.name  # an asset's op is named after its key
        allowed = next((ids for key, ids in self.grants.items() if key.replace("/", "__") == consumer), [])
        path = self._path(context.asset_key.path)
        try:
            keys = RestrictedKeyProvider(self._provider(), allowed, holder=f"asset {consumer}")
            manifest = read_manifest(path)
            return read_decrypted(path, keys, spark=self.spark.get_session(), subjects=self._subjects(keys, manifest))
        except PrivstageError as exc:
            # A missing grant is a decision, not an outage: never retried.
            raise failure_from(exc) from exc
