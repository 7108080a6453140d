"""The clinic_visits pipeline through the real ``privstage`` console script: classic Spark via
``privstage demo``, Spark Connect via ``SPARK_REMOTE``, and the engine in process: same pseudonyms; the
monthly DP release runs on both kinds of session, and a second demo run publishes the same release."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from privstage.cli import main
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
def test_demo_output_and_report(demo, spark, capsys):
    report = json.loads((demo / "reports" / "clinic_visits.json").read_text())
    assert report["status"] == "succeeded"
    stage, dp, research, encrypted = report["stages"]
    assert (research["name"], research["status"], research["guard_summary"]["failed"]) == (
        "anonymize_research",
        "succeeded",
        0,
    )
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
    # (in this process, on the test session: the subprocess above already proved the console script)
    assert main(["demo", "--workdir", str(demo), "--rows", "1500"]) == 0
    assert "created dev keyring" not in capsys.readouterr().out
    second = json.loads((demo / "reports" / "clinic_visits.json").read_text())["stages"][1]
    assert second["status"] == "reused"  # the committed output is this month's release
    assert (Path(second["output"]) / RELEASE).read_bytes() == release


# --- the research release (anonymize_research): checked without privstage's code ---------------------------
RESEARCH = "output/research_release"
RESEARCH_QIS = ["age_band", "zip3", "sex", "visit_month"]


def _months_between(later: date, earlier: date) -> float:
    """Spark's months_between on dates: whole months when the days match or both are month ends, else /31."""
    whole = (later.year - earlier.year) * 12 + later.month - earlier.month
    month_end = (later + timedelta(days=1)).day == 1 and (earlier + timedelta(days=1)).day == 1
    return whole if later.day == earlier.day or month_end else whole + (later.day - earlier.day) / 31


def _age_band(dob: date | None, visit: date, level: int) -> str:
    if dob is None or level == 4:
        return "*"
    age = math.floor(_months_between(visit, dob) / 12)
    if not 0 <= age < 120:
        return "*"
    if level == 0:
        return str(age)
    width = (5, 10, 20)[level - 1]
    low = age // width * width
    return f"[{low}, {min(low + width, 120)})"


def _zip(value: str | None, level: int) -> str:
    if value is None or level == 4 or not re.fullmatch(r"[0-9]{5}", value):
        return "*"
    return value if level == 0 else value[: (3, 2, 1)[level - 1]].ljust(5, "*")


def _month(value: date, level: int) -> str:
    return [value.isoformat(), value.strftime("%Y-%m"), f"{value.year}-Q{(value.month - 1) // 3 + 1}", str(value.year),
            "*"][level]  # fmt: skip


def attacker_view(visits: pd.DataFrame, levels: dict[str, int]) -> pd.DataFrame:
    """The input's quasi-identifiers generalized to the release's levels, as anyone knowing the spec can."""
    return pd.DataFrame(
        {
            "age_band": [
                _age_band(d, v, levels["date_of_birth"])
                for d, v in zip(visits["date_of_birth"], visits["visit_date"], strict=True)
            ],
            "zip3": [_zip(z, levels["zip_code"]) for z in visits["zip_code"]],
            "sex": [s if levels["sex"] == 0 and s in ("F", "M", "X") else "*" for s in visits["sex"]],
            "visit_month": [_month(v, levels["visit_date"]) for v in visits["visit_date"]],
        }
    )


@pytest.mark.slow
def test_research_release_meets_k_and_l_and_resists_linkage(demo):
    report = json.loads((demo / "reports" / "clinic_visits.json").read_text())
    research = report["stages"][2]
    anon = research["details"]["anonymize"]
    release = pq.read_table(demo / RESEARCH).to_pandas()
    assert list(release.columns) == ["patient_id", *RESEARCH_QIS, "diagnosis_code"]  # everything else dropped
    # k >= 5 and l >= 2 by a plain group-by on what was written
    classes = release.groupby(RESEARCH_QIS, dropna=False).agg(n=("patient_id", "size"), l=("diagnosis_code", "nunique"))
    assert classes["n"].min() >= 5 and classes["l"].min() >= 2
    assert (anon["risk"]["min_class_size"], anon["risk"]["min_l"]) == (classes["n"].min(), classes["l"].min())
    assert research["rows_out"] == len(release) >= 1500 - anon["suppression_limit_rows"]
    # linkage: generalize the input's quasi-identifiers the same way and join; every released record
    # matches at least k input records
    visits = pq.read_table(demo / "data" / "visits").to_pandas()
    view = attacker_view(visits, anon["levels"])
    matches = view.groupby(RESEARCH_QIS).size().rename("input_matches").reset_index()
    joined = release[RESEARCH_QIS].merge(matches, on=RESEARCH_QIS, how="left")
    assert joined["input_matches"].notna().all()
    assert joined["input_matches"].min() >= 5
    # patient ids are the keyed pseudonyms of the first stage, never the raw ids
    pseudonymized = pq.read_table(demo / OUTPUT, columns=["patient_id"]).to_pandas()
    assert set(release["patient_id"]) <= set(pseudonymized["patient_id"])
    assert not set(release["patient_id"]) & set(visits["patient_id"])


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
    # ... and so does the anonymize stage: the same search on the same data chooses the same release
    research = report["stages"][2]
    assert research["status"] == "succeeded"
    assert rows(connect_dir / RESEARCH) == rows(demo / RESEARCH)

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
