"""The encrypt and decrypt stages through the engine: validation, round trips, guards and every tamper case.

One tiny clinic_visits dataset is encrypted once per mode (module-scoped); each tamper case damages a copy
and runs a decrypt pipeline over it through :func:`privstage.run_pipeline`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from privstage.crypto import envelope as env
from privstage.crypto import file as file_mode
from privstage.engine import run_pipeline
from privstage.errors import GuardFailed, IntegrityError, KeyUnavailable, SpecError
from privstage.io import STAGING_DIR
from privstage.keys import FileKeyProvider
from privstage.sample_data import CLINIC_VISITS_SCHEMA, generate_clinic_visits_pandas
from privstage.spec import parse_spec

ROWS = 40
FIELD = {
    "mode": "field",
    "dataset": "clinic_visits",
    "kek_id": "visits-kek",
    "columns": ["name", "email", "ssn", "date_of_birth"],
    "row_key": "visit_id",
    "subject_column": "patient_id",
}
FILE = {"mode": "file", "dataset": "clinic_visits", "kek_id": "visits-kek", "columns": ["name", "email", "ssn"]}


def pipeline(base: Path, stages: list[dict]):
    text = json.dumps({"name": "enc", "keys": {"provider": "files", "directory": "keys"}, "stages": stages})
    return parse_spec(text, base_dir=base)


def encrypt_stage(config: dict, out: str = "out/enc", source: str = "data/visits", **extra) -> dict:
    return {
        "name": "encrypt_visits",
        "kind": "encrypt",
        "input": {"path": source},
        "output": {"path": out},
        "encryption": config,
        "subject_keys": "state/subject-keys.json" if config.get("subject_column") else None,
        **extra,
    }


def decrypt_stage(mode: str, source: dict, out: str = "out/clear") -> dict:
    stage = {"name": "decrypt_visits", "kind": "decrypt", "mode": mode, "dataset": "clinic_visits"}
    return stage | {"input": source, "output": {"path": out}, "subject_keys": "state/subject-keys.json"}


def _rows(df) -> list[tuple]:
    return sorted(tuple(r) for r in df.collect())


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    """A base directory with keys, the tiny dataset, and the dataset encrypted in both modes (plus an older
    file-mode encryption of the same dataset); ``world.reports`` holds the encrypt runs' manifests."""
    base = tmp_path_factory.mktemp("stages")
    (base / "keys").mkdir(mode=0o700)
    (base / "keys" / "visits-kek.v1").write_text(base64.b64encode(os.urandom(32)).decode())
    pdf = generate_clinic_visits_pandas(ROWS)
    visits = spark.createDataFrame(pdf, schema=CLINIC_VISITS_SCHEMA).repartition(2, "visit_id")
    visits.write.parquet(str(base / "data" / "visits"))
    keys = FileKeyProvider(base / "keys")
    older = env.parse_encryption_spec({**FILE, "dataset": "clinic_visits"})
    file_mode.encrypt_dataset(
        visits, base / "enc" / "file_old", older, file_mode.KeyDirectory.mounted(base / "keys"), keys
    )
    reports = {}
    for name, config in (("field", FIELD), ("file", FILE)):
        reports[name] = run_pipeline(pipeline(base, [encrypt_stage(config, out=f"enc/{name}")]), spark=spark)
    return Path(base), reports


def test_encrypted_outputs_hide_values_and_column_names(spark, world):
    base, _ = world
    stored = spark.read.parquet(str(base / "enc" / "field"))
    assert {f.name: f.dataType.simpleString() for f in stored.schema}["ssn"] == "binary"
    raw = b"".join(p.read_bytes() for p in (base / "enc" / "file").glob("part-*"))
    assert raw.count(b"PARE") >= 2 and b"ssn" not in raw  # encrypted footers hide even column names


def test_field_encrypt_guards_pass_and_the_report_holds_no_key_material(world):
    base, reports = world
    stage = reports["field"].stages[0]
    checks = {o.check: o.success for g in stage.guards for o in g.outcomes}
    assert checks == {
        "no_nulls": True,
        "row_count_preserved": True,
        "files_match_manifest": True,
        "well_formed_ciphertext": True,
        "no_plaintext_in_output": True,
    }
    assert stage.details["encryption"]["per_subject_keys"] and stage.key_versions == {"visits-kek": 1}
    text = json.dumps(reports["field"].to_dict())
    kek = FileKeyProvider(base / "keys").get("visits-kek").material()
    assert base64.b64encode(kek).decode() not in text and kek.hex() not in text


def test_file_mode_encrypt_checks_footers_and_unreadability(world):
    base, reports = world
    checks = {o.check: o.success for g in reports["file"].stages[0].guards for o in g.outcomes}
    assert checks["encrypted_footer"] and checks["unreadable_without_keys"] and checks["files_match_manifest"]
    with pytest.raises(Exception):  # noqa: B017 - pyarrow's own error: no decryption properties, no footer
        pq.read_metadata(next((base / "enc" / "file").glob("part-*.parquet")))


@pytest.mark.parametrize("config", [FIELD, FILE], ids=["field", "file"])
def test_a_missing_kek_fails_closed_before_anything_is_written(spark, world, tmp_path, config):
    base, _ = world
    out = tmp_path / "never"
    spec = pipeline(base, [encrypt_stage({**config, "kek_id": "missing-kek"}, out=str(out))])
    with pytest.raises(KeyUnavailable, match="missing-kek") as info:
        run_pipeline(spec, spark=spark)
    assert info.value.stage == "encrypt_visits" and not out.exists() and not (tmp_path / STAGING_DIR).exists()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"algorithm": "AES-CBC"}, "CBC is unauthenticated"),
        ({"algorithm": "AES_ECB"}, "ECB leaks equal blocks"),
        ({"algorithm": "AES_GCM_CTR_V1"}, "CTR modes are unauthenticated"),
        ({"iv": "000102030405060708090a0b"}, "IVs are never supplied"),
        ({"nonce": "abc"}, "nonces are never supplied"),
        ({"mode": "file", "footer": "plaintext"}, "plaintext Parquet footers are refused"),
        ({"mode": "file", "plaintext_footer": True}, "plaintext Parquet footers are refused"),
    ],
)
def test_weak_encryption_settings_are_spec_errors_at_validation(tmp_path, config, message):
    base = {**FIELD, **config} if config.get("mode") != "file" else {**FILE, **config}
    with pytest.raises(SpecError, match=message) as info:
        pipeline(tmp_path, [encrypt_stage(base)])
    assert "stages[0].encryption" in str(info.value)


@pytest.mark.parametrize("algorithm", ["AES-CBC", "AES-256-CTR", "AES-ECB"])
def test_decrypt_refuses_weak_algorithms_too(tmp_path, algorithm):
    stage = decrypt_stage("field", {"path": "enc/field"}) | {"algorithm": algorithm}
    with pytest.raises(SpecError, match="is refused"):
        pipeline(tmp_path, [stage])


def test_decrypt_without_manifest_is_blocked_before_reading(spark, world, tmp_path):
    base, _ = world
    plain = tmp_path / "plain"
    shutil.copytree(base / "enc" / "field", plain)
    (plain / env.ENCRYPTION_MANIFEST).unlink()
    spec = pipeline(base, [decrypt_stage("field", {"path": str(plain)}, out=str(tmp_path / "out"))])
    with pytest.raises((GuardFailed, SpecError)):
        run_pipeline(spec, spark=spark)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ tampering
def _reseal(directory: Path, keys: FileKeyProvider) -> None:
    """What an attacker who can also rewrite the file list cannot do: update and re-seal the manifest. Done
    here so that the value-level authentication (AES-GCM, PME) is what has to catch the change."""
    manifest = env.read_manifest(directory)
    updated = manifest.model_copy(update={"files": env.file_entries(directory), "seal": None})
    env.write_manifest(directory, env.seal_manifest(updated, keys))


def _parts(directory: Path) -> list[Path]:
    return sorted(directory.glob("part-*.parquet"))


def _edit_values(directory: Path, edit: Callable[[dict[str, list]], None]) -> None:
    """Rewrite the first part file with edited column values (its .crc removed, as an attacker would)."""
    part = _parts(directory)[0]
    table = pq.read_table(part)
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    edit(columns)
    pq.write_table(pa.table(columns, schema=table.schema), part)
    part.with_name(f".{part.name}.crc").unlink(missing_ok=True)


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def flip_value_body(d: Path) -> None:
    _edit_values(d, lambda c: c["ssn"].__setitem__(0, _flip(c["ssn"][0], 20)))


def flip_gcm_tag(d: Path) -> None:
    _edit_values(d, lambda c: c["ssn"].__setitem__(0, _flip(c["ssn"][0], len(c["ssn"][0]) - 1)))


def swap_two_rows(d: Path) -> None:
    def swap(c: dict[str, list]) -> None:
        c["ssn"][0], c["ssn"][1] = c["ssn"][1], c["ssn"][0]

    _edit_values(d, swap)


def move_to_other_column(d: Path) -> None:
    _edit_values(d, lambda c: c["ssn"].__setitem__(0, c["name"][0]))


def flip_page_byte(d: Path) -> None:
    part = _parts(d)[0]
    data = part.read_bytes()
    part.write_bytes(_flip(data, len(data) // 3))
    part.with_name(f".{part.name}.crc").unlink(missing_ok=True)


def flip_footer_byte(d: Path) -> None:
    part = _parts(d)[0]
    data = part.read_bytes()
    part.write_bytes(_flip(data, len(data) - 24))
    part.with_name(f".{part.name}.crc").unlink(missing_ok=True)


def replace_with_older_file(d: Path) -> None:
    older = _parts(d.parent.parent / "enc" / "file_old")[0]
    shutil.copyfile(older, _parts(d)[0])
    _parts(d)[0].with_name(f".{_parts(d)[0].name}.crc").unlink(missing_ok=True)


def delete_part_file(d: Path) -> None:
    part = _parts(d)[0]
    part.unlink()
    part.with_name(f".{part.name}.crc").unlink(missing_ok=True)


TAMPER_CASES = [
    # (mode, tamper, re-sealed manifest, what the IntegrityError names)
    pytest.param("field", flip_value_body, True, "column 'ssn', row key", id="field-flipped-value-byte"),
    pytest.param("field", flip_gcm_tag, True, "column 'ssn', row key", id="field-flipped-gcm-tag"),
    pytest.param("field", swap_two_rows, True, "column 'ssn', row key", id="field-value-swapped-between-rows"),
    pytest.param("field", move_to_other_column, True, "column 'ssn', row key", id="field-value-moved-to-other-column"),
    pytest.param("file", flip_page_byte, True, "Parquet", id="file-flipped-page-byte"),
    pytest.param("file", flip_footer_byte, True, "footer|Parquet", id="file-flipped-footer-byte"),
    pytest.param("file", replace_with_older_file, False, "does not match the manifest", id="file-replaced-by-older"),
    pytest.param("field", delete_part_file, False, "is missing", id="field-part-file-deleted"),
    pytest.param("file", flip_page_byte, False, "does not match the manifest", id="file-flipped-byte-caught-by-seal"),
]


@pytest.mark.parametrize(("mode", "tamper", "reseal", "names"), TAMPER_CASES)
def test_every_tamper_case_is_an_integrity_error_and_writes_nothing(
    spark, world, tmp_path, mode, tamper, reseal, names
):
    base, _ = world
    damaged = tmp_path / "enc" / mode
    shutil.copytree(base / "enc" / mode, damaged)
    (tmp_path / "enc" / "file_old").symlink_to(base / "enc" / "file_old")
    tamper(damaged)
    if reseal:
        _reseal(damaged, FileKeyProvider(base / "keys"))
    out = tmp_path / "out" / "clear"
    spec = pipeline(base, [decrypt_stage(mode, {"path": str(damaged)}, out=str(out))])
    with pytest.raises(IntegrityError, match=names) as info:
        run_pipeline(spec, spark=spark)
    assert info.value.stage == "decrypt_visits"
    assert "clinic_visits" in str(info.value)
    assert not out.exists() and not (out.parent / STAGING_DIR).exists()  # nothing written, staging discarded
