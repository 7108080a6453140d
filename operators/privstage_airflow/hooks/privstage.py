"""PrivstageHook: where a privstage task gets its SparkSession and its key provider.

The hook is lazy: constructing it reads nothing; the Airflow connection is looked up on first use.
The connection is optional. Without it (the default ``privstage_default`` is not defined) the
pipeline spec alone decides Spark and keys. Its extra may hold two settings, both plain locations:

* ``spark_remote``: a Spark Connect URL (``sc://host:port``) that replaces the spec's ``spark.remote``.
* ``keys_directory``: a mounted key directory (one base64 key per file) that replaces the spec's
  ``keys`` section, as a Kubernetes Secret volume would provide it.

No key material ever goes into a connection: the extra names where keys are, never the keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from privstage_airflow._compat import AirflowNotFoundException, BaseHook

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from privstage.keys import KeyProvider
    from privstage.spec import PipelineSpec

__all__ = ["ConnectionSettings", "PrivstageHook"]


@dataclass(frozen=True)
class ConnectionSettings:
    """What a ``privstage`` connection may override; ``None`` leaves the spec's choice."""

    spark_remote: str | None = None
    keys_directory: str | None = None

    @classmethod
    def from_extra(cls, extra: dict[str, Any], conn_type: str) -> ConnectionSettings:
        """Read the settings from a connection extra, plain or with the UI's ``extra__<type>__`` prefix."""

        def field(name: str) -> str | None:
            value = extra.get(name) or extra.get(f"extra__{conn_type}__{name}")
            return str(value) if value else None

        return cls(spark_remote=field("spark_remote"), keys_directory=field("keys_directory"))


class PrivstageHook(BaseHook):
    """Builds the SparkSession and the key provider a pipeline spec asks for.

    Args:
        privstage_conn_id: the Airflow connection to read overrides from; ``None`` reads none. The
            default connection may be missing; a connection named explicitly must exist.
    """

    conn_name_attr = "privstage_conn_id"
    default_conn_name = "privstage_default"
    conn_type = "privstage"
    hook_name = "privstage"

    def __init__(self, privstage_conn_id: str | None = default_conn_name) -> None:
        super().__init__()
        self.privstage_conn_id = privstage_conn_id
        self._settings: ConnectionSettings | None = None

    @property
    def settings(self) -> ConnectionSettings:
        """The connection's overrides, looked up once.

        Raises:
            AirflowNotFoundException: a connection other than the default one is not defined.
        """
        if self._settings is None:
            self._settings = self._read_settings()
        return self._settings

    def _read_settings(self) -> ConnectionSettings:
        if self.privstage_conn_id is None:
            return ConnectionSettings()
        try:
            conn = self.get_connection(self.privstage_conn_id)
        except AirflowNotFoundException:
            if self.privstage_conn_id != self.default_conn_name:
                raise
            return ConnectionSettings()
        return ConnectionSettings.from_extra(conn.extra_dejson, self.conn_type)

    def get_spark(self, spec: PipelineSpec) -> SparkSession:
        """The session to run on: the active one if any (see :func:`privstage.spark.get_session`)."""
        from privstage.spark import get_session

        spark_spec = spec.spark
        if self.settings.spark_remote:
            spark_spec = spark_spec.model_copy(update={"remote": self.settings.spark_remote})
        return get_session(spark_spec)

    def get_key_provider(self, spec: PipelineSpec) -> KeyProvider:
        """The key provider the spec names, or the connection's key directory."""
        from privstage.keys import provider_from_spec
        from privstage.spec import FileKeysSpec

        keys_spec = spec.keys
        if self.settings.keys_directory:
            keys_spec = FileKeysSpec(provider="files", directory=self.settings.keys_directory)
        return provider_from_spec(keys_spec, state_dir=spec.state_path(), base_dir=spec.base_dir)

    def get_conn(self) -> SparkSession:
        """A SparkSession for the connection's settings, without a pipeline spec."""
        from privstage.spark import get_session
        from privstage.spec import SparkSpec

        return get_session(SparkSpec(remote=self.settings.spark_remote))
