"""The standard layouts: one block repeated over stages of doubling width after a stem.

``cifar``: a stride-1 3x3 stem, then stages of widths w, 2w, 4w (default depths 3, 3, 3; input 3x32x32, 10
classes). ``imagenet``: the Fog paper's Table 1, a stride-2 3x3 stem and a 3x3/2 max-pool, then stages of widths
w, 2w, 4w, 8w (default depths 2, 2, 2, 2; input 3x224x224, 1000 classes). Every stage but the first halves the
resolution in its first block.
"""

from __future__ import annotations

from typing import Literal

from igcnas.arch.spec import ArchSpec, BlockSpec, StageSpec, StemSpec
from igcnas.errors import UserError

__all__ = ["Layout", "LAYOUT_DEFAULTS", "layout_arch", "layout_widths"]

Layout = Literal["cifar", "imagenet"]
LAYOUT_DEFAULTS: dict[str, tuple[tuple[int, ...], tuple[int, int, int], int]] = {
    "cifar": ((3, 3, 3), (3, 32, 32), 10),
    "imagenet": ((2, 2, 2, 2), (3, 224, 224), 1000),
}
"""Per layout: default depths, input shape and class count."""


def layout_widths(base_width: int, stages: int) -> tuple[int, ...]:
    """Stage widths ``base, 2*base, 4*base, ...``.

    Example:
        >>> layout_widths(16, 4)
        (16, 32, 64, 128)
    """
    return tuple(base_width * 2**i for i in range(stages))


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
    the first stage's width).

    Example:
        >>> from igcnas.arch.spec import KernelSpec
        >>> block = BlockSpec((KernelSpec("DW"), KernelSpec("PW")))
        >>> spec = layout_arch(block, base_width=16, layout="imagenet", depths=(1, 1, 1, 1))
        >>> [s.width for s in spec.stages], spec.stem.stride, spec.stem.pool, spec.input_shape
        ([16, 32, 64, 128], 2, True, (3, 224, 224))
    """
    if layout not in LAYOUT_DEFAULTS:
        raise UserError(f"layout: {layout!r} must be 'cifar' or 'imagenet'")
    default_depths, default_shape, default_classes = LAYOUT_DEFAULTS[layout]
    depths = default_depths if depths is None else depths
    if (base_width is None) == (widths is None):
        raise ValueError("layout_arch: give exactly one of base_width and widths")
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
        input_shape=default_shape if input_shape is None else input_shape,
        num_classes=default_classes if num_classes is None else num_classes,
        name=name,
    )
