"""Airflow 3 DAG: run the clinic_visits pipeline in its own locked-down pod with KubernetesPodOperator.

The Airflow workers need ``apache-airflow-providers-cncf-kubernetes``, not privstage: the pod runs the
privstage image, whose entrypoint is the ``privstage`` CLI, as ``privstage run /etc/privstage/pipeline.yaml
--report /data/reports/...``. What the pod needs in its namespace (names are the constants below):

* ConfigMap ``privstage-clinic-visits-spec`` with key ``pipeline.yaml`` (this folder's ``pipeline.yaml``),
  mounted read-only at ``/etc/privstage``.
* Secret ``privstage-keys``: one base64 key per entry (``pseudonym-key``, or ``pseudonym-key.v2`` ...),
  mounted read-only as files at ``/var/run/secrets/privstage/keys`` for the key-directory provider.
  Never in ``env``/``envFrom``: environment variables leak into ``kubectl describe``, crash dumps and
  child processes; a file mount does not, and a rotated Secret is picked up without a restart.
* PersistentVolumeClaim ``privstage-data``, mounted at ``/data`` (input, output, reports).
* ServiceAccount ``privstage``.

The image comes from the run's ``image`` param, else the Airflow Variable ``privstage_image`` (pin it by
digest). The pod meets Pod Security Standards "restricted": non-root uid 10001, no privilege escalation,
all capabilities dropped, seccomp RuntimeDefault, read-only root filesystem with an emptyDir at /tmp.

XCom: ``do_xcom_push=False``. The KPO XCom route needs a second (sidecar) container with its own image
that would also have to meet the restricted profile, and the run manifest is already written by
``--report`` (JSON plus an HTML page) next to the data it describes. Downstream tasks read that file.

Retries: privstage's exit codes say whether retrying can help (``privstage.errors``). 1 (a stage failed
while running) and 6 (key unavailable) are retryable, as are pod-level failures (eviction, OOM kill,
image pull). 2 (usage), 3 (SpecError), 4 (GuardFailed), 5 (BudgetExceeded), 7 (IntegrityError) and
8 (HEParameterError) fail the same way on every attempt. The cncf provider can map exit codes only to
*skipped* (``skip_on_exit_code``), which would hide a guard failure as a skip and let the DAG run
succeed. :class:`PrivstagePodOperator` therefore turns those codes into ``AirflowFailException``, which
Airflow fails at once without using the remaining ``retries``, in both sync and deferrable mode (both end
in ``cleanup``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import DAG, Param
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from kubernetes.client import models as k8s

#: privstage CLI exit code -> meaning, for the codes a retry cannot fix. Kept literal so that the Airflow
#: workers do not need privstage installed; tests/test_kubernetes_examples.py checks it against
#: ``privstage.errors`` (the one source of truth: every error class with ``retryable = False``) plus 2,
#: argparse's usage error.
NON_RETRYABLE_EXIT_CODES: dict[int, str] = {
    2: "usage error",
    3: "SpecError",
    4: "GuardFailed",
    5: "BudgetExceeded",
    7: "IntegrityError",
    8: "HEParameterError",
}

UID = 10001
SPEC_CONFIGMAP = "privstage-clinic-visits-spec"
SPEC_PATH = "/etc/privstage/pipeline.yaml"
KEYS_SECRET = "privstage-keys"  # noqa: S105 - the name of the Secret, not its content
KEY_DIR = "/var/run/secrets/privstage/keys"
DATA_CLAIM = "privstage-data"
DATA_DIR = "/data"
SCRATCH_DIR = "/tmp"  # noqa: S108 - an emptyDir private to the pod (the root filesystem is read-only)
# One report per DAG run; ':' and '+' of run ids are replaced to keep file names portable.
REPORT_PATH = DATA_DIR + "/reports/clinic_visits/{{ run_id | replace(':', '-') | replace('+', '-') }}.json"


def base_container_exit_code(pod: k8s.V1Pod | None, container_name: str) -> int | None:
    """The exit code of ``container_name`` in ``pod`` once it has terminated, else None."""
    statuses = (pod.status.container_statuses if pod is not None and pod.status is not None else None) or []
    for status in statuses:
        if status.name == container_name and status.state is not None and status.state.terminated is not None:
            return status.state.terminated.exit_code
    return None


class PrivstagePodOperator(KubernetesPodOperator):
    """KubernetesPodOperator that fails without retries on privstage's non-retryable exit codes."""

    def cleanup(
        self,
        pod: k8s.V1Pod,
        remote_pod: k8s.V1Pod,
        xcom_result: dict | None = None,
        context: Any = None,
    ) -> None:
        try:
            super().cleanup(pod, remote_pod, xcom_result=xcom_result, context=context)
        except AirflowSkipException:
            raise
        except AirflowException as exc:
            code = base_container_exit_code(remote_pod, self.base_container_name)
            if code in NON_RETRYABLE_EXIT_CODES:
                raise AirflowFailException(
                    f"privstage exited with code {code} ({NON_RETRYABLE_EXIT_CODES[code]}): a retry cannot fix "
                    f"this, so the task fails without retrying. {exc}"
                ) from exc
            raise


RESTRICTED_POD_SECURITY_CONTEXT = k8s.V1PodSecurityContext(
    run_as_non_root=True,
    run_as_user=UID,
    run_as_group=UID,
    fs_group=UID,  # the mounted key files (mode 0440) and the data volume are readable by the group
    seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
)
RESTRICTED_CONTAINER_SECURITY_CONTEXT = k8s.V1SecurityContext(
    run_as_non_root=True,
    run_as_user=UID,
    run_as_group=UID,
    allow_privilege_escalation=False,
    privileged=False,
    read_only_root_filesystem=True,
    capabilities=k8s.V1Capabilities(drop=["ALL"]),
    seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
)

VOLUMES = [
    k8s.V1Volume(
        name="privstage-keys",
        secret=k8s.V1SecretVolumeSource(secret_name=KEYS_SECRET, default_mode=0o440),
    ),
    k8s.V1Volume(
        name="pipeline-spec",
        config_map=k8s.V1ConfigMapVolumeSource(
            name=SPEC_CONFIGMAP, items=[k8s.V1KeyToPath(key="pipeline.yaml", path="pipeline.yaml")]
        ),
    ),
    k8s.V1Volume(name="data", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=DATA_CLAIM)),
    # Spark's scratch space, the JVM's and Python's temporary files: the root filesystem is read-only.
    k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="8Gi")),
]
VOLUME_MOUNTS = [
    k8s.V1VolumeMount(name="privstage-keys", mount_path=KEY_DIR, read_only=True),
    k8s.V1VolumeMount(name="pipeline-spec", mount_path="/etc/privstage", read_only=True),
    k8s.V1VolumeMount(name="data", mount_path=DATA_DIR),
    k8s.V1VolumeMount(name="tmp", mount_path=SCRATCH_DIR),
]

with DAG(
    dag_id="privstage_clinic_visits_kubernetes",
    description="Pseudonymize clinic visits in a restricted pod running the privstage image.",
    schedule=None,
    catchup=False,
    tags=["privstage", "privacy", "kubernetes"],
    params={
        "image": Param(
            "",
            type="string",
            description="privstage image, pinned by digest (registry/privstage@sha256:...); "
            "empty: the Airflow Variable privstage_image.",
        ),
        "namespace": Param("privstage", type="string", description="Namespace of the pod and its volumes."),
    },
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2), "retry_exponential_backoff": True},
) as dag:
    PrivstagePodOperator(
        task_id="pseudonymize_visits",
        name="privstage-clinic-visits",
        namespace="{{ params.namespace }}",
        image="{{ params.image or var.value.privstage_image }}",
        image_pull_policy="IfNotPresent",
        # The image's entrypoint is `privstage`; only the arguments are given.
        arguments=["run", SPEC_PATH, "--report", REPORT_PATH, "--no-progress"],
        # Plain settings only: no Secret is ever referenced from the environment.
        env_vars={"HOME": SCRATCH_DIR, "TMPDIR": SCRATCH_DIR},
        labels={
            "app.kubernetes.io/name": "privstage",
            "app.kubernetes.io/component": "pipeline",
            "privstage.io/pipeline": "clinic_visits",
        },
        service_account_name="privstage",
        # Spark runs in local mode inside this pod and needs no Kubernetes API token. Set True when the
        # driver starts executor pods through Spark's Kubernetes scheduler (the Role is then needed too).
        automount_service_account_token=False,
        security_context=RESTRICTED_POD_SECURITY_CONTEXT,
        container_security_context=RESTRICTED_CONTAINER_SECURITY_CONTEXT,
        volumes=VOLUMES,
        volume_mounts=VOLUME_MOUNTS,
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": "2", "memory": "4Gi", "ephemeral-storage": "1Gi"},
            limits={"memory": "4Gi", "ephemeral-storage": "9Gi"},
        ),
        active_deadline_seconds=int(timedelta(hours=2).total_seconds()),
        # The CLI prints "<ErrorClass>: <message>" on stderr (never data or keys): make it the termination
        # message so that the Airflow task's error names the privstage error.
        termination_message_policy="FallbackToLogsOnError",
        do_xcom_push=False,
        get_logs=True,
        log_events_on_failure=True,
        on_finish_action="delete_succeeded_pod",
        execution_timeout=timedelta(hours=2, minutes=15),
    )
