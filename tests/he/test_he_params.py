"""Parameter checks and plans (no keys, no data): security table, depth, scale, precision, overflow."""

from __future__ import annotations

from decimal import Decimal

import pytest

from privstage.errors import HEParameterError, OverflowRisk
from privstage.he import DEFAULT_BFV, DEFAULT_CKKS, MAX_COEFF_MODULUS_BITS_128, BFVParams, CKKSParams, plan_sum
from privstage.he.params import is_prime, params_from_dict

T = DEFAULT_BFV.plain_modulus  # 1099511480321, a 40-bit batching prime for N = 8192


def _split(total: int, parts: int) -> tuple[int, ...]:
    base = total // parts
    return tuple(base + (1 if i < total % parts else 0) for i in range(parts))


@pytest.mark.parametrize(("n", "limit"), sorted(MAX_COEFF_MODULUS_BITS_128.items()))
def test_security_table_boundary(n, limit):
    parts = max(2, -(-limit // 60))
    at_limit = _split(limit, parts)
    if min(at_limit) >= 20:  # N = 1024 cannot hold two primes of 20+ bits within 27 bits
        assert sum(CKKSParams(n, at_limit, scale_bits=10).coeff_mod_bit_sizes) == limit
    over = _split(max(limit + 1, 40), parts)
    with pytest.raises(HEParameterError) as info:
        CKKSParams(n, over, scale_bits=10)
    assert f"poly_modulus_degree {n}: the HomomorphicEncryption.org standard allows at most {limit} bits" in str(
        info.value
    )


def test_the_table_is_the_standard():
    assert MAX_COEFF_MODULUS_BITS_128 == {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


@pytest.mark.parametrize(
    ("n", "sizes"),
    [(2048, (27, 27)), (4096, (36, 36, 37)), (8192, (54, 54, 55, 55))],
)
def test_seal_agrees_at_the_limit(n, sizes):
    """TenSEAL (SEAL tc128) accepts what the table allows and refuses one bit more, as the check does."""
    import tenseal as ts

    CKKSParams(n, sizes, scale_bits=20)
    ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=n, coeff_mod_bit_sizes=list(sizes))
    over = (*sizes[:-1], sizes[-1] + 1)
    with pytest.raises(HEParameterError, match="at most"):
        CKKSParams(n, over, scale_bits=20)
    with pytest.raises(ValueError):
        ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=n, coeff_mod_bit_sizes=list(over))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"poly_modulus_degree": 3000, "coeff_mod_bit_sizes": (60, 60), "scale_bits": 30}, "one of"),
        ({"poly_modulus_degree": 8192, "coeff_mod_bit_sizes": (60,), "scale_bits": 30}, "at least two primes"),
        ({"poly_modulus_degree": 8192, "coeff_mod_bit_sizes": (61, 60), "scale_bits": 30}, "20 to 60 bits"),
        ({"poly_modulus_degree": 8192, "coeff_mod_bit_sizes": (60, 60), "scale_bits": 0}, "scale_bits"),
    ],
)
def test_unusable_ckks_parameters(kwargs, message):
    with pytest.raises(HEParameterError, match=message):
        CKKSParams(**kwargs)


def test_ckks_depth_exhaustion():
    CKKSParams(8192, (60, 40, 60), scale_bits=40, depth=1)
    with pytest.raises(HEParameterError, match="depth exhaustion: depth 2 needs at least 3 data primes"):
        CKKSParams(8192, (60, 40, 60), scale_bits=40, depth=2)
    with pytest.raises(HEParameterError, match="consumed by rescaling must have scale_bits=40"):
        CKKSParams(8192, (60, 30, 60), scale_bits=40, depth=1)


def test_ckks_scale_exhaustion_in_parameters():
    # one 40-bit data prime holds at most 39 guaranteed bits: a 38-bit scale leaves no integer part
    with pytest.raises(HEParameterError, match="scale exhaustion"):
        CKKSParams(8192, (40, 60), scale_bits=38)
    assert CKKSParams(8192, (40, 60), scale_bits=36).headroom_bits == 1


def test_ckks_scale_exhaustion_in_the_plan_is_an_overflow_risk():
    headroom = DEFAULT_CKKS.max_abs_total  # 2^27
    plan_sum(DEFAULT_CKKS, parties=4, bounds={"x": Decimal(int(headroom)) / 4}, decimals={"x": 2})
    with pytest.raises(OverflowRisk, match=r"scale exhaustion .* 2\^27"):
        plan_sum(DEFAULT_CKKS, parties=4, bounds={"x": Decimal(int(headroom)) / 4 + 1}, decimals={"x": 2})


def test_ckks_precision_contract():
    plan = plan_sum(DEFAULT_CKKS, parties=3, bounds={"cost": 10**6}, decimals={"cost": 2})
    assert 0 < plan.error_bound["cost"] < 0.005
    low_scale = CKKSParams(8192, (60, 60), scale_bits=16)
    with pytest.raises(HEParameterError, match=r"precision contract .* cannot be met") as info:
        plan_sum(low_scale, parties=3, bounds={"cost": 10**6}, decimals={"cost": 2})
    assert "0.005" in str(info.value)
    # more parties, more noise: the bound grows like sqrt(parties) (the fp term is negligible here)
    one = plan_sum(DEFAULT_CKKS, parties=1, bounds={"x": 1}, decimals={"x": 2}).error_bound["x"]
    hundred = plan_sum(DEFAULT_CKKS, parties=100, bounds={"x": 1}, decimals={"x": 2}).error_bound["x"]
    assert hundred == pytest.approx(10 * one, rel=1e-3)


def test_bfv_overflow_boundary_is_exact():
    limit = (T - 1) // 2
    assert limit == 549755740160 == 20 * 27487787008
    plan = plan_sum(DEFAULT_BFV, parties=20, bounds={"c": "274877870.08"}, decimals={"c": 2})
    assert plan.max_abs_total("c") == Decimal("5497557401.60")
    with pytest.raises(OverflowRisk, match=r"exceeds the plain modulus limit \(t-1\)/2 = 549755740160"):
        plan_sum(DEFAULT_BFV, parties=20, bounds={"c": "274877870.09"}, decimals={"c": 2})
    with pytest.raises(OverflowRisk):
        plan_sum(DEFAULT_BFV, parties=21, bounds={"c": "274877870.08"}, decimals={"c": 2})


def test_bfv_plain_modulus_must_batch():
    with pytest.raises(HEParameterError, match="prime"):
        BFVParams(8192, (60, 60, 60), plain_modulus=T + 2)
    with pytest.raises(HEParameterError, match=r"≡ 1 \(mod 2N = 16384\)"):
        BFVParams(8192, (60, 60, 60), plain_modulus=1000003)  # prime, but not 1 mod 16384


def test_bfv_noise_budget():
    with pytest.raises(HEParameterError, match="no noise budget"):
        BFVParams(8192, (40, 40), plain_modulus=T)
    small = BFVParams(8192, (60, 60), plain_modulus=T)  # 59-bit data modulus, 40-bit t: a little budget
    with pytest.raises(HEParameterError, match="noise budget exhausted"):
        plan_sum(small, parties=10**6, bounds={"c": 1}, decimals={"c": 0})


def test_is_prime_agrees_with_seal():
    import tenseal.sealapi as sealapi

    for bits in (20, 30, 40, 50, 60):
        p = sealapi.PlainModulus.Batching(8192, bits).value()
        assert is_prime(p) and p % 16384 == 1
    assert [n for n in range(60) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59]
    assert not is_prime(3215031751)  # strong pseudoprime to bases 2, 3, 5, 7


@pytest.mark.parametrize("params", [DEFAULT_CKKS, DEFAULT_BFV])
def test_params_round_trip(params):
    assert params_from_dict(params.to_dict()) == params


def test_plan_refuses_bad_arguments():
    with pytest.raises(HEParameterError, match="parties"):
        plan_sum(DEFAULT_BFV, parties=0, bounds={"c": 1}, decimals={"c": 0})
    with pytest.raises(HEParameterError, match="same, non-empty set"):
        plan_sum(DEFAULT_BFV, parties=1, bounds={"c": 1}, decimals={"d": 0})
    with pytest.raises(HEParameterError, match="positive finite"):
        plan_sum(DEFAULT_BFV, parties=1, bounds={"c": "NaN"}, decimals={"c": 0})
