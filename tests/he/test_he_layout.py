"""Slot layouts: public, ordered, identified by a hash of their declaration."""

from __future__ import annotations

import pytest

from privstage.errors import HEParameterError, SpecError
from privstage.he import DEFAULT_BFV, DEFAULT_CKKS, GroupLayout, Measure, VectorLayout
from privstage.he.layout import layout_from_dict

COST = Measure.sum("cost", "cost", bound=1000, decimals=2)
VISITS = Measure.count("visits", bound=100)


def test_layout_id_names_the_declaration():
    a = GroupLayout.declare(["J06", "I10"], [COST, VISITS], DEFAULT_CKKS)
    assert a.layout_id == GroupLayout.declare(["J06", "I10"], [COST, VISITS], DEFAULT_CKKS).layout_id
    variants = [
        GroupLayout.declare(["I10", "J06"], [COST, VISITS], DEFAULT_CKKS),  # key order is slot order
        GroupLayout.declare(["J06", "I10"], [VISITS, COST], DEFAULT_CKKS),
        GroupLayout.declare(["J06", "I10"], [COST, Measure.count("visits", bound=101)], DEFAULT_CKKS),
        GroupLayout.declare(["J06", "I10"], [COST, VISITS], DEFAULT_BFV),  # other slot count
    ]
    assert len({a.layout_id, *(v.layout_id for v in variants)}) == 5
    assert layout_from_dict(a.to_dict()) == a


def test_positions_and_chunks():
    keys = [f"k{i}" for i in range(5000)]
    layout = GroupLayout.declare(keys, [COST, VISITS], DEFAULT_CKKS)  # 4096 slots
    assert layout.size == 10000 and layout.chunks == 3
    assert layout.position(1, 4999) == 9999
    vector = VectorLayout.declare(10000, COST, DEFAULT_BFV)  # 8192 slots
    assert vector.chunks == 2 and layout_from_dict(vector.to_dict()) == vector


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: GroupLayout.declare([], [COST], DEFAULT_CKKS), "at least one declared key"),
        (lambda: GroupLayout.declare(["a", "a"], [COST], DEFAULT_CKKS), "unique"),
        (lambda: GroupLayout.declare(["a", 1], [COST], DEFAULT_CKKS), "strings"),
        (lambda: GroupLayout.declare(["a"], [COST, COST], DEFAULT_CKKS), "unique names"),
        (lambda: Measure.sum("c", "c", bound=0), "positive"),
        (lambda: Measure(name="c", kind="count", bound=1, decimals=2), "0 decimals"),
        (lambda: Measure(name="c d", kind="count", bound=1), "measure name"),
        (lambda: VectorLayout.declare(0, COST, DEFAULT_CKKS), "positive integer length"),
    ],
)
def test_bad_layouts(build, message):
    with pytest.raises(SpecError, match=message):
        build()


def test_layout_must_fit_the_parameters():
    layout = GroupLayout.declare(["a"], [COST], DEFAULT_CKKS)
    with pytest.raises(HEParameterError, match="4096 slots per ciphertext; BFV with N=8192 has 8192"):
        layout.plan(DEFAULT_BFV, parties=2)
