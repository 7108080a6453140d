"""The Kubernetes examples in pipelines/kubernetes: one restricted pod, launched by Airflow or by Dagster.

No cluster is needed. The pod KubernetesPodOperator would create is built by the provider itself
(``build_pod_request_obj``); the Dagster run pod's settings are read back from the job's run tags, where
the K8sRunLauncher reads them. Both are validated offline against the Kubernetes 1.32 schema
(kubernetes-validate, strict: unknown fields are errors) and checked against the same "restricted"
rules. The pipeline spec is run for real, with the very arguments the pod gets, against a key directory
laid out as the kubelet mounts a Secret. The provider's failure handling runs its real cleanup code
against a loopback HTTP server that answers the three pod API calls cleanup makes.
"""

from __future__ import annotations

import base64
import copy
import json
import runpy
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import kubernetes_validate
import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from airflow.sdk.execution_time.context import VariableAccessor
from airflow.serialization.serialized_objects import DagSerialization
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s

import privstage.errors
from privstage.cli import main
from privstage.errors import EXIT_CODES
from privstage.spec import FileKeysSpec, LocalKeyringSpec, load_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "pipelines" / "kubernetes"
DAG_FILE = EXAMPLES / "airflow_kpo_dag.py"
DAGSTER_FILE = EXAMPLES / "dagster_k8s_defs.py"
K8S_SPEC = EXAMPLES / "pipeline.yaml"
DAG_ID = "privstage_clinic_visits_kubernetes"
JOB_NAME = "privstage_clinic_visits_kubernetes"
IMAGE = "registry.example.com/privstage@sha256:" + "ab" * 32
KUBERNETES_VERSION = "1.32.0"
UID = 10001
KEY_DIR = "/var/run/secrets/privstage/keys"
SCRATCH_DIR = "/tmp"  # noqa: S108 - the path inside the pod, where an emptyDir is mounted


# ----------------------------------------------------------------------------------------- helpers
def _to_dict(obj: Any) -> Any:
    """A kubernetes client model as its manifest (camelCase, no None fields)."""
    return ApiClient().sanitize_for_serialization(obj)


def _validate(manifest: dict[str, Any]) -> None:
    """Offline schema validation; raises kubernetes_validate.ValidationError naming the bad field."""
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def assert_restricted(pod_spec: dict[str, Any]) -> None:
    """Pod Security Standards "restricted" plus privstage's rules: keys as read-only files, never env."""
    pod_sc = pod_spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] == UID
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod_spec.get("hostNetwork") and not pod_spec.get("hostPID") and not pod_spec.get("hostIPC")
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert not any("hostPath" in v for v in volumes.values())
    secret_volumes = {name for name, v in volumes.items() if "secret" in v}
    assert secret_volumes == {"privstage-keys"}
    assert volumes["privstage-keys"]["secret"]["secretName"] == "privstage-keys"
    assert volumes["tmp"]["emptyDir"]  # scratch space, since the root filesystem is read-only
    for container in pod_spec["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == UID
        assert sc.get("privileged") is not True
        for env in container.get("env") or []:
            assert "secretKeyRef" not in (env.get("valueFrom") or {}), env
        assert not any("secretRef" in source for source in container.get("envFrom") or [])
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts[KEY_DIR] == {"name": "privstage-keys", "mountPath": KEY_DIR, "readOnly": True}
        assert all(m.get("readOnly") for m in mounts.values() if m["name"] in secret_volumes)
        assert mounts[SCRATCH_DIR]["name"] == "tmp"
        assert mounts["/data"]["name"] == "data"


def mount_secret(directory: Path, entries: dict[str, str]) -> Path:
    """Lay ``entries`` out as the kubelet mounts a Secret volume: a timestamped folder holding the
    files, a ``..data`` symlink to it, and one symlink per key pointing through ``..data``."""
    stamped = directory / "..2026_11_24_10_00_00.000000001"
    stamped.mkdir(parents=True)
    for name, text in entries.items():
        (stamped / name).write_text(text, encoding="ascii")
        (stamped / name).chmod(0o440)
    (directory / "..data").symlink_to(stamped.name)
    for name in entries:
        (directory / name).symlink_to(Path("..data") / name)
    return directory


def random_key_text() -> str:
    """What a Secret entry holds for the key-directory provider: base64 text of a 256-bit key."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii") + "\n"


# ------------------------------------------------------------------------------------------ specs
def test_the_kubernetes_spec_is_the_clinic_visits_stage_with_mounted_keys_and_data_volume_paths() -> None:
    spec = load_spec(K8S_SPEC, env={})
    assert spec.keys == FileKeysSpec(provider="files", directory=KEY_DIR)
    (stage,) = spec.stages
    assert spec.input_path(stage) == "/data/clinic_visits/visits"
    assert stage.output.path == "/data/clinic_visits/visits_pseudonymized"
    assert stage.output.mode == "overwrite"
    assert str(spec.state_path()) == "/data/.privstage"

    local = load_spec(ROOT / "pipelines" / "clinic_visits" / "pipeline.yaml", env={})
    assert isinstance(local.keys, LocalKeyringSpec)
    # The same stage (columns, keys, guards); only where data lives and how it is replaced differ.
    different = {"input", "output"}
    assert stage.model_dump(exclude=different) == local.stages[0].model_dump(exclude=different)
    assert stage.key_ids() == {"pseudonym-key"}


# ----------------------------------------------------------------------------------------- Airflow
@pytest.fixture(scope="module")
def kpo_dag() -> Any:
    # The DAG processor's own loader: import errors and DAG validation errors land in import_errors.
    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    assert list(bag.dags) == [DAG_ID]
    return bag.dags[DAG_ID]


def _rendered(dag: Any, **params: str) -> KubernetesPodOperator:
    """A copy of the task with its templates rendered as for a run with these params."""
    task = copy.deepcopy(dag.get_task("pseudonymize_visits"))
    context = {
        "params": {**dag.params.dump(), **params},
        "run_id": "manual__2026-11-24T10:00:00+00:00",
        "var": {"value": VariableAccessor(deserialize_json=False), "json": VariableAccessor(deserialize_json=True)},
    }
    task.render_template_fields(context)
    return task


def _airflow_pod(dag: Any, **params: str) -> dict[str, Any]:
    return _to_dict(_rendered(dag, **params).build_pod_request_obj(dry_run=True))


def test_the_dag_file_loads_like_the_dag_processor_and_serializes(kpo_dag: Any) -> None:
    task = kpo_dag.get_task("pseudonymize_visits")
    assert isinstance(task, KubernetesPodOperator)
    assert type(task).__name__ == "PrivstagePodOperator"
    assert task.do_xcom_push is False
    assert task.retries == 2
    # What the scheduler stores: the DAG survives serialization with its operator and retries.
    restored = DagSerialization.from_dict(json.loads(json.dumps(DagSerialization.to_dict(kpo_dag))))
    stored = restored.get_task("pseudonymize_visits")
    assert stored.task_type == "PrivstagePodOperator"
    assert stored.retries == 2


def test_the_pod_the_operator_launches_is_restricted_schema_valid_and_runs_privstage(kpo_dag: Any) -> None:
    pod = _airflow_pod(kpo_dag, image=IMAGE)
    _validate(pod)
    spec = pod["spec"]
    assert_restricted(spec)
    assert pod["metadata"]["namespace"] == "privstage"
    assert spec["serviceAccountName"] == "privstage"
    assert spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 7200
    # One container: no XCom sidecar (do_xcom_push=False); the manifest goes to the report file.
    (container,) = spec["containers"]
    assert container["image"] == IMAGE
    assert not container.get("command")  # the image's entrypoint, `privstage`, runs
    assert container["args"] == [
        "run",
        "/etc/privstage/pipeline.yaml",
        "--report",
        "/data/reports/clinic_visits/manual__2026-11-24T10-00-00-00-00.json",
        "--no-progress",
    ]
    assert {e["name"]: e["value"] for e in container["env"]} == {"HOME": SCRATCH_DIR, "TMPDIR": SCRATCH_DIR}
    assert container["envFrom"] == []
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["privstage-keys"]["secret"]["defaultMode"] == 0o440
    assert volumes["pipeline-spec"]["configMap"]["name"] == "privstage-clinic-visits-spec"
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "privstage-data"}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/privstage"]["readOnly"] is True
    assert not mounts["/data"].get("readOnly")


def test_a_pod_that_breaks_the_schema_is_caught_by_the_validator(kpo_dag: Any) -> None:
    # The validator is strict: a misspelt field (what a typo in the DAG would produce) is an error.
    pod = _airflow_pod(kpo_dag, image=IMAGE)
    pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(pod)


def test_without_an_image_param_the_image_comes_from_the_airflow_variable(
    kpo_dag: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Airflow resolves Variables through its secrets backends; AIRFLOW_VAR_* is the environment one.
    monkeypatch.setenv("AIRFLOW_VAR_PRIVSTAGE_IMAGE", IMAGE.replace("ab", "cd"))
    assert _rendered(kpo_dag, image="").image == IMAGE.replace("ab", "cd")
    assert _rendered(kpo_dag, image=IMAGE).image == IMAGE


def _non_retryable_from_privstage() -> dict[int, set[str]]:
    codes: dict[int, set[str]] = {}
    for name, code in EXIT_CODES.items():
        if not getattr(privstage.errors, name).retryable:
            codes.setdefault(code, set()).add(name)
    return codes


def test_the_non_retryable_exit_codes_are_privstages_own_plus_usage_errors() -> None:
    from_dag = runpy.run_path(str(DAG_FILE))["NON_RETRYABLE_EXIT_CODES"]
    expected = _non_retryable_from_privstage()
    assert set(from_dag) == {*expected, 2}
    for code, name in from_dag.items():
        assert code == 2 or name in expected[code]
    assert EXIT_CODES["StageExecutionError"] not in from_dag and EXIT_CODES["KeyUnavailable"] not in from_dag
    # 2 is what the CLI exits with on a usage error (argparse): a retry repeats the same command line.
    with pytest.raises(SystemExit) as exc:
        main(["run"])
    assert exc.value.code == 2


class _PodApi(BaseHTTPRequestHandler):
    """Answers the calls KubernetesPodOperator.cleanup makes: read the pod, label it, list its events,
    delete it. Every request is recorded as (method, path)."""

    pod: dict[str, Any] = {}
    requests: list[tuple[str, str]] = []

    def _reply(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        self.requests.append((self.command, self.path.split("?")[0]))
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/api/v1/namespaces/privstage/events"):
            self._reply({"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": []})
        elif self.path.startswith("/api/v1/namespaces/privstage/pods/"):
            self._reply(self.pod)
        else:
            self.send_error(404)

    do_GET = do_PATCH = do_DELETE = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def pod_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PodApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "loopback", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
                "users": [{"name": "loopback", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "loopback", "context": {"cluster": "loopback", "user": "loopback"}}],
                "current-context": "loopback",
            }
        ),
        encoding="utf-8",
    )
    yield kubeconfig
    server.shutdown()
    server.server_close()
    thread.join()


def _finished_pod(exit_code: int | None) -> k8s.V1Pod:
    state = (
        k8s.V1ContainerState(waiting=k8s.V1ContainerStateWaiting(reason="ImagePullBackOff"))
        if exit_code is None
        else k8s.V1ContainerState(
            terminated=k8s.V1ContainerStateTerminated(exit_code=exit_code, message="GuardFailed: blocked")
        )
    )
    return k8s.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=k8s.V1ObjectMeta(name="privstage-clinic-visits-x1", namespace="privstage", labels={}),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base", image=IMAGE)]),
        status=k8s.V1PodStatus(
            phase="Succeeded" if exit_code == 0 else "Failed",
            container_statuses=[
                k8s.V1ContainerStatus(name="base", image=IMAGE, image_id="", ready=False, restart_count=0, state=state)
            ],
        ),
    )


@pytest.mark.parametrize("exit_code", [0, 1, 2, 3, 4, 5, 6, 7, 8, 137, None])
def test_cleanup_fails_without_retry_exactly_on_the_non_retryable_exit_codes(
    kpo_dag: Any, pod_api: Path, monkeypatch: pytest.MonkeyPatch, exit_code: int | None
) -> None:
    # The operator's connection, as a deployment would set it: kubernetes_default from the environment.
    monkeypatch.setenv(
        "AIRFLOW_CONN_KUBERNETES_DEFAULT",
        json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": str(pod_api)}}),
    )
    task = copy.deepcopy(kpo_dag.get_task("pseudonymize_visits"))
    pod = _finished_pod(exit_code)
    _PodApi.pod = _to_dict(pod)
    _PodApi.requests = []
    non_retryable = runpy.run_path(str(DAG_FILE))["NON_RETRYABLE_EXIT_CODES"]

    if exit_code == 0:
        task.cleanup(pod, pod)
        assert ("DELETE", "/api/v1/namespaces/privstage/pods/privstage-clinic-visits-x1") in _PodApi.requests
        return
    with pytest.raises(AirflowException) as raised:
        task.cleanup(pod, pod)
    # The provider's own failure handling ran (pod read, labelled as checked, events read)...
    assert ("PATCH", "/api/v1/namespaces/privstage/pods/privstage-clinic-visits-x1") in _PodApi.requests
    assert not any(method == "DELETE" for method, _ in _PodApi.requests)  # failed pods are kept
    if exit_code in non_retryable:
        # ...and a non-retryable code becomes AirflowFailException: Airflow fails the task at once.
        assert type(raised.value) is AirflowFailException
        assert f"code {exit_code} ({non_retryable[exit_code]})" in str(raised.value)
        assert type(raised.value.__cause__) is AirflowException
    else:
        # 1 (stage failed while running), 6 (key unavailable), 137 (OOM kill), a pod that never ran:
        # the provider's AirflowException is left alone, so the task's retries apply.
        assert type(raised.value) is AirflowException


def test_the_pod_arguments_run_the_spec_against_keys_mounted_like_a_secret(
    kpo_dag: Any, spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyspark.sql import functions as F

    from privstage.sample_data import write_clinic_visits

    data_dir, key_dir = tmp_path / "data", tmp_path / "keys"
    monkeypatch.setenv("PRIVSTAGE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("PRIVSTAGE_KEY_DIR", str(key_dir))
    mount_secret(key_dir, {"pseudonym-key": random_key_text()})
    visits = data_dir / "clinic_visits" / "visits"
    write_clinic_visits(str(visits), 200)

    # The container's arguments, with the pod's mount points mapped onto this test's folders.
    args = _airflow_pod(kpo_dag, image=IMAGE)["spec"]["containers"][0]["args"]
    local = [
        str(K8S_SPEC) if a == "/etc/privstage/pipeline.yaml" else a.replace("/data/", f"{data_dir}/") for a in args
    ]
    report = Path(local[local.index("--report") + 1])
    assert main(local) == 0
    assert json.loads(report.read_text())["stages"][0]["rows_out"] == 200
    out = spark.read.parquet(str(data_dir / "clinic_visits" / "visits_pseudonymized"))
    assert out.count() == 200
    assert out.filter(~F.col("patient_id").rlike("^[0-9a-f]{64}$")).count() == 0
    # A key missing from the Secret exits 6 (KeyUnavailable): retryable, a fixed Secret is read next try.
    # (A guard failure, exit 4, is run in the Dagster test below and in tests/test_cli.py.)
    (key_dir / "pseudonym-key").unlink()
    assert main(local) == EXIT_CODES["KeyUnavailable"] == 6
    assert 6 not in runpy.run_path(str(DAG_FILE))["NON_RETRYABLE_EXIT_CODES"]


# ----------------------------------------------------------------------------------------- Dagster
def test_the_dagster_definitions_load_without_dagster_k8s_spark_or_great_expectations() -> None:
    # The code location server imports this file often; the run launcher lives in Dagster's own images.
    code = (
        "import runpy, sys\n"
        f"ns = runpy.run_path({str(DAGSTER_FILE)!r})\n"
        "defs = ns['defs']\n"
        "assert [k.to_user_string() for k in defs.resolve_all_asset_keys()] == ['pseudonymize_visits']\n"
        f"assert defs.resolve_job_def({JOB_NAME!r}).name == {JOB_NAME!r}\n"
        "print(sorted(m for m in ('dagster_k8s', 'pyspark', 'great_expectations', 'py4j') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture()
def dagster_ns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("PRIVSTAGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PRIVSTAGE_KEY_DIR", str(tmp_path / "keys"))
    return runpy.run_path(str(DAGSTER_FILE))


def test_the_dagster_run_pod_is_restricted_schema_valid_and_matches_the_airflow_pod(
    dagster_ns: dict[str, Any], kpo_dag: Any
) -> None:
    job = dagster_ns["defs"].resolve_job_def(JOB_NAME)
    tags = job.run_tags
    # What the K8sRunLauncher reads: the JSON of the dagster-k8s/config run tag.
    config = json.loads(tags["dagster-k8s/config"])
    assert config == dagster_ns["K8S_RUN_CONFIG"]
    assert tags["dagster/max_retries"] == "1"
    assert tags["dagster/retry_on_asset_or_op_failure"] == "false"

    pod_spec = {
        **config["pod_spec_config"],
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "dagster",
                "image": IMAGE,
                "args": ["dagster", "api", "execute_run", "{}"],
                **config["container_config"],
            }
        ],
    }
    run_job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "dagster-run-0123"},
        "spec": {
            **config["job_spec_config"],
            "template": {"metadata": config["pod_template_spec_metadata"], "spec": pod_spec},
        },
    }
    _validate(run_job)
    assert_restricted(pod_spec)
    assert pod_spec["serviceAccountName"] == "privstage"
    assert pod_spec["automountServiceAccountToken"] is False
    assert config["job_spec_config"]["backoffLimit"] == 0

    # The same constraints as the pod the Airflow operator launches.
    airflow_spec = _airflow_pod(kpo_dag, image=IMAGE)["spec"]
    airflow_container = airflow_spec["containers"][0]
    assert pod_spec["securityContext"] == airflow_spec["securityContext"]
    assert pod_spec["containers"][0]["securityContext"] == airflow_container["securityContext"]
    assert pod_spec["containers"][0]["resources"] == airflow_container["resources"]
    shared = ("privstage-keys", "data", "tmp")
    assert [v for v in pod_spec["volumes"] if v["name"] in shared] == [
        v for v in airflow_spec["volumes"] if v["name"] in shared
    ]
    assert [m for m in pod_spec["containers"][0]["volumeMounts"] if m["name"] in shared] == [
        m for m in airflow_container["volumeMounts"] if m["name"] in shared
    ]


def test_the_dagster_job_runs_the_spec_with_mounted_keys_and_never_retries_a_guard_failure(
    dagster_ns: dict[str, Any], spark: Any, tmp_path: Path
) -> None:
    from pyspark.sql import functions as F

    from privstage.sample_data import write_clinic_visits

    mount_secret(tmp_path / "keys", {"pseudonym-key": random_key_text()})
    visits = tmp_path / "data" / "clinic_visits" / "visits"
    write_clinic_visits(str(visits), 120)
    job = dagster_ns["defs"].resolve_job_def(JOB_NAME)

    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert result.success
    (materialization,) = result.asset_materializations_for_node("pseudonymize_visits")
    assert materialization.asset_key == dg.AssetKey("pseudonymize_visits")
    assert spark.read.parquet(str(tmp_path / "data" / "clinic_visits" / "visits_pseudonymized")).count() == 120

    bad = tmp_path / "bad"
    spark.read.parquet(str(visits)).withColumn("cost", -F.col("cost") - 1).write.parquet(str(bad))
    spark.read.parquet(str(bad)).write.mode("overwrite").parquet(str(visits))
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    # The asset has RetryPolicy(max_retries=2); a guard failure bypasses it.
    assert result.retry_attempts_for_node("pseudonymize_visits") == 0
    (failure,) = result.get_step_failure_events()
    data = failure.step_failure_data
    assert data.user_failure_data is not None
    assert data.user_failure_data.metadata["error"].value == "GuardFailed"
    assert data.user_failure_data.metadata["exit_code"].value == 4
