"""Encryption at rest through the ``privstage`` command line, on clinic_visits data: rotation with rewrap (no
data file rewritten), crypto-shredding, and round trips in both modes.

The CLI runs in process (``privstage.cli.main``), so it shares the test session's Spark instead of starting
one per command; every command goes through the same argument parsing and engine calls as the console script.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from privstage.cli import main
from privstage.crypto import envelope as env
from privstage.crypto.field import decrypt, plan_decrypt, translating
from privstage.crypto.subjects import SubjectKeyStore
from privstage.errors import EXIT_CODES, KeyUnavailable
from privstage.keys import LocalKeyring
from privstage.sample_data import write_clinic_visits

ROOT = Path(__file__).resolve().parents[1]
CLINIC_SPEC = ROOT / "pipelines" / "clinic_visits" / "pipeline.yaml"
ROWS = 60


def _rows(df) -> list[tuple]:
    return sorted(tuple(r) for r in df.collect())


@pytest.fixture(scope="module")
def work(spark, tmp_path_factory) -> Path:
    """A folder laid out like the demo's: dev keyring (the clinic_visits keys), generated visits."""
    base = tmp_path_factory.mktemp("enc-cli")
    keyring = base / ".privstage" / "dev-keyring.json"
    assert main(["keys", "init", "--path", str(keyring), "--key", "pseudonym-key", "--key", "visits-kek"]) == 0
    write_clinic_visits(str(base / "data" / "visits"), ROWS, spark=spark)
    return base


def _round_trip_spec(work: Path, mode: str, extra: dict | None = None) -> Path:
    columns = ["name", "email", "ssn", "date_of_birth"] if mode == "field" else ["name", "email", "ssn"]
    encryption = {"mode": mode, "dataset": "clinic_visits", "kek_id": "visits-kek", "columns": columns}
    if mode == "field":
        encryption |= {"row_key": "visit_id", **(extra or {})}
    spec = {
        "name": f"roundtrip_{mode}",
        "keys": {"provider": "local"},
        "stages": [
            {
                "name": "encrypt_visits",
                "kind": "encrypt",
                "input": {"path": "data/visits"},
                "output": {"path": f"out/{mode}/encrypted"},
                "encryption": encryption,
            },
            {
                "name": "decrypt_visits",
                "kind": "decrypt",
                "mode": mode,
                "dataset": "clinic_visits",
                "input": {"stage": "encrypt_visits"},
                "output": {"path": f"out/{mode}/clear"},
            },
        ],
    }
    path = work / f"roundtrip_{mode}.yaml"
    path.write_text(json.dumps(spec))
    return path


def _file_state(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.glob("part-*")}


def test_file_mode_round_trip_on_clinic_visits(spark, work):
    spec = _round_trip_spec(work, "file")
    assert main(["run", str(spec), "--no-progress"]) == 0
    original = spark.read.parquet(str(work / "data" / "visits"))
    clear = spark.read.parquet(str(work / "out" / "file" / "clear"))
    assert clear.schema == original.schema and _rows(clear) == _rows(original)
    assert all(p.read_bytes()[-4:] == b"PARE" for p in (work / "out" / "file" / "encrypted").glob("part-*"))


def test_rotation_rewrap_keeps_data_files_and_old_data_readable(spark, work, capsys):
    spec = _round_trip_spec(work, "field")
    keyring_path = work / ".privstage" / "dev-keyring.json"
    encrypted = work / "out" / "field" / "encrypted"
    assert main(["run", str(spec), "--stage", "encrypt_visits", "--no-progress"]) == 0
    before = _file_state(encrypted)
    assert env.read_manifest(encrypted).kek_versions() == {"visits-kek": [1]}

    assert main(["keys", "rotate", "visits-kek", "--path", str(keyring_path)]) == 0
    # old data stays readable right after rotation (version 1 is still enabled): the field round trip
    assert main(["run", str(spec), "--stage", "decrypt_visits", "--no-progress"]) == 0
    original = _rows(spark.read.parquet(str(work / "data" / "visits")))
    assert _rows(spark.read.parquet(str(work / "out" / "field" / "clear"))) == original

    capsys.readouterr()
    assert main(["keys", "rewrap", str(encrypted), "--spec", str(spec)]) == 0
    assert "data files untouched" in capsys.readouterr().out
    rewrapped = env.read_manifest(encrypted)
    assert rewrapped.kek_versions() == {"visits-kek": [2]} and rewrapped.seal.kek_version == 2
    assert _file_state(encrypted) == before  # same bytes, same mtimes: no data file was rewritten

    # version 1 disabled: the rewrapped dataset needs only version 2
    data = json.loads(keyring_path.read_text())
    data["keys"]["visits-kek"]["versions"]["1"]["enabled"] = False
    keyring_path.write_text(json.dumps(data))
    assert LocalKeyring(keyring_path).versions("visits-kek") == [2]
    assert main(["run", str(spec), "--stage", "decrypt_visits", "--overwrite", "--no-progress"]) == 0
    assert _rows(spark.read.parquet(str(work / "out" / "field" / "clear"))) == original

    # data written after rotation records the new version
    assert main(["run", str(spec), "--stage", "encrypt_visits", "--overwrite", "--no-progress"]) == 0
    assert env.read_manifest(encrypted).kek_versions() == {"visits-kek": [2]}
    assert _file_state(encrypted) != before


def test_shredding_a_patient_through_the_cli_on_the_clinic_visits_pipeline(spark, work, tmp_path, capsys):
    """The clinic_visits pipeline's own encrypt stage (per-patient keys); then one patient is shredded."""
    keyring_path = work / ".privstage" / "dev-keyring.json"
    data = json.loads(keyring_path.read_text())
    data["keys"]["visits-kek"]["versions"]["1"]["enabled"] = True  # independent of the rotation test's order
    keyring_path.write_text(json.dumps(data))
    base = ["--base-dir", str(work)]
    assert main(["run", str(CLINIC_SPEC), *base, "--stage", "encrypt_visits", "--overwrite", "--no-progress"]) == 0
    encrypted = work / "output" / "visits_encrypted"
    copy = tmp_path / "backup-copy"
    shutil.copytree(encrypted, copy)  # a second copy of the data, e.g. in another bucket

    visits = spark.read.parquet(str(work / "data" / "visits"))
    patient = visits.orderBy("visit_id").first()["patient_id"]
    capsys.readouterr()
    assert main(["keys", "shred", "--subject", patient, "--spec", str(CLINIC_SPEC), *base]) == 0
    out = capsys.readouterr().out
    assert "key destroyed" in out and patient not in out

    for i, source in enumerate((encrypted,)):  # the copy is checked below, without another pipeline run
        stage = {
            "name": "decrypt_visits",
            "kind": "decrypt",
            "mode": "field",
            "dataset": "clinic_visits",
            "subject_keys": str(work / ".privstage" / "subject-keys" / "clinic_visits.json"),
            "input": {"path": str(source)},
            "output": {"path": f"clear-{i}"},
        }
        spec = {"name": "decrypt_copy", "keys": {"provider": "local", "path": str(keyring_path)}, "stages": [stage]}
        (tmp_path / f"decrypt-{i}.yaml").write_text(json.dumps(spec))
        assert main(["run", str(tmp_path / f"decrypt-{i}.yaml"), "--no-progress"]) == EXIT_CODES["KeyUnavailable"]
        err = capsys.readouterr().err
        assert "KeyUnavailable" in err and "shredded" in err
        assert not (tmp_path / f"clear-{i}").exists()

    # every other patient still decrypts, from both copies
    keys = LocalKeyring(keyring_path)
    store = SubjectKeyStore(work / ".privstage" / "subject-keys" / "clinic_visits.json", keys, "visits-kek")
    for source in (encrypted, copy):
        manifest = env.read_manifest(source)
        others = spark.read.parquet(str(source)).where(f"patient_id != '{patient}'")
        with translating():
            clear = decrypt(others, plan_decrypt(manifest, keys), spark=spark, subjects=store)
            assert _rows(clear) == _rows(visits.where(f"patient_id != '{patient}'"))
        mine = spark.read.parquet(str(source)).where(f"patient_id = '{patient}'")
        with pytest.raises(KeyUnavailable, match="shredded"), translating():
            decrypt(mine, plan_decrypt(manifest, keys), spark=spark, subjects=store).collect()
