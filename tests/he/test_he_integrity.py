"""Bad input: forged, tampered, truncated, replayed, empty, mismatched-context and over-bound contributions.

Each case starts from copies of a committed three-party run (the ``clinic_run`` fixture) and must end
in a typed error that names the party, before anything is committed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from he_support import SCHEMA, clinic_layout, clinic_rows, key

from privstage.errors import GuardFailed, IntegrityError, OverflowRisk
from privstage.he import Aggregator, KeyHolder, Manifest, Party, ReplayGuard, decrypt_sums
from privstage.he.manifest import MANIFEST_FILE


@pytest.fixture()
def run(spark, clinic_run, tmp_path):
    """Copies of the CKKS three-party run's contributions (tests may damage them)."""
    _, details, _ = clinic_run("ckks", 3)
    copies = []
    for path in details["parties"]:
        target = tmp_path / "in" / Path(path).name
        shutil.copytree(path, target)
        copies.append(str(target))
    return {**details, "copies": copies, "tmp": tmp_path, "spark": spark}


def _aggregate(holder, run, paths, *, round_id="round-1", plan=None, **kwargs):
    keys = run["keys"]
    aggregator = Aggregator("hub", holder.public_context().data, plan=plan or run["plan"], key=keys.aggregator)
    options = {"party_keys": keys.by_id, "party_key_ids": keys.ids, **kwargs}
    out = str(run["tmp"] / f"agg-{len(list(run['tmp'].glob('agg-*')))}")
    return aggregator.aggregate(
        run["spark"], paths, out, layout=clinic_layout(holder.params), round_id=round_id, **options
    )


def _parquet(dataset: str) -> Path:
    (file,) = [p for p in Path(dataset).glob("*.parquet")]
    return file


def _rewrite_ciphertext(dataset: str, change) -> None:
    file = _parquet(dataset)
    table = pq.read_table(file)
    cells = table.column("ciphertext").to_pylist()
    cells[0] = change(cells[0])
    table = table.set_column(table.schema.get_field_index("ciphertext"), "ciphertext", pa.array(cells, pa.binary()))
    pq.write_table(table, file, compression="none")
    file.with_name(f".{file.name}.crc").unlink()  # an attacker rewrites the file and drops Hadoop's checksum


def _resign(dataset: str, party_key, **changes) -> None:
    """What a malicious party (which holds its own key) can do: rewrite its manifest and sign it."""
    manifest = Manifest.read(dataset, who="test")
    body = {k: v for k, v in manifest.body.items() if k not in ("key_id", "key_version")}
    Manifest.sign({**body, **changes}, party_key).write(dataset)


def _digests(dataset: str) -> list[list]:
    import hashlib

    table = pq.read_table(_parquet(dataset))
    return sorted(
        [c, hashlib.sha256(b).hexdigest()]
        for c, b in zip(table.column("chunk").to_pylist(), table.column("ciphertext").to_pylist(), strict=True)
    )


def test_forged_manifest(ckks_holder, run):
    path = Path(run["copies"][1]) / MANIFEST_FILE
    data = json.loads(path.read_text())
    data["body"]["rows"] += 1
    path.write_text(json.dumps(data))
    with pytest.raises(IntegrityError, match="party 'clinic-1': manifest authentication failed"):
        _aggregate(ckks_holder, run, run["copies"])


def test_manifest_signed_with_another_partys_key(ckks_holder, run):
    _resign(run["copies"][2], run["keys"].party["clinic-0"])
    with pytest.raises(
        IntegrityError, match="party 'clinic-2': manifest is authenticated with key 'he-party-clinic-0'"
    ):
        _aggregate(ckks_holder, run, run["copies"])


def test_tampered_ciphertext(ckks_holder, run):
    _rewrite_ciphertext(run["copies"][1], lambda b: b[:5000] + bytes([b[5000] ^ 1]) + b[5001:])
    with pytest.raises(IntegrityError) as info:
        _aggregate(ckks_holder, run, run["copies"])
    assert "party 'clinic-1': 1 missing, 1 unlisted" in str(info.value)
    assert "clinic-0" not in str(info.value) and "clinic-2" not in str(info.value)


def test_ciphertext_relabelled_with_another_layout(ckks_holder, run):
    file = _parquet(run["copies"][0])
    table = pq.read_table(file)
    index = table.schema.get_field_index("layout_id")
    table = table.set_column(index, "layout_id", pa.array(["0" * 32] * table.num_rows, pa.string()))
    pq.write_table(table, file, compression="none")
    file.with_name(f".{file.name}.crc").unlink()
    with pytest.raises(IntegrityError, match="party 'clinic-0': 1 missing, 1 unlisted"):
        _aggregate(ckks_holder, run, run["copies"])


def test_damaged_file_names_the_party(ckks_holder, run):
    file = _parquet(run["copies"][2])
    data = bytearray(file.read_bytes())
    data[100] ^= 0xFF  # Hadoop's checksum no longer matches
    file.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="party 'clinic-2': the ciphertext dataset cannot be read"):
        _aggregate(ckks_holder, run, run["copies"])


def test_truncated_dataset(ckks_holder, run):
    _parquet(run["copies"][0]).unlink()
    with pytest.raises(IntegrityError, match="party 'clinic-0': 1 missing"):
        _aggregate(ckks_holder, run, run["copies"])


def test_truncated_ciphertext_even_with_a_matching_manifest(ckks_holder, run):
    """A party that truncates its own ciphertext and re-signs: the executors refuse to parse it."""
    _rewrite_ciphertext(run["copies"][2], lambda b: b[: len(b) // 2])
    _resign(run["copies"][2], run["keys"].party["clinic-2"], ciphertext_digests=_digests(run["copies"][2]))
    with pytest.raises(IntegrityError, match="party 'clinic-2': does not deserialize under the public context"):
        _aggregate(ckks_holder, run, run["copies"])


def test_replayed_contributions(ckks_holder, run):
    twice = [run["copies"][0], run["copies"][1], run["copies"][1]]
    with pytest.raises(IntegrityError, match="party 'clinic-1': contributed twice to round 'round-1'"):
        _aggregate(ckks_holder, run, twice)
    with pytest.raises(IntegrityError, match="party 'clinic-0': contribution belongs to another aggregation round"):
        _aggregate(ckks_holder, run, run["copies"], round_id="round-2")
    guard = ReplayGuard(run["tmp"] / "consumed")
    _aggregate(ckks_holder, run, run["copies"], replay_guard=guard)
    with pytest.raises(IntegrityError, match=r"party 'clinic-0': contribution .* was already consumed"):
        _aggregate(ckks_holder, run, run["copies"], replay_guard=ReplayGuard(run["tmp"] / "consumed"))


def test_missing_unknown_and_extra_parties(ckks_holder, run):
    with pytest.raises(IntegrityError, match=r"missing \['clinic-2'\]"):
        _aggregate(ckks_holder, run, run["copies"][:2], expected_parties=["clinic-0", "clinic-1", "clinic-2"])
    with pytest.raises(IntegrityError, match="party 'clinic-1': no verification key"):
        _aggregate(ckks_holder, run, run["copies"], party_key_ids={"clinic-0": "he-party-clinic-0"})
    two_party_plan = clinic_layout(ckks_holder.params).plan(ckks_holder.params, parties=2)
    with pytest.raises(OverflowRisk, match="3 parties contributed; the plan covers at most 2"):
        _aggregate(ckks_holder, run, run["copies"], plan=two_party_plan)


def test_mismatched_context(ckks_holder, run):
    other = KeyHolder.create(ckks_holder.params)
    with pytest.raises(IntegrityError, match="party 'clinic-0': ciphertexts were made under another public context"):
        _aggregate(other, run, run["copies"])


def test_ciphertext_under_another_key_is_caught_at_decryption(spark, ckks_holder, run):
    """Same parameters, another key, a manifest that lies about the context: only decryption can tell."""
    other = KeyHolder.create(ckks_holder.params)
    layout = clinic_layout(ckks_holder.params)
    party = Party("clinic-1", other.public_context().data, plan=run["plan"], key=run["keys"].party["clinic-1"])
    frame = spark.createDataFrame(clinic_rows(1), SCHEMA)
    rogue = str(run["tmp"] / "rogue")
    party.write(
        party.pack_groups(frame, group_column="diagnosis", layout=layout), rogue, layout=layout, round_id="round-1"
    )
    _resign(rogue, run["keys"].party["clinic-1"], context_fingerprint=ckks_holder.fingerprint)
    aggregate = _aggregate(ckks_holder, run, [run["copies"][0], rogue, run["copies"][2]])
    keys = run["keys"]
    with pytest.raises(IntegrityError, match=r"aggregate 'hub': .*(outside parties|off the declared grid|padding)"):
        decrypt_sums(
            ckks_holder,
            spark,
            aggregate,
            layout=layout,
            plan=run["plan"],
            round_id="round-1",
            aggregator_keys={keys.aggregator.key_id: keys.aggregator},
            aggregator_key_id=keys.aggregator.key_id,
            expected_parties=["clinic-0", "clinic-1", "clinic-2"],
        )


def test_key_holder_checks_the_aggregate(spark, ckks_holder, run):
    keys = run["keys"]
    layout = clinic_layout(ckks_holder.params)

    def decrypt(path, **overrides):
        options = {
            "layout": layout,
            "plan": run["plan"],
            "round_id": "round-1",
            "aggregator_keys": {keys.aggregator.key_id: keys.aggregator},
            "aggregator_key_id": keys.aggregator.key_id,
            "expected_parties": ["clinic-0", "clinic-1", "clinic-2"],
            "party_keys": keys.by_id,
            "party_key_ids": keys.ids,
            **overrides,
        }
        return decrypt_sums(ckks_holder, spark, path, **options)

    tampered = str(run["tmp"] / "agg-tampered")
    shutil.copytree(run["aggregate"], tampered)
    _rewrite_ciphertext(tampered, lambda b: b[:-10] + bytes(10))
    with pytest.raises(IntegrityError, match="aggregate 'hub': a stored ciphertext is not the one its manifest lists"):
        decrypt(tampered)

    forged = str(run["tmp"] / "agg-forged")
    shutil.copytree(run["aggregate"], forged)
    data = json.loads((Path(forged) / MANIFEST_FILE).read_text())
    data["body"]["contributions"] = data["body"]["contributions"][:2]
    (Path(forged) / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(IntegrityError, match="aggregator 'hub': manifest authentication failed"):
        decrypt(forged)

    with pytest.raises(IntegrityError, match=r"unexpected \['clinic-2'\]"):
        decrypt(run["aggregate"], expected_parties=["clinic-0", "clinic-1"])
    with pytest.raises(IntegrityError, match="aggregator 'hub': manifest is authenticated with key"):
        decrypt(run["aggregate"], aggregator_keys={"he-aggregator": key("other")}, aggregator_key_id="he-aggregator")


@pytest.mark.parametrize(
    ("rows", "error", "message"),
    [
        ([], GuardFailed, "party 'clinic-9': the input is empty"),
        ([("v1", "Z99", 10.0)], GuardFailed, r"party 'clinic-9': \d+ values have group keys .* outside"),
        ([("v1", "J06", 600000.0), ("v2", "J06", 400000.01)], OverflowRisk, "party 'clinic-9': 1 slot values exceed"),
    ],
    ids=["empty", "undeclared-key", "over-bound"],
)
def test_party_refuses_bad_input_before_writing(spark, holder, tmp_path, rows, error, message):
    layout = clinic_layout(holder.params)
    plan = layout.plan(holder.params, parties=3)
    party = Party("clinic-9", holder.public_context().data, plan=plan, key=key("he-party-clinic-9"))
    frame = spark.createDataFrame(rows, SCHEMA)
    out = tmp_path / "clinic-9"
    with pytest.raises(error, match=message):
        party.write(
            party.pack_groups(frame, group_column="diagnosis", layout=layout), str(out), layout=layout, round_id="r"
        )
    assert not out.exists()
    assert not any(tmp_path.rglob("*.parquet"))  # staging removed too


def test_aggregator_refuses_a_dataset_without_manifest(ckks_holder, run):
    empty = run["tmp"] / "empty-party"
    empty.mkdir()
    with pytest.raises(IntegrityError, match="contribution empty-party: the ciphertext dataset has no manifest"):
        _aggregate(ckks_holder, run, [*run["copies"], str(empty)])


def test_spark_failures_are_wrapped_without_data(spark, ckks_holder, tmp_path):
    """A failing cast inside Spark becomes a retryable StageExecutionError that does not quote the value."""
    from privstage.errors import StageExecutionError

    layout = clinic_layout(ckks_holder.params)
    plan = layout.plan(ckks_holder.params, parties=3)
    party = Party("clinic-9", ckks_holder.public_context().data, plan=plan, key=key("he-party-clinic-9"))
    frame = spark.createDataFrame([("v1", "J06", "078-05-1120")], "visit_id string, diagnosis string, cost string")
    out = tmp_path / "clinic-9"
    with pytest.raises(StageExecutionError) as info:
        party.write(
            party.pack_groups(frame, group_column="diagnosis", layout=layout), str(out), layout=layout, round_id="r"
        )
    assert "078-05-1120" not in str(info.value) and info.value.retryable
    assert "party 'clinic-9': encrypting failed" in str(info.value)
    assert not out.exists()
