"""Stratified splits/subsets and channel statistics (igcnas/data/splits.py)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from igcnas.data.splits import (
    allocate_per_class,
    channel_stats,
    derive_seed,
    stratified_split,
    stratified_subset,
)


def _labels(counts: list[int]) -> torch.Tensor:
    """Shuffled labels with ``counts[c]`` items of class c."""
    labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(123))]


@given(counts=st.lists(st.integers(0, 50), min_size=1, max_size=8), share=st.floats(0, 1))
@settings(max_examples=60, deadline=None)
def test_allocate_per_class_sums_and_respects_counts(counts: list[int], share: float) -> None:
    total = int(round(sum(counts) * share))
    taken = allocate_per_class(counts, total)
    assert sum(taken) == total
    assert all(0 <= t <= c for t, c in zip(taken, counts, strict=True))
    # proportional within one item per class
    if sum(counts):
        assert all(abs(t - c * total / sum(counts)) < 1.0 + 1e-9 for t, c in zip(taken, counts, strict=True))


def test_allocate_rejects_too_many() -> None:
    with pytest.raises(ValueError):
        allocate_per_class([3, 4], 8)


def test_split_is_disjoint_complete_and_stratified() -> None:
    labels = _labels([500, 300, 200])
    keep, held = stratified_split(labels, 0.1, seed=7)
    assert len(held) == 100 and len(keep) == 900
    assert set(keep.tolist()).isdisjoint(held.tolist())
    assert sorted(keep.tolist() + held.tolist()) == list(range(1000))
    assert torch.bincount(labels[held]).tolist() == [50, 30, 20]
    assert torch.equal(keep, torch.sort(keep).values)


def test_split_same_seed_same_indices_other_seed_differs() -> None:
    labels = _labels([100, 100, 100])
    a = stratified_split(labels, 0.2, seed=3)
    b = stratified_split(labels, 0.2, seed=3)
    c = stratified_split(labels, 0.2, seed=4)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    assert not torch.equal(a[1], c[1])


def test_split_purposes_are_independent_streams() -> None:
    labels = _labels([100, 100])
    assert not torch.equal(
        stratified_split(labels, 0.2, seed=0)[1], stratified_split(labels, 0.2, seed=0, purpose="test")[1]
    )
    assert derive_seed(0, "val") != derive_seed(0, "subset")


def test_zero_fraction_holds_out_nothing() -> None:
    keep, held = stratified_split(_labels([5, 5]), 0.0, seed=0)
    assert held.numel() == 0 and keep.numel() == 10


def test_subset_is_stratified_and_seeded() -> None:
    labels = _labels([600, 300, 100])
    idx = stratified_subset(labels, 100, seed=1)
    assert len(set(idx.tolist())) == 100
    assert torch.bincount(labels[idx]).tolist() == [60, 30, 10]
    assert torch.equal(idx, stratified_subset(labels, 100, seed=1))
    assert not torch.equal(idx, stratified_subset(labels, 100, seed=2))


def test_channel_stats_match_float_computation() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 5, 7), dtype=torch.uint8, generator=g)
    images[:, 1] //= 3  # make the channels differ
    mean, std = channel_stats(images)
    as_float = images.double() / 255.0
    assert mean == pytest.approx(as_float.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert std == pytest.approx(as_float.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-12)


def test_channel_stats_constant_channel_gets_unit_std() -> None:
    mean, std = channel_stats(torch.full((4, 1, 2, 2), 51, dtype=torch.uint8))
    assert mean == pytest.approx((0.2,)) and std == (1.0,)
