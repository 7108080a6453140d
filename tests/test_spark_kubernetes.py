"""Spark on Kubernetes: the settings the session factory makes of the Helm chart's environment.

No SparkSession is created here: :func:`privstage.spark.kubernetes_conf` and
:func:`privstage.spark.session_conf` are pure functions of the environment and the spec. The Spark keys
they emit are checked against the class files of the pinned Spark, so a misspelt key fails here.
"""

from __future__ import annotations

import glob
import os
import re
import sys
import zipfile
from pathlib import Path

import pytest

from privstage.errors import EXIT_CODES, SpecError
from privstage.jvm import JAR
from privstage.spark import (
    K8S_ENV,
    REDACTION_REGEX,
    _prepare_environment,
    default_conf,
    get_session,
    kubernetes_conf,
    session_conf,
)
from privstage.spec import SparkSpec

MASTER = "k8s://https://kubernetes.default.svc"
VENV_PYTHON = "/opt/privstage/venv/bin/python"
SCRATCH = "/tmp/spark-local"  # noqa: S108 - the image's scratch directory, an emptyDir in the pod
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - the driver listens for executors in other pods

# What the chart sets in the Job's pod, plus what Kubernetes and the image set there.
POD_ENV = {
    "PRIVSTAGE_SPARK_MASTER": MASTER,
    "PRIVSTAGE_SPARK_K8S_IMAGE": "registry.example/privstage@sha256:" + "ab" * 32,
    "PRIVSTAGE_SPARK_K8S_NAMESPACE": "privacy-batch",
    "PRIVSTAGE_SPARK_DRIVER_HOST": "10.42.0.17",
    "KUBERNETES_SERVICE_HOST": "10.96.0.1",
    "HOSTNAME": "clinic-visits-29381-x7k2p",
    "PYSPARK_PYTHON": VENV_PYTHON,
}
FULL_ENV = {
    **POD_ENV,
    "PRIVSTAGE_SPARK_K8S_IMAGE_PULL_POLICY": "IfNotPresent",
    "PRIVSTAGE_SPARK_K8S_SERVICE_ACCOUNT": "privstage-driver",
    "PRIVSTAGE_SPARK_K8S_EXECUTOR_SERVICE_ACCOUNT": "privstage-executor",
    "PRIVSTAGE_SPARK_EXECUTOR_INSTANCES": "4",
    "PRIVSTAGE_SPARK_EXECUTOR_MEMORY": "2g",
    "PRIVSTAGE_SPARK_EXECUTOR_CORES": "2",
    "PRIVSTAGE_SPARK_K8S_EXECUTOR_POD_TEMPLATE": "/etc/privstage/spark/executor-pod-template.yaml",
    "PRIVSTAGE_SPARK_LOCAL_DIRS": SCRATCH,
    "PRIVSTAGE_SPARK_K8S_DRIVER_POD_NAME": "clinic-visits-29381-x7k2p",
}
FIXED = {
    "spark.submit.deployMode": "client",
    "spark.driver.bindAddress": ALL_INTERFACES,
    "spark.driver.port": "7078",
    "spark.driver.blockManager.port": "7079",
    "spark.blockManager.port": "7079",
    "spark.kubernetes.executor.deleteOnTermination": "true",
    "spark.kubernetes.executor.disableConfigMap": "true",
    "spark.executorEnv.PYSPARK_PYTHON": VENV_PYTHON,
}


def test_pod_environment_becomes_client_mode_settings() -> None:
    assert kubernetes_conf(POD_ENV) == {
        "spark.master": MASTER,
        "spark.kubernetes.container.image": POD_ENV["PRIVSTAGE_SPARK_K8S_IMAGE"],
        "spark.kubernetes.namespace": "privacy-batch",
        "spark.driver.host": "10.42.0.17",
        "spark.kubernetes.driver.pod.name": "clinic-visits-29381-x7k2p",
        **FIXED,
    }


def test_every_chart_variable_is_mapped() -> None:
    assert kubernetes_conf(FULL_ENV) == {
        "spark.master": MASTER,
        "spark.kubernetes.container.image": FULL_ENV["PRIVSTAGE_SPARK_K8S_IMAGE"],
        "spark.kubernetes.container.image.pullPolicy": "IfNotPresent",
        "spark.kubernetes.namespace": "privacy-batch",
        "spark.kubernetes.authenticate.driver.serviceAccountName": "privstage-driver",
        "spark.kubernetes.authenticate.executor.serviceAccountName": "privstage-executor",
        "spark.executor.instances": "4",
        "spark.executor.memory": "2g",
        "spark.executor.cores": "2",
        "spark.kubernetes.executor.podTemplateFile": "/etc/privstage/spark/executor-pod-template.yaml",
        "spark.driver.host": "10.42.0.17",
        "spark.local.dir": SCRATCH,
        "spark.kubernetes.driver.pod.name": "clinic-visits-29381-x7k2p",
        **FIXED,
    }
    assert set(K8S_ENV) <= set(FULL_ENV)  # the table above covers every variable


def test_explicit_pod_name_wins_over_hostname_and_no_pod_name_outside_a_pod() -> None:
    env = {**POD_ENV, "PRIVSTAGE_SPARK_K8S_DRIVER_POD_NAME": "from-downward-api"}
    assert kubernetes_conf(env)["spark.kubernetes.driver.pod.name"] == "from-downward-api"
    # A driver outside the cluster (no KUBERNETES_SERVICE_HOST): its HOSTNAME names no pod.
    outside = {k: v for k, v in POD_ENV.items() if k != "KUBERNETES_SERVICE_HOST"}
    assert "spark.kubernetes.driver.pod.name" not in kubernetes_conf(outside)


def test_executor_python_defaults_to_the_running_interpreter() -> None:
    env = {k: v for k, v in POD_ENV.items() if k != "PYSPARK_PYTHON"}
    assert kubernetes_conf(env)["spark.executorEnv.PYSPARK_PYTHON"] == sys.executable


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"PRIVSTAGE_SPARK_MASTER": "local[2]"},
        {"PRIVSTAGE_SPARK_MASTER": ""},
        # chart variables without a k8s:// master are ignored (and not validated)
        {**FULL_ENV, "PRIVSTAGE_SPARK_MASTER": "spark://spark-master:7077", "PRIVSTAGE_SPARK_EXECUTOR_CORES": "x"},
        {k: v for k, v in FULL_ENV.items() if k != "PRIVSTAGE_SPARK_MASTER"},
    ],
)
def test_nothing_kubernetes_without_a_k8s_master(environ: dict[str, str]) -> None:
    assert kubernetes_conf(environ) == {}
    conf = session_conf(None, None, environ)
    assert not any("kubernetes" in key for key in conf)
    assert "spark.executor.instances" not in conf
    assert "spark.executorEnv.PYSPARK_PYTHON" not in conf
    assert conf["spark.master"] == (environ.get("PRIVSTAGE_SPARK_MASTER") or "local[*]")


@pytest.mark.parametrize(
    ("variable", "value", "rule"),
    [
        ("PRIVSTAGE_SPARK_EXECUTOR_INSTANCES", "two", "positive integer"),
        ("PRIVSTAGE_SPARK_EXECUTOR_INSTANCES", "1.5", "positive integer"),
        ("PRIVSTAGE_SPARK_EXECUTOR_INSTANCES", "-1", "positive integer"),
        ("PRIVSTAGE_SPARK_EXECUTOR_INSTANCES", "0", "positive integer"),
        ("PRIVSTAGE_SPARK_EXECUTOR_CORES", "2.0", "positive integer"),
        ("PRIVSTAGE_SPARK_EXECUTOR_CORES", "0", "positive integer"),
        ("PRIVSTAGE_SPARK_EXECUTOR_MEMORY", "2048", "512m or 2g"),
        ("PRIVSTAGE_SPARK_EXECUTOR_MEMORY", "2gb", "512m or 2g"),
        ("PRIVSTAGE_SPARK_EXECUTOR_MEMORY", "2 g", "512m or 2g"),
        ("PRIVSTAGE_SPARK_EXECUTOR_MEMORY", "2Gi", "512m or 2g"),
        ("PRIVSTAGE_SPARK_EXECUTOR_MEMORY", "0g", "512m or 2g"),
        ("PRIVSTAGE_SPARK_MASTER", "k8s://http://kubernetes.default.svc", "TLS only"),
        ("PRIVSTAGE_SPARK_MASTER", "k8s://kubernetes.default.svc:443", "TLS only"),
        ("PRIVSTAGE_SPARK_MASTER", "k8s://https://", "TLS only"),
        ("PRIVSTAGE_SPARK_K8S_NAMESPACE", "Privacy_Batch", "namespace"),
        ("PRIVSTAGE_SPARK_K8S_SERVICE_ACCOUNT", "Driver SA", "service account"),
        ("PRIVSTAGE_SPARK_K8S_IMAGE_PULL_POLICY", "Sometimes", "IfNotPresent"),
        ("PRIVSTAGE_SPARK_K8S_EXECUTOR_POD_TEMPLATE", "executor.yaml", "absolute"),
        ("PRIVSTAGE_SPARK_LOCAL_DIRS", "/scratch/a,scratch", "absolute"),
        ("PRIVSTAGE_SPARK_DRIVER_HOST", "10.0.0.1 evil", "driver pod"),
        ("PRIVSTAGE_SPARK_K8S_DRIVER_POD_NAME", "Driver_Pod", "pod name"),
    ],
)
def test_malformed_variables_are_spec_errors_naming_the_variable(variable: str, value: str, rule: str) -> None:
    with pytest.raises(SpecError) as info:
        kubernetes_conf({**FULL_ENV, variable: value})
    message = str(info.value)
    assert message.startswith(f"{variable}: ")
    assert rule in message
    assert info.value.exit_code == EXIT_CODES["SpecError"] == 3
    with pytest.raises(SpecError, match=variable):  # the session factory's path raises the same
        session_conf(None, None, {**FULL_ENV, variable: value})


@pytest.mark.parametrize(
    "variable", ["PRIVSTAGE_SPARK_K8S_IMAGE", "PRIVSTAGE_SPARK_K8S_NAMESPACE", "PRIVSTAGE_SPARK_DRIVER_HOST"]
)
@pytest.mark.parametrize("absent", ["unset", "empty"])
def test_required_variables(variable: str, absent: str) -> None:
    env = {k: v for k, v in POD_ENV.items() if k != variable}
    if absent == "empty":
        env[variable] = "  "  # Helm renders an unset value as an empty string
    with pytest.raises(SpecError, match=rf"^{variable}: must be set when PRIVSTAGE_SPARK_MASTER is a k8s:// master"):
        kubernetes_conf(env)


@pytest.mark.parametrize("memory", ["512m", "2g", "4G", "1024M", "16g"])
def test_memory_sizes_accepted(memory: str) -> None:
    assert kubernetes_conf({**POD_ENV, "PRIVSTAGE_SPARK_EXECUTOR_MEMORY": memory})["spark.executor.memory"] == memory


def test_optional_variables_set_empty_are_left_to_spark() -> None:
    env = {**POD_ENV, "PRIVSTAGE_SPARK_EXECUTOR_INSTANCES": "", "PRIVSTAGE_SPARK_K8S_EXECUTOR_POD_TEMPLATE": ""}
    conf = kubernetes_conf(env)
    assert "spark.executor.instances" not in conf
    assert "spark.kubernetes.executor.podTemplateFile" not in conf


def test_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*K8S_ENV, "HOSTNAME", "KUBERNETES_SERVICE_HOST", "PYSPARK_PYTHON"]:
        monkeypatch.delenv(name, raising=False)
    assert kubernetes_conf() == {}
    for name, value in POD_ENV.items():
        monkeypatch.setenv(name, value)
    assert kubernetes_conf() == kubernetes_conf(POD_ENV)
    assert session_conf()["spark.kubernetes.namespace"] == "privacy-batch"


# ---------------------------------------------------------------------------------------------
# session_conf: the merged configuration get_session applies
# ---------------------------------------------------------------------------------------------
def test_session_conf_on_kubernetes_layers_defaults_env_and_jar() -> None:
    conf = session_conf(None, None, FULL_ENV)
    assert conf["spark.master"] == MASTER
    assert {k: conf[k] for k in kubernetes_conf(FULL_ENV)} == kubernetes_conf(FULL_ENV)
    # privstage's defaults are kept (redaction, UTC), without the local-only loopback bind address
    for key, value in default_conf(local=False).items():
        if key != "spark.jars":
            assert conf[key] == value
    assert conf["spark.driver.bindAddress"] == ALL_INTERFACES
    # executors run the same image: the jar is loaded from their own file system
    assert JAR.is_file(), "make jvm builds the jar (make test does)"
    assert conf["spark.jars"] == f"local://{JAR.resolve()}"
    assert conf["spark.jars"].startswith("local:///")


def test_spec_and_conf_settings_win_over_the_environment() -> None:
    spec = SparkSpec(
        conf={
            "spark.executor.instances": "8",
            "spark.executor.memory": "6g",
            "spark.kubernetes.namespace": "from-spec",
            "spark.jars": "local:///opt/extra/udfs.jar",
        }
    )
    conf = session_conf(spec, {"spark.executor.memory": "12g", "spark.driver.port": "7100"}, FULL_ENV)
    assert conf["spark.executor.instances"] == "8"  # spec over env (4)
    assert conf["spark.kubernetes.namespace"] == "from-spec"
    assert conf["spark.executor.memory"] == "12g"  # conf over spec over env
    assert conf["spark.driver.port"] == "7100"  # conf over the fixed port
    assert conf["spark.executor.cores"] == "2"  # env where nobody else says anything
    assert conf["spark.jars"] == f"local:///opt/extra/udfs.jar,local://{JAR.resolve()}"


def test_spec_master_wins_and_decides_whether_kubernetes_applies() -> None:
    other = "k8s://https://api.cluster.example:6443"
    conf = session_conf(SparkSpec(master=other), None, FULL_ENV)
    assert conf["spark.master"] == other
    assert conf["spark.kubernetes.container.image"] == FULL_ENV["PRIVSTAGE_SPARK_K8S_IMAGE"]

    # A local master in the spec or in conf: no Kubernetes settings, and bad chart values do not matter.
    broken = {**FULL_ENV, "PRIVSTAGE_SPARK_EXECUTOR_CORES": "lots"}
    for local in (
        session_conf(SparkSpec(master="local[4]"), None, broken),
        session_conf(None, {"spark.master": "local[2]"}, broken),
    ):
        assert local["spark.master"].startswith("local[")
        assert not any("kubernetes" in key for key in local)
        assert local["spark.jars"] == str(JAR)
        assert local["spark.driver.bindAddress"] == os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")


def test_local_session_conf_is_unchanged_by_kubernetes_support() -> None:
    """Without PRIVSTAGE_SPARK_MASTER the factory applies what it always did: defaults, then the settings."""
    settings = {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2"}
    assert session_conf(SparkSpec(conf=settings), None, {}) == {
        **default_conf(local=True),
        **settings,
        "spark.master": "local[*]",
    }


def test_key_material_is_still_refused() -> None:
    with pytest.raises(SpecError, match="key material never goes into the Spark configuration"):
        session_conf(None, {"spark.privstage.key.pseudonym": "c2VjcmV0"}, FULL_ENV)
    with pytest.raises(SpecError, match="key material"):
        session_conf(SparkSpec(conf={"spark.hadoop.parquet.key.material": "x"}), None, {})


def test_no_secret_from_the_environment_reaches_the_configuration() -> None:
    planted = {
        "PRIVSTAGE_KEY_PSEUDONYM_KEY": "q83vEjRWeJq8zN7vEjRWeJq8zN7vEjRWeJq8zN7vEjQ=",
        "PRIVSTAGE_LEDGER_URL": "postgresql://ledger:hunter2@db.internal:5432/ledger",
        "PRIVSTAGE_LEDGER_URL_FILE": "/var/run/secrets/privstage-ledger/url",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "SPARK_AUTHENTICATE_SECRET": "do-not-copy",
    }
    conf = session_conf(None, None, {**FULL_ENV, **planted})
    assert conf == session_conf(None, None, FULL_ENV)
    text = "\n".join(f"{k}={v}" for k, v in conf.items())
    for value in planted.values():
        assert value not in text
    # no key-like setting names (the names Spark would redact, plus anything with "key" in it)
    assert not [k for k in conf if re.search(REDACTION_REGEX, k) or "key" in k.lower()]


def test_get_session_rejects_bad_chart_values_before_starting_spark(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**FULL_ENV, "PRIVSTAGE_SPARK_EXECUTOR_INSTANCES": "many"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    with pytest.raises(SpecError, match="PRIVSTAGE_SPARK_EXECUTOR_INSTANCES"):
        get_session()


def test_prepare_environment_on_kubernetes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPARK_LOCAL_IP", raising=False)
    monkeypatch.setenv("SPARK_LOCAL_DIRS", SCRATCH)  # as the image sets it
    _prepare_environment(kubernetes=True, local_dirs="/scratch/a,/scratch/b")
    assert "SPARK_LOCAL_IP" not in os.environ  # the driver must be reachable from executor pods
    assert os.environ["SPARK_LOCAL_DIRS"] == "/scratch/a,/scratch/b"  # env and spark.local.dir agree
    _prepare_environment()
    assert os.environ["SPARK_LOCAL_IP"] == "127.0.0.1"


# ---------------------------------------------------------------------------------------------
# The keys exist in the pinned Spark (a misspelt key would be silently ignored by Spark)
# ---------------------------------------------------------------------------------------------
def _class_bytes(jar_pattern: str, prefix: str) -> bytes:
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    found = glob.glob(str(jars / jar_pattern))
    assert found, f"{jar_pattern} not in {jars}"
    data = b""
    for jar in found:
        with zipfile.ZipFile(jar) as archive:
            data += b"".join(
                archive.read(n) for n in archive.namelist() if n.startswith(prefix) and n.endswith(".class")
            )
    return data


def test_every_emitted_key_is_a_spark_setting() -> None:
    k8s = _class_bytes("spark-kubernetes_*.jar", "org/apache/spark/deploy/k8s/")
    core = _class_bytes("spark-core_*.jar", "org/apache/spark/internal/config/")
    spark_conf = _class_bytes("spark-core_*.jar", "org/apache/spark/SparkConf")
    for key in kubernetes_conf(FULL_ENV):
        if key.startswith("spark.kubernetes.authenticate."):
            # built by Spark from a prefix and a suffix
            prefix, _, suffix = key.rpartition(".")
            assert prefix.encode() in k8s and suffix.encode() in k8s, key
        elif key.startswith("spark.executorEnv."):
            assert b"spark.executorEnv." in spark_conf
        else:
            assert key.encode() in k8s or key.encode() in core, key
