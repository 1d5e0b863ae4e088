"""Budget filling: the widest network of a design that fits a parameter and/or FLOP budget.

The papers compare designs at equal budget by widening each one until it reaches the budget; this module does the
same on a layout template (CIFAR: 3 stages of widths w, 2w, 4w; ImageNet: the Fog paper's Table 1, 4 stages of
widths w, 2w, 4w, 8w after a stride-2 stem and a max-pool), scanning base widths that keep every group number
valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from igcnas.arch.spec import ArchSpec, BlockSpec, KernelSpec, StageSpec, StemSpec
from igcnas.errors import UserError
from igcnas.space.chain import parse_design
from igcnas.space.kernels import KERNEL_KINDS, is_bottleneck_form

__all__ = ["FitResult", "layout_spec", "fit_budget"]

Layout = Literal["cifar", "imagenet"]


def layout_spec(
    design: str,
    base_width: int,
    *,
    layout: Layout = "cifar",
    depths: tuple[int, ...] | None = None,
    groups: tuple[int | None, ...] | None = None,
    group_widths: tuple[int | None, ...] | None = None,
    bottleneck: float | None = None,
    relu_after: tuple[int, ...] = (),
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    name: str = "",
) -> ArchSpec:
    """A network of one block design on a standard layout, with stage widths base, 2*base, ...

    Example:
        >>> layout_spec("PWG+DW+PWG", 32, groups=(2, None, 2)).stages[-1].width
        128
    """
    kinds = parse_design(design)
    if groups is not None and group_widths is not None:
        raise UserError("give groups or group_widths, not both")
    if groups is not None and len(groups) != len(kinds):
        raise UserError(f"groups: {len(groups)} values for the {len(kinds)} kernels of {design}")
    if group_widths is not None and len(group_widths) != len(kinds):
        raise UserError(f"group_widths: {len(group_widths)} values for the {len(kinds)} kernels of {design}")
    kernels = []
    for index, kind in enumerate(kinds):
        if KERNEL_KINDS[kind].grouping == "grouped":
            if group_widths is not None and group_widths[index] is not None:
                kernels.append(KernelSpec(kind, group_width=group_widths[index]))
            else:
                value = groups[index] if groups is not None and groups[index] is not None else 2
                kernels.append(KernelSpec(kind, groups=value))
        else:
            kernels.append(KernelSpec(kind))
    ratio = (bottleneck if bottleneck is not None else 0.25) if is_bottleneck_form(kinds) else 1.0
    block = BlockSpec(tuple(kernels), bottleneck=ratio, relu_after=relu_after)
    if layout == "cifar":
        depths = depths or (3, 3, 3)
        stem = StemSpec(width=base_width)
        shape = input_shape or (3, 32, 32)
        classes = num_classes or 10
    elif layout == "imagenet":
        depths = depths or (2, 2, 2, 2)
        stem = StemSpec(width=base_width, kernel_size=3, stride=2, pool=True)
        shape = input_shape or (3, 224, 224)
        classes = num_classes or 1000
    else:
        raise UserError(f"layout: {layout!r} must be 'cifar' or 'imagenet'")
    stages = tuple(
        StageSpec(width=base_width * 2**i, depth=d, stride=1 if i == 0 else 2) for i, d in enumerate(depths)
    )
    return ArchSpec(stem=stem, block=block, stages=stages, input_shape=shape, num_classes=classes, name=name)


@dataclass(frozen=True)
class FitResult:
    """The widest spec within budget, its cost, and the next width that did not fit."""

    spec: ArchSpec
    base_width: int
    params: int
    flops: int
    next_width: int | None
    next_params: int | None
    next_flops: int | None


def fit_budget(
    design: str,
    *,
    max_params: int | None = None,
    max_flops: int | None = None,
    layout: Layout = "cifar",
    step: int | None = None,
    max_width: int = 4096,
    **template: object,
) -> FitResult:
    """Widen ``design`` on ``layout`` until the next valid width would exceed the budget.

    Example:
        >>> fit = fit_budget("DW+PW", max_params=100_000)
        >>> fit.params <= 100_000 < fit.next_params
        True
    """
    from igcnas.cost import count

    if max_params is None and max_flops is None:
        raise UserError("give a budget: --max-params and/or --max-flops (e.g. --max-params 0.5M)")
    groups = template.get("groups")
    quantum = step or _quantum(groups)  # type: ignore[arg-type]

    def fits(cost_params: int, cost_flops: int) -> bool:
        return (max_params is None or cost_params <= max_params) and (max_flops is None or cost_flops <= max_flops)

    best: FitResult | None = None
    smallest: tuple[int, int, int] | None = None
    width = quantum
    while width <= max_width:
        try:
            spec = layout_spec(design, width, layout=layout, **template)  # type: ignore[arg-type]
        except UserError:
            width += quantum
            continue
        cost = count(spec)
        if smallest is None:
            smallest = (width, cost.params, cost.flops)
        if fits(cost.params, cost.flops):
            best = FitResult(spec, width, cost.params, cost.flops, None, None, None)
        elif best is not None:
            return FitResult(best.spec, best.base_width, best.params, best.flops, width, cost.params, cost.flops)
        else:
            break
        width += quantum
    if best is None:
        detail = (
            f"the narrowest valid {design} network (base width {smallest[0]}) already has "
            f"{smallest[1]:,} params and {smallest[2]:,} FLOPs"
            if smallest
            else f"no valid width of {design} up to {max_width}"
        )
        raise UserError(f"budget too small: {detail}; raise --max-params/--max-flops or use a shallower layout")
    return best


def _quantum(groups: tuple[int | None, ...] | None) -> int:
    """Width step that keeps every fixed group count dividing the widths."""
    values = [g for g in (groups or ()) if g]
    return math.lcm(*values) if values else 2
