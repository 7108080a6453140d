"""Shared helpers for the HE tests: keys, clinic data, a three-role run, and the secret-key scanner."""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

from privstage.he import Aggregator, GroupLayout, KeyHolder, Measure, Party, decrypt_sums, release
from privstage.keys import Key

DIAGNOSES = ("J06", "I10", "E11", "M54", "K21")
SCHEMA = "visit_id string, diagnosis string, cost double"


def key(key_id: str) -> Key:
    return Key(key_id=key_id, version=1, _material=os.urandom(32))


class Keys:
    """One manifest key per party and one for the aggregator (as their KeyProviders would hold them)."""

    def __init__(self, parties: list[str]) -> None:
        self.party = {p: key(f"he-party-{p}") for p in parties}
        self.aggregator = key("he-aggregator")

    @property
    def by_id(self) -> dict[str, Key]:
        return {k.key_id: k for k in self.party.values()}

    @property
    def ids(self) -> dict[str, str]:
        return {p: k.key_id for p, k in self.party.items()}


def clinic_rows(party_index: int, n: int = 40) -> list[tuple[str, str, float]]:
    """Deterministic visits of one clinic: costs with cents, every diagnosis but one per clinic."""
    rows = []
    for i in range(n):
        dx = DIAGNOSES[(i + party_index) % (len(DIAGNOSES) - 1)]
        cost = round(((i * 37 + party_index * 101) % 5000) / 7 + 10, 2)
        rows.append((f"c{party_index}-v{i}", dx, cost))
    return rows


def plain_sums(rows_by_party: list[list[tuple[str, str, float]]]) -> tuple[dict[str, Decimal], dict[str, int]]:
    cost: dict[str, Decimal] = defaultdict(Decimal)
    visits: dict[str, int] = defaultdict(int)
    for rows in rows_by_party:
        for _, dx, c in rows:
            cost[dx] += Decimal(str(c))
            visits[dx] += 1
    return dict(cost), dict(visits)


def clinic_layout(params, *, cost_bound: str = "1000000", visit_bound: int = 100000) -> GroupLayout:
    return GroupLayout.declare(
        DIAGNOSES,
        [Measure.sum("cost", "cost", bound=cost_bound, decimals=2), Measure.count("visits", bound=visit_bound)],
        params,
    )


def run_sum(
    spark,
    holder: KeyHolder,
    frames: list,
    layout: GroupLayout,
    *,
    root: Path | None = None,
    round_id: str = "round-1",
    noise: dict[str, Any] | None = None,
):
    """Every party encrypts, the aggregator adds, the key holder decrypts and releases. Returns (release, paths)."""
    root = Path(root or tempfile.mkdtemp(prefix="he-run-"))
    parties = [f"clinic-{i}" for i in range(len(frames))]
    keys = Keys(parties)
    plan = layout.plan(holder.params, parties=len(frames))
    public = holder.public_context().data

    def contribute(party_id: str, df) -> str:
        party = Party(party_id, public, plan=plan, key=keys.party[party_id])
        out = str(root / "parties" / party_id)
        party.write(
            party.pack_groups(df, group_column="diagnosis", layout=layout), out, layout=layout, round_id=round_id
        )
        return out

    # Parties are independent organisations: their Spark jobs run concurrently, as they would in the field
    # (and a 20-party round takes a third of the time it takes one party after another).
    with ThreadPoolExecutor(max_workers=4) as pool:
        paths = list(pool.map(contribute, parties, frames))
    aggregator = Aggregator("hub", public, plan=plan, key=keys.aggregator)
    agg_path = str(root / "aggregate")
    aggregator.aggregate(
        spark,
        paths,
        agg_path,
        layout=layout,
        round_id=round_id,
        party_keys=keys.by_id,
        party_key_ids=keys.ids,
        expected_parties=parties,
    )
    sums = decrypt_sums(
        holder,
        spark,
        agg_path,
        layout=layout,
        plan=plan,
        round_id=round_id,
        aggregator_keys={keys.aggregator.key_id: keys.aggregator},
        aggregator_key_id=keys.aggregator.key_id,
        expected_parties=parties,
        party_keys=keys.by_id,
        party_key_ids=keys.ids,
    )
    return release(sums, noise=noise), {
        "parties": paths,
        "aggregate": agg_path,
        "root": root,
        "keys": keys,
        "plan": plan,
    }


# ---------------------------------------------------------------------------------------------
# Secret-key scanner: does any artifact hold the key holder's secret key?
# ---------------------------------------------------------------------------------------------
def secret_key_probes(holder: KeyHolder, *, width: int = 48, count: int = 8) -> list[bytes]:
    """Windows of the secret key: SEAL's serialization (zstd frame) and the raw decompressed coefficients."""
    import zstandard

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sk"
        holder._context.secret_key().data.save(str(path))  # test-only access to the key holder's context
        blob = path.read_bytes()
    raw = zstandard.ZstdDecompressor().decompress(blob[16:], max_output_size=1 << 26)
    probes = []
    for source in (blob[16:], raw[64:]):
        step = (len(source) - width) // (count - 1)
        probes += [source[i * step : i * step + width] for i in range(count)]
    return probes


def _cells(path: Path):
    """Every binary or string value of a Parquet file, decoded (page compression would hide raw bytes)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    for column in table.columns:
        for value in column.to_pylist():
            if isinstance(value, bytes):
                yield value
            elif isinstance(value, str):
                yield value.encode()


def _json_blobs(path: Path):
    """Long string values of a JSON file, base64-decoded where they are base64."""
    import base64
    import binascii
    import json

    def walk(node):
        if isinstance(node, dict):
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)
        elif isinstance(node, str) and len(node) > 64:
            try:
                yield base64.b64decode(node, validate=True)
            except (binascii.Error, ValueError):
                pass

    try:
        yield from walk(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, UnicodeDecodeError):
        return


def holds_secret_context(blob: bytes) -> bool:
    import tenseal as ts

    if len(blob) < 1024:
        return False
    try:
        ctx = ts.context_from(blob, n_threads=1)
    except Exception:
        return False
    return ctx.has_secret_key() or ctx.is_private()


def scan_for_secret_key(root: Path, holder: KeyHolder) -> list[str]:
    """Findings (file names) for every file under ``root`` that contains secret key material."""
    probes = secret_key_probes(holder)
    findings = []
    files = [p for p in Path(root).rglob("*") if p.is_file()]
    assert files, f"nothing to scan under {root}"
    for path in files:
        blobs = [path.read_bytes()]
        if path.suffix == ".parquet":
            blobs += list(_cells(path))
        if path.suffix == ".json":
            blobs += list(_json_blobs(path))
        for blob in blobs:
            if any(p in blob for p in probes) or holds_secret_context(blob):
                findings.append(str(path.relative_to(root)))
                break
    return findings
