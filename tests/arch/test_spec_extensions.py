"""The spec fields the zoo needed: BN after chosen kernels, grouped projections, expansion of the input width,
per-stage blocks; and the cached shuffle placement."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from igcnas.arch import ArchSpec, BlockSpec, KernelSpec, StageSpec, StemSpec, plan_block
from igcnas.arch.plan import _place_shuffles
from igcnas.cost import count, fvcore_cost
from igcnas.errors import UserError
from igcnas.nn.network import build
from igcnas.space.chain import canonical_shuffle, compose_kernel
from igcnas.space.kernels import KERNEL_KINDS, Kernel, divisors

K = KernelSpec


def igc_unit_net() -> ArchSpec:
    """Units of two IGC blocks (BN after kernels 1 and 3), grouped projection, a DW+PW stage override."""
    unit = BlockSpec((K("GC", groups=4), K("PWG", group_width=4)) * 2, bn=(1, 3), relu_after=(1,),
                     shortcut="grouped_projection")
    return ArchSpec(
        stem=StemSpec(16),
        block=unit,
        stages=(
            StageSpec(16, 1),
            StageSpec(32, 2, stride=2),
            StageSpec(48, 1, stride=2, block=BlockSpec((K("DW"), K("PW")), relu_after=(0,), shortcut="none")),
        ),
    )


def expansion_net() -> ArchSpec:
    """MobileNetV2-style expansion of the input width."""
    block = BlockSpec((K("PWG", groups=2), K("DW"), K("PWG", groups=2)), bottleneck=6, bottleneck_of="in",
                      relu_after=(1,), post_relu=False, shortcut="none")
    return ArchSpec(stem=StemSpec(16), block=block, stages=(StageSpec(16, 1, bottleneck=1.0), StageSpec(24, 2, stride=2)))


def test_bn_after_listed_kernels_only():
    spec = igc_unit_net()
    body = dict(build(spec, impl="naive").named_modules())["stages.1.1.body"]
    assert [name for name, _ in body.named_children()] == ["conv0", "conv1", "bn1", "relu1", "conv2", "conv3", "bn3"]
    fast = dict(build(spec).named_modules())["stages.1.1.body"]  # BN + ReLU fused into one module
    assert [name for name, _ in fast.named_children()] == ["conv0", "conv1", "bn1", "conv2", "conv3", "bn3"]
    assert type(fast.bn1).__name__ == "BatchNormAct2d" and fast.bn1.relu
    assert spec.block.bn_after(3) and not spec.block.bn_after(0)
    with pytest.raises(UserError, match="block.bn: kernel index 4"):
        BlockSpec((K("DW"), K("PW")), bn=(4,))


def test_grouped_projection_takes_the_first_kernels_groups():
    spec = igc_unit_net()
    plan = plan_block(spec, 1, 16, first=True)
    assert plan.projection and plan.projection_groups == 4
    conv = dict(build(spec).named_modules())["stages.1.0.shortcut.0"]
    assert isinstance(conv, torch.nn.Conv2d)
    assert conv.groups == 4 and conv.weight.shape == (32, 4, 1, 1)
    # the stage override has no shortcut on its shape change
    assert not plan_block(spec, 2, 32, first=True).projection
    # the first kernel's 3 groups divide 12 -> 12 but not the block's output width 8
    bottleneck = BlockSpec((K("PWG", groups=3), K("DW"), K("PWG", groups=1)), bottleneck=1.5,
                           shortcut="grouped_projection")
    with pytest.raises(UserError, match="grouped projection takes the first kernel's 3 groups"):
        ArchSpec(stem=StemSpec(12), block=bottleneck, stages=(StageSpec(12, 1), StageSpec(8, 1, stride=2)))


def test_expansion_of_the_input_width():
    spec = expansion_net()
    assert plan_block(spec, 0, 16, first=True).chain.widths() == [16, 16, 16, 16]
    assert plan_block(spec, 1, 16, first=True).chain.widths() == [16, 96, 96, 24]
    assert plan_block(spec, 1, 24, first=False).chain.widths() == [24, 144, 144, 24]
    of_out = replace(spec, block=replace(spec.block, bottleneck_of="out"))
    assert plan_block(of_out, 1, 16, first=True).chain.widths() == [16, 144, 144, 24]


def test_stage_block_override_is_used_and_described():
    spec = igc_unit_net()
    assert spec.block_of(2).design == "DW+PW" and spec.block_of(0) is spec.block
    assert plan_block(spec, 2, 32, first=True).chain.design == "DW+PW"


@pytest.mark.parametrize("make", [igc_unit_net, expansion_net])
def test_new_fields_round_trip_build_and_count_exactly(make):
    spec = make()
    again = ArchSpec.from_json(spec.to_json())
    assert again == spec and again.id == spec.id
    model = build(spec)
    out = model(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert count(spec) == fvcore_cost(spec)
    assert count(spec).params == sum(p.numel() for p in model.parameters())


def test_specs_without_the_new_fields_keep_their_json_and_id():
    spec = ArchSpec.simple("GC+PWG", widths=(16, 32), depths=(1, 1), groups=(4, 2))
    payload = spec.to_dict()
    assert "bottleneck_of" not in payload["block"]
    assert all("block" not in stage for stage in payload["stages"])
    assert ArchSpec.from_dict(payload) == spec
    with_default = replace(spec, block=replace(spec.block, bottleneck_of="out"))
    assert with_default.id == spec.id


def _reference_shuffles(in_width: int, kernels: list[Kernel]) -> list[Kernel]:
    """The original placement: full path-count matrices over every input channel."""
    placed: list[Kernel] = []
    paths = np.eye(in_width, dtype=np.int64)
    width = in_width
    for index, kernel in enumerate(kernels):
        shuffle = None
        if index > 0 and KERNEL_KINDS[kernel.kind].grouping == "grouped":
            shuffle = canonical_shuffle(paths > 0)
        kernel = replace(kernel, shuffle_in=shuffle)
        placed.append(kernel)
        paths = compose_kernel(paths, kernel, width)
        width = kernel.resolved_out(width)
    return placed


def test_cached_shuffle_placement_equals_the_full_path_computation():
    rng = random.Random(0)
    for _ in range(1500):
        width = first = rng.choice([4, 6, 8, 12, 16, 24, 32, 36, 48])
        kernels = []
        for _ in range(rng.randint(1, 5)):
            kind = rng.choice(["GC", "DW", "PW", "PWG", "CONV"])
            if kind == "DW":
                kernels.append(Kernel("DW"))
                continue
            out = rng.choice([width, width, 2 * width, max(1, width // 2), 3 * width])
            groups = 1 if kind in ("PW", "CONV") else rng.choice([d for d in divisors(width) if out % d == 0])
            kernels.append(Kernel(kind, groups=groups, out_channels=out))
            width = out
        assert _place_shuffles(first, kernels) == _reference_shuffles(first, kernels), (first, kernels)
