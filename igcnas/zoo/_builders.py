"""Spec builders for the papers' network layouts (IGCV1, IGCV2, IGCV3/MobileNet, the Fog paper's Table 1).

Each builder returns an :class:`~igcnas.arch.ArchSpec` for one layout template of ``paper_figures.json`` (see
``paper_layouts.md`` beside this module for where every choice comes from). Details the spec cannot express
are replaced by the closest expressible form; the zoo entry that uses a builder says which.
"""

from __future__ import annotations

import math

from igcnas.arch.layout import mobilenet_arch
from igcnas.arch.spec import ArchSpec, BlockSpec, KernelSpec, Shortcut, StageSpec, StemSpec
from igcnas.errors import UserError

__all__ = [
    "IMAGENET",
    "CIFAR",
    "regconv_plain",
    "igcv1_plain",
    "regconv_resnet",
    "igcv1_resnet",
    "igcv1_nodown",
    "resnet18_imagenet",
    "igcv1_imagenet",
    "igcv2_xception",
    "igcv2_igcv1",
    "igcv2_igcv2",
    "igcv2_star",
    "igcv2_block_net",
    "MBV2_ROWS",
    "IGCV3_D_ROWS",
    "IGCV3_W_ROWS",
    "CIFAR_ROW_STRIDES",
    "mobilenet_v2_like",
    "mobilenet_v1",
    "fog_net",
]

IMAGENET: tuple[int, int, int] = (3, 224, 224)
CIFAR: tuple[int, int, int] = (3, 32, 32)


def _plain_blocks(depth: int) -> int:
    """IGCV1/IGCV2 depth rule D = 3B + 2 -> blocks per stage B."""
    if depth < 5 or (depth - 2) % 3:
        raise UserError(f"depth: {depth} does not fit D = 3B + 2 (use 8, 20, 38, 62, 98 ...)")
    return (depth - 2) // 3


def _units(depth: int) -> int:
    """Residual units of two blocks per stage for D = 6U + 2."""
    if depth < 8 or (depth - 2) % 6:
        raise UserError(f"depth: {depth} does not fit D = 6U + 2 (use 8, 20, 26, 50, 74, 98 ...)")
    return (depth - 2) // 6


def _three_stages(base: int, depth: int, *, factor: int = 2) -> tuple[StageSpec, ...]:
    """CIFAR stages of widths base, 2*base, 4*base; stride 2 at stages 2 and 3."""
    return tuple(StageSpec(base * factor**s, depth, stride=1 if s == 0 else 2) for s in range(3))


def _igc_kernels(L: int) -> tuple[KernelSpec, KernelSpec]:
    """IGC block: primary 3x3 GC with L groups, secondary 1x1 PWG whose groups are L wide (M_s groups)."""
    return (KernelSpec("GC", groups=L), KernelSpec("PWG", group_width=L))


# ---------------------------------------------------------------------------------------------------- IGCV1


def regconv_plain(width: int, depth: int, *, num_classes: int = 10, name: str = "") -> ArchSpec:
    """IGCV1 Table 2 RegConv-Wc: plain 3x3 convs (BN, ReLU), widths c, 2c, 4c, D = 3B + 2."""
    block = BlockSpec((KernelSpec("CONV"),), bn="block", identity=False)
    return ArchSpec(stem=StemSpec(width), block=block, stages=_three_stages(width, _plain_blocks(depth)),
                    num_classes=num_classes, name=name)


def sumfusion_plain(width: int, depth: int, *, partitions: int = 4, num_classes: int = 10, name: str = "") -> ArchSpec:
    """IGCV1 Table 2 SumFusion: ``partitions`` parallel 3x3 convs of the same input, summed (BN, ReLU), D = 3B + 2."""
    block = BlockSpec((KernelSpec("GC", groups=partitions),), bn="block", identity=False, fusion=partitions)
    return ArchSpec(stem=StemSpec(width), block=block, stages=_three_stages(width, _plain_blocks(depth)),
                    num_classes=num_classes, name=name)


def igcv1_plain(L: int, M: int, depth: int, *, num_classes: int = 10, name: str = "") -> ArchSpec:
    """IGCV1 Table 2 plain IGC-LxMy net: stem L*M, IGC blocks (+BN+ReLU), L fixed and M doubling per stage."""
    block = BlockSpec(_igc_kernels(L), bn="block", identity=False)
    return ArchSpec(stem=StemSpec(L * M), block=block, stages=_three_stages(L * M, _plain_blocks(depth)),
                    num_classes=num_classes, name=name)


def regconv_resnet(width: int, depth: int, *, num_classes: int = 10, name: str = "") -> ArchSpec:
    """IGCV1 Table 5 RegConv-Wc+Ident.: residual units of two 3x3 convs, 1x1 stride-2 projection."""
    block = BlockSpec((KernelSpec("CONV"), KernelSpec("CONV")), bn="each", relu_after=(0,))
    return ArchSpec(stem=StemSpec(width), block=block, stages=_three_stages(width, _units(depth)),
                    num_classes=num_classes, name=name)


def _igc_unit(L: int, *, shortcut: Shortcut) -> BlockSpec:
    """Residual unit of two IGC blocks: IGC+BN+ReLU, IGC+BN, sum, ReLU."""
    return BlockSpec(_igc_kernels(L) * 2, bn=(1, 3), relu_after=(1,), shortcut=shortcut)


def igcv1_resnet(L: int, M: int, depth: int, *, num_classes: int = 10, name: str = "") -> ArchSpec:
    """IGCV1 Table 5 IGC-LxMy+Ident.: units of two IGC blocks, 1x1 stride-2 projection with L groups."""
    return ArchSpec(stem=StemSpec(L * M), block=_igc_unit(L, shortcut="grouped_projection"),
                    stages=_three_stages(L * M, _units(depth)), num_classes=num_classes, name=name)


def igcv1_nodown(L: int, M: int, *, blocks: int = 6, num_classes: int = 100, name: str = "") -> ArchSpec:
    """IGCV1 Sec. 5.3 / slides: 8-layer net without down-sampling (stem, 6 IGC blocks at 32x32, FC)."""
    block = BlockSpec(_igc_kernels(L), bn="block", identity=False)
    return ArchSpec(stem=StemSpec(L * M), block=block, stages=(StageSpec(L * M, blocks),),
                    num_classes=num_classes, name=name)


def resnet18_imagenet(width: int = 64, *, name: str = "") -> ArchSpec:
    """ResNet-18 (IGCV1 Table 6 baseline): 7x7/2 stem + max-pool, 4 stages x 2 basic units, 1x1 projections."""
    block = BlockSpec((KernelSpec("CONV"), KernelSpec("CONV")), bn="each", relu_after=(0,))
    return ArchSpec(
        stem=StemSpec(width, kernel_size=7, stride=2, pool=True),
        block=block,
        stages=tuple(StageSpec(width * 2**s, 2, stride=1 if s == 0 else 2) for s in range(4)),
        input_shape=IMAGENET, num_classes=1000, name=name,
    )


def igcv1_imagenet(L: int, M: int, *, vary: str = "M", name: str = "") -> ArchSpec:
    """IGCV1 Table 6 ResNet-18-style IGC net (official code): units of two IGC blocks, grouped projections.

    ``vary="M"`` (IGC-L4M32, L16M16): widths L*M*2^s, primary groups L. ``vary="L"`` (IGC-L100M2): stem L,
    widths L*M*2^s with primary groups L*2^s (2 channels each) and secondary groups M.
    """
    if vary == "M":
        stem = L * M
        block = _igc_unit(L, shortcut="grouped_projection")
        stages = tuple(StageSpec(L * M * 2**s, 2, stride=1 if s == 0 else 2) for s in range(4))
    elif vary == "L":
        stem = L
        kernels = (KernelSpec("GC", groups=L), KernelSpec("PWG", groups=M)) * 2
        block = BlockSpec(kernels, bn=(1, 3), relu_after=(1,), shortcut="grouped_projection")
        stages = tuple(
            StageSpec(L * M * 2**s, 2, stride=1 if s == 0 else 2, groups=(L * 2**s, None, L * 2**s, None))
            for s in range(4)
        )
    else:
        raise UserError(f"vary: {vary!r} must be 'M' or 'L'")
    return ArchSpec(stem=StemSpec(stem, kernel_size=7, stride=2, pool=True), block=block, stages=stages,
                    input_shape=IMAGENET, num_classes=1000, name=name)


# ---------------------------------------------------------------------------------------------------- IGCV2


def _unit_of(kernels: tuple[KernelSpec, ...]) -> BlockSpec:
    """IGCV2 residual unit: the block twice, BN + ReLU after the first, BN after the second, parameter-free
    shortcut (identity; none on a shape change)."""
    n = len(kernels)
    return BlockSpec(kernels * 2, bn=(n - 1, 2 * n - 1), relu_after=(n - 1,), shortcut="none")


def igcv2_xception(x: int, depth: int, *, stem: int = 35, num_classes: int = 10, name: str = "") -> ArchSpec:
    """IGCV2 Table 1 Xception (Cx): DW3x3 + PW, skip every two blocks, stem fixed at 35.

    Stage transitions use the fitted 'full cost' form, a depthwise conv with channel multiplier 2 (C -> 2C,
    9*C_out weights), written as a GC with one input channel per group; the stem -> x block applies the DW on
    the stem width (a multiplier x/35 is not an integer).
    """
    units = _units(depth)
    first = _unit_of((KernelSpec("DW"), KernelSpec("PW")))
    later = _unit_of((KernelSpec("GC", group_width=1), KernelSpec("PW")))
    stages = (StageSpec(x, units),) + tuple(StageSpec(x * 2**s, units, stride=2, block=later) for s in (1, 2))
    return ArchSpec(stem=StemSpec(stem), block=first, stages=stages, num_classes=num_classes, name=name)


def igcv2_igcv1(x: int, depth: int, *, num_classes: int = 10, name: str = "") -> ArchSpec:
    """IGCV2 Table 1 IGC-V1 (Cx): the IGCV1 layout with L = x/2 fixed and M = 2, 4, 8, skip every two blocks."""
    if x % 2:
        raise UserError(f"x: {x} must be even (L = x/2)")
    return ArchSpec(stem=StemSpec(x), block=_unit_of(_igc_kernels(x // 2)), stages=_three_stages(x, _units(depth)),
                    num_classes=num_classes, name=name)


def igcv2_igcv2(x: int, depth: int, K: tuple[int, int, int], *, num_classes: int = 10, name: str = "") -> ArchSpec:
    """IGCV2 Table 1 IGC-V2 (Cx): DW3x3 + two group 1x1 convs with K_s channels per branch (C_s/K_s groups)."""
    groups = tuple(x * 2**s // K[s] for s in range(3))
    kernels = (KernelSpec("DW"), KernelSpec("PWG", groups=groups[0]), KernelSpec("PWG", groups=groups[0]))
    units = _units(depth)
    stages = tuple(
        StageSpec(x * 2**s, units, stride=1 if s == 0 else 2, groups=(None, groups[s], groups[s]) * 2)
        for s in range(3)
    )
    return ArchSpec(stem=StemSpec(x), block=_unit_of(kernels), stages=stages, num_classes=num_classes, name=name)


def igcv2_star(x: int, depth: int, *, K: int = 8, stem: int = 64, per_stage: bool = True, num_classes: int = 10,
               name: str = "") -> ArchSpec:
    """IGCV2 Table 1 IGC-V2* (Cx): DW3x3 + n_s group 1x1 convs of K channels per branch, stem 64.

    ``per_stage`` (the fit to the tables): n_s = ceil(log_K C_s) per stage; else the Table 1 text's
    n = ceil(log_K x) in every stage. Stages 2 and 3 use C_s/K groups in every group conv (their transition
    maps C_s/2 -> C_s with C_s/K groups, as fitted); stage 1 uses K channels per group of the input, so its
    first block (stem 64 -> x) has 64/K groups where the fit has the largest divisor of 64 and x up to x/K.
    """
    units = _units(depth)

    def n_convs(width: int) -> int:
        return max(1, math.ceil(math.log(width, K) - 1e-9))

    blocks = []
    for s in range(3):
        width = x * 2**s
        n = n_convs(width if per_stage else x)
        fixed = s > 0 and (width // 2) % (width // K) == 0 and width % K == 0
        pwg = KernelSpec("PWG", groups=width // K) if fixed else KernelSpec("PWG", group_width=K)
        blocks.append(_unit_of((KernelSpec("DW"),) + (pwg,) * n))
    stages = tuple(
        StageSpec(x * 2**s, units, stride=1 if s == 0 else 2, block=None if s == 0 else blocks[s]) for s in range(3)
    )
    return ArchSpec(stem=StemSpec(stem), block=blocks[0], stages=stages, num_classes=num_classes, name=name)


def igcv2_block_net(kernels: tuple[KernelSpec, ...], width: int, *, blocks: int = 6, num_classes: int = 100,
                    name: str = "") -> ArchSpec:
    """IGCV2 Tables 2/5: 8-layer net without down-sampling (stem, 6 blocks at 32x32, FC) of one block type."""
    block = BlockSpec(kernels, bn="block", identity=False)
    return ArchSpec(stem=StemSpec(width), block=block, stages=(StageSpec(width, blocks),),
                    num_classes=num_classes, name=name)


# ------------------------------------------------------------------------------------------- IGCV3 / MobileNet

#: MobileNetV2 rows (t, c, n, s)
MBV2_ROWS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)
#: IGCV3-D: MobileNetV2 widths, n doubled for the middle rows (official code)
IGCV3_D_ROWS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 4, 2), (6, 32, 6, 2), (6, 64, 8, 2), (6, 96, 6, 1), (6, 160, 6, 2), (6, 320, 1, 1),
)
#: IGCV3-W: MobileNetV2 widths x2, same n
IGCV3_W_ROWS: tuple[tuple[int, int, int, int], ...] = (
    (1, 32, 1, 1), (6, 48, 2, 2), (6, 64, 3, 2), (6, 128, 4, 2), (6, 192, 3, 1), (6, 320, 3, 2), (6, 640, 1, 1),
)
#: CIFAR strides of the rows (xxradon/IGCV3-pytorch: stem stride 1, second row stride 1)
CIFAR_ROW_STRIDES: tuple[int, ...] = (1, 1, 2, 2, 1, 2, 1)


def mobilenet_v2_like(
    rows: tuple[tuple[int, int, int, int], ...],
    *,
    groups: int | None = None,
    second_groups: int | None = None,
    relu_after: tuple[int, ...] = (1,),
    cifar: bool = False,
    num_classes: int | None = None,
    head: int = 1280,
    name: str = "",
) -> ArchSpec:
    """MobileNetV2 layout (stem 3x3/2 -> 32, inverted-residual rows, 1x1 head conv, GAP, FC).

    ``groups=None``: MobileNetV2 (PW + DW + PW, expansion t of C_in, linear bottleneck; the t = 1 row is DW + PW).
    ``groups=G``: IGCV3 (PWG(G) + DW + PWG(``second_groups`` or G), ReLU after the kernels in ``relu_after``,
    by default only after the DW; the t = 1 row keeps a G-group 1x1 conv). ReLU stands for ReLU6 (same cost).
    ``cifar``: 32x32 input with the IGCV3 CIFAR strides. The network is :func:`~igcnas.arch.layout.mobilenet_arch`'s
    (also the search spaces' ``mobilenet`` layouts).
    """
    strides = CIFAR_ROW_STRIDES if cifar else tuple(r[3] for r in rows)
    if groups is None:
        block = BlockSpec((KernelSpec("PW"), KernelSpec("DW"), KernelSpec("PW")), bottleneck=6, relu_after=(0, 1))
    else:
        second = KernelSpec("PWG", groups=second_groups or groups)
        block = BlockSpec((KernelSpec("PWG", groups=groups), KernelSpec("DW"), second), bottleneck=6, relu_after=relu_after)
    return mobilenet_arch(
        block,
        tuple((t, c, n, stride) for (t, c, n, _), stride in zip(rows, strides, strict=True)),
        stem_stride=1 if cifar else 2,
        head_width=head,
        input_shape=CIFAR if cifar else IMAGENET,
        num_classes=num_classes or (10 if cifar else 1000),
        name=name,
    )


def mobilenet_v1(multiplier: float = 1.0, *, name: str = "") -> ArchSpec:
    """MobileNetV1 (ImageNet): stem 3x3/2 -> 32m, 13 DW3x3 + PW blocks, GAP, FC-1000."""
    layout = ((64, 1, 1), (128, 2, 2), (256, 2, 2), (512, 6, 2), (1024, 2, 2))
    block = BlockSpec((KernelSpec("DW"), KernelSpec("PW")), relu_after=(0,), identity=False)
    return ArchSpec(
        stem=StemSpec(int(32 * multiplier), stride=2),
        block=block,
        stages=tuple(StageSpec(int(c * multiplier), n, stride=s) for c, n, s in layout),
        input_shape=IMAGENET, num_classes=1000, name=name,
    )


# ---------------------------------------------------------------------------------------------------- Fog


def fog_net(kernels: tuple[KernelSpec, ...], width: int, *, blocks: int = 2, bottleneck: float = 1.0,
            name: str = "") -> ArchSpec:
    """Fog Table 1 layout: conv3x3/2 -> w, max-pool, 4 stages (w, 2w, 4w, 8w) of ``blocks`` blocks, identity over
    every block (1x1 projection on a shape change), BN after every layer, ReLU only after the sum, GAP, FC-1000."""
    block = BlockSpec(kernels, bottleneck=bottleneck)
    return ArchSpec(
        stem=StemSpec(width, stride=2, pool=True),
        block=block,
        stages=tuple(StageSpec(width * 2**s, blocks, stride=1 if s == 0 else 2) for s in range(4)),
        input_shape=IMAGENET, num_classes=1000, name=name,
    )
