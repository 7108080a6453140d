{{/*
Standard names and labels.
*/}}
{{- define "privstage.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "privstage.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "privstage.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "privstage.labels" -}}
helm.sh/chart: {{ include "privstage.chart" . }}
{{ include "privstage.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selects every pod of the release: the driver (Job pod) and the executors Spark starts. */}}
{{- define "privstage.selectorLabels" -}}
app.kubernetes.io/name: {{ include "privstage.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "privstage.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "privstage.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "privstage.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when the driver starts executor pods through Spark's Kubernetes scheduler. */}}
{{- define "privstage.sparkOnKubernetes" -}}
{{- if gt (int .Values.executors.instances) 0 }}true{{ end }}
{{- end }}

{{/*
Fixed paths (the container contract; the README documents them).
*/}}
{{- define "privstage.keyDir" -}}/var/run/secrets/privstage/keys{{- end }}
{{- define "privstage.ledgerDir" -}}/var/run/secrets/privstage-ledger{{- end }}
{{- define "privstage.configDir" -}}/etc/privstage{{- end }}
{{- define "privstage.specFile" -}}/etc/privstage/pipeline.yaml{{- end }}
{{- define "privstage.executorTemplateFile" -}}/etc/privstage/spark/executor-pod-template.yaml{{- end }}
{{- define "privstage.sparkLocalDir" -}}/tmp/spark-local{{- end }}
{{- define "privstage.reportsDir" -}}/var/privstage/reports{{- end }}
{{/* Spark's fixed ports on Kubernetes (privstage.spark.K8S_DRIVER_PORT, K8S_BLOCK_MANAGER_PORT; tests compare). */}}
{{- define "privstage.sparkDriverPort" -}}7078{{- end }}
{{- define "privstage.sparkBlockManagerPort" -}}7079{{- end }}

{{/*
Fail early, with the name of the value, on combinations the schema cannot express.
*/}}
{{- define "privstage.validate" -}}
{{- $p := .Values.pipeline }}
{{- if and $p.spec $p.path }}
{{- fail "pipeline.spec and pipeline.path are both set: give exactly one" }}
{{- end }}
{{- if not (or $p.spec $p.path) }}
{{- fail "pipeline.spec or pipeline.path is required: the pipeline YAML text, or the path of a spec file in the image" }}
{{- end }}
{{- if and $p.path (hasPrefix "/etc/privstage/" $p.path) }}
{{- fail (printf "pipeline.path %s is under /etc/privstage, where the chart mounts its ConfigMaps" $p.path) }}
{{- end }}
{{- if $p.spec }}
{{- $doc := fromYaml $p.spec }}
{{- if hasKey $doc "Error" }}
{{- fail (printf "pipeline.spec is not valid YAML: %s" (get $doc "Error")) }}
{{- end }}
{{- if not (and (hasKey $doc "name") (hasKey $doc "stages")) }}
{{- fail "pipeline.spec must be a pipeline mapping with 'name' and 'stages'" }}
{{- end }}
{{- with $doc.keys }}
{{- $provider := default "local" .provider }}
{{- if ne $provider "files" }}
{{- fail (printf "pipeline.spec keys.provider is '%s': on Kubernetes keys come from mounted Secrets; use keys: {provider: files, directory: %s} and set keys.secretName" $provider (include "privstage.keyDir" $)) }}
{{- end }}
{{- if ne (toString .directory) (include "privstage.keyDir" $) }}
{{- fail (printf "pipeline.spec keys.directory is '%v' but keys.secretName is mounted at %s" .directory (include "privstage.keyDir" $)) }}
{{- end }}
{{- if not $.Values.keys.secretName }}
{{- fail "keys.secretName is required: pipeline.spec reads keys from files (provider: files)" }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (include "privstage.sparkOnKubernetes" .) (not .Values.networkPolicy.apiServer.cidrs) }}
{{- fail "networkPolicy.apiServer.cidrs is required when executors.instances > 0: the driver calls the Kubernetes API to start executors (kubectl get endpointslices -n default -l kubernetes.io/service-name=kubernetes)" }}
{{- end }}
{{- $chartEnv := list "HOME" "SPARK_LOCAL_DIRS" "SPARK_LOCAL_IP" "PRIVSTAGE_LEDGER_URL_FILE" "PRIVSTAGE_BASE_DIR" }}
{{- range $i, $e := .Values.extraEnv }}
{{- if or (has $e.name $chartEnv) (hasPrefix "PRIVSTAGE_SPARK_" $e.name) }}
{{- fail (printf "extraEnv[%d].name %s is set by the chart" $i $e.name) }}
{{- end }}
{{- end }}
{{- $reserved := list (include "privstage.keyDir" .) (include "privstage.ledgerDir" .) (include "privstage.configDir" .) "/tmp" "/var/privstage" "/var/run/secrets/kubernetes.io" }}
{{- $seen := dict }}
{{- range $i, $s := .Values.extraSecrets }}
{{- range $reserved }}
{{- if or (eq $s.mountPath .) (hasPrefix (printf "%s/" .) $s.mountPath) (hasPrefix (printf "%s/" $s.mountPath) .) }}
{{- fail (printf "extraSecrets[%d].mountPath %s overlaps %s, which the chart mounts itself" $i $s.mountPath .) }}
{{- end }}
{{- end }}
{{- if hasKey $seen $s.mountPath }}
{{- fail (printf "extraSecrets[%d].mountPath %s is used twice" $i $s.mountPath) }}
{{- end }}
{{- $_ := set $seen $s.mountPath true }}
{{- end }}
{{- end }}

{{/*
Pod-level security context of every pod (driver, executors): Pod Security Standards "restricted".
*/}}
{{- define "privstage.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "privstage.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Scheduling and pull settings shared by the driver and the executors. */}}
{{- define "privstage.podPlacement" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Volumes shared by the driver and the executors: key Secret, extra Secrets (read-only files), scratch emptyDirs.
The scratch volume is named spark-local-dir-1 so that Spark's Kubernetes scheduler uses it as the executors'
local dir instead of adding its own.
*/}}
{{- define "privstage.sharedVolumes" -}}
{{- if .Values.keys.secretName }}
- name: keys
  secret:
    secretName: {{ .Values.keys.secretName }}
    defaultMode: 0440
{{- end }}
{{- range $i, $s := .Values.extraSecrets }}
- name: secret-{{ $i }}
  secret:
    secretName: {{ $s.name }}
    defaultMode: 0440
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.scratch.tmp }}
- name: spark-local-dir-1
  emptyDir:
    sizeLimit: {{ .Values.scratch.sparkLocal }}
{{- end }}

{{- define "privstage.sharedVolumeMounts" -}}
{{- if .Values.keys.secretName }}
- name: keys
  mountPath: {{ include "privstage.keyDir" . }}
  readOnly: true
{{- end }}
{{- range $i, $s := .Values.extraSecrets }}
- name: secret-{{ $i }}
  mountPath: {{ $s.mountPath }}
  readOnly: true
{{- end }}
- name: tmp
  mountPath: /tmp
- name: spark-local-dir-1
  mountPath: {{ include "privstage.sparkLocalDir" . }}
{{- end }}

{{/* Plain environment shared by the driver and the executors (no valueFrom on Secrets, ever). */}}
{{- define "privstage.sharedEnv" -}}
# The root filesystem is read-only: caches and Java/Python temporary files go to the /tmp emptyDir.
- name: HOME
  value: /tmp
- name: SPARK_LOCAL_DIRS
  value: {{ include "privstage.sparkLocalDir" . }}
{{- if include "privstage.sparkOnKubernetes" . }}
# The session factory defaults SPARK_LOCAL_IP to 127.0.0.1; executors and the driver must bind the pod IP.
- name: SPARK_LOCAL_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- end }}
{{- range .Values.extraEnv }}
- name: {{ .name }}
  value: {{ .value | quote }}
{{- end }}
{{- end }}

{{/*
The driver pod (the pod of the Job, or of each Job the CronJob creates).
*/}}
{{- define "privstage.driverPodTemplate" -}}
metadata:
  labels:
    {{- include "privstage.labels" . | nindent 4 }}
    app.kubernetes.io/component: driver
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  restartPolicy: Never
  serviceAccountName: {{ include "privstage.serviceAccountName" . }}
  {{- if include "privstage.sparkOnKubernetes" . }}
  # The driver needs the API token: it creates, watches and deletes its executor pods (Role: rbac.yaml).
  automountServiceAccountToken: true
  {{- else }}
  # Local mode: Spark runs in this pod only and never calls the Kubernetes API.
  automountServiceAccountToken: false
  {{- end }}
  enableServiceLinks: false
  securityContext:
    {{- include "privstage.podSecurityContext" . | nindent 4 }}
  {{- with include "privstage.podPlacement" . | trim }}
  {{- . | nindent 2 }}
  {{- end }}
  containers:
    - name: privstage
      image: {{ include "privstage.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      # The image's entrypoint is `privstage`.
      args:
        - run
        - {{ default (include "privstage.specFile" .) .Values.pipeline.path }}
        - --report
        - {{ include "privstage.reportsDir" . }}/report.json
        - --no-progress
        {{- range .Values.pipeline.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      securityContext:
        {{- include "privstage.containerSecurityContext" . | nindent 8 }}
      env:
        {{- include "privstage.sharedEnv" . | nindent 8 }}
        {{- if include "privstage.sparkOnKubernetes" . }}
        - name: PRIVSTAGE_SPARK_MASTER
          value: k8s://https://kubernetes.default.svc
        - name: PRIVSTAGE_SPARK_K8S_IMAGE
          value: {{ include "privstage.image" . }}
        - name: PRIVSTAGE_SPARK_K8S_IMAGE_PULL_POLICY
          value: {{ .Values.image.pullPolicy }}
        - name: PRIVSTAGE_SPARK_K8S_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        - name: PRIVSTAGE_SPARK_K8S_SERVICE_ACCOUNT
          value: {{ include "privstage.serviceAccountName" . }}
        - name: PRIVSTAGE_SPARK_K8S_EXECUTOR_SERVICE_ACCOUNT
          value: {{ include "privstage.serviceAccountName" . }}
        # spark.kubernetes.driver.pod.name: executors get this pod as owner and are deleted with it.
        - name: PRIVSTAGE_SPARK_K8S_DRIVER_POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: PRIVSTAGE_SPARK_EXECUTOR_INSTANCES
          value: {{ .Values.executors.instances | quote }}
        - name: PRIVSTAGE_SPARK_EXECUTOR_MEMORY
          value: {{ .Values.executors.memory | quote }}
        - name: PRIVSTAGE_SPARK_EXECUTOR_CORES
          value: {{ .Values.executors.cores | quote }}
        - name: PRIVSTAGE_SPARK_K8S_EXECUTOR_POD_TEMPLATE
          value: {{ include "privstage.executorTemplateFile" . }}
        # Executors connect back to the driver at the pod IP (no Service: the pod IP is fixed for the run).
        - name: PRIVSTAGE_SPARK_DRIVER_HOST
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
        {{- end }}
        - name: PRIVSTAGE_SPARK_LOCAL_DIRS
          value: {{ include "privstage.sparkLocalDir" . }}
        {{- if .Values.ledger.secretName }}
        - name: PRIVSTAGE_LEDGER_URL_FILE
          value: {{ include "privstage.ledgerDir" . }}/url
        {{- end }}
        {{- with .Values.pipeline.baseDir }}
        - name: PRIVSTAGE_BASE_DIR
          value: {{ . }}
        {{- end }}
      {{- with .Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        {{- include "privstage.sharedVolumeMounts" . | trim | nindent 8 }}
        {{- if or .Values.pipeline.spec (include "privstage.sparkOnKubernetes" .) }}
        - name: config
          mountPath: {{ include "privstage.configDir" . }}
          readOnly: true
        {{- end }}
        {{- if .Values.ledger.secretName }}
        - name: ledger
          mountPath: {{ include "privstage.ledgerDir" . }}
          readOnly: true
        {{- end }}
        - name: reports
          mountPath: {{ include "privstage.reportsDir" . }}
  volumes:
    {{- include "privstage.sharedVolumes" . | trim | nindent 4 }}
    {{- if or .Values.pipeline.spec (include "privstage.sparkOnKubernetes" .) }}
    - name: config
      projected:
        defaultMode: 0444
        sources:
          {{- if .Values.pipeline.spec }}
          - configMap:
              name: {{ include "privstage.fullname" . }}-pipeline
              items:
                - key: pipeline.yaml
                  path: pipeline.yaml
          {{- end }}
          {{- if include "privstage.sparkOnKubernetes" . }}
          - configMap:
              name: {{ include "privstage.fullname" . }}-executor-template
              items:
                - key: executor-pod-template.yaml
                  path: spark/executor-pod-template.yaml
          {{- end }}
    {{- end }}
    {{- if .Values.ledger.secretName }}
    - name: ledger
      secret:
        secretName: {{ .Values.ledger.secretName }}
        defaultMode: 0440
        items:
          - key: {{ .Values.ledger.key }}
            path: url
    {{- end }}
    - name: reports
      emptyDir:
        sizeLimit: {{ .Values.scratch.reports }}
{{- end }}

{{/*
The Job spec, shared by the Job and the CronJob's jobTemplate.
*/}}
{{- define "privstage.jobSpec" -}}
backoffLimit: {{ .Values.job.backoffLimit }}
activeDeadlineSeconds: {{ .Values.job.activeDeadlineSeconds }}
ttlSecondsAfterFinished: {{ .Values.job.ttlSecondsAfterFinished }}
podFailurePolicy:
  rules:
    # SpecError, GuardFailed, BudgetExceeded, IntegrityError (privstage.errors.EXIT_CODES): a retry cannot help.
    - action: FailJob
      onExitCodes:
        containerName: privstage
        operator: In
        values:
          {{- /* the API requires ascending order: sort as zero-padded strings */}}
          {{- $padded := list }}
          {{- range .Values.job.podFailurePolicy.failJobExitCodes }}
          {{- $padded = append $padded (printf "%03d" (int .)) }}
          {{- end }}
          {{- range sortAlpha $padded }}
          - {{ atoi . }}
          {{- end }}
    # Evictions, preemption and node drains do not count against backoffLimit.
    - action: Ignore
      onPodConditions:
        - type: DisruptionTarget
          status: "True"
template:
  {{- include "privstage.driverPodTemplate" . | nindent 2 }}
{{- end }}
