"""PrivstageHook: where a privstage task gets its SparkSession and its key provider.

The hook is lazy: constructing it reads nothing; the Airflow connection is looked up on first use.
The connection is optional. Without it (the default ``privstage_default`` is not defined) the
pipeline spec alone decides Spark and keys. Its extra may hold two settings, both plain locations:

* ``spark_remote``: a Spark Connect URL (``sc://host:port``) that replaces the spec's ``spark.remote``.
* ``keys_directory``: a mounted key directory (one base64 key per file) that replaces the spec's
  ``keys`` section, as a Kubernetes Secret volume would provide it.

No key material ever goes into a connection: the extra names where keys are, never the keys.

The privacy-budget ledger (DP stages) is a database, so it has a connection of its own, of type
``postgres`` (host, port, login, password, schema = database; extras ``options``, ``sslmode``,
``sslrootcert``, ``sslcert``, ``sslkey``, ``application_name``, ``target_session_attrs`` pass through)
or ``sqlite`` (host = the database file). Which ledger a task uses, first match wins:

1. the operator's ``ledger_url`` (a URL without a password; it is not templated, so never rendered or stored);
2. the connection ``ledger_conn_id`` (default ``privstage_ledger_default``, which may be missing);
3. the engine's default: ``$PRIVSTAGE_LEDGER_URL``, the file named by ``$PRIVSTAGE_LEDGER_URL_FILE``,
   else ``<state_dir>/ledger.db`` (SQLite).

The URL built from a connection carries its password to SQLAlchemy only: it is registered with
Airflow's secrets masker, and the ledger itself never prints it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from privstage.errors import SpecError
from privstage_airflow._compat import AirflowNotFoundException, BaseHook, mask_secret

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from privstage.keys import KeyProvider
    from privstage.spec import PipelineSpec

__all__ = ["ConnectionSettings", "PrivstageHook", "ledger_url_from_connection"]

#: Connection extras that become query parameters of a PostgreSQL ledger URL (libpq settings).
POSTGRES_QUERY_EXTRAS = (
    "options",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "application_name",
    "target_session_attrs",
)


def ledger_url_from_connection(conn: Any) -> str:
    """The SQLAlchemy URL of a budget ledger described by an Airflow connection (password included).

    Raises:
        SpecError: the connection type is neither ``postgres`` nor ``sqlite``, or it lacks a host / file.
            The message names the connection id and type, never its password.
    """
    from sqlalchemy.engine import URL

    conn_type = (conn.conn_type or "").lower()
    if conn_type in ("postgres", "postgresql"):
        if not conn.host:
            raise SpecError(f"ledger connection '{conn.conn_id}' has no host")
        extra = conn.extra_dejson
        query = {name: str(extra[name]) for name in POSTGRES_QUERY_EXTRAS if extra.get(name)}
        url = URL.create(
            "postgresql+psycopg",
            username=conn.login or None,
            password=conn.password or None,
            host=conn.host,
            port=conn.port or None,
            database=conn.schema or None,
            query=query,
        )
        return url.render_as_string(hide_password=False)
    if conn_type == "sqlite":
        if not conn.host:
            raise SpecError(f"ledger connection '{conn.conn_id}' names no database file (host)")
        return f"sqlite:///{conn.host}"
    raise SpecError(
        f"ledger connection '{conn.conn_id}' has type {conn_type!r}; the budget ledger runs on postgres or sqlite"
    )


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
        ledger_conn_id: the budget ledger's connection (``postgres`` or ``sqlite``); ``None`` reads none.
            The default one may be missing; one named explicitly must exist.
        ledger_url: a ledger URL that wins over the connection (keep passwords in connections).
    """

    conn_name_attr = "privstage_conn_id"
    default_conn_name = "privstage_default"
    default_ledger_conn_name = "privstage_ledger_default"
    conn_type = "privstage"
    hook_name = "privstage"

    def __init__(
        self,
        privstage_conn_id: str | None = default_conn_name,
        *,
        ledger_conn_id: str | None = default_ledger_conn_name,
        ledger_url: str | None = None,
    ) -> None:
        super().__init__()
        self.privstage_conn_id = privstage_conn_id
        self.ledger_conn_id = ledger_conn_id
        self.ledger_url = ledger_url
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

    def get_ledger_url(self) -> str | None:
        """The budget ledger's URL, or ``None`` for the engine's default (see the module docstring).

        The URL is registered with Airflow's secrets masker before it is returned.

        Raises:
            AirflowNotFoundException: a ledger connection other than the default one is not defined.
            SpecError: the connection cannot describe a ledger.
        """
        url = self.ledger_url or None
        if url is None and self.ledger_conn_id is not None:
            try:
                conn = self.get_connection(self.ledger_conn_id)
            except AirflowNotFoundException:
                if self.ledger_conn_id != self.default_ledger_conn_name:
                    raise
            else:
                url = ledger_url_from_connection(conn)
        if url is not None:
            self._mask_url(url)
        return url

    @staticmethod
    def _mask_url(url: str) -> None:
        from sqlalchemy.engine import make_url

        try:
            password = make_url(url).password
        except Exception:  # an unparsable URL: the ledger refuses it with a message that does not quote it
            password = None
        mask_secret(url)
        if isinstance(password, str) and password:
            mask_secret(password)

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
