"""The one SparkSession factory.

* Spark Connect when ``SPARK_REMOTE`` (environment) or ``spark.remote`` (spec) is set.
* Otherwise classic Spark: the active session if there is one, else a new one on
  ``spark.master`` (default ``local[*]``).

Every session privstage creates redacts secrets: ``spark.redaction.regex`` (configuration values in
the UI and the event log) and ``spark.sql.redaction.string.regex`` (plan strings in ``explain()``,
the SQL tab and the event log) are extended with privstage's patterns. privstage itself never puts
key material into a plan or a setting: keys reach executors as rows of a broadcast relation.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING

from privstage.errors import SpecError, StageExecutionError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from privstage.spec import SparkSpec

__all__ = ["REDACTION_REGEX", "SQL_REDACTION_REGEX", "default_conf", "get_session", "is_connect"]

#: Configuration keys whose values Spark hides (Spark's default plus privstage's own).
REDACTION_REGEX = r"(?i)secret|password|token|access[.]?key|credential|privstage[.]key|encryption[.]key|kms"
#: Fragments of plan strings Spark hides in explain() and the event log.
SQL_REDACTION_REGEX = r"(?i)(?:secret|password|token|privstage_key)[A-Za-z0-9_]*\s*[=:]\s*[^,\s)]+"


def default_conf(*, local: bool) -> dict[str, str]:
    """Settings privstage applies to every session it creates (spec values override them)."""
    conf = {
        "spark.sql.session.timeZone": "UTC",
        "spark.redaction.regex": REDACTION_REGEX,
        "spark.sql.redaction.string.regex": SQL_REDACTION_REGEX,
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    if local:
        conf["spark.driver.bindAddress"] = os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")
    from privstage.jvm import jar_path

    jar = jar_path()
    if jar is not None:
        conf["spark.jars"] = str(jar)
    return conf


def _merge(defaults: Mapping[str, str], settings: Mapping[str, str]) -> dict[str, str]:
    """Spec settings win, except that privstage's jar is appended to a user's spark.jars."""
    merged = {**defaults, **settings}
    if "spark.jars" in defaults and "spark.jars" in settings:
        merged["spark.jars"] = f"{settings['spark.jars']},{defaults['spark.jars']}"
    return merged


def _prepare_environment() -> None:
    # Python workers must run the interpreter that has privstage's packages.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def is_connect(spark: object) -> bool:
    """True for a Spark Connect session."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def get_session(spec: SparkSpec | None = None, *, conf: Mapping[str, str] | None = None) -> SparkSession:
    """Return the SparkSession privstage runs on.

    Args:
        spec: the pipeline's ``spark`` section (master, remote, app name, settings).
        conf: extra settings that win over the spec's (tests use this for local[2], no UI).

    Raises:
        SpecError: a setting would place key material in the Spark configuration.
        StageExecutionError: Spark could not start.
    """
    from pyspark.sql import SparkSession

    _prepare_environment()
    settings: dict[str, str] = dict(spec.conf if spec else {})
    settings.update(conf or {})
    for name in settings:
        lowered = name.lower()
        if "privstage.key" in lowered or lowered.endswith(".key.material"):
            raise SpecError(f"spark.conf '{name}': key material never goes into the Spark configuration")

    remote = os.environ.get("SPARK_REMOTE") or (spec.remote if spec else None)
    try:
        if remote:
            active = SparkSession.getActiveSession()
            if active is not None and is_connect(active):
                return active
            builder = SparkSession.builder.remote(remote)
            if spec and spec.app_name:
                builder = builder.appName(spec.app_name)
            if remote.startswith("local"):
                for key, value in _merge(default_conf(local=True), settings).items():
                    builder = builder.config(key, value)
            with warnings.catch_warnings():
                # A local Connect server takes these at start-up; the client then also tries to set
                # them at run time and warns CANNOT_MODIFY_CONFIG for the static ones. Harmless.
                warnings.filterwarnings("ignore", message=".*CANNOT_MODIFY_CONFIG.*")
                return builder.getOrCreate()

        active = SparkSession.getActiveSession()
        if active is not None:
            return active
        master = (spec.master if spec else None) or os.environ.get("PRIVSTAGE_SPARK_MASTER") or "local[*]"
        builder = SparkSession.builder.master(master).appName(spec.app_name if spec else "privstage")
        for key, value in _merge(default_conf(local=master.startswith("local")), settings).items():
            builder = builder.config(key, value)
        return builder.getOrCreate()
    except SpecError:
        raise
    except Exception as exc:  # py4j / gRPC errors vary by mode
        raise StageExecutionError(f"could not start Spark ({type(exc).__name__})") from exc
