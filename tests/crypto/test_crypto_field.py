"""Field mode: per-value AES-256-GCM in the JVM, on clinic_visits rows, against an independent decryptor."""

from __future__ import annotations

import struct
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privstage.crypto import envelope as env
from privstage.crypto import field as fm
from privstage.crypto.guards import (
    CiphertextWellFormedGuard,
    DecryptReadyGuard,
    FilesMatchManifestGuard,
    NoPlaintextInOutputGuard,
)
from privstage.crypto.subjects import SubjectKeyStore
from privstage.errors import IntegrityError, KeyUnavailable
from privstage.guards.base import GuardContext

COLUMNS = ["ssn", "name", "email", "date_of_birth", "cost"]


def _spec(**extra) -> env.FieldEncryptionSpec:
    data = {"mode": "field", "dataset": "visits", "kek_id": "visits-kek", "columns": COLUMNS, "row_key": "visit_id"}
    return env.parse_encryption_spec(data | extra)


def _rows(df) -> list[tuple]:
    return sorted(tuple(r) for r in df.collect())


@pytest.fixture()
def encrypted(spark, visits, keys, tmp_path: Path):
    """(dataset directory, manifest) of the visits encrypted in field mode."""
    path = tmp_path / "visits.enc"
    manifest = fm.encrypt_dataset(visits, path, _spec(), keys, spark=spark)
    return path, manifest


def test_round_trip_restores_every_value_and_type(spark, visits, keys, encrypted, tmp_path, leaks):
    path, manifest = encrypted
    stored = spark.read.parquet(str(path))
    assert [f.dataType.simpleString() for f in stored.schema if f.name in COLUMNS] == ["binary"] * len(COLUMNS)
    assert len(manifest.files) == 2 and manifest.kek_versions() == {"visits-kek": [1]}
    fm.decrypt_dataset(path, tmp_path / "clear", keys, spark=spark)
    clear = spark.read.parquet(str(tmp_path / "clear"))
    assert clear.schema == visits.schema
    assert _rows(clear) == _rows(visits)  # nulls in email come back as nulls
    deks = list(fm.plan_decrypt(manifest, keys).deks.values())
    assert leaks((path / env.ENCRYPTION_MANIFEST).read_text(), [*deks, keys.get("visits-kek").material()]) == []


def test_independent_decryptor_reads_the_documented_format(visits_pdf, keys, encrypted):
    """Python's AESGCM decrypts every value from the Parquet files with the documented header and AAD."""
    path, manifest = encrypted
    deks = fm.plan_decrypt(manifest, keys).deks
    table = pq.read_table(path).to_pandas()
    expected = visits_pdf.set_index("visit_id")
    for _, row in table.iterrows():
        for column in ("ssn", "name", "email"):
            blob = row[column]
            assert blob[0] == 1 and struct.unpack(">I", blob[1:5])[0] == 1
            plain = AESGCM(deks[column]).decrypt(blob[5:17], blob[17:], fm.aad(blob, "visits", column, row["visit_id"]))
            want = expected.at[row["visit_id"], column]
            assert plain == (b"\x00" if want is None else b"\x01" + want.encode())
            assert len(blob) == fm.OVERHEAD + (0 if want is None else len(want.encode()))
    assert len(table) == len(visits_pdf)


def _tamper_cases():
    from pyspark.sql import functions as F

    def flip(col: str, pos: int):  # pos is 1-based; negative counts from the end
        c = F.col(col)
        at = F.lit(pos) if pos > 0 else F.length(c) + pos + 1
        byte = F.substring(c, at, 1)
        flipped = F.unhex(F.lpad(F.hex(F.conv(F.hex(byte), 16, 10).cast("int").bitwiseXOR(1)), 2, "0"))
        return F.concat(
            F.substring(c, 1, at - 1),
            flipped,
            F.expr(f"substring({col}, {'' if pos > 0 else 'length(' + col + ') +'} {pos} + 1)"),
        )

    return {
        "byte in value": lambda df: df.withColumn("ssn", flip("ssn", 20)),
        "byte in GCM tag": lambda df: df.withColumn("ssn", flip("ssn", -1)),
        "key version in header": lambda df: df.withColumn("ssn", flip("ssn", 5)),
        "truncated value": lambda df: df.withColumn("ssn", F.expr("substring(ssn, 1, length(ssn) - 1)")),
        "null in place of a value": lambda df: df.withColumn("ssn", F.lit(None).cast("binary")),
        "moved to another column": lambda df: df.withColumn("name", F.col("ssn")),
        "swapped between rows": lambda df: df.withColumn(
            "ssn", F.first("ssn").over(__import__("pyspark.sql.window", fromlist=["Window"]).Window.orderBy("visit_id"))
        ),
    }


@pytest.mark.parametrize("case", list(_tamper_cases()))
def test_every_tamper_case_raises_integrity_error_naming_dataset_column_and_row(spark, keys, encrypted, case):
    path, manifest = encrypted
    tampered = _tamper_cases()[case](spark.read.parquet(str(path)))
    column = "name" if case == "moved to another column" else "ssn"
    with pytest.raises(IntegrityError, match=rf"dataset 'visits', column '{column}', row key 'V\d+'") as info:
        with fm.translating():
            fm.decrypt(tampered, fm.plan_decrypt(manifest, keys), spark=spark).collect()
    assert info.value.retryable is False


def test_tampered_dataset_writes_nothing(spark, keys, encrypted, tmp_path):
    """Even with a forged file list, a flipped value fails and no output directory is left."""
    path, manifest = encrypted
    first = path / manifest.files[0].name
    table = pq.read_table(first)
    ssn = table.column("ssn").to_pylist()
    ssn[3] = ssn[3][:-1] + bytes([ssn[3][-1] ^ 0x80])
    pq.write_table(table.set_column(table.schema.get_field_index("ssn"), "ssn", [ssn]), first)
    first.with_name(f".{first.name}.crc").unlink()  # Hadoop's checksum file would give the edit away
    with pytest.raises(IntegrityError, match="does not match the manifest"):
        fm.decrypt_dataset(path, tmp_path / "out1", keys, spark=spark)
    forged = manifest.model_copy(update={"files": env.file_entries(path)})  # an attacker fixes the file list
    env.write_manifest(path, forged)
    with pytest.raises(IntegrityError, match="manifest was modified"):
        fm.decrypt_dataset(path, tmp_path / "out2", keys, spark=spark)
    # Even past the manifest (re-sealed by a holder of the KEK), the value itself does not authenticate.
    env.write_manifest(path, env.seal_manifest(forged, keys))
    with pytest.raises(IntegrityError, match="column 'ssn'"):
        fm.decrypt_dataset(path, tmp_path / "out2", keys, spark=spark)
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists()


def test_keys_never_reach_the_plan_conf_or_event_log(spark, visits, keys, event_log_text, leaks):
    plan = fm.plan_encrypt(_spec(), visits.schema, keys)
    out = fm.encrypt(visits, plan, spark=spark)
    back = fm.decrypt(out, fm.plan_decrypt(plan.manifest, keys), spark=spark)
    back.count()  # runs both, so the event log records both plans
    secrets = [*plan.deks.values(), keys.get("visits-kek").material()]
    for df in (out, back):
        text = df._jdf.queryExecution().toString()
        assert "privstage_field_encrypt_v1" in text or "privstage_field_decrypt_v1" in text
        assert leaks(text, secrets) == []
    assert leaks(repr(spark.sparkContext.getConf().getAll()), secrets) == []
    events = event_log_text()
    assert "privstage_field_decrypt_v1" in events
    assert leaks(events, secrets) == []


def test_rotation_rewrap_keeps_data_files_and_new_writes_use_the_new_version(
    spark, visits, keys, key_dir, add_key, encrypted, tmp_path
):
    path, manifest = encrypted
    before = env.file_entries(path)
    add_key(key_dir, "visits-kek", 2)
    rewrapped = env.rewrap(env.read_manifest(path), keys)
    env.write_manifest(path, rewrapped)
    assert env.file_entries(path) == before  # no data file rewritten
    assert rewrapped.kek_versions() == {"visits-kek": [2]} and rewrapped.seal.kek_version == 2
    (key_dir / "visits-kek.v1.disabled").touch()
    assert DecryptReadyGuard(path, keys).check(_ctx(visits))[-1].success
    fm.decrypt_dataset(path, tmp_path / "clear", keys, spark=spark)
    assert spark.read.parquet(str(tmp_path / "clear")).count() == visits.count()
    with pytest.raises(KeyUnavailable, match="visits-kek"):
        fm.plan_decrypt(manifest, keys)  # the pre-rotation manifest needs the disabled version
    newer = fm.plan_encrypt(_spec(), visits.schema, keys).manifest
    assert newer.kek_versions() == {"visits-kek": [2]}


def _ctx(data, input_data=None, phase="before"):
    return GuardContext(stage="encrypt", phase=phase, data=data, input_data=input_data)


def test_guards_accept_ciphertext_and_reject_plaintext(spark, visits, keys, encrypted, tmp_path):
    path, manifest = encrypted
    stored = spark.read.parquet(str(path))
    after = CiphertextWellFormedGuard(manifest).check(_ctx(stored, visits, "after"))
    assert [o.success for o in after] == [True] * len(COLUMNS)
    assert all(o.success for o in NoPlaintextInOutputGuard(("ssn", "name")).check(_ctx(stored, visits, "after")))
    leaky = visits.withColumn("ssn", visits["ssn"].cast("binary"))  # an "encrypt" that forgot to encrypt
    bad = CiphertextWellFormedGuard(manifest.model_copy(update={"columns": manifest.columns[:1]}))
    assert not bad.check(_ctx(leaky, visits, "after"))[0].success
    leak = NoPlaintextInOutputGuard(("ssn",)).check(_ctx(leaky, visits, "after"))[0]
    assert not leak.success and leak.details["leaked"] == visits.count()
    assert all(o.success for o in FilesMatchManifestGuard(path, keys).check(_ctx(stored)))
    (path / manifest.files[1].name).unlink()
    assert not FilesMatchManifestGuard(path, keys).check(_ctx(stored))[0].success
    assert [o.check for o in DecryptReadyGuard(tmp_path, keys).check(_ctx(stored)) if not o.success] == [
        "manifest_present"
    ]


def test_shredding_a_subject_makes_only_that_subject_unreadable(spark, visits, keys, tmp_path):
    store = SubjectKeyStore(tmp_path / "subject-keys.json", keys, "visits-kek")
    spec = _spec(columns=["ssn", "name"], subject_column="patient_id")
    path = tmp_path / "visits.enc"
    manifest = fm.encrypt_dataset(visits, path, spec, keys, spark=spark, subjects=store)
    subjects = sorted({r[0] for r in visits.select("patient_id").collect()})
    assert len(store) == len(subjects) and all(c.wrapped_dek is None for c in manifest.columns)
    assert "P" not in "".join(store.path.read_text().split('"subjects"')[1][:200])  # refs, not patient ids
    victim = subjects[0]
    assert store.shred(victim) and not store.shred(victim)
    stored = spark.read.parquet(str(path))
    plan = fm.plan_decrypt(manifest, keys)
    with pytest.raises(KeyUnavailable, match=r"column '(ssn|name)'.*shredded"):
        with fm.translating():
            fm.decrypt(stored, plan, spark=spark, subjects=store).collect()
    others = fm.decrypt(stored.where(stored.patient_id != victim), plan, spark=spark, subjects=store)
    with fm.translating():
        assert _rows(others) == _rows(visits.where(visits.patient_id != victim))
    # A copy made before shredding is just as unreadable: the key, not the file, is what was destroyed.
    with pytest.raises(KeyUnavailable):
        with fm.translating():
            fm.decrypt(stored.where(stored.patient_id == victim), plan, spark=spark, subjects=store).collect()


def test_builtin_fallback_writes_the_same_format(spark, visits, visits_pdf, keys):
    """Without the jar, encryption composes Spark's aes_encrypt (GCM, AAD) into the very same bytes."""
    plan = fm.plan_encrypt(_spec(columns=["ssn", "email"]), visits.schema, keys)
    sealed = fm.encrypt(visits, plan, spark=spark, impl="builtin")
    rows = sealed.select("visit_id", "ssn", "email").collect()
    expected = visits_pdf.set_index("visit_id")
    for row in rows[:50]:
        for column in ("ssn", "email"):
            blob = bytes(row[column])
            plain = AESGCM(plan.deks[column]).decrypt(
                blob[5:17], blob[17:], fm.aad(blob, "visits", column, row["visit_id"])
            )
            want = expected.at[row["visit_id"], column]
            assert plain == (b"\x00" if want is None else b"\x01" + want.encode())
    back = fm.decrypt(sealed, fm.plan_decrypt(plan.manifest, keys), spark=spark)
    with fm.translating():
        assert _rows(back) == _rows(visits)
