"""The tabular benchmark's plan: stratified by size bin and design, within the FLOP cap, pure in its seed."""

from __future__ import annotations

import pytest

from igcnas.errors import UserError
from igcnas.tabular._sample import MAX_FLOPS, SIZE_BINS, plan_table, size_bin


@pytest.fixture(scope="module")
def plan():  # type: ignore[no-untyped-def]
    return plan_table(per_bin=3, seed=0, spaces=("igc_cifar", "fog_designs"), zoo=False)


def test_every_row_is_in_its_bin_and_under_the_flop_cap(plan) -> None:  # type: ignore[no-untyped-def]
    assert len(plan) == 3 * len(SIZE_BINS)
    for row in plan:
        assert size_bin(row.params) == row.size_bin and row.flops <= MAX_FLOPS
        assert row.spec.design == row.design
    assert len({row.spec.id for row in plan}) == len(plan)


def test_pairs_rotate_over_bins(plan) -> None:  # type: ignore[no-untyped-def]
    pairs = [(row.source, row.design) for row in plan]
    assert len(set(pairs)) == 8  # 4 designs of each space, every one drawn
    assert pairs[:3] != pairs[3:6]


def test_same_seed_same_plan_other_seed_other_plan(plan) -> None:  # type: ignore[no-untyped-def]
    again = plan_table(per_bin=3, seed=0, spaces=("igc_cifar", "fog_designs"), zoo=False)
    assert [r.spec.id for r in again] == [r.spec.id for r in plan]
    other = plan_table(per_bin=3, seed=1, spaces=("igc_cifar", "fog_designs"), zoo=False)
    assert [r.spec.id for r in other] != [r.spec.id for r in plan]


def test_zoo_rows_fit_a_bin() -> None:
    rows = [r for r in plan_table(per_bin=1, seed=0, spaces=("igc_cifar",)) if r.source == "zoo"]
    assert "IGC-L24M2-D20" in {r.name for r in rows}
    assert all(size_bin(r.params) == r.size_bin and r.flops <= MAX_FLOPS for r in rows)


def test_bad_per_bin() -> None:
    with pytest.raises(UserError, match="--per-bin: 0"):
        plan_table(per_bin=0)
