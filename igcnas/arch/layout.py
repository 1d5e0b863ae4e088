"""The standard layouts: one block repeated over stages after a stem.

``cifar``: a stride-1 3x3 stem, then stages of widths w, 2w, 4w (default depths 3, 3, 3; input 3x32x32, 10
classes). ``imagenet``: the Fog paper's Table 1, a stride-2 3x3 stem and a 3x3/2 max-pool, then stages of widths
w, 2w, 4w, 8w (default depths 2, 2, 2, 2; input 3x224x224, 1000 classes). Every stage but the first halves the
resolution in its first block.

``mobilenet`` and ``mobilenet_cifar``: MobileNetV2's 7 rows (:func:`mobilenet_arch`, also the zoo's builder of
MobileNetV2 and IGCV3). The base width w is the stem's (MobileNetV2: 32); the rows are w/2, 3w/4, w, 2w, 3w, 5w,
10w wide (16, 24, 32, 64, 96, 160, 320 at w = 32) and the 1x1 head conv 40w (1280), so w is a multiple of 4. The
block becomes MobileNetV2's inverted residual: its bottleneck ratio is the expansion t of the block input, no
ReLU follows the identity sum (linear bottleneck) and no projection replaces a missing identity; the first row
has t = 1. ``mobilenet``: stride-2 stem and row strides 1, 2, 2, 2, 1, 2, 1 (input 3x224x224, 1000 classes);
``mobilenet_cifar``: IGCV3's CIFAR strides, stride-1 stem and rows 1, 1, 2, 2, 1, 2, 1 (input 3x32x32, 10 classes).
Default depths: MobileNetV2's 1, 2, 3, 4, 3, 3, 1.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from igcnas.arch.spec import ArchSpec, BlockSpec, HeadSpec, StageSpec, StemSpec
from igcnas.errors import UserError

__all__ = [
    "Layout",
    "LAYOUT_DEFAULTS",
    "MOBILENET_LAYOUTS",
    "MOBILENET_WIDTHS",
    "layout_arch",
    "layout_family",
    "layout_width_step",
    "layout_widths",
    "mobilenet_arch",
]

Layout = Literal["cifar", "imagenet", "mobilenet_cifar", "mobilenet"]
LAYOUT_DEFAULTS: dict[str, tuple[tuple[int, ...], tuple[int, int, int], int]] = {
    "cifar": ((3, 3, 3), (3, 32, 32), 10),
    "imagenet": ((2, 2, 2, 2), (3, 224, 224), 1000),
    "mobilenet_cifar": ((1, 2, 3, 4, 3, 3, 1), (3, 32, 32), 10),
    "mobilenet": ((1, 2, 3, 4, 3, 3, 1), (3, 224, 224), 1000),
}
"""Per layout: default depths, input shape and class count."""

MOBILENET_LAYOUTS: dict[str, tuple[int, tuple[int, ...]]] = {
    "mobilenet": (2, (1, 2, 2, 2, 1, 2, 1)),
    "mobilenet_cifar": (1, (1, 1, 2, 2, 1, 2, 1)),  # xxradon/IGCV3-pytorch, downsampling 8
}
"""Per MobileNetV2 layout: the stem's stride and the rows' strides."""
MOBILENET_WIDTHS: tuple[int, ...] = (16, 24, 32, 64, 96, 160, 320)
"""MobileNetV2's row widths at stem width 32 (the rows scale with the stem)."""
_MOBILENET_STEM = 32
_MOBILENET_HEAD = 1280


def layout_widths(base_width: int, stages: int) -> tuple[int, ...]:
    """Stage widths ``base, 2*base, 4*base, ...``.

    Example:
        >>> layout_widths(16, 4)
        (16, 32, 64, 128)
    """
    return tuple(base_width * 2**i for i in range(stages))


def layout_family(layout: str) -> str:
    """``imagenet`` for the layouts of 224x224 input, ``cifar`` for the others (as :attr:`ArchSpec.layout`)."""
    return "imagenet" if LAYOUT_DEFAULTS[layout][1][1] >= 128 else "cifar"


def layout_width_step(layout: str) -> int:
    """The step of base widths that keeps every width of the layout whole (4 on the MobileNetV2 layouts, else 1)."""
    return 4 if layout in MOBILENET_LAYOUTS else 1


def layout_arch(
    block: BlockSpec,
    *,
    base_width: int | None = None,
    widths: tuple[int, ...] | None = None,
    depths: tuple[int, ...] | None = None,
    layout: Layout | str = "cifar",
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    stem_width: int | None = None,
    name: str = "",
) -> ArchSpec:
    """The network of ``block`` on a layout: its stem, then one stage per depth (stride 2 in all but the first).

    Give ``base_width`` (stage widths base, 2*base, ...) or explicit ``widths``; ``None`` depths, input shape and
    class count take the layout's defaults (:data:`LAYOUT_DEFAULTS`); the stem is ``stem_width`` wide (default:
    the first stage's width). The MobileNetV2 layouts take ``base_width`` only, the stem's width (see the module
    docstring).

    Example:
        >>> from igcnas.arch.spec import KernelSpec
        >>> block = BlockSpec((KernelSpec("DW"), KernelSpec("PW")))
        >>> spec = layout_arch(block, base_width=16, layout="imagenet", depths=(1, 1, 1, 1))
        >>> [s.width for s in spec.stages], spec.stem.stride, spec.stem.pool, spec.input_shape
        ([16, 32, 64, 128], 2, True, (3, 224, 224))
        >>> block = BlockSpec((KernelSpec("PW"), KernelSpec("DW"), KernelSpec("PW")), bottleneck=6, relu_after=(0, 1))
        >>> spec = layout_arch(block, base_width=32, layout="mobilenet_cifar")
        >>> [s.width for s in spec.stages], spec.stages[0].block.design, spec.head.width
        ([16, 24, 32, 64, 96, 160, 320], 'DW+PW', 1280)
    """
    if layout not in LAYOUT_DEFAULTS:
        raise UserError(f"layout: {layout!r} is not a layout; use one of {', '.join(LAYOUT_DEFAULTS)}")
    default_depths, default_shape, default_classes = LAYOUT_DEFAULTS[layout]
    depths = default_depths if depths is None else depths
    if (base_width is None) == (widths is None):
        raise ValueError("layout_arch: give exactly one of base_width and widths")
    shape = default_shape if input_shape is None else input_shape
    classes = default_classes if num_classes is None else num_classes
    if layout in MOBILENET_LAYOUTS:
        if base_width is None:
            raise ValueError(f"layout_arch: layout {layout} takes base_width (the stem's width), not widths")
        return _mobilenet_layout(block, base_width, depths, layout=layout, stem_width=stem_width, input_shape=shape,
                                 num_classes=classes, name=name)
    if widths is None:
        assert base_width is not None
        widths = layout_widths(base_width, len(depths))
    stages = tuple(
        StageSpec(width=w, depth=d, stride=1 if i == 0 else 2)
        for i, (w, d) in enumerate(zip(widths, depths, strict=True))
    )
    stem = stem_width or widths[0]
    return ArchSpec(
        stem=StemSpec(width=stem, kernel_size=3, stride=2, pool=True) if layout == "imagenet" else StemSpec(width=stem),
        block=block,
        stages=stages,
        input_shape=shape,
        num_classes=classes,
        name=name,
    )


def _mobilenet_layout(
    block: BlockSpec,
    base_width: int,
    depths: tuple[int, ...],
    *,
    layout: str,
    stem_width: int | None,
    input_shape: tuple[int, int, int],
    num_classes: int,
    name: str,
) -> ArchSpec:
    """MobileNetV2's rows scaled to stem width ``base_width``, expansion t = the block's bottleneck ratio."""
    if len(depths) != len(MOBILENET_WIDTHS):
        raise UserError(f"depths: {len(depths)} values for the {len(MOBILENET_WIDTHS)} rows of layout {layout}; give "
                        f"one per row (MobileNetV2: 1, 2, 3, 4, 3, 3, 1)")
    if any(c * base_width % _MOBILENET_STEM for c in MOBILENET_WIDTHS):
        raise UserError(f"base_width: {base_width} is not a multiple of 4, so the rows of layout {layout} (w/2, 3w/4, "
                        f"w, ..., 10w) are not whole; use a multiple of 4 (MobileNetV2: 32)")
    stem_stride, strides = MOBILENET_LAYOUTS[layout]
    t = block.bottleneck
    rows = tuple(
        (1.0 if i == 0 else t, c * base_width // _MOBILENET_STEM, n, s)
        for i, (c, n, s) in enumerate(zip(MOBILENET_WIDTHS, depths, strides, strict=True))
    )
    return mobilenet_arch(block, rows, stem_width=stem_width or base_width, stem_stride=stem_stride,
                          head_width=_MOBILENET_HEAD * base_width // _MOBILENET_STEM, input_shape=input_shape,
                          num_classes=num_classes, name=name)


def mobilenet_arch(
    block: BlockSpec,
    rows: tuple[tuple[float, int, int, int], ...],
    *,
    stem_width: int = _MOBILENET_STEM,
    stem_stride: int = 2,
    head_width: int | None = _MOBILENET_HEAD,
    input_shape: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    name: str = "",
) -> ArchSpec:
    """MobileNetV2's network of ``block``: a 3x3 stem, rows ``(t, c, n, s)`` of inverted residuals, a 1x1 head conv.

    The block gets MobileNetV2's residual (expansion of the block input, no ReLU after the sum, no projection);
    a row whose t differs from the block's bottleneck ratio overrides it. A t = 1 row drops a dense expansion
    conv (MobileNetV2: DW + PW) and keeps a grouped one at ratio 1 (IGCV3's official code).

    Example:
        >>> from igcnas.arch.spec import KernelSpec
        >>> block = BlockSpec((KernelSpec("PWG", groups=2), KernelSpec("DW"), KernelSpec("PWG", groups=2)),
        ...                   bottleneck=6, relu_after=(1,))
        >>> spec = mobilenet_arch(block, ((1, 16, 1, 1), (6, 24, 2, 2)))
        >>> [(s.width, s.bottleneck, s.block) for s in spec.stages], spec.block.bottleneck_of, spec.block.post_relu
        ([(16, 1.0, None), (24, None, None)], 'in', False)
    """
    bottleneck = block.bottleneck
    if block.is_bottleneck_form and float(bottleneck).is_integer():
        bottleneck = int(bottleneck)  # the zoo's t = 6: the same spec id whether t came as 6 or 6.0
    block = replace(block, bottleneck=bottleneck, post_relu=False, shortcut="none",
                    bottleneck_of="in" if block.is_bottleneck_form else block.bottleneck_of)
    stages = []
    for t, c, n, s in rows:
        if not block.is_bottleneck_form:
            stages.append(StageSpec(c, n, stride=s))
        elif t == 1 and block.kernels[0].kind == "PW":
            stages.append(StageSpec(c, n, stride=s, block=_without_expansion(block)))
        else:
            stages.append(StageSpec(c, n, stride=s, bottleneck=None if t == block.bottleneck else float(t)))
    return ArchSpec(
        stem=StemSpec(stem_width, stride=stem_stride),
        block=block,
        stages=tuple(stages),
        head=HeadSpec(width=head_width),
        input_shape=input_shape,
        num_classes=num_classes,
        name=name,
    )


def _without_expansion(block: BlockSpec) -> BlockSpec:
    """The block less its first (expansion) kernel, BN and ReLU positions shifted with it, at ratio 1."""
    bn = tuple(i - 1 for i in block.bn if i > 0) if isinstance(block.bn, tuple) else block.bn
    return replace(block, kernels=block.kernels[1:], bottleneck=1.0, bottleneck_of="out", bn=bn,
                   relu_after=tuple(i - 1 for i in block.relu_after if i > 0))
