"""The clinic_visits pipeline through the real ``privstage`` console script: classic Spark via
``privstage demo``, Spark Connect via ``SPARK_REMOTE``, and the engine in process: same pseudonyms; the
monthly DP release runs on both kinds of session, and a second demo run publishes the same release."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from privstage.engine import run_pipeline
from privstage.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "pipelines" / "clinic_visits" / "pipeline.yaml"
PRIVSTAGE = str(Path(sys.executable).with_name("privstage"))
OUTPUT = "output/visits_pseudonymized"
DP_LEDGER_KEY = "clinic_visits/dp_visits_monthly/clinic_visits/2025/2025-12"
RELEASE = "_privstage_release.json"


def rows(path: Path) -> list[tuple]:
    table = pq.read_table(path)
    return sorted(zip(*[table.column(c).to_pylist() for c in table.column_names], strict=True), key=repr)


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYSPARK_PYTHON": sys.executable, **(env or {})}
    return subprocess.run([PRIVSTAGE, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """`privstage demo` in a fresh folder: generates data, creates a dev keyring, runs, reports."""
    work = tmp_path_factory.mktemp("demo")
    done = cli("demo", "--workdir", str(work), "--rows", "1500")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "created dev keyring" in done.stdout
    assert f"report: {work / 'reports' / 'clinic_visits.json'}" in done.stdout
    assert "pseudonymize_visits" in done.stderr  # the per-stage progress display
    return work


@pytest.mark.slow
def test_demo_output_and_report(demo):
    report = json.loads((demo / "reports" / "clinic_visits.json").read_text())
    assert report["status"] == "succeeded"
    stage, dp, encrypted = report["stages"]
    assert stage["rows_in"] == stage["rows_out"] == 1500
    assert (encrypted["name"], encrypted["status"], encrypted["rows_out"]) == ("encrypt_visits", "succeeded", 1500)
    assert encrypted["details"]["encryption"]["per_subject_keys"] and encrypted["guard_summary"]["failed"] == 0
    assert stage["guard_summary"]["failed"] == 0
    assert (dp["name"], dp["status"], dp["details"]["dp"]["ledger_key"]) == (
        "dp_visits_monthly",
        "succeeded",
        DP_LEDGER_KEY,
    )
    release = (Path(dp["output"]) / RELEASE).read_bytes()
    assert (demo / "reports" / "clinic_visits.html").exists()
    # the demo runs again on the same folder: output replaced atomically, keyring reused, and the month's
    # DP release is the one already published (same bytes, nothing spent)
    again = cli("demo", "--workdir", str(demo), "--rows", "1500")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "created dev keyring" not in again.stdout
    second = json.loads((demo / "reports" / "clinic_visits.json").read_text())["stages"][1]
    assert second["status"] == "reused"  # the committed output is this month's release
    assert (Path(second["output"]) / RELEASE).read_bytes() == release


@pytest.mark.slow
def test_spark_connect_and_in_process_runs_give_identical_pseudonyms(demo, spark, tmp_path):
    expected = rows(demo / OUTPUT)
    keyring = str(demo / ".privstage" / "dev-keyring.json")
    # Spark Connect (a local Connect server in the subprocess)
    connect_dir = tmp_path / "connect"
    (connect_dir / "data").mkdir(parents=True)
    (connect_dir / "data" / "visits").symlink_to(demo / "data" / "visits")
    done = cli(
        "run",
        str(SPEC),
        "--base-dir",
        str(connect_dir),
        "--report",
        str(connect_dir / "report.json"),
        "--partition",
        "2025-12",
        "--no-progress",
        env={"SPARK_REMOTE": "local[2]", "PRIVSTAGE_KEYRING": keyring},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((connect_dir / "report.json").read_text())
    assert report["status"] == "succeeded"
    assert rows(connect_dir / OUTPUT) == expected
    # The DP stage runs on Spark Connect too (its own ledger under connect_dir: a fresh release).
    dp = report["stages"][1]
    assert (dp["status"], dp["rows_out"], dp["details"]["dp"]["ledger_key"]) == ("succeeded", 40 * 327, DP_LEDGER_KEY)
    assert dp["details"]["dp"]["reused_release"] is False
    assert (Path(dp["output"]) / RELEASE).exists()

    # the engine in this process, on the classic session
    local_dir = tmp_path / "local"
    (local_dir / "data").mkdir(parents=True)
    (local_dir / "data" / "visits").symlink_to(demo / "data" / "visits")
    os.environ["PRIVSTAGE_KEYRING"] = keyring
    try:
        run_pipeline(load_spec(SPEC, base_dir=local_dir), stages=["pseudonymize_visits"], spark=spark, progress=False)
    finally:
        del os.environ["PRIVSTAGE_KEYRING"]
    assert rows(local_dir / OUTPUT) == expected


@pytest.mark.slow
def test_cli_exit_codes_in_a_real_process(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages:\n  - {name: s, kind: teleport, input: {path: a}, output: {path: b}}\n")
    done = cli("validate", str(bad))
    assert done.returncode == 3
    assert "unknown stage kind" in done.stderr
    assert cli("--version").stdout.startswith("privstage ")
