"""The Helm chart, rendered offline and checked against the Kubernetes 1.32 schemas and privstage's contracts.

No cluster here: helm-python-sdk (the Helm v4 library) renders and lints the chart, kubernetes-validate checks
every manifest (and the executor pod template inside its ConfigMap) against the strict 1.32 schemas, and the
assertions cover what those schemas cannot: Pod Security Standards "restricted", no Secret in the environment,
the default-deny NetworkPolicy, the Role's scope, and the podFailurePolicy exit codes against
privstage.errors.EXIT_CODES.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from helm_python import Chart, HelmRenderError, HelmValuesError

from privstage import __version__
from privstage.errors import EXIT_CODES
from privstage.spark import K8S_BLOCK_MANAGER_PORT, K8S_DRIVER_PORT, K8S_ENV, session_conf
from privstage.spec import parse_spec

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "privstage"
KUBE_VERSION = "1.32.0"
RELEASE, NAMESPACE = "clinic", "privacy-jobs"

KEY_DIR = "/var/run/secrets/privstage/keys"
SPEC_FILE = "/etc/privstage/pipeline.yaml"
EXECUTOR_TEMPLATE_FILE = "/etc/privstage/spark/executor-pod-template.yaml"
TMP_DIR = "/tmp"  # noqa: S108 - emptyDir mount paths inside the pod, not temp files here
SPARK_LOCAL_DIR = "/tmp/spark-local"  # noqa: S108
EXECUTOR_COMMAND = ["/opt/privstage/bin/spark-executor"]
SPARK_PORTS = {int(K8S_DRIVER_PORT), int(K8S_BLOCK_MANAGER_PORT)}
FAIL_FAST_ERRORS = ("SpecError", "GuardFailed", "BudgetExceeded", "IntegrityError")
#: Volume types Pod Security Standards "restricted" allows.
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def _ci_values(name: str) -> dict[str, Any]:
    return yaml.safe_load((CHART_DIR / "ci" / f"{name}-values.yaml").read_text(encoding="utf-8"))


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge, as Helm coalesces user values (maps merge, everything else replaces)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


JOB = _ci_values("job")
VALUE_SETS: dict[str, dict[str, Any]] = {
    "job": JOB,
    "cronjob": _merge(JOB, {"schedule": "15 3 * * 1-5", "cronJob": {"timeZone": "Europe/Amsterdam"}}),
    "cronjob-local-mode": _ci_values("cronjob"),
    "custom-executors": _merge(JOB, {"executors": {"instances": 4, "memory": "4g", "cores": 2}}),
    "extra-secrets": _merge(
        JOB,
        {
            "extraSecrets": [
                {"name": "storage-credentials", "mountPath": "/var/run/secrets/storage"},
                {"name": "kms-client-tls", "mountPath": "/var/run/secrets/kms-tls"},
            ],
            "imagePullSecrets": [{"name": "registry"}],
            "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
            "nodeSelector": {"workload": "batch"},
        },
    ),
    "ledger-storage-kms": _merge(
        JOB,
        {
            "ledger": {"secretName": "privstage-ledger"},
            "networkPolicy": {
                "ledger": {"cidr": "10.40.0.12/32", "port": 5432},
                "storage": [{"cidr": "10.50.0.0/16", "port": 443}, {"cidr": "10.51.0.0/24", "port": 9000}],
                "kms": [{"cidr": "10.60.1.5/32", "port": 443}],
            },
            "pipeline": {"baseDir": TMP_DIR},
        },
    ),
}


# ---------------------------------------------------------------------------------------------
# Rendering helpers
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chart() -> Iterator[Chart]:
    with Chart.load(CHART_DIR) as loaded:
        yield loaded


def _render(chart: Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    files = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    docs: list[dict[str, Any]] = []
    for filename, text in sorted(files.items()):
        if filename.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


@pytest.fixture(scope="module")
def rendered(chart: Chart) -> dict[str, list[dict[str, Any]]]:
    return {name: _render(chart, values) for name, values in VALUE_SETS.items()}


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def _maybe(docs: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    found = [d for d in docs if d["kind"] == kind]
    return found[0] if found else None


def _job_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The Job spec, whether it is a Job's or a CronJob's jobTemplate."""
    cron = _maybe(docs, "CronJob")
    if cron is not None:
        assert _maybe(docs, "Job") is None, "a release renders a Job or a CronJob, not both"
        return cron["spec"]["jobTemplate"]["spec"]
    return _one(docs, "Job")["spec"]


def _driver_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return _job_spec(docs)["template"]


def _executor_pod(docs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The executor pod template, parsed from its ConfigMap (None in local mode)."""
    for doc in docs:
        if doc["kind"] == "ConfigMap" and "executor-pod-template.yaml" in doc.get("data", {}):
            return yaml.safe_load(doc["data"]["executor-pod-template.yaml"])
    return None


def _pod_templates(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    pods = [("driver", _driver_pod(docs))]
    executor = _executor_pod(docs)
    if executor is not None:
        pods.append(("executor", executor))
    return pods


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _spark_on_kubernetes(name: str) -> bool:
    return VALUE_SETS[name]["executors"]["instances"] > 0 if "executors" in VALUE_SETS[name] else True


# ---------------------------------------------------------------------------------------------
# Schema validity and lint
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_manifest_validates_against_kubernetes_1_32_strict(rendered, name):
    docs = rendered[name]
    kinds = sorted(d["kind"] for d in docs)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    executor = _executor_pod(docs)
    if _spark_on_kubernetes(name):
        assert executor is not None
        kubernetes_validate.validate(executor, KUBE_VERSION, strict=True)
        assert {"Role", "RoleBinding", "ServiceAccount", "NetworkPolicy"} <= set(kinds)
    else:
        assert executor is None
        assert "Role" not in kinds and "RoleBinding" not in kinds


def test_the_validator_rejects_a_broken_manifest(rendered):
    """Guards the check above: the strict validator does fail on an unknown field and on a wrong type."""
    job = copy.deepcopy(_one(rendered["job"], "Job"))
    job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsRoot"] = False
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBE_VERSION, strict=True)
    job = copy.deepcopy(_one(rendered["job"], "Job"))
    job["spec"]["backoffLimit"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("values", [None, JOB, _ci_values("cronjob")], ids=["defaults", "ci-job", "ci-cronjob"])
def test_lint_strict_passes(values):
    report = helm_python.lint(CHART_DIR, values, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 2 = warning, 3 = error
    assert report["errors"] == [] and problems == [], report


def test_lint_fails_on_invalid_values():
    report = helm_python.lint(CHART_DIR, _merge(JOB, {"executors": {"instances": -2}}), strict=True)
    assert any("/executors/instances" in e for e in report["errors"]), report


def test_chart_version_tracks_privstage(chart):
    assert chart.metadata["appVersion"] == __version__
    assert _driver_pod(_render(chart, JOB))["spec"]["containers"][0]["image"] == f"privstage:{__version__}"
    digest = "sha256:" + "ab" * 32
    pinned = _render(chart, _merge(JOB, {"image": {"repository": "registry.example/privstage", "digest": digest}}))
    assert _driver_pod(pinned)["spec"]["containers"][0]["image"] == f"registry.example/privstage@{digest}"
    assert _executor_pod(pinned)["spec"]["containers"][0]["image"] == f"registry.example/privstage@{digest}"


# ---------------------------------------------------------------------------------------------
# Pod Security Standards "restricted"
# ---------------------------------------------------------------------------------------------
def _assert_restricted(pod: dict[str, Any], uid: int, where: str) -> None:
    spec = pod["spec"]
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True, where
    assert psc["runAsUser"] == psc["runAsGroup"] == psc["fsGroup"] == uid, where
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, where
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
    for volume in spec.get("volumes", []):
        types = set(volume) - {"name"}
        assert types <= RESTRICTED_VOLUME_TYPES, f"{where}: volume {volume['name']} is {types}"
    containers = spec["containers"] + spec.get("initContainers", []) + spec.get("ephemeralContainers", [])
    assert containers, where
    for container in containers:
        csc = container["securityContext"]
        label = f"{where}/{container['name']}"
        assert csc["allowPrivilegeEscalation"] is False, label
        assert csc["capabilities"]["drop"] == ["ALL"], label
        assert not csc["capabilities"].get("add"), label
        assert csc["readOnlyRootFilesystem"] is True, label
        assert csc.get("privileged") is not True, label
        assert csc.get("runAsUser", uid) != 0 and csc.get("runAsNonRoot", True) is True, label
        assert csc.get("seccompProfile", {"type": "RuntimeDefault"})["type"] == "RuntimeDefault", label
        assert not any(p.get("hostPort") for p in container.get("ports", [])), label
        # With a read-only root filesystem, /tmp and Spark's scratch must be emptyDirs.
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        assert "emptyDir" in mounts[TMP_DIR] and "emptyDir" in mounts[SPARK_LOCAL_DIR], label


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_pod_template_is_restricted(rendered, name):
    pods = _pod_templates(rendered[name])
    assert len(pods) == (2 if _spark_on_kubernetes(name) else 1)
    for where, pod in pods:
        _assert_restricted(pod, 10001, f"{name}:{where}")
        assert pod["spec"]["restartPolicy"] == "Never"


def test_the_uid_comes_from_values(chart):
    docs = _render(chart, _merge(JOB, {"securityContext": {"runAsUser": 2345, "runAsGroup": 2345, "fsGroup": 2345}}))
    for where, pod in _pod_templates(docs):
        _assert_restricted(pod, 2345, where)


def test_the_restricted_check_catches_a_weakened_pod(rendered):
    pod = copy.deepcopy(_driver_pod(rendered["job"]))
    pod["spec"]["containers"][0]["securityContext"]["capabilities"] = {"drop": ["ALL"], "add": ["NET_RAW"]}
    with pytest.raises(AssertionError):
        _assert_restricted(pod, 10001, "weakened")
    pod = copy.deepcopy(_driver_pod(rendered["job"]))
    pod["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    with pytest.raises(AssertionError):
        _assert_restricted(pod, 10001, "weakened")


@pytest.mark.parametrize("name", VALUE_SETS)
def test_only_the_driver_gets_an_api_token(rendered, name):
    docs = rendered[name]
    assert _one(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    driver = _driver_pod(docs)["spec"]
    assert driver["automountServiceAccountToken"] is _spark_on_kubernetes(name)
    executor = _executor_pod(docs)
    if executor is not None:
        assert executor["spec"]["automountServiceAccountToken"] is False
        assert executor["spec"]["serviceAccountName"] == driver["serviceAccountName"]


# ---------------------------------------------------------------------------------------------
# Secrets: files only, read-only
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", VALUE_SETS)
def test_no_secret_reaches_the_environment(rendered, name):
    docs = rendered[name] + [p for _, p in _pod_templates(rendered[name])]
    for key, _ in _walk(docs):
        assert key not in {"secretKeyRef", "secretRef", "envFrom"}, f"{name}: {key}"
    for where, pod in _pod_templates(rendered[name]):
        for container in pod["spec"]["containers"]:
            for var in container.get("env", []):
                assert set(var) in ({"name", "value"}, {"name", "valueFrom"}), f"{where}: {var}"
                if "valueFrom" in var:
                    assert set(var["valueFrom"]) == {"fieldRef"}, f"{where}: {var}"
                assert not var["name"].startswith("PRIVSTAGE_KEY_"), f"{where}: {var['name']}"


def _secret_mounts(pod: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """mountPath -> (secret name, mount) for every Secret volume mounted in the pod's first container."""
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    found = {}
    for mount in pod["spec"]["containers"][0]["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "secret" in volume:
            found[mount["mountPath"]] = (volume["secret"]["secretName"], mount)
    return found


@pytest.mark.parametrize("name", ["job", "custom-executors", "extra-secrets", "ledger-storage-kms"])
def test_keys_are_mounted_read_only_from_the_secret_in_driver_and_executors(rendered, name):
    expected = {KEY_DIR: "privstage-keys"}
    expected |= {s["mountPath"]: s["name"] for s in VALUE_SETS[name].get("extraSecrets", [])}
    for where, pod in _pod_templates(rendered[name]):
        mounts = _secret_mounts(pod)
        for path, secret in expected.items():
            assert mounts[path][0] == secret, f"{where}: {path}"
            assert mounts[path][1]["readOnly"] is True, f"{where}: {path}"
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        for mount in pod["spec"]["containers"][0]["volumeMounts"]:
            source = volumes[mount["name"]]
            if "secret" in source or "projected" in source or "configMap" in source:
                assert mount.get("readOnly") is True, f"{where}: {mount}"


def test_the_spec_in_values_reads_keys_from_the_mounted_directory(rendered):
    docs = rendered["job"]
    config = next(d for d in docs if d["kind"] == "ConfigMap" and "pipeline.yaml" in d["data"])
    text = config["data"]["pipeline.yaml"]
    assert text.rstrip("\n") == JOB["pipeline"]["spec"].rstrip("\n")
    spec = parse_spec(text, base_dir="/")
    assert spec.keys.provider == "files" and spec.keys.directory == KEY_DIR
    driver = _driver_pod(docs)["spec"]["containers"][0]
    assert driver["args"] == ["run", SPEC_FILE, "--report", "/var/privstage/reports/report.json", "--no-progress"]


def test_a_spec_file_in_the_image_is_run_without_a_configmap(rendered):
    docs = rendered["cronjob-local-mode"]
    assert not [d for d in docs if d["kind"] == "ConfigMap"]
    driver = _driver_pod(docs)["spec"]
    assert driver["containers"][0]["args"][:2] == ["run", "/opt/privstage/pipelines/nightly.yaml"]
    assert "config" not in {v["name"] for v in driver["volumes"]}


def test_the_ledger_url_is_a_mounted_file_for_the_driver_only(rendered):
    docs = rendered["ledger-storage-kms"]
    driver = _driver_pod(docs)
    env = _env(driver["spec"]["containers"][0])
    url_file = env["PRIVSTAGE_LEDGER_URL_FILE"]["value"]
    mounts = _secret_mounts(driver)
    mounted_from, mount = mounts[str(Path(url_file).parent)]
    assert mounted_from == "privstage-ledger" and mount["readOnly"] is True
    ledger_volume = next(v for v in driver["spec"]["volumes"] if v["name"] == mount["name"])
    assert ledger_volume["secret"]["items"] == [{"key": "url", "path": Path(url_file).name}]
    executor = _executor_pod(docs)
    assert "privstage-ledger" not in {s for s, _ in _secret_mounts(executor).values()}
    assert "PRIVSTAGE_LEDGER_URL_FILE" not in _env(executor["spec"]["containers"][0])


# ---------------------------------------------------------------------------------------------
# Spark on Kubernetes: the environment the session factory reads
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "instances", "memory", "cores"), [("job", "2", "2g", "1"), ("custom-executors", "4", "4g", "2")]
)
def test_driver_environment_for_spark_on_kubernetes(rendered, name, instances, memory, cores):
    docs = rendered[name]
    driver = _driver_pod(docs)
    container = driver["spec"]["containers"][0]
    env = _env(container)
    plain = {k: v["value"] for k, v in env.items() if "value" in v}
    field = {k: v["valueFrom"]["fieldRef"]["fieldPath"] for k, v in env.items() if "valueFrom" in v}
    assert plain["PRIVSTAGE_SPARK_MASTER"] == "k8s://https://kubernetes.default.svc"
    assert plain["PRIVSTAGE_SPARK_K8S_IMAGE"] == container["image"]
    assert plain["PRIVSTAGE_SPARK_K8S_SERVICE_ACCOUNT"] == driver["spec"]["serviceAccountName"]
    assert plain["PRIVSTAGE_SPARK_EXECUTOR_INSTANCES"] == instances
    assert plain["PRIVSTAGE_SPARK_EXECUTOR_MEMORY"] == memory
    assert plain["PRIVSTAGE_SPARK_EXECUTOR_CORES"] == cores
    assert plain["PRIVSTAGE_SPARK_K8S_EXECUTOR_POD_TEMPLATE"] == EXECUTOR_TEMPLATE_FILE
    assert plain["PRIVSTAGE_SPARK_LOCAL_DIRS"] == SPARK_LOCAL_DIR
    assert field["PRIVSTAGE_SPARK_K8S_NAMESPACE"] == "metadata.namespace"
    assert field["PRIVSTAGE_SPARK_DRIVER_HOST"] == "status.podIP"
    assert field["PRIVSTAGE_SPARK_K8S_DRIVER_POD_NAME"] == "metadata.name"
    assert field["SPARK_LOCAL_IP"] == "status.podIP"  # not the factory's 127.0.0.1: executors connect back

    # The pod template file the driver is told about is the executor template ConfigMap, mounted at that path.
    volumes = {v["name"]: v for v in driver["spec"]["volumes"]}
    config_mount = next(m for m in container["volumeMounts"] if EXECUTOR_TEMPLATE_FILE.startswith(m["mountPath"] + "/"))
    relative = EXECUTOR_TEMPLATE_FILE[len(config_mount["mountPath"]) + 1 :]
    sources = volumes[config_mount["name"]]["projected"]["sources"]
    source = next(s["configMap"] for s in sources if any(i["path"] == relative for i in s["configMap"]["items"]))
    template_map = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == source["name"])
    assert "executor-pod-template.yaml" in template_map["data"]


@pytest.mark.parametrize("name", ["job", "custom-executors", "ledger-storage-kms"])
def test_the_session_factory_accepts_the_driver_environment(rendered, name):
    """Chart and SparkSession factory agree: every PRIVSTAGE_SPARK_* variable is one the factory reads, and
    the factory turns the rendered environment (downward API fields filled in) into a k8s:// session config."""
    container = _driver_pod(rendered[name])["spec"]["containers"][0]
    downward = {
        "metadata.namespace": NAMESPACE,
        "status.podIP": "10.244.3.17",
        "metadata.name": "clinic-privstage-x7k2p",
    }
    environ = {
        var["name"]: var["value"] if "value" in var else downward[var["valueFrom"]["fieldRef"]["fieldPath"]]
        for var in container["env"]
    }
    spark_vars = {k for k in environ if k.startswith("PRIVSTAGE_SPARK_")}
    assert spark_vars <= set(K8S_ENV), spark_vars - set(K8S_ENV)
    conf = session_conf(environ=environ)
    assert conf["spark.master"] == "k8s://https://kubernetes.default.svc"
    assert conf["spark.kubernetes.namespace"] == NAMESPACE
    assert conf["spark.driver.host"] == "10.244.3.17"
    assert conf["spark.kubernetes.driver.pod.name"] == "clinic-privstage-x7k2p"
    assert conf["spark.kubernetes.container.image"] == container["image"]
    assert conf["spark.kubernetes.executor.podTemplateFile"] == EXECUTOR_TEMPLATE_FILE
    assert conf["spark.local.dir"] == SPARK_LOCAL_DIR
    values = _merge(JOB, VALUE_SETS[name])
    executors = _merge(yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8")), values)["executors"]
    assert conf["spark.executor.instances"] == str(executors["instances"])
    assert conf["spark.executor.memory"] == executors["memory"]
    assert conf["spark.executor.cores"] == str(executors["cores"])
    assert {int(conf["spark.driver.port"]), int(conf["spark.blockManager.port"])} == SPARK_PORTS


def test_the_executor_command_is_the_launcher_the_image_installs(chart):
    assert chart.values["executors"]["command"] == EXECUTOR_COMMAND
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert EXECUTOR_COMMAND[0] in dockerfile
    assert "USER 10001:10001" in dockerfile
    assert chart.values["securityContext"] == {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001}


@pytest.mark.parametrize("name", ["job", "custom-executors"])
def test_executor_template_gives_spark_its_scratch_and_release_labels(rendered, name):
    executor = _executor_pod(rendered[name])
    container = executor["spec"]["containers"][0]
    volumes = {v["name"]: v for v in executor["spec"]["volumes"]}
    # Spark's Kubernetes scheduler adopts mounts named spark-local-dir-* as the executor's local dirs.
    local = next(m for m in container["volumeMounts"] if m["name"].startswith("spark-local-dir-"))
    assert local["mountPath"] == SPARK_LOCAL_DIR and "emptyDir" in volumes[local["name"]]
    assert container["command"] == EXECUTOR_COMMAND
    assert executor["metadata"]["labels"]["app.kubernetes.io/component"] == "executor"


def test_local_mode_has_no_spark_on_kubernetes_settings(rendered):
    env = _env(_driver_pod(rendered["cronjob-local-mode"])["spec"]["containers"][0])
    assert not [k for k in env if k.startswith("PRIVSTAGE_SPARK_") and k != "PRIVSTAGE_SPARK_LOCAL_DIRS"]
    assert "SPARK_LOCAL_IP" not in env


# ---------------------------------------------------------------------------------------------
# RBAC
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["job", "cronjob", "custom-executors"])
def test_role_is_limited_to_what_spark_needs(rendered, name):
    docs = rendered[name]
    role = _one(docs, "Role")
    allowed_verbs = {"create", "get", "list", "watch", "patch", "delete", "deletecollection"}
    resources: set[str] = set()
    for rule in role["rules"]:
        assert rule["apiGroups"] == [""]
        assert set(rule["verbs"]) <= allowed_verbs, rule
        resources |= set(rule["resources"])
    assert resources == {"pods", "services", "configmaps", "persistentvolumeclaims"}
    assert "*" not in str(role["rules"])
    binding = _one(docs, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    sa = _driver_pod(docs)["spec"]["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    assert _one(docs, "ServiceAccount")["metadata"]["name"] == sa


# ---------------------------------------------------------------------------------------------
# NetworkPolicy
# ---------------------------------------------------------------------------------------------
def _allows_all(peer: dict[str, Any]) -> bool:
    block = peer.get("ipBlock")
    if block is not None:
        return ipaddress.ip_network(block["cidr"], strict=False).prefixlen == 0
    # An empty namespaceSelector without a podSelector selects every pod in the cluster.
    return peer.get("namespaceSelector") == {} and "podSelector" not in peer


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}
    return bool(selector["matchLabels"]) and selector["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("name", VALUE_SETS)
def test_network_policy_is_default_deny_with_named_egress_only(rendered, name):
    docs = rendered[name]
    policy = _one(docs, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    release_selector = policy["podSelector"]
    for where, pod in _pod_templates(docs):
        assert _selects(release_selector, pod["metadata"]["labels"]), where
    other_release = {"app.kubernetes.io/name": "privstage", "app.kubernetes.io/instance": "another"}
    assert not _selects(release_selector, other_release)

    # Ingress: only the release's own pods, only on Spark's fixed ports (none at all in local mode).
    spark_ports = [{"protocol": "TCP", "port": port} for port in sorted(SPARK_PORTS)]
    if _spark_on_kubernetes(name):
        assert policy["ingress"] == [{"from": [{"podSelector": release_selector}], "ports": spark_ports}]
    else:
        assert policy["ingress"] == []

    opened: set[tuple[str, int]] = set()
    for rule in policy["egress"]:
        assert rule.get("to"), f"{name}: egress rule without destinations allows everything: {rule}"
        assert rule.get("ports"), f"{name}: egress rule without ports: {rule}"
        for peer in rule["to"]:
            assert not _allows_all(peer), f"{name}: {peer}"
            if "ipBlock" in peer:
                target = peer["ipBlock"]["cidr"]
            elif peer == {"podSelector": release_selector}:
                target = "release"
            else:
                target = "dns"
            opened |= {(target, port["port"]) for port in rule["ports"]}

    values = _merge(yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8")), VALUE_SETS[name])
    net = values["networkPolicy"]
    expected = {("dns", 53)}
    if _spark_on_kubernetes(name):
        expected |= {("release", port) for port in SPARK_PORTS}
        expected |= {(cidr, port) for cidr in net["apiServer"]["cidrs"] for port in net["apiServer"]["ports"]}
    if net["ledger"]["cidr"]:
        expected.add((net["ledger"]["cidr"], net["ledger"]["port"]))
    expected |= {(e["cidr"], e["port"]) for e in net["storage"] + net["kms"]}
    assert opened == expected


def test_dns_egress_is_kube_dns_only(rendered):
    policy = _one(rendered["job"], "NetworkPolicy")["spec"]
    dns = next(r for r in policy["egress"] if any(p.get("port") == 53 for p in r.get("ports", [])))
    assert dns["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    assert sorted((p["protocol"], p["port"]) for p in dns["ports"]) == [("TCP", 53), ("UDP", 53)]


# ---------------------------------------------------------------------------------------------
# Job behaviour: retries and the podFailurePolicy
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", VALUE_SETS)
def test_pod_failure_policy_fails_fast_on_the_cli_exit_codes(rendered, name):
    job = _job_spec(rendered[name])
    expected = {EXIT_CODES[n] for n in FAIL_FAST_ERRORS}
    rules = job["podFailurePolicy"]["rules"]
    fail_job = [r for r in rules if r["action"] == "FailJob"]
    assert len(fail_job) == 1
    on_exit = fail_job[0]["onExitCodes"]
    assert on_exit["operator"] == "In"
    assert set(on_exit["values"]) == expected
    assert on_exit["values"] == sorted(on_exit["values"])  # the API rejects an unsorted list
    assert on_exit["containerName"] == job["template"]["spec"]["containers"][0]["name"]
    # Retryable errors are not in the list: they use backoffLimit.
    assert EXIT_CODES["KeyUnavailable"] not in on_exit["values"]
    assert EXIT_CODES["StageExecutionError"] not in on_exit["values"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in rules
    assert job["backoffLimit"] == 2 and job["activeDeadlineSeconds"] == 21600
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_values_default_exit_codes_match_privstage_errors(chart):
    assert chart.values["job"]["podFailurePolicy"]["failJobExitCodes"] == sorted(
        EXIT_CODES[n] for n in FAIL_FAST_ERRORS
    )


def test_exit_codes_are_sorted_whatever_the_values_order(chart):
    docs = _render(chart, _merge(JOB, {"job": {"podFailurePolicy": {"failJobExitCodes": [42, 7, 3, 100]}}}))
    assert _job_spec(docs)["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [3, 7, 42, 100]


def test_cronjob_schedule_and_job_limits_come_from_values(rendered, chart):
    cron = _one(rendered["cronjob"], "CronJob")["spec"]
    assert cron["schedule"] == "15 3 * * 1-5" and cron["timeZone"] == "Europe/Amsterdam"
    assert cron["concurrencyPolicy"] == "Forbid"
    docs = _render(chart, _merge(JOB, {"job": {"backoffLimit": 0, "activeDeadlineSeconds": 900}}))
    assert (_job_spec(docs)["backoffLimit"], _job_spec(docs)["activeDeadlineSeconds"]) == (0, 900)


# ---------------------------------------------------------------------------------------------
# Invalid values are rejected, naming the value
# ---------------------------------------------------------------------------------------------
SCHEMA_REJECTIONS = {
    "missing image repository": ({"image": {"repository": None}}, "'repository'"),
    "empty image repository": ({"image": {"repository": ""}}, "/image/repository"),
    "negative executor count": ({"executors": {"instances": -1}}, "/executors/instances"),
    "unknown top-level key": ({"replicas": 3}, "'replicas'"),
    "unknown nested key": ({"executors": {"gpus": 1}}, "'gpus'"),
    "bad schedule": ({"schedule": "every night"}, "/schedule"),
    "four-field schedule": ({"schedule": "0 3 * *"}, "/schedule"),
    "egress to everywhere": ({"networkPolicy": {"storage": [{"cidr": "0.0.0.0/0", "port": 443}]}}, "/cidr"),
    "secret through env": (
        {"extraEnv": [{"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}}]},
        "'valueFrom'",
    ),
    "key in env": ({"extraEnv": [{"name": "PRIVSTAGE_KEY_PSEUDONYM_KEY", "value": "x"}]}, "/extraEnv/0/name"),
    "root uid": ({"securityContext": {"runAsUser": 0}}, "/securityContext/runAsUser"),
    "fail-fast exit code 0": ({"job": {"podFailurePolicy": {"failJobExitCodes": [0, 3]}}}, "failJobExitCodes"),
    "bad executor memory": ({"executors": {"memory": "lots"}}, "/executors/memory"),
    "executor memory without unit": ({"executors": {"memory": "4096"}}, "/executors/memory"),
}


@pytest.mark.parametrize(("override", "names"), SCHEMA_REJECTIONS.values(), ids=SCHEMA_REJECTIONS.keys())
def test_schema_rejects_invalid_values(chart, override, names):
    values = _merge(JOB, override)
    with pytest.raises(HelmValuesError) as validated:
        chart.validate_schema(values)
    assert names in str(validated.value)
    with pytest.raises(HelmValuesError) as rendering:  # an install renders, and fails the same way
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert names in str(rendering.value)


def test_schema_accepts_every_value_set(chart):
    for values in VALUE_SETS.values():
        chart.validate_schema(values)
    chart.validate_schema(_merge(JOB, {"schedule": "@hourly", "executors": {"instances": 0}}))


TEMPLATE_REJECTIONS = {
    "no pipeline": ({"pipeline": {"spec": ""}}, "pipeline.spec or pipeline.path is required"),
    "two pipelines": ({"pipeline": {"path": "/opt/p.yaml"}}, "pipeline.spec and pipeline.path are both set"),
    "keys from env": (
        {"pipeline": {"spec": "name: x\nkeys: {provider: env}\nstages: []\n"}},
        "pipeline.spec keys.provider is 'env'",
    ),
    "keys elsewhere": (
        {"pipeline": {"spec": "name: x\nkeys: {provider: files, directory: /keys}\nstages: []\n"}},
        "pipeline.spec keys.directory is '/keys'",
    ),
    "key Secret missing": ({"keys": {"secretName": ""}}, "keys.secretName is required"),
    "spec not YAML": ({"pipeline": {"spec": "name: [x"}}, "pipeline.spec is not valid YAML"),
    "API server unknown": (
        {"networkPolicy": {"apiServer": {"cidrs": []}}},
        "networkPolicy.apiServer.cidrs is required",
    ),
    "secret over the key dir": (
        {"extraSecrets": [{"name": "other", "mountPath": KEY_DIR}]},
        "extraSecrets[0].mountPath",
    ),
    "env the chart sets": ({"extraEnv": [{"name": "PRIVSTAGE_SPARK_MASTER", "value": "local"}]}, "extraEnv[0].name"),
}


@pytest.mark.parametrize(("override", "message"), TEMPLATE_REJECTIONS.values(), ids=TEMPLATE_REJECTIONS.keys())
def test_chart_rejects_inconsistent_values(chart, override, message):
    with pytest.raises(HelmRenderError) as failed:
        chart.render(_merge(JOB, override), name=RELEASE, namespace=NAMESPACE)
    assert message in str(failed.value)
