"""Dagster on Kubernetes: the clinic_visits assets, each run in its own locked-down pod (K8sRunLauncher).

Why the run launcher and not ``k8s_job_op``: with the assets below, Dagster keeps what privstage's
Dagster adapter gives: one asset per stage with lineage, each guard as a blocking asset check, row
counts and key ids as materialization metadata, and typed failures (privstage errors that a retry cannot
fix become ``Failure(allow_retries=False)``). ``k8s_job_op`` would run the CLI as an opaque container and
leave Dagster only an exit code to interpret.

How it runs (see README.md in this folder and ``dagster_values.yaml``):

* Dagster's Helm chart runs the webserver, the daemon and the ``K8sRunLauncher``; ``dagster-k8s`` is
  installed in *those* images. The run launcher is loaded lazily, so this code location and its run
  pods need only ``privstage[dagster]``: this module imports nothing from ``dagster_k8s``.
* The code location's image is the privstage image plus this file and ``pipeline.yaml``, with the
  entrypoint reset (Dagster starts ``dagster api grpc`` and ``dagster api execute_run`` through container
  *args*; the privstage image's entrypoint is the ``privstage`` CLI).
* Every run of :data:`clinic_visits_job` is a Kubernetes Job whose pod gets :data:`K8S_RUN_CONFIG`
  through the ``dagster-k8s/config`` tag: Pod Security Standards "restricted", the keys Secret mounted
  read-only as files (never in ``env``/``envFrom``), the data volume at /data, an emptyDir at /tmp,
  service account ``privstage``.

Retries, at three levels:

* Step: the assets' ``RetryPolicy`` retries retryable privstage errors (a Spark failure, a key service
  outage); SpecError, GuardFailed, BudgetExceeded, IntegrityError and HEParameterError are raised as
  ``Failure(allow_retries=False)`` by ``privstage_dagster`` and bypass it.
* Run: ``dagster/max_retries`` re-launches a run whose pod was lost (eviction, node failure), and
  ``dagster/retry_on_asset_or_op_failure: false`` keeps the run-retry daemon from re-running a run that
  failed in an asset, so a guard failure is never retried at any level.
* Kubernetes: ``backoffLimit: 0``; the Job itself never restarts the pod.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
from privstage_dagster import KeyProviderResource, SparkResource, build_privstage_assets

#: The spec: $PRIVSTAGE_SPEC (e.g. a ConfigMap mounted at /etc/privstage/pipeline.yaml), else the file beside this one.
SPEC_PATH = Path(os.environ.get("PRIVSTAGE_SPEC") or Path(__file__).resolve().parent / "pipeline.yaml")

UID = 10001
KEYS_SECRET = "privstage-keys"  # noqa: S105 - the name of the Secret, not its content
KEY_DIR = "/var/run/secrets/privstage/keys"
DATA_CLAIM = "privstage-data"
SCRATCH_DIR = "/tmp"  # noqa: S108 - an emptyDir private to the pod (the root filesystem is read-only)

#: Pod Security Standards "restricted" for the run pod and its container (Kubernetes field names).
POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": UID,
    "runAsGroup": UID,
    "fsGroup": UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": UID,
    "runAsGroup": UID,
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

#: The ``dagster-k8s/config`` tag: merged by the K8sRunLauncher into the Job it creates for each run.
#: Keys may be written as in Kubernetes manifests (camelCase); dagster-k8s accepts both spellings.
K8S_RUN_CONFIG: dict[str, Any] = {
    "container_config": {
        "securityContext": CONTAINER_SECURITY_CONTEXT,
        # Plain settings only; the keys are files. (Dagster's own instance settings, such as its
        # database password, come from the Dagster chart and are not privstage's.)
        "env": [{"name": "HOME", "value": SCRATCH_DIR}, {"name": "TMPDIR", "value": SCRATCH_DIR}],
        "volumeMounts": [
            {"name": "privstage-keys", "mountPath": KEY_DIR, "readOnly": True},
            {"name": "data", "mountPath": "/data"},
            {"name": "tmp", "mountPath": SCRATCH_DIR},
        ],
        "resources": {
            "requests": {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "1Gi"},
            "limits": {"memory": "4Gi", "ephemeral-storage": "9Gi"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    },
    "pod_spec_config": {
        "serviceAccountName": "privstage",
        # The run worker talks to Dagster's database, not to the Kubernetes API (the daemon watches the Job).
        "automountServiceAccountToken": False,
        "securityContext": POD_SECURITY_CONTEXT,
        "volumes": [
            {"name": "privstage-keys", "secret": {"secretName": KEYS_SECRET, "defaultMode": 0o440}},
            {"name": "data", "persistentVolumeClaim": {"claimName": DATA_CLAIM}},
            # Spark's scratch space and temporary files: the root filesystem is read-only.
            {"name": "tmp", "emptyDir": {"sizeLimit": "8Gi"}},
        ],
        "activeDeadlineSeconds": 7200,
    },
    "pod_template_spec_metadata": {
        "labels": {
            "app.kubernetes.io/name": "privstage",
            "app.kubernetes.io/component": "pipeline",
            "privstage.io/pipeline": "clinic_visits",
        }
    },
    "job_spec_config": {"backoffLimit": 0, "ttlSecondsAfterFinished": 86400},
}

#: Run tags of every run of the job (values that are not strings are stored as JSON).
RUN_TAGS: dict[str, Any] = {
    "dagster-k8s/config": K8S_RUN_CONFIG,
    "dagster/max_retries": "1",
    "dagster/retry_on_asset_or_op_failure": "false",
}

assets = build_privstage_assets(
    SPEC_PATH,
    retry_policy=dg.RetryPolicy(max_retries=2, delay=60, backoff=dg.Backoff.EXPONENTIAL),
)

clinic_visits_job = dg.define_asset_job(
    "privstage_clinic_visits_kubernetes",
    selection=dg.AssetSelection.assets(*assets),
    description="Pseudonymize clinic visits in a restricted pod running the privstage image.",
    tags=RUN_TAGS,
)

defs = dg.Definitions(
    assets=assets,
    jobs=[clinic_visits_job],
    # Spark runs in local mode inside the run pod; the keys come from the spec's `keys` section,
    # i.e. the key-directory provider at /var/run/secrets/privstage/keys.
    resources={"spark": SparkResource(), "privstage_keys": KeyProviderResource()},
)
