"""The wheel ships the three import packages, the console script and the provider entry point."""

from __future__ import annotations

import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("privstage-*.whl")
    return path


def test_wheel_holds_three_packages_and_the_example(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "privstage/__init__.py",
        "privstage/engine.py",
        "privstage/stages/pseudonymize.py",
        "privstage/guards/gx.py",
        "privstage/keys/files.py",
        "privstage_airflow/__init__.py",
        "privstage_airflow/get_provider_info.py",
        "privstage_dagster/__init__.py",
        "privstage/_examples/clinic_visits/pipeline.yaml",
        "privstage/jvm/privstage-spark.jar",  # built by make from jvm/src, ignored by git
    ):
        assert required in names, required
    assert not any(n.startswith(("tests/", "integration_tests/", "src/")) for n in names)
    assert not any(n.endswith((".keyring.json", "dev-keyring.json")) for n in names)


def test_wheel_declares_console_script_and_airflow_provider(wheel):
    archive = zipfile.ZipFile(wheel)
    (entry_points,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(archive.read(entry_points).decode())
    assert parser["console_scripts"]["privstage"] == "privstage.cli:main"
    assert parser["apache_airflow_provider"]["provider_info"] == "privstage_airflow.get_provider_info:get_provider_info"
    (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
    text = archive.read(metadata).decode()
    for extra in ("airflow", "dagster", "all", "dev"):
        assert f"Provides-Extra: {extra}" in text
