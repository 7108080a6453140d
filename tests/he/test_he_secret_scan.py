"""No artifact written by a party or the aggregator holds secret key material.

The scanner looks for windows of the key holder's secret key (SEAL's serialized form and the raw
coefficients) in every file's bytes, in every decoded Parquet cell (page compression would hide raw
bytes) and in base64-decoded JSON strings, and tries to load every blob as a TenSEAL context with a
secret key. The positive control shows it finds a planted secret context in raw bytes, base64 in
JSON and a compressed Parquet column.
"""

from __future__ import annotations

import base64
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from he_support import scan_for_secret_key


@pytest.mark.parametrize("scheme", ["ckks", "bfv"])
def test_party_and_aggregator_artifacts_hold_no_secret_key(scheme, clinic_run, ckks_holder, bfv_holder, tmp_path):
    holder = ckks_holder if scheme == "ckks" else bfv_holder
    _, run, _ = clinic_run(scheme, 3)
    for path in [*run["parties"], run["aggregate"]]:
        assert scan_for_secret_key(run["root"], holder) == [], path
    written = sorted(p.name for p in (run["root"] / "parties").rglob("*") if p.is_file())
    assert "_he_manifest.json" in written and any(n.endswith(".parquet") for n in written)
    assert not list(run["root"].rglob(".privstage-staging*")), "staging left behind"
    # the public context, as the key holder hands it out, too
    (tmp_path / "public").mkdir()
    (tmp_path / "public" / "context.bin").write_bytes(holder.public_context().data)
    assert scan_for_secret_key(tmp_path / "public", holder) == []


def test_the_scanner_finds_planted_secrets(ckks_holder, clinic_run, tmp_path):
    _, run, _ = clinic_run("ckks", 3)
    planted = tmp_path / "planted"
    shutil.copytree(run["parties"][0], planted / "party")
    secret = ckks_holder._context.serialize(save_secret_key=True)
    (planted / "party" / "debug.json").write_text(json.dumps({"ctx": base64.b64encode(secret).decode()}))
    pq.write_table(
        pa.table({"blob": pa.array([secret], pa.binary())}), planted / "party" / "extra.parquet", compression="zstd"
    )
    (planted / "party" / "raw.bin").write_bytes(b"header" + secret)
    found = sorted(scan_for_secret_key(planted, ckks_holder))
    assert found == ["party/debug.json", "party/extra.parquet", "party/raw.bin"]
