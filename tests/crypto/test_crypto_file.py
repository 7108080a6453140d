"""File mode: Parquet Modular Encryption through privstage's Java KMS client, with pyarrow as the independent reader."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from privstage.crypto import envelope as env
from privstage.crypto import file as fm
from privstage.errors import IntegrityError, KeyUnavailable
from privstage.keys import EnvKeyProvider

SPEC = {"mode": "file", "dataset": "visits", "kek_id": "visits-kek", "columns": ["ssn", "name", "email"]}


def _rows(df) -> list[tuple]:
    return sorted(tuple(r) for r in df.collect())


@pytest.fixture()
def encrypted(visits, keys, key_dir, tmp_path: Path):
    spec = env.parse_encryption_spec(SPEC)
    path = tmp_path / "visits.pme"
    manifest = fm.encrypt_dataset(visits, path, spec, fm.KeyDirectory.mounted(key_dir), keys)
    return path, manifest


def test_spark_round_trip_with_encrypted_footer_and_no_plaintext_on_disk(
    spark, visits, visits_pdf, keys, key_dir, encrypted, tmp_path
):
    path, manifest = encrypted
    assert len(manifest.files) == 2 and manifest.file_kms == {"columns": "visits-kek", "footer": "visits-kek"}
    raw = b"".join((path / f.name).read_bytes() for f in manifest.files)
    assert all((path / f.name).read_bytes()[-4:] == b"PARE" for f in manifest.files)  # encrypted footer
    assert visits_pdf.ssn.iloc[0].encode() not in raw and b"ssn" not in raw  # values and even column names hidden
    fm.decrypt_dataset(spark, path, tmp_path / "clear", fm.KeyDirectory.mounted(key_dir), keys)
    assert _rows(spark.read.parquet(str(tmp_path / "clear"))) == _rows(visits)


def test_pyarrow_reads_what_spark_wrote_and_spark_reads_what_pyarrow_wrote(
    spark, visits_pdf, keys, key_dir, encrypted, tmp_path
):
    path, manifest = encrypted
    props = fm.pyarrow_decryption_properties(keys)
    tables = [pq.read_table(path / f.name, decryption_properties=props) for f in manifest.files]
    assert sorted(pa.concat_tables(tables).column("ssn").to_pylist()) == sorted(visits_pdf.ssn)
    with pytest.raises(Exception):  # noqa: B017 - pyarrow's own error type: no key, no footer
        pq.read_table(path / manifest.files[0].name)
    written = tmp_path / "from-pyarrow"
    written.mkdir()
    table = pa.Table.from_pandas(visits_pdf, preserve_index=False)
    spec = env.parse_encryption_spec(SPEC)
    pq.write_table(
        table, written / "part-0.parquet", encryption_properties=fm.pyarrow_encryption_properties(spec, keys)
    )
    assert (written / "part-0.parquet").read_bytes()[-4:] == b"PARE"
    with fm.translating():
        back = fm.read_dataset(spark, written, fm.KeyDirectory.mounted(key_dir)).select("visit_id", "ssn", "email")
        assert _rows(back) == sorted(zip(visits_pdf.visit_id, visits_pdf.ssn, visits_pdf.email, strict=True))


def test_materialized_key_directory_serves_any_provider_and_disappears(spark, visits, tmp_path, leaks, event_log_text):
    material = os.urandom(32)
    keys = EnvKeyProvider(environ={"PRIVSTAGE_KEY_VISITS_KEK": base64.b64encode(material).decode()})
    spec = env.parse_encryption_spec(SPEC)
    with fm.KeyDirectory.materialized(keys, ["visits-kek"]) as key_dir:
        assert stat.S_IMODE(key_dir.path.stat().st_mode) == 0o700
        assert [stat.S_IMODE(p.stat().st_mode) for p in key_dir.path.iterdir()] == [0o600]
        options = fm.write_options(spec, key_dir)
        fm.encrypt_dataset(visits.select("visit_id", "ssn", "name", "email"), tmp_path / "v", spec, key_dir, keys)
        with fm.translating():
            assert fm.read_dataset(spark, tmp_path / "v", key_dir).count() == visits.count()
    assert not key_dir.path.exists()
    assert leaks(repr(options), [material]) == [] and options[fm.KEY_DIR_SETTING] == str(key_dir.path)
    assert leaks(repr(spark.sparkContext.getConf().getAll()), [material]) == []
    events = event_log_text()
    assert str(tmp_path / "v") in events  # the write is in the log ...
    assert leaks(events, [material]) == []  # ... the master key is not


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    crc = path.with_name(f".{path.name}.crc")
    crc.unlink(missing_ok=True)  # an attacker would drop Hadoop's checksum too


def _page_offset(path: Path, keys) -> int:
    meta = pq.ParquetFile(path, decryption_properties=fm.pyarrow_decryption_properties(keys)).metadata
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    chunk = meta.row_group(0).column(names.index("ssn"))
    return chunk.data_page_offset + chunk.total_compressed_size // 2


@pytest.mark.parametrize("where", ["page", "footer"])
def test_flipped_byte_in_a_page_or_the_footer_is_an_integrity_error(spark, keys, key_dir, encrypted, tmp_path, where):
    path, manifest = encrypted
    target = path / manifest.files[0].name
    _flip(target, _page_offset(target, keys) if where == "page" else target.stat().st_size - 30)
    kd = fm.KeyDirectory.mounted(key_dir)
    with pytest.raises(IntegrityError, match="does not match the manifest"):
        fm.decrypt_dataset(spark, path, tmp_path / "out", kd, keys)
    # Without the manifest check, Parquet's own GCM authentication still refuses the file.
    with pytest.raises(IntegrityError, match=r"dataset 'visits'.*(GCM tag check failed|Tag mismatch)"):
        fm.decrypt_dataset(spark, path, tmp_path / "out", kd, keys, verify=False)
    assert not (tmp_path / "out").exists()


def test_replaced_or_deleted_part_file_is_an_integrity_error(spark, visits, keys, key_dir, encrypted, tmp_path):
    path, manifest = encrypted
    older = tmp_path / "older"
    spec = env.parse_encryption_spec(SPEC)
    old_manifest = fm.encrypt_dataset(visits.limit(50), older, spec, fm.KeyDirectory.mounted(key_dir), keys)
    victim = path / manifest.files[0].name
    victim.write_bytes((older / old_manifest.files[0].name).read_bytes())  # same dataset, same keys, older data
    victim.with_name(f".{victim.name}.crc").unlink(missing_ok=True)
    kd = fm.KeyDirectory.mounted(key_dir)
    with pytest.raises(IntegrityError, match=f"{victim.name} does not match the manifest"):
        fm.decrypt_dataset(spark, path, tmp_path / "out", kd, keys)
    victim.unlink()
    with pytest.raises(IntegrityError, match=f"{victim.name} listed in the manifest is missing"):
        fm.decrypt_dataset(spark, path, tmp_path / "out", kd, keys)
    assert not (tmp_path / "out").exists()


def test_wrong_disabled_and_rotated_master_keys(spark, visits, keys, key_dir, add_key, encrypted, tmp_path):
    """Spark's misleading CANNOT_READ_FILE_FOOTER becomes KeyUnavailable / IntegrityError; no stale KMS cache."""
    path, manifest = encrypted
    kd = fm.KeyDirectory.mounted(key_dir)
    with fm.translating(manifest):
        assert fm.read_dataset(spark, path, kd).count() == visits.count()  # fills parquet-mr's caches
    add_key(key_dir, "visits-kek", 2)  # rotation: old files stay readable, new files use v2
    newer = tmp_path / "newer"
    fm.encrypt_dataset(visits, newer, env.parse_encryption_spec(SPEC), kd, keys)
    (key_dir / "visits-kek.v1.disabled").touch()
    with pytest.raises(KeyUnavailable, match="key 'visits-kek' version 1 is missing or disabled") as info:
        with fm.translating(manifest):
            fm.read_dataset(spark, path, kd).count()
    assert info.value.key_id == "visits-kek"
    with fm.translating():
        assert fm.read_dataset(spark, newer, kd).count() == visits.count()
    (key_dir / "visits-kek.v1.disabled").unlink()
    (key_dir / "visits-kek.v1").write_text(base64.b64encode(os.urandom(32)).decode())  # a different key
    with pytest.raises(IntegrityError, match="does not unwrap this file's key"):
        with fm.translating(manifest):
            fm.read_dataset(spark, path, kd).count()
