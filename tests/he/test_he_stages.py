"""The HE stages end to end: the multi_clinic_sums example through the CLI (in process), and its failures.

One module-scoped run of the example (key holder, three clinics, aggregator, key holder again) is shared:
the tests read its committed artifacts, or copy the working folder and break one thing in the copy.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from he_support import scan_for_secret_key

from privstage.cli import main
from privstage.engine import RunContext, run_pipeline, validate_pipeline
from privstage.errors import (
    GuardFailed,
    HEParameterError,
    IntegrityError,
    KeyUnavailable,
    OverflowRisk,
    SpecError,
)
from privstage.he import KeyHolder
from privstage.keys import FileKeyProvider
from privstage.spec import load_spec, parse_spec
from privstage.stages._he import PUBLIC_CONTEXT_FILE, ROUND_FILE, load_round, secret_path

EXAMPLE = Path(__file__).resolve().parents[2] / "pipelines" / "multi_clinic_sums"
sys.path.insert(0, str(EXAMPLE))
from prepare import PARTIES, prepare, run_all  # noqa: E402


def _cli(args) -> int:
    return main([*args, "--no-progress"])


@pytest.fixture(scope="module")
def example(spark, tmp_path_factory) -> Path:
    root = prepare(tmp_path_factory.mktemp("multi-clinic") / "work", rows=400)
    assert run_all(root, _cli) == [0] * 6
    return root


def _spec(name: str, root: Path):
    return load_spec(EXAMPLE / name, base_dir=root)


def _copy(example: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(example, target)
    return target


def _holder(root: Path) -> KeyHolder:
    spec = _spec("key_holder.yaml", root)
    round_ = load_round(spec, spec.stage("release").context, stage="release")
    sealed = secret_path(spec, None, round_.fingerprint).read_bytes()
    kek = FileKeyProvider(root / "keys" / "key_holder").get("he-kek")
    return KeyHolder.unseal(sealed, kek, round_.params)


def test_example_totals_and_averages_equal_a_plain_spark_sum(spark, example):
    from pyspark.sql import functions as F

    visits = spark.read.parquet(*[str(example / "data" / c / "visits") for c in ("C01", "C02", "C03")])
    plain = {
        r["diagnosis_code"]: (r["cost"], r["visits"])
        for r in visits.groupBy("diagnosis_code")
        .agg(F.sum(F.col("cost").cast("decimal(38,2)")).alias("cost"), F.count(F.lit(1)).alias("visits"))
        .collect()
    }
    released = pq.read_table(example / "key_holder" / "release").to_pylist()
    assert len(released) == 40 and len(plain) >= 10  # every declared diagnosis, whether a clinic saw it or not
    for row in released:
        cost, count = plain.get(row["diagnosis_code"], (Decimal("0.00"), 0))
        assert (row["total_cost"], row["visits"]) == (cost, count)  # BFV: exact, in cents
        expected = None if count == 0 else (cost / count).quantize(Decimal("0.01"))
        assert row["average_cost"] == expected
    report = json.loads((example / "key_holder" / "release" / "_he_release.json").read_text())
    assert report["parties"] == sorted(PARTIES.values()) and report["scheme"] == "bfv"
    manifest = json.loads((example / "key_holder" / "release" / "_privstage_manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["rows_out"] == 40


def test_no_party_or_aggregator_artifact_holds_secret_key_material(example):
    holder = _holder(example)
    shipped = [
        example / "clinic_c01",
        example / "clinic_c02",
        example / "clinic_c03",
        example / "aggregator",
        example / ".privstage" / "aggregator",
        example / "key_holder" / "round",  # what the key holder ships to parties and the aggregator
    ]
    for folder in shipped:
        assert scan_for_secret_key(folder, holder) == [], folder
    # positive control: the scanner finds the secret context when it is planted in a party's output
    planted = example.parent / "planted"
    shutil.copytree(example / "clinic_c02", planted)
    (planted / "contribution" / "debug.bin").write_bytes(holder._context.serialize(save_secret_key=True))
    assert scan_for_secret_key(planted, holder) == ["contribution/debug.bin"]


def test_plan_time_parameter_checks_name_the_limit(example):
    text = (EXAMPLE / "key_holder.yaml").read_text()
    insecure = text.replace(
        "poly_modulus_degree: 8192, coeff_mod_bit_sizes: [60, 60, 60]",
        "poly_modulus_degree: 4096, coeff_mod_bit_sizes: [60, 60]",
    )
    with pytest.raises(HEParameterError, match="at most 109 bits") as info:
        validate_pipeline(parse_spec(insecure, base_dir=example), stages=["round_keys"])
    assert info.value.stage == "round_keys"
    overflow = text.replace('bound: "1000000"', 'bound: "2000000000"')
    with pytest.raises(OverflowRisk, match=r"\(t-1\)/2 = 549755740160"):
        validate_pipeline(parse_spec(overflow, base_dir=example), stages=["round_keys"])
    with pytest.raises(SpecError, match=r"round\.params.*unknown HE scheme 'paillier'"):
        parse_spec(text.replace("{scheme: bfv,", "{scheme: paillier,"), base_dir=example)
    pinned = (EXAMPLE / "clinic_c01.yaml").read_text() + f"    expect_fingerprint: {'f' * 64}\n"
    with pytest.raises(IntegrityError, match="party 'clinic-c01': the public context is not the pinned one"):
        validate_pipeline(parse_spec(pinned, base_dir=example))


@pytest.mark.parametrize(("spec_name", "role"), [("clinic_c01.yaml", "party"), ("aggregator.yaml", "aggregator")])
def test_a_party_or_aggregator_handed_a_secret_context_refuses_it(example, tmp_path, spec_name, role):
    root = _copy(example, tmp_path)
    holder = _holder(root)
    secret = holder._context.serialize(save_secret_key=True)
    round_dir = root / "key_holder" / "round"
    (round_dir / PUBLIC_CONTEXT_FILE).write_bytes(secret)
    doc = json.loads((round_dir / ROUND_FILE).read_text())
    import hashlib

    doc["context_fingerprint"] = hashlib.sha256(secret).hexdigest()  # a consistent, but secret, context
    (round_dir / ROUND_FILE).write_text(json.dumps(doc))
    with pytest.raises(HEParameterError, match=f"the {role} was handed a context that holds a secret key"):
        validate_pipeline(_spec(spec_name, root))


def _aggregate(root: Path, run_key: str, spec=None):
    spec = spec or _spec("aggregator.yaml", root)
    return run_pipeline(spec, context=RunContext(run_key=run_key), progress=False)


def _rewrite_ciphertext(contribution: Path) -> None:
    part = next(contribution.glob("part-*.parquet"))
    table = pq.read_table(part)
    blob = bytearray(table.column("ciphertext")[0].as_py())
    blob[len(blob) // 2] ^= 0x01
    import pyarrow as pa

    table = table.set_column(table.schema.get_field_index("ciphertext"), "ciphertext", pa.array([bytes(blob)]))
    part.unlink()
    for crc in contribution.glob(".*.crc"):
        crc.unlink()
    pq.write_table(table, part)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("tampered", r"party 'clinic-c02': \d+ (missing|unlisted)"),
        ("truncated", r"party 'clinic-c02': 1 missing"),
        ("replayed", r"party 'clinic-c0\d': contribution .* already consumed by another run \(replay\)"),
    ],
)
def test_integrity_failures_name_the_party_and_write_nothing(example, tmp_path, damage, message):
    root = _copy(example, tmp_path)
    shutil.rmtree(root / "aggregator" / "aggregate")
    contribution = root / "clinic_c02" / "contribution"
    if damage == "replayed":
        pass  # the copy's nonce store holds the example's consumption, by another run (run key)
    else:
        (root / ".privstage" / "aggregator" / "ledger.db").unlink()  # fresh nonces: not a replay
        if damage == "tampered":
            _rewrite_ciphertext(contribution)
        else:
            for part in contribution.glob("*part-*"):
                part.unlink()
    with pytest.raises(IntegrityError, match=message):
        _aggregate(root, run_key=f"test/{damage}")
    assert not (root / "aggregator" / "aggregate").exists()
    assert not list((root / "aggregator").glob(".privstage-staging/*"))


def test_a_forged_manifest_and_a_mismatched_context_are_refused(example, tmp_path):
    root = _copy(example, tmp_path)
    shutil.rmtree(root / "aggregator" / "aggregate")
    (root / ".privstage" / "aggregator" / "ledger.db").unlink()  # a fresh nonce store: not a replay
    manifest_file = root / "clinic_c03" / "contribution" / "_he_manifest.json"
    forged = json.loads(manifest_file.read_text())
    forged["body"]["rows"] += 1
    manifest_file.write_text(json.dumps(forged))
    for party in PARTIES.values():  # this aggregator verifies party manifests itself
        shutil.copy(root / "keys" / "key_holder" / f"he-party-{party}", root / "keys" / "aggregator")
    text = (EXAMPLE / "aggregator.yaml").read_text() + (
        "    party_keys: {clinic-c01: he-party-clinic-c01, clinic-c02: he-party-clinic-c02, "
        "clinic-c03: he-party-clinic-c03}\n"
    )
    with pytest.raises(IntegrityError, match="party 'clinic-c03': manifest authentication failed"):
        _aggregate(root, "test/forged", parse_spec(text, base_dir=root))
    manifest_file.write_text(
        json.dumps(json.loads((example / "clinic_c03" / "contribution" / "_he_manifest.json").read_text()))
    )

    # the key holder starts a new round (new keys): contributions made under the old context no longer fit
    assert (
        main(
            ["run", str(EXAMPLE / "key_holder.yaml"), "--base-dir", str(root), "--stage", "round_keys", "--no-progress"]
        )
        == 0
    )
    with pytest.raises(
        IntegrityError, match=r"party 'clinic-c0\d': ciphertexts were made under another public context"
    ):
        _aggregate(root, "test/mismatch")
    assert not (root / "aggregator" / "aggregate").exists()


def test_key_holder_without_the_sealing_key_and_an_empty_party(example, tmp_path):
    root = _copy(example, tmp_path)
    (root / "keys" / "key_holder" / "he-kek").write_text("QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=\n")
    with pytest.raises(KeyUnavailable, match="'he-kek' v1 does not open the sealed key-holder context"):
        validate_pipeline(_spec("key_holder.yaml", root), stages=["release"])
    data = root / "data" / "C01" / "visits"
    table = pq.read_table(next(data.glob("*.parquet")))
    shutil.rmtree(data)
    data.mkdir()
    pq.write_table(table.slice(0, 0), data / "part-00000.parquet")
    shutil.rmtree(root / "clinic_c01" / "contribution")
    with pytest.raises(GuardFailed, match="not_empty"):
        run_pipeline(_spec("clinic_c01.yaml", root), progress=False)
    assert not (root / "clinic_c01" / "contribution").exists()


def test_dp_release_spends_once_from_the_ledger(example, tmp_path):
    root = _copy(example, tmp_path)
    text = (EXAMPLE / "key_holder.yaml").read_text().replace("path: key_holder/release", "path: key_holder/release_dp")
    text += (
        "    dp:\n"
        "      budget: {dataset: clinic-costs, period: '2025', total: {epsilon: 1}}\n"
        "      noise:\n"
        "        total_cost: {epsilon: 0.5, sensitivity: 5000}\n"
        "        visits: {epsilon: 0.5, sensitivity: 1}\n"
    )
    text = text.replace("  - name: release\n", "  - name: release_dp\n")
    spec = parse_spec(text, base_dir=root)
    context = RunContext(run_key="test/dp/1")
    first = run_pipeline(spec, stages=["release_dp"], context=context, progress=False)
    out = root / "key_holder" / "release_dp"
    released = (out / "_he_release.json").read_bytes()
    doc = json.loads(released)
    assert set(doc["noise"]) == {"total_cost", "visits"} and doc["ledger_key"].startswith(
        "multi_clinic_key_holder/release_dp"
    )
    exact = {r["diagnosis_code"]: r for r in pq.read_table(example / "key_holder" / "release").to_pylist()}
    noisy = pq.read_table(out).to_pylist()
    assert any(r["visits"] != exact[r["diagnosis_code"]]["visits"] for r in noisy)  # P(no noise at all) < 1e-9
    assert all(r["total_cost"] == r["total_cost"].quantize(Decimal("0.01")) for r in noisy)
    assert first.stages[0].details["he"]["dp"]["budget"]["epsilon"] == "1"
    # a retry of the same run reconnects: same bytes, no second spend
    again = run_pipeline(spec, stages=["release_dp"], context=context, progress=False)
    assert again.stages[0].status == "reused" and (out / "_he_release.json").read_bytes() == released


def test_a_ckks_round_releases_the_plain_sums_within_the_declared_bound(spark, example, tmp_path):
    """The same stages with CKKS (one clinic): decryptions lie within the plan's bound of the grid, and the
    released (rounded) values equal a plain Spark sum of the clinic's visits."""
    from pyspark.sql import functions as F

    root = tmp_path / "ckks"
    for folder in ("data", "keys"):
        shutil.copytree(example / folder, root / folder)
    ckks = "{scheme: ckks, poly_modulus_degree: 8192, coeff_mod_bit_sizes: [60, 60], scale_bits: 30}"
    holder_text = (EXAMPLE / "key_holder.yaml").read_text()
    holder_text = re.sub(r"params: \{scheme: bfv[^}]*\}", f"params: {ckks}", holder_text)
    holder_text = holder_text.replace("parties: [clinic-c01, clinic-c02, clinic-c03]", "parties: [clinic-c01]")
    holder_text = re.sub(r"\n      clinic-c0[23]: he-party-clinic-c0[23]", "", holder_text)
    holder = parse_spec(holder_text, base_dir=root)
    aggregator_text = re.sub(
        r"\n      - \{path: clinic_c0[23]/contribution\}", "", (EXAMPLE / "aggregator.yaml").read_text()
    )
    run_pipeline(holder, stages=["round_keys"], progress=False)
    run_pipeline(_spec("clinic_c01.yaml", root), progress=False)
    run_pipeline(parse_spec(aggregator_text, base_dir=root), progress=False)
    run_pipeline(holder, stages=["release"], progress=False)

    plain = {
        r["diagnosis_code"]: (r["cost"], r["visits"])
        for r in spark.read.parquet(str(root / "data" / "C01" / "visits"))
        .groupBy("diagnosis_code")
        .agg(F.sum(F.col("cost").cast("decimal(38,2)")).alias("cost"), F.count(F.lit(1)).alias("visits"))
        .collect()
    }
    for row in pq.read_table(root / "key_holder" / "release").to_pylist():
        assert (row["total_cost"], row["visits"]) == plain.get(row["diagnosis_code"], (Decimal("0.00"), 0))
    doc = json.loads((root / "key_holder" / "release" / "_he_release.json").read_text())
    assert doc["scheme"] == "ckks" and 0 < float(doc["error_bound"]["total_cost"]) < 0.005
