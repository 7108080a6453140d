"""Dagster resources: where Spark runs, where keys come from, where the privacy-budget ledger lives.

The resources hold configuration only (URLs, paths, ids): never key material. Their fields are
shown in the Dagster UI and stored with every run, so a value that looks like a key is refused, and
the ledger URL (which may hold a database password) belongs in an environment variable that the
resource names (``BudgetLedgerResource(url=dg.EnvVar("PRIVSTAGE_LEDGER_URL"))``: Dagster stores the
variable's name, not its value). Each resource builds the engine's own objects
(:class:`~privstage.spec.SparkSpec`, a ``KeysSpec``, a :class:`~privstage.budget.BudgetLedger`) and calls
the engine's factories; there is no Spark, key or budget logic here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from dagster import ConfigurableResource
from pydantic import Field, TypeAdapter, ValidationError, model_validator

from privstage.errors import SpecError
from privstage.spec import KeysSpec, SparkSpec

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from privstage.budget import BudgetLedger
    from privstage.keys.base import KeyProvider

__all__ = ["BudgetLedgerResource", "KeyProviderResource", "SparkResource"]

_KEYS_SPEC: TypeAdapter[KeysSpec] = TypeAdapter(KeysSpec)


class SparkResource(ConfigurableResource):
    """The SparkSession privstage assets run on.

    Unset fields fall back to the pipeline's ``spark`` section; ``SPARK_REMOTE`` in the environment
    still selects Spark Connect, and an active session in the process is reused (as the engine does).

    Example:
        .. code-block:: python

            SparkResource(master="local[4]", conf={"spark.sql.shuffle.partitions": "8"})
    """

    master: str | None = Field(None, description="Spark master URL (local[4], k8s://...); default local[*].")
    remote: str | None = Field(None, description="Spark Connect URL (sc://host:15002) or 'local[N]'.")
    app_name: str | None = Field(None, description="Spark application name; default the pipeline's.")
    conf: dict[str, str] = Field(
        default_factory=dict, description="Extra Spark settings; never key material (refused)."
    )

    def spark_spec(self, default: SparkSpec | None = None) -> SparkSpec:
        """This resource's settings over ``default`` (the pipeline's ``spark`` section)."""
        base = default or SparkSpec()
        return SparkSpec(
            master=self.master or base.master,
            remote=self.remote or base.remote,
            app_name=self.app_name or base.app_name,
            conf={**base.conf, **self.conf},
        )

    def get_session(self, default: SparkSpec | None = None) -> SparkSession:
        """Return the session (the active one if the process has one).

        Raises:
            SpecError: a setting would put key material into the Spark configuration.
            StageExecutionError: Spark could not start.
        """
        from privstage.spark import get_session

        return get_session(self.spark_spec(default))


class KeyProviderResource(ConfigurableResource):
    """Where privstage reads keys. Holds a location (file, directory, variable prefix), never a key.

    ``provider="spec"`` (the default) uses the pipeline's own ``keys`` section, so the YAML stays
    the single source of truth; set another provider to point a deployment elsewhere, e.g. at the
    directory where Kubernetes mounts a Secret.

    Example:
        .. code-block:: python

            KeyProviderResource(provider="files", directory="/var/run/secrets/privstage")
    """

    provider: Literal["spec", "local", "files", "env"] = Field(
        "spec",
        description="spec: the pipeline's keys section; local: dev keyring file; files: key directory; "
        "env: environment variables.",
    )
    path: str | None = Field(
        None, description="local: keyring file; default $PRIVSTAGE_KEYRING or <state_dir>/dev-keyring.json."
    )
    directory: str | None = Field(None, description="files: directory with one base64 key per file.")
    prefix: str | None = Field(None, description="env: variable prefix; default PRIVSTAGE_KEY_.")

    @model_validator(mode="after")
    def _fields_match_provider(self) -> KeyProviderResource:
        # Validated once, when the resource is built (in code or from run config).
        if self.provider != "spec":
            self.keys_spec(None)
            return self
        given = [name for name in ("path", "directory", "prefix") if getattr(self, name) is not None]
        if given:
            raise ValueError(f"provider 'spec' takes no {', '.join(given)}; choose local, files or env")
        return self

    def keys_spec(self, default: KeysSpec | None) -> KeysSpec:
        """The engine's ``keys`` spec this resource selects (``default`` when provider is 'spec').

        Raises:
            ValueError: a field that the provider does not take, or a missing required field.
        """
        if self.provider == "spec":
            if default is None:
                raise ValueError("provider 'spec' needs the pipeline's keys section")
            return default
        fields = {"path": self.path, "directory": self.directory, "prefix": self.prefix}
        data = {"provider": self.provider, **{k: v for k, v in fields.items() if v is not None}}
        try:
            return _KEYS_SPEC.validate_python(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'][1:]) or 'provider'}: "
                + ("not used by this provider" if err["type"] == "extra_forbidden" else err["msg"])
                for err in exc.errors(include_url=False, include_input=False)
            )
            raise ValueError(f"KeyProviderResource(provider={self.provider!r}): {problems}") from None

    def get_provider(
        self, state_dir: str | Path, *, base_dir: str | Path = ".", default: KeysSpec | None = None
    ) -> KeyProvider:
        """Build the key provider (keys are fetched later, by id, when the engine plans a stage).

        Args:
            state_dir: the pipeline's state directory (home of the default dev keyring).
            base_dir: relative paths resolve against it.
            default: the pipeline's ``keys`` section, used when ``provider`` is 'spec'.

        Raises:
            SpecError: ``provider`` is 'spec' and no ``default`` was given.
        """
        from privstage.keys import provider_from_spec

        try:
            spec = self.keys_spec(default)
        except ValueError as exc:
            raise SpecError(str(exc)) from None
        return provider_from_spec(spec, state_dir=Path(state_dir), base_dir=base_dir)


class BudgetLedgerResource(ConfigurableResource):
    """The privacy-budget ledger that ``dp_aggregate`` assets spend from (SQLite or PostgreSQL).

    Unset, the engine's default applies: ``$PRIVSTAGE_LEDGER_URL``, the file named by
    ``$PRIVSTAGE_LEDGER_URL_FILE`` (a mounted Secret), else ``<state_dir>/ledger.db`` beside the pipeline.
    A URL with a password belongs in an environment variable: ``url=dg.EnvVar("PRIVSTAGE_LEDGER_URL")``
    keeps it out of the run storage and the UI. The resource never logs the URL; the ledger shows it with
    the password hidden.

    Example:
        .. code-block:: python

            BudgetLedgerResource(url=dg.EnvVar("PRIVSTAGE_LEDGER_URL"))
    """

    url: str | None = Field(
        None,
        description="SQLAlchemy URL (postgresql+psycopg://user@host:5432/db or sqlite:///path/ledger.db); "
        "use dg.EnvVar for one with a password. Default: the engine's ($PRIVSTAGE_LEDGER_URL, "
        "$PRIVSTAGE_LEDGER_URL_FILE, <state_dir>/ledger.db).",
    )
    timeout: float = Field(30.0, gt=0, description="Seconds to wait for a connection or SQLite's write lock.")

    def ledger_url(self, state_dir: str | Path) -> str:
        """The URL the ledger opens (password included: hand it to the engine only, never to a log).

        Raises:
            SpecError: ``$PRIVSTAGE_LEDGER_URL_FILE`` names a file that cannot be read.
        """
        from privstage.budget import resolve_ledger_url

        return resolve_ledger_url(state_dir, self.url or None)

    def open(self, state_dir: str | Path) -> BudgetLedger:
        """Open the ledger (close it after use; it is a context manager).

        Raises:
            SpecError: the URL is invalid or names a backend other than SQLite or PostgreSQL.
        """
        from privstage.budget import BudgetLedger

        return BudgetLedger(self.ledger_url(state_dir), timeout=self.timeout)
