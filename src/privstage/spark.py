"""The one SparkSession factory.

* Spark Connect when ``SPARK_REMOTE`` (environment) or ``spark.remote`` (spec) is set.
* Otherwise classic Spark: the active session if there is one, else a new one on
  ``spark.master`` (default ``$PRIVSTAGE_SPARK_MASTER``, else ``local[*]``).
* On Kubernetes (``PRIVSTAGE_SPARK_MASTER=k8s://https://...``, set by the Helm chart) the driver runs in
  the Job's pod (client mode) and starts executor pods itself: :func:`kubernetes_conf` turns the
  chart's ``PRIVSTAGE_SPARK_*`` environment variables into Spark settings, beneath the spec's.

Every session privstage creates redacts secrets: ``spark.redaction.regex`` (configuration values in
the UI and the event log) and ``spark.sql.redaction.string.regex`` (plan strings in ``explain()``,
the SQL tab and the event log) are extended with privstage's patterns. privstage itself never puts
key material into a plan or a setting: keys reach executors as rows of a broadcast relation.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING

from privstage.errors import SpecError, StageExecutionError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from privstage.spec import SparkSpec

__all__ = [
    "K8S_ENV",
    "REDACTION_REGEX",
    "SQL_REDACTION_REGEX",
    "default_conf",
    "get_session",
    "is_connect",
    "kubernetes_conf",
    "session_conf",
]

#: Configuration keys whose values Spark hides (Spark's default plus privstage's own).
REDACTION_REGEX = r"(?i)secret|password|token|access[.]?key|credential|privstage[.]key|encryption[.]key|kms"
#: Fragments of plan strings Spark hides in explain() and the event log.
SQL_REDACTION_REGEX = r"(?i)(?:secret|password|token|privstage_key)[A-Za-z0-9_]*\s*[=:]\s*[^,\s)]+"


#: Environment variables (set by the Helm chart) and the Spark settings :func:`kubernetes_conf` makes of them.
K8S_ENV: dict[str, str] = {
    "PRIVSTAGE_SPARK_MASTER": "spark.master",
    "PRIVSTAGE_SPARK_K8S_IMAGE": "spark.kubernetes.container.image",
    "PRIVSTAGE_SPARK_K8S_IMAGE_PULL_POLICY": "spark.kubernetes.container.image.pullPolicy",
    "PRIVSTAGE_SPARK_K8S_NAMESPACE": "spark.kubernetes.namespace",
    "PRIVSTAGE_SPARK_K8S_SERVICE_ACCOUNT": "spark.kubernetes.authenticate.driver.serviceAccountName",
    "PRIVSTAGE_SPARK_K8S_EXECUTOR_SERVICE_ACCOUNT": "spark.kubernetes.authenticate.executor.serviceAccountName",
    "PRIVSTAGE_SPARK_EXECUTOR_INSTANCES": "spark.executor.instances",
    "PRIVSTAGE_SPARK_EXECUTOR_MEMORY": "spark.executor.memory",
    "PRIVSTAGE_SPARK_EXECUTOR_CORES": "spark.executor.cores",
    "PRIVSTAGE_SPARK_K8S_EXECUTOR_POD_TEMPLATE": "spark.kubernetes.executor.podTemplateFile",
    "PRIVSTAGE_SPARK_DRIVER_HOST": "spark.driver.host",
    "PRIVSTAGE_SPARK_LOCAL_DIRS": "spark.local.dir",
    "PRIVSTAGE_SPARK_K8S_DRIVER_POD_NAME": "spark.kubernetes.driver.pod.name",
}
#: Without these Spark cannot start executors that reach the driver.
_K8S_REQUIRED = ("PRIVSTAGE_SPARK_K8S_IMAGE", "PRIVSTAGE_SPARK_K8S_NAMESPACE", "PRIVSTAGE_SPARK_DRIVER_HOST")
#: Fixed ports (Spark's own Kubernetes defaults), so that the chart's NetworkPolicy can name them:
#: executors -> driver on 7078 (RPC) and 7079 (block manager); block managers <-> each other on 7079.
K8S_DRIVER_PORT = "7078"
K8S_BLOCK_MANAGER_PORT = "7079"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_VALIDATORS: dict[str, tuple[re.Pattern[str], str]] = {
    "PRIVSTAGE_SPARK_MASTER": (
        re.compile(r"k8s://https://[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?/?"),
        "must be k8s://https://<api-server>[:port] (TLS only), e.g. k8s://https://kubernetes.default.svc",
    ),
    "PRIVSTAGE_SPARK_K8S_IMAGE": (re.compile(r"[^\s]+"), "must be an image reference without spaces"),
    "PRIVSTAGE_SPARK_K8S_IMAGE_PULL_POLICY": (
        re.compile(r"Always|IfNotPresent|Never"),
        "must be Always, IfNotPresent or Never",
    ),
    "PRIVSTAGE_SPARK_K8S_NAMESPACE": (_DNS_LABEL, "must be a Kubernetes namespace name (DNS label)"),
    "PRIVSTAGE_SPARK_K8S_SERVICE_ACCOUNT": (_DNS_SUBDOMAIN, "must be a Kubernetes service account name"),
    "PRIVSTAGE_SPARK_K8S_EXECUTOR_SERVICE_ACCOUNT": (_DNS_SUBDOMAIN, "must be a Kubernetes service account name"),
    "PRIVSTAGE_SPARK_EXECUTOR_INSTANCES": (re.compile(r"[1-9][0-9]*"), "must be a positive integer"),
    "PRIVSTAGE_SPARK_EXECUTOR_CORES": (re.compile(r"[1-9][0-9]*"), "must be a positive integer"),
    "PRIVSTAGE_SPARK_EXECUTOR_MEMORY": (
        re.compile(r"[1-9][0-9]*[mMgG]"),
        "must be a JVM memory size in m or g, like 512m or 2g",
    ),
    "PRIVSTAGE_SPARK_K8S_EXECUTOR_POD_TEMPLATE": (re.compile(r"/[^\s]*"), "must be an absolute file path"),
    "PRIVSTAGE_SPARK_DRIVER_HOST": (
        re.compile(r"[A-Za-z0-9]([A-Za-z0-9.:-]*[A-Za-z0-9])?"),
        "must be the driver pod's IP address or a DNS name the executors resolve",
    ),
    "PRIVSTAGE_SPARK_LOCAL_DIRS": (re.compile(r"/[^\s,]*(,/[^\s,]*)*"), "must be absolute paths, comma-separated"),
    "PRIVSTAGE_SPARK_K8S_DRIVER_POD_NAME": (_DNS_SUBDOMAIN, "must be a pod name"),
    "HOSTNAME": (_DNS_SUBDOMAIN, "must be the driver pod's name"),
}


def _env_value(environ: Mapping[str, str], name: str) -> str | None:
    """A variable's value, validated; None when unset or empty (Helm renders unset values as empty)."""
    value = (environ.get(name) or "").strip()
    if not value:
        return None
    pattern, rule = _VALIDATORS[name]
    if not pattern.fullmatch(value):
        raise SpecError(f"{rule} (got {value!r})", path=name)
    return value


def kubernetes_conf(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Spark settings for a driver in a Kubernetes pod (client mode) that starts executor pods.

    Empty unless ``PRIVSTAGE_SPARK_MASTER`` starts with ``k8s://``. Reads only the variables of
    :data:`K8S_ENV` (plus ``HOSTNAME``, ``KUBERNETES_SERVICE_HOST`` and ``PYSPARK_PYTHON``): names, sizes
    and addresses, never key material.

    Args:
        environ: the environment to read (default ``os.environ``).

    Raises:
        SpecError: a variable is missing or malformed; the message names it.
    """
    env = os.environ if environ is None else environ
    if not (env.get("PRIVSTAGE_SPARK_MASTER") or "").strip().startswith("k8s://"):
        return {}
    conf: dict[str, str] = {}
    for name, key in K8S_ENV.items():
        value = _env_value(env, name)
        if value is not None:
            conf[key] = value
    for name in _K8S_REQUIRED:
        if K8S_ENV[name] not in conf:
            raise SpecError("must be set when PRIVSTAGE_SPARK_MASTER is a k8s:// master", path=name)
    if "spark.kubernetes.driver.pod.name" not in conf and env.get("KUBERNETES_SERVICE_HOST"):
        # In a pod (Kubernetes sets KUBERNETES_SERVICE_HOST in every one) HOSTNAME is the pod's name unless the
        # pod sets spec.hostname. Executors then get an ownerReference to the driver pod and are
        # garbage-collected with it even if the driver dies before deleting them.
        pod_name = _env_value(env, "HOSTNAME")
        if pod_name is not None:
            conf["spark.kubernetes.driver.pod.name"] = pod_name
    conf.update(
        {
            "spark.submit.deployMode": "client",
            "spark.driver.bindAddress": "0.0.0.0",  # noqa: S104 - executors in other pods connect to the driver
            "spark.driver.port": K8S_DRIVER_PORT,
            "spark.driver.blockManager.port": K8S_BLOCK_MANAGER_PORT,
            "spark.blockManager.port": K8S_BLOCK_MANAGER_PORT,
            "spark.kubernetes.executor.deleteOnTermination": "true",
            # Executors read their settings from the driver: no ConfigMap, so the Role needs no configmaps.
            "spark.kubernetes.executor.disableConfigMap": "true",
            "spark.executorEnv.PYSPARK_PYTHON": env.get("PYSPARK_PYTHON") or sys.executable,
        }
    )
    return conf


def default_conf(*, local: bool, kubernetes: bool = False) -> dict[str, str]:
    """Settings privstage applies to every session it creates (spec values override them).

    With ``kubernetes`` the jar is named with the ``local://`` scheme: executors run the same image and
    load it from their own file system instead of fetching it from the driver.
    """
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
        conf["spark.jars"] = f"local://{jar.resolve()}" if kubernetes else str(jar)
    return conf


def _merge(defaults: Mapping[str, str], settings: Mapping[str, str]) -> dict[str, str]:
    """Spec settings win, except that privstage's jar is appended to a user's spark.jars."""
    merged = {**defaults, **settings}
    if "spark.jars" in defaults and "spark.jars" in settings:
        merged["spark.jars"] = f"{settings['spark.jars']},{defaults['spark.jars']}"
    return merged


def _refuse_key_material(settings: Mapping[str, str]) -> None:
    for name in settings:
        lowered = name.lower()
        if "privstage.key" in lowered or lowered.endswith(".key.material"):
            raise SpecError(f"spark.conf '{name}': key material never goes into the Spark configuration")


def _settings(spec: SparkSpec | None, conf: Mapping[str, str] | None) -> dict[str, str]:
    settings: dict[str, str] = dict(spec.conf if spec else {})
    settings.update(conf or {})
    _refuse_key_material(settings)
    return settings


def session_conf(
    spec: SparkSpec | None = None,
    conf: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Every setting a new classic (non-Connect) session gets, including ``spark.master``.

    Layers, later wins: :func:`default_conf`; :func:`kubernetes_conf` when both ``PRIVSTAGE_SPARK_MASTER``
    and the session's master are ``k8s://`` URLs; the spec's ``conf``; ``conf``. The master is
    ``conf``/``spec.conf`` ``spark.master``, else ``spec.master``, else ``$PRIVSTAGE_SPARK_MASTER``, else
    ``local[*]``. privstage's jar is appended to a user's ``spark.jars``. Pure: reads ``environ``
    (default ``os.environ``), starts nothing.

    Raises:
        SpecError: a setting would place key material in the configuration, or a Kubernetes variable is
            missing or malformed.
    """
    env = os.environ if environ is None else environ
    settings = _settings(spec, conf)
    master = (
        settings.get("spark.master")
        or (spec.master if spec else None)
        or (env.get("PRIVSTAGE_SPARK_MASTER") or "").strip()
        or "local[*]"
    )
    kubernetes = master.startswith("k8s://")
    defaults = default_conf(local=master.startswith("local"), kubernetes=kubernetes)
    if kubernetes:
        defaults.update(kubernetes_conf(env))
    merged = _merge(defaults, settings)
    merged["spark.master"] = master
    _refuse_key_material(merged)
    return merged


def _prepare_environment(*, kubernetes: bool = False, local_dirs: str | None = None) -> None:
    # Python workers must run the interpreter that has privstage's packages.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if not kubernetes:
        # Loopback only for a local driver: on Kubernetes executors in other pods must reach it.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if local_dirs:
        # SPARK_LOCAL_DIRS (the image sets one) wins over spark.local.dir, for the driver and for the
        # executors' scratch volumes: keep the two equal.
        os.environ["SPARK_LOCAL_DIRS"] = local_dirs


def is_connect(spark: object) -> bool:
    """True for a Spark Connect session."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def get_session(spec: SparkSpec | None = None, *, conf: Mapping[str, str] | None = None) -> SparkSession:
    """Return the SparkSession privstage runs on.

    A new classic session gets :func:`session_conf` (which adds the Kubernetes settings from the
    environment when the master is ``k8s://``).

    Args:
        spec: the pipeline's ``spark`` section (master, remote, app name, settings).
        conf: extra settings that win over the spec's (tests use this for local[2], no UI).

    Raises:
        SpecError: a setting would place key material in the Spark configuration, or a Kubernetes
            environment variable is missing or malformed.
        StageExecutionError: Spark could not start.
    """
    from pyspark.sql import SparkSession

    settings = _settings(spec, conf)
    remote = os.environ.get("SPARK_REMOTE") or (spec.remote if spec else None)
    # A new classic session's settings, computed (and checked) before anything starts.
    merged = {} if remote else session_conf(spec, conf)
    kubernetes = merged.get("spark.master", "").startswith("k8s://")
    _prepare_environment(kubernetes=kubernetes, local_dirs=merged.get("spark.local.dir") if kubernetes else None)
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
        builder = SparkSession.builder.master(merged["spark.master"]).appName(spec.app_name if spec else "privstage")
        for key, value in merged.items():
            builder = builder.config(key, value)
        return builder.getOrCreate()
    except SpecError:
        raise
    except Exception as exc:  # py4j / gRPC errors vary by mode
        raise StageExecutionError(f"could not start Spark ({type(exc).__name__})") from exc
