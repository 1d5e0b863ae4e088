"""Planning one block of an :class:`~igcnas.arch.spec.ArchSpec`: every number resolved (widths, group counts, the
interleaving shuffles, stride, identity or projection shortcut) into a :class:`BlockPlan`, and the block's
``require`` (dense, strict or loose complementary) checked on the composed kernel. ``ArchSpec.plans()`` plans each
stage's blocks once per spec, and every consumer (``build``, the closed-form cost, the zoo's checks) reads those.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from igcnas.arch.spec import ArchSpec, BlockSpec, KernelSpec, _parse_requirement
from igcnas.errors import UserError
from igcnas.space.chain import Chain
from igcnas.space.kernels import KERNEL_KINDS, Kernel

__all__ = ["BlockPlan", "plan_block"]


@dataclass(frozen=True)
class BlockPlan:
    """A block with every number resolved: the chain (widths, groups, shuffles), stride and residual."""

    chain: Chain
    stride: int
    stride_index: int
    identity: bool
    projection: bool
    projection_groups: int = 1
    fusion: int = 1

    @property
    def in_channels(self) -> int:
        """Block input width."""
        return self.chain.in_channels // self.fusion

    @property
    def out_channels(self) -> int:
        """Block output width."""
        return self.chain.out_channels // self.fusion


def _resolve_groups(
    where: str, kernel: KernelSpec, override: int | None, in_width: int, out_width: int
) -> int:
    """Group count of a grouped kernel at the given widths."""
    if kernel.groups is not None:
        groups = override if override is not None else kernel.groups
    else:
        per_group = override if override is not None else kernel.group_width
        assert per_group is not None
        if in_width % per_group:
            raise UserError(
                f"{where}.group_width: {per_group} channels per group does not divide the width {in_width}"
            )
        groups = in_width // per_group
    if in_width % groups or out_width % groups:
        raise UserError(
            f"{where}.groups: {groups} groups must divide the kernel's input width {in_width} and output width "
            f"{out_width}; choose a common divisor"
        )
    return groups


def plan_block(spec: ArchSpec, stage_index: int, in_width: int, *, first: bool) -> BlockPlan:
    """Resolve the block of one stage at a given input width (``first``: the stage's first block, which strides)."""
    stage = spec.stages[stage_index]
    block = spec.block_of(stage_index)
    stride = stage.stride if first else 1
    out_width = stage.width
    block_in, block_out = in_width, out_width
    in_width, out_width = in_width * block.fusion, out_width * block.fusion  # the chain's widths
    ratio = stage.bottleneck if stage.bottleneck is not None else block.bottleneck
    inner = out_width
    if block.is_bottleneck_form:
        base = in_width if block.bottleneck_of == "in" else out_width
        inner = max(1, int(round(base * ratio)))
    count = len(block.kernels)
    where = f"stages[{stage_index}]"
    if stage.groups is not None and len(stage.groups) != count:
        raise UserError(f"{where}.groups: {len(stage.groups)} values for {count} kernels of {block.design}")

    kernels: list[Kernel] = []
    width = in_width
    for index, kernel in enumerate(block.kernels):
        info = KERNEL_KINDS[kernel.kind]
        if info.grouping == "channelwise":
            out = width
        elif index == count - 1:
            out = out_width
        elif block.is_bottleneck_form:
            out = inner
        else:
            out = out_width
        if info.grouping == "grouped":
            override = stage.groups[index] if stage.groups is not None else None
            groups = _resolve_groups(f"{where}.block.kernels[{index}]", kernel, override, width, out)
        else:
            groups = 1
        kernels.append(Kernel(kernel.kind, groups=groups, out_channels=out, kernel_size=kernel.kernel_size))
        width = out
    if width != out_width:
        raise UserError(
            f"{where}.width: the block {block.design} ends with a depthwise kernel, so it cannot change the width "
            f"from {in_width} to {out_width}; add a pointwise kernel or keep the widths equal"
        )
    if block.shuffle == "interleave":
        kernels = _place_shuffles(in_width, kernels)
    chain = Chain(in_width, tuple(kernels))
    _check_requirement(where, block, chain, block_in, block_out)
    spatial = [i for i, k in enumerate(kernels) if KERNEL_KINDS[k.kind].spatial]
    stride_index = spatial[0] if spatial else 0
    same_shape = stride == 1 and block_in == block_out
    identity = block.identity and same_shape
    projection = block.identity and not same_shape and block.shortcut != "none"
    projection_groups = 1
    if projection and block.shortcut == "grouped_projection":
        projection_groups = chain.kernels[0].resolved_groups(in_width)
        if block_in % projection_groups or block_out % projection_groups:
            raise UserError(
                f"{where}.block.shortcut: the grouped projection takes the first kernel's {projection_groups} "
                f"groups, which must divide {block_in} and {block_out}; use shortcut 'projection'"
            )
    return BlockPlan(chain, stride, stride_index, identity, projection, projection_groups, block.fusion)


def _place_shuffles(in_width: int, kernels: list[Kernel]) -> list[Kernel]:
    """Insert IGC interleaving shuffles where the prefix's reach classes would otherwise stay aligned."""
    shuffles = _shuffles(in_width, tuple(replace(k, shuffle_in=None) for k in kernels))
    return [replace(k, shuffle_in=s) for k, s in zip(kernels, shuffles, strict=True)]


@functools.lru_cache(maxsize=4096)
def _shuffles(in_width: int, kernels: tuple[Kernel, ...]) -> tuple[int | None, ...]:
    """The shuffle before each kernel (see :func:`_place_shuffles`); cached, since every block of a stage asks.

    Works on the boolean reach matrix (``paths > 0`` of :func:`~igcnas.space.chain.compose_kernel`), with the
    input columns merged per group of the first kernel: inputs of one group are reached by the same outputs
    through the whole chain, so the rows (all :func:`canonical_shuffle` looks at) are unchanged.
    """
    import numpy as np

    from igcnas.space.chain import canonical_shuffle, shuffle_permutation

    first = kernels[0]
    groups = first.resolved_groups(in_width)
    out = first.resolved_out(in_width)
    merged = groups < in_width
    # reach of the first kernel's outputs over its input groups (the identity over channels when groups == width)
    reach = np.repeat(np.eye(groups, dtype=bool), out // groups, axis=0)
    shuffles: list[int | None] = [None]
    width = out
    for kernel in kernels[1:]:
        shuffle = None
        if KERNEL_KINDS[kernel.kind].grouping == "grouped":
            # an extra all-false column keeps a merged (non-square) reach from passing the identity test
            probe = np.hstack([reach, np.zeros((width, 1), dtype=bool)]) if merged else reach
            shuffle = canonical_shuffle(probe)
        shuffles.append(shuffle)
        if shuffle is not None:
            reach = reach[shuffle_permutation(width, shuffle)]
        k_groups = kernel.resolved_groups(width)
        k_out = kernel.resolved_out(width)
        reach = np.repeat(reach.reshape(k_groups, width // k_groups, -1).any(axis=1), k_out // k_groups, axis=0)
        width = k_out
    return tuple(shuffles)


def _check_requirement(where: str, block: BlockSpec, chain: Chain, block_in: int, block_out: int) -> None:
    """Raise UserError when a stage's block does not have the composed-kernel property the block requires."""
    from igcnas.space.chain import is_dense, loose_complementary, strict_complementary

    kind, super_channels = _parse_requirement(block.require)
    if kind == "none":
        return
    holds = (
        is_dense(chain) if kind == "dense"
        else strict_complementary(chain) if kind == "strict"
        else loose_complementary(chain, super_channels or 1)
    )
    if not holds:
        raise UserError(
            f"{where}.width: the block {chain.describe()} at {block_in}->{block_out} channels does not satisfy "
            f"block.require={block.require!r}; choose widths and group numbers that do (strict: the product of "
            f"the branch widths equals the width, e.g. GC with L groups then PWG with L channels per group) or "
            f"relax block.require"
        )
