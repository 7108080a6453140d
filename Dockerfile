# privstage batch image: the `privstage` CLI, Spark (pyspark) and privstage's JVM functions.
#
#   docker build -t privstage:dev .
#   docker run --rm --read-only --tmpfs /tmp privstage:dev validate /opt/privstage/pipelines/kubernetes/pipeline.yaml
#
# The same image runs the Spark driver (the Job's pod: ENTRYPOINT privstage) and the Spark executors that the
# driver starts on Kubernetes. Spark starts executor containers with the single argument `executor`; the
# executor pod template must therefore set `command: ["/opt/privstage/bin/spark-executor"]`.
#
# Base image: python 3.11.14 on Debian bookworm, pinned by tag and by the digest of its multi-architecture
# index. Both stages use it, so the venv's interpreter path (/usr/local/bin/python3.11) is the same.
# Update tag and digest together.

FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS builder

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# JDK 17 (javac, jar) and make build privstage's JVM functions. Debian package versions are not pinned:
# bookworm's security updates replace them, and a pin would break the build instead of patching it.
# (/usr/share/man/man1 is missing in slim images; the JDK's postinst expects it.)
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jdk-headless make \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Only what the wheel is built from (README.md: project metadata; .gitignore: hatch's file selection,
# whose `artifacts` setting ships the jar although git ignores it).
COPY pyproject.toml constraints.txt Makefile README.md .gitignore ./
COPY jvm ./jvm
COPY src ./src
COPY operators ./operators
COPY assets ./assets
COPY pipelines ./pipelines

# 1. pyspark (the version constraints.txt pins) into the venv: the jar compiles against its jars.
# 2. the jar, by the Makefile's own rule (-o: the venv is already there, do not bootstrap .venv).
# 3. privstage and its extras, not editable, every version from constraints.txt (PIP_CONSTRAINT also pins
#    the build backend in pip's isolated build environment).
# 4. fail the build if the installed package lacks the jar; no pip left in the venv.
RUN python -m venv /opt/privstage/venv \
    && /opt/privstage/venv/bin/pip install -c constraints.txt pyspark \
    && make -o /opt/privstage/venv/.privstage-installed VENV=/opt/privstage/venv jvm \
    && PIP_CONSTRAINT=/src/constraints.txt /opt/privstage/venv/bin/pip install -c constraints.txt '.[all]' \
    && /opt/privstage/venv/bin/python -c "import privstage.jvm as j; assert j.jar_path(), 'jar missing from the wheel'" \
    && /opt/privstage/venv/bin/privstage --help > /dev/null \
    && ln -s "$(/opt/privstage/venv/bin/python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')" \
        /opt/privstage/spark \
    && /opt/privstage/venv/bin/python -m pip uninstall --yes --quiet pip

# Executor launcher: the executor branch of Spark's own image entrypoint, without root, tini or a fake passwd
# entry (uid 10001 has one). Spark passes everything in the environment: SPARK_DRIVER_URL, SPARK_EXECUTOR_*,
# SPARK_APPLICATION_ID, SPARK_RESOURCE_PROFILE_ID, SPARK_JAVA_OPT_<n>, SPARK_CONF_DIR, SPARK_CLASSPATH.
# (SC2016: the single quotes are meant: the script expands its variables when it runs, not now.)
# hadolint ignore=SC2016
RUN mkdir -p /opt/privstage/bin \
    && printf '%s\n' \
        '#!/bin/bash' \
        '# Spark executor for privstage pods: the executor pod template sets this as the container command.' \
        'set -euo pipefail' \
        'if [ "${1:-}" = "executor" ]; then shift; fi' \
        'java_opts=()' \
        'for v in "${!SPARK_JAVA_OPT_@}"; do java_opts+=("${!v}"); done' \
        'classpath="${SPARK_CONF_DIR:-$SPARK_HOME/conf}:${SPARK_CLASSPATH:+$SPARK_CLASSPATH:}$SPARK_HOME/jars/*:$PWD"' \
        'exec "$JAVA_HOME/bin/java" "${java_opts[@]}" \' \
        '  -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" -cp "$classpath" \' \
        '  org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \' \
        '  --driver-url "$SPARK_DRIVER_URL" --executor-id "$SPARK_EXECUTOR_ID" --cores "$SPARK_EXECUTOR_CORES" \' \
        '  --app-id "$SPARK_APPLICATION_ID" --hostname "$SPARK_EXECUTOR_POD_IP" \' \
        '  --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}" --podName "$SPARK_EXECUTOR_POD_NAME" "$@"' \
        > /opt/privstage/bin/spark-executor \
    && chmod 0555 /opt/privstage/bin/spark-executor \
    && bash -n /opt/privstage/bin/spark-executor


FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS runtime

ARG PRIVSTAGE_VERSION=dev
LABEL org.opencontainers.image.title="privstage" \
      org.opencontainers.image.description="Guarded privacy stages for Spark pipelines: the privstage CLI, Spark driver and executors" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${PRIVSTAGE_VERSION}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm" \
      org.opencontainers.image.base.digest="sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# A JRE only (no javac), the fixed non-root user, and no pip/setuptools/wheel of the base image's own Python
# (the venv has everything privstage runs with). Package versions: see the builder stage.
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
    && ln -s "/usr/lib/jvm/java-17-openjdk-$(dpkg --print-architecture)" /usr/lib/jvm/java-17 \
    && /usr/local/bin/python -m pip uninstall --yes --quiet pip setuptools wheel \
    && groupadd --system --gid 10001 privstage \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin privstage

COPY --from=builder /opt/privstage /opt/privstage
COPY --from=builder /src/pipelines /opt/privstage/pipelines

# The chart mounts the root filesystem read-only: every path privstage, Spark, the JVM and Python write to is
# under /tmp (an emptyDir in the pod). Nothing here is a secret: keys and the ledger URL arrive as mounted files.
ENV PATH="/opt/privstage/venv/bin:${PATH}" \
    VIRTUAL_ENV=/opt/privstage/venv \
    JAVA_HOME=/usr/lib/jvm/java-17 \
    SPARK_HOME=/opt/privstage/spark \
    PYSPARK_PYTHON=/opt/privstage/venv/bin/python \
    PYSPARK_DRIVER_PYTHON=/opt/privstage/venv/bin/python \
    SPARK_LOCAL_DIRS=/tmp/spark-local \
    HOME=/tmp \
    TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# No HEALTHCHECK: this is a batch job; Kubernetes judges it by its exit code (see the Job's podFailurePolicy).
WORKDIR /tmp
USER 10001:10001
ENTRYPOINT ["privstage"]
CMD ["--help"]
