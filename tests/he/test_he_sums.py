"""End to end on real Spark and TenSEAL: sums equal the plaintext sums (CKKS within the bound, BFV exactly).

Expected values come from Python's Decimal over the same rows, independently of Spark.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from he_support import DIAGNOSES, SCHEMA, Keys, clinic_layout, plain_sums, run_sum

from privstage.dp.mechanisms import GeometricNoise, TestConfig, seeded_rng
from privstage.he import Aggregator, GroupLayout, Measure, Party, VectorLayout, decrypt_sums, release

PARTY_COUNTS = [1, 3, pytest.param(20, marks=pytest.mark.slow)]


@pytest.mark.parametrize("parties", PARTY_COUNTS)
def test_clinic_sums_equal_plaintext_sums(holder, parties, clinic_run):
    result, _, rows = clinic_run(holder.params.scheme, parties)
    cost, visits = plain_sums(rows)
    assert result.values("cost") == {dx: cost.get(dx, Decimal("0.00")) for dx in DIAGNOSES}
    assert result.values("visits") == {dx: Decimal(visits.get(dx, 0)) for dx in DIAGNOSES}
    assert result.value("cost", "K21") == 0  # declared, but no party has it
    assert result.parties == tuple(sorted(f"clinic-{i}" for i in range(parties)))
    assert result.rows == sum(len(r) for r in rows)
    if holder.params.scheme == "bfv":
        assert result.error_bound == {"cost": 0.0, "visits": 0.0}
    else:
        assert 0 < result.error_bound["cost"] < 0.005
    average = result.ratio("cost", "visits")
    for dx in DIAGNOSES:
        expected = None if not visits.get(dx) else (cost[dx] / visits[dx]).quantize(Decimal("0.01"))
        assert average[dx] == expected


def _adversarial(party: int, bound: Decimal) -> list[tuple[str, str, float]]:
    """Zeros, exact bounds (positive and negative, split over rows), and a mix, for one party."""
    half = float(bound / 2)
    return [
        (f"p{party}-1", "J06", half),  # J06 total = +bound exactly
        (f"p{party}-2", "J06", half),
        (f"p{party}-3", "I10", -half),  # I10 total = -bound exactly
        (f"p{party}-4", "I10", -half),
        (f"p{party}-5", "E11", 0.0),  # zeros
        (f"p{party}-6", "E11", -0.0),
        (f"p{party}-7", "M54", 0.01),  # one grid step
        (f"p{party}-8", "M54", -0.01 if party % 2 else 0.02),
    ]


# BFV: 20 parties at the bound land exactly on (t-1)/2 = 549755740160 (in cents); CKKS: 20 * bound = 2^27 headroom
ADVERSARIAL_BOUND = {"bfv": Decimal("274877870.08"), "ckks": Decimal("6710886.40")}


@pytest.mark.parametrize("parties", [3, pytest.param(20, marks=pytest.mark.slow)])
def test_adversarial_values(spark, holder, parties, tmp_path):
    scheme = holder.params.scheme
    bound = ADVERSARIAL_BOUND[scheme]
    rows = [_adversarial(i, bound) for i in range(parties)]
    layout = GroupLayout.declare(
        DIAGNOSES,
        [Measure.sum("cost", "cost", bound=bound, decimals=2), Measure.count("visits", bound=8)],
        holder.params,
    )
    frames = [spark.createDataFrame(r, SCHEMA) for r in rows]
    result, _ = run_sum(spark, holder, frames, layout, root=tmp_path)
    cost, visits = plain_sums(rows)
    assert result.values("cost") == {dx: cost.get(dx, Decimal("0.00")) for dx in DIAGNOSES}
    assert result.value("cost", "J06") == bound * parties
    assert result.value("cost", "I10") == -bound * parties
    assert result.value("cost", "E11") == 0 and result.value("cost", "K21") == 0
    assert result.values("visits") == {dx: Decimal(visits.get(dx, 0)) for dx in DIAGNOSES}


def test_dp_noise_hook(spark, bfv_holder, clinic_run):
    """Geometric noise on the exact scaled sums; reproducible only with a test seed."""
    _, run, rows = clinic_run("bfv", 3)
    keys = run["keys"]
    sums = decrypt_sums(
        bfv_holder,
        spark,
        run["aggregate"],
        layout=clinic_layout(bfv_holder.params),
        plan=run["plan"],
        round_id="round-1",
        aggregator_keys={keys.aggregator.key_id: keys.aggregator},
        aggregator_key_id=keys.aggregator.key_id,
        expected_parties=sorted(keys.party),
    )
    config = TestConfig(allow_seed=True)
    noise = {"visits": GeometricNoise(epsilon=1, sensitivity=1, rng=seeded_rng(7, config=config))}
    result = release(sums, noise=noise)
    _, visits = plain_sums(rows)
    replay = GeometricNoise(epsilon=1, sensitivity=1, rng=seeded_rng(7, config=config))
    expected = [visits.get(dx, 0) + replay.noise() for dx in DIAGNOSES]
    assert [int(result.value("visits", dx)) for dx in DIAGNOSES] == expected
    assert expected != [visits.get(dx, 0) for dx in DIAGNOSES]
    assert result.noise["visits"]["mechanism"] == "geometric"
    assert "cost" not in result.noise and release(sums).values("cost") == result.values("cost")


def test_vector_sums(spark, ckks_holder, tmp_path):
    """Value vectors packed per partition without a shuffle; partial ciphertexts add at the aggregator."""
    params = ckks_holder.params
    length = 9_000  # 3 chunks of 4096 slots
    layout = VectorLayout.declare(length, Measure.sum("x", "x", bound=1000, decimals=3), params)
    plan = layout.plan(params, parties=2, ciphertexts_per_party=2)
    keys = Keys([f"p{i}" for i in range(2)])
    public = ckks_holder.public_context().data
    rng = np.random.default_rng(11)
    expected = np.zeros(length, dtype=np.int64)
    paths = []
    for i in range(2):
        values = np.round(rng.uniform(-1000, 1000, length), 3)
        expected += np.rint(values * 1000).astype(np.int64)
        df = spark.createDataFrame([(p, float(v)) for p, v in enumerate(values.tolist())], "pos long, x double")
        party = Party(f"p{i}", public, plan=plan, key=keys.party[f"p{i}"])
        packed = party.pack_vector(
            df.repartitionByRange(2, "pos"), position_column="pos", value_column="x", layout=layout
        )
        paths.append(party.write(packed, str(tmp_path / f"p{i}"), layout=layout, round_id="v1").path)
    Aggregator("hub", public, plan=plan, key=keys.aggregator).aggregate(
        spark, paths, str(tmp_path / "agg"), layout=layout, round_id="v1", party_keys=keys.by_id, party_key_ids=keys.ids
    )
    sums = decrypt_sums(
        ckks_holder,
        spark,
        str(tmp_path / "agg"),
        layout=layout,
        plan=plan,
        round_id="v1",
        aggregator_keys={keys.aggregator.key_id: keys.aggregator},
        aggregator_key_id=keys.aggregator.key_id,
        expected_parties=["p0", "p1"],
    )
    assert np.array_equal(release(sums).scaled["x"], expected)
    assert sums.max_grid_deviation["x"] <= plan.error_bound["x"]
