"""Envelope keys, manifests, rotation and config validation (no Spark)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from privstage.crypto import envelope as env
from privstage.errors import IntegrityError, KeyUnavailable, SpecError


def _spec(**extra):
    return {
        "mode": "field",
        "dataset": "visits",
        "kek_id": "visits-kek",
        "columns": ["ssn"],
        "row_key": "visit_id",
    } | extra


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"algorithm": "AES-256-ECB"}, "ECB leaks equal blocks"),
        ({"algorithm": "AES-CBC"}, "CBC is unauthenticated"),
        ({"algorithm": "AES_GCM_CTR_V1", "mode": "file"}, "CTR modes are unauthenticated"),
        ({"iv": "000102030405060708090a0b"}, "IVs are never supplied by users"),
        ({"nonce": "AAECAwQFBgcICQoL"}, "nonces are never supplied"),
        ({"plaintext_footer": True, "mode": "file"}, "plaintext Parquet footers are refused"),
        ({"footer": "plaintext", "mode": "file"}, "plaintext Parquet footers are refused"),
        ({"key": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="}, "inline key material"),
        ({"columns": []}, "at least 1"),
        ({"columns": ["ssn", "ssn"]}, "listed twice"),
        ({"columns": ["visit_id"]}, "row_key 'visit_id' cannot itself be encrypted"),
        ({"subject_column": "ssn"}, "must stay readable"),
        ({"colums": ["ssn"]}, "Extra inputs are not permitted"),
    ],
)
def test_weak_or_wrong_settings_are_spec_errors(extra, message):
    data = _spec(**extra)
    if data["mode"] == "file":
        data.pop("row_key")
    with pytest.raises(SpecError, match=message):
        env.parse_encryption_spec(data)


def test_valid_specs_are_frozen_models():
    spec = env.parse_encryption_spec(_spec(subject_column="patient_id"))
    assert isinstance(spec, env.FieldEncryptionSpec) and spec.algorithm == "AES-256-GCM"
    file_spec = env.parse_encryption_spec({"mode": "file", "dataset": "v", "kek_id": "k", "columns": ["ssn"]})
    assert isinstance(file_spec, env.FileEncryptionSpec) and file_spec.footer == "encrypted"
    with pytest.raises(Exception, match="frozen"):
        spec.columns = ("name",)  # type: ignore[misc]


def test_wrap_round_trip_binds_context_and_never_stores_the_clear_key(keys, leaks):
    dek = env.new_dek()
    wrapped = env.wrap_dek(keys.get("visits-kek"), dek, context="visits/ssn")
    assert env.unwrap_dek(keys, wrapped) == dek
    assert (wrapped.kek_id, wrapped.kek_version, wrapped.algorithm) == ("visits-kek", 1, "AES-256-GCM")
    assert leaks(wrapped.model_dump_json(), [dek, keys.get("visits-kek").material()]) == []
    # A wrapped key moved to another column (or with its context edited) does not unwrap.
    with pytest.raises(IntegrityError, match="visits/name"):
        env.unwrap_dek(keys, wrapped, expected_context="visits/name")
    forged = wrapped.model_copy(update={"context": "visits/name"})
    with pytest.raises(IntegrityError):
        env.unwrap_dek(keys, forged)


def test_missing_or_disabled_kek_version_is_key_unavailable(keys, key_dir):
    wrapped = env.wrap_dek(keys.get("visits-kek"), env.new_dek(), context="visits/ssn")
    (key_dir / "visits-kek.v1.disabled").touch()
    with pytest.raises(KeyUnavailable, match="key 'visits-kek'") as info:
        env.unwrap_dek(keys, wrapped)
    assert info.value.key_id == "visits-kek"
    with pytest.raises(KeyUnavailable):
        env.unwrap_dek(keys, wrapped.model_copy(update={"kek_version": 7}))


def _manifest(keys, dek: bytes) -> env.EncryptionManifest:
    wrapped = env.wrap_dek(keys.get("visits-kek"), dek, context="visits/ssn")
    return env.EncryptionManifest(
        dataset="visits",
        mode="field",
        kek_id="visits-kek",
        columns=(env.ColumnKey(column="ssn", spark_type="string", wrapped_dek=wrapped),),
        row_key="visit_id",
    )


def test_rewrap_moves_every_dek_to_the_new_version_without_changing_it(keys, key_dir, leaks, request):
    add = request.getfixturevalue("add_key")
    dek = env.new_dek()
    manifest = _manifest(keys, dek)
    new_material = add(key_dir, "visits-kek", 2)
    rewrapped = env.rewrap(manifest, keys)
    assert rewrapped.kek_versions() == {"visits-kek": [2]} and manifest.kek_versions() == {"visits-kek": [1]}
    (key_dir / "visits-kek.v1.disabled").touch()  # the old version can go once everything is rewrapped
    assert env.unwrap_dek(keys, rewrapped.columns[0].wrapped_dek) == dek
    with pytest.raises(KeyUnavailable):
        env.rewrap(manifest, keys)
    text = rewrapped.model_dump_json()
    assert leaks(text, [dek, new_material, keys.get("visits-kek", 2).material()]) == []


def test_manifest_round_trips_through_its_file(tmp_path: Path, keys):
    manifest = _manifest(keys, env.new_dek())
    env.write_manifest(tmp_path, manifest)
    assert env.read_manifest(tmp_path) == manifest
    with pytest.raises(SpecError, match="no encryption manifest"):
        env.read_manifest(tmp_path / "elsewhere")


def test_file_list_detects_deleted_added_and_replaced_files(tmp_path: Path, keys):
    (tmp_path / "part-0.parquet").write_bytes(b"a" * 10)
    (tmp_path / "part-1.parquet").write_bytes(b"b" * 10)
    manifest = _manifest(keys, env.new_dek()).model_copy(update={"files": env.file_entries(tmp_path)})
    env.verify_files(tmp_path, manifest)
    (tmp_path / "part-1.parquet").write_bytes(b"c" * 10)  # same size, other content
    with pytest.raises(IntegrityError, match=r"part-1\.parquet does not match"):
        env.verify_files(tmp_path, manifest)
    (tmp_path / "part-1.parquet").unlink()
    with pytest.raises(IntegrityError, match=r"part-1\.parquet listed in the manifest is missing"):
        env.verify_files(tmp_path, manifest)
    (tmp_path / "part-1.parquet").write_bytes(b"b" * 10)
    (tmp_path / "part-2.parquet").write_bytes(b"x")
    with pytest.raises(IntegrityError, match=r"part-2\.parquet is not in the manifest"):
        env.verify_files(tmp_path, manifest)


def test_keys_and_resolved_plans_refuse_pickling(keys):
    from privstage.crypto.field import FieldKeys

    with pytest.raises(TypeError):
        pickle.dumps(keys.get("visits-kek"))
    plan = FieldKeys(manifest=_manifest(keys, env.new_dek()), deks={"ssn": env.new_dek()})
    with pytest.raises(TypeError):
        pickle.dumps(plan)
    assert "deks" not in repr(plan)


def test_sealed_manifest_detects_an_edited_file_list_and_rewrap_reseals(tmp_path: Path, keys, key_dir, add_key):
    (tmp_path / "part-0.parquet").write_bytes(b"a" * 10)
    (tmp_path / "part-1.parquet").write_bytes(b"b" * 10)
    manifest = _manifest(keys, env.new_dek()).model_copy(update={"files": env.file_entries(tmp_path)})
    sealed = env.seal_manifest(manifest, keys)
    env.verify_files(tmp_path, sealed, keys)
    (tmp_path / "part-1.parquet").unlink()  # a deleted part file, and the attacker drops it from the list
    edited = sealed.model_copy(update={"files": sealed.files[:1]})
    with pytest.raises(IntegrityError, match="manifest was modified"):
        env.verify_files(tmp_path, edited, keys)
    with pytest.raises(IntegrityError, match="not sealed"):
        env.verify_files(tmp_path, manifest, keys)
    with pytest.raises(IntegrityError, match="manifest was modified"):
        env.rewrap(edited, keys)
    add_key(key_dir, "visits-kek", 2)
    resealed = env.rewrap(sealed, keys)
    assert resealed.seal.kek_version == 2
    env.check_seal(resealed, keys)
