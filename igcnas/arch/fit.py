"""Budget filling: the widest network of a design that fits a parameter and/or FLOP budget.

The papers compare designs at equal budget by widening each one until it reaches the budget; this module does the
same on a layout template (CIFAR: 3 stages of widths w, 2w, 4w; ImageNet: the Fog paper's Table 1, 4 stages of
widths w, 2w, 4w, 8w after a stride-2 stem and a max-pool), scanning base widths that keep every group number
valid.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from igcnas.arch.layout import Layout, layout_arch
from igcnas.arch.spec import ArchSpec, BlockSpec, KernelSpec
from igcnas.errors import UserError
from igcnas.space.chain import parse_design
from igcnas.space.kernels import KERNEL_KINDS, is_bottleneck_form

__all__ = ["FitResult", "WidthFit", "Layout", "layout_spec", "fit_budget", "widest_within", "budget_violations"]


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
    block = _design_block(design, groups=groups, group_widths=group_widths, bottleneck=bottleneck,
                          relu_after=relu_after)
    return layout_arch(block, base_width=base_width, depths=depths or None, layout=layout,
                       input_shape=input_shape, num_classes=num_classes, name=name)


def _design_block(
    design: str,
    *,
    groups: tuple[int | None, ...] | None = None,
    group_widths: tuple[int | None, ...] | None = None,
    bottleneck: float | None = None,
    relu_after: tuple[int, ...] = (),
) -> BlockSpec:
    """The block of ``design`` on every layout and width (its kernels' group numbers and bottleneck ratio)."""
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
    return BlockSpec(tuple(kernels), bottleneck=ratio, relu_after=relu_after)


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
    if max_params is None and max_flops is None:
        raise UserError("give a budget: --max-params and/or --max-flops (e.g. --max-params 0.5M)")
    # a mistake in the design, its group numbers or bottleneck fails here with its own message: in the scan
    # below, a UserError only marks a width as invalid
    _design_block(design, **{k: v for k, v in template.items() if k in _BLOCK_OPTIONS})  # type: ignore[arg-type]
    groups = template.get("groups")
    quantum = step or _quantum(groups)  # type: ignore[arg-type]
    best, over = widest_within(
        lambda width: layout_spec(design, width, layout=layout, **template),  # type: ignore[arg-type]
        quantum, max_params=max_params, max_flops=max_flops, max_width=max_width,
    )
    if best is None and over is None:
        raise UserError(
            f"no valid width of {design} up to base width {max_width} (widths step by {quantum}, the least common "
            "multiple of the group counts); use smaller group counts"
        )
    if best is None:
        # the scan stops at the first valid width over budget: with nothing within budget, that is the narrowest
        assert over is not None
        raise UserError(
            f"budget too small: the narrowest valid {design} network (base width {over.width}) already has "
            f"{over.params:,} params and {over.flops:,} FLOPs; raise --max-params/--max-flops or use a shallower "
            "layout"
        )
    if over is None:
        return FitResult(best.spec, best.width, best.params, best.flops, None, None, None)
    return FitResult(best.spec, best.width, best.params, best.flops, over.width, over.params, over.flops)


# ---------------------------------------------------------------------------------------------------------------
# The one budget filler (``igcnas fit`` and the search's budget filling)


@dataclass(frozen=True)
class WidthFit:
    """One scanned base width: its spec and closed-form cost."""

    width: int
    spec: ArchSpec
    params: int
    flops: int


def budget_violations(
    params: int, flops: int, *, max_params: float | None, max_flops: float | None
) -> tuple[dict[str, float], str]:
    """Constraint values (> 0 means over budget) and a reason naming by how much, '' when feasible.

    Example:
        >>> budget_violations(1_200, 10, max_params=1_000, max_flops=None)
        ({'max_params': 200.0}, 'params 1.2k > budget 1k (+200, 20% over)')
    """
    from igcnas.units import format_count

    values: dict[str, float] = {}
    reasons: list[str] = []
    for name, value, budget in (("params", params, max_params), ("flops", flops, max_flops)):
        if budget is None:
            continue
        values[f"max_{name}"] = float(value - budget)
        if value > budget:
            reasons.append(
                f"{name} {format_count(value)} > budget {format_count(budget)} "
                f"(+{format_count(value - budget)}, {100 * (value - budget) / budget:.0f}% over)"
            )
    return values, "; ".join(reasons)


def widest_within(
    build: Callable[[int], ArchSpec | None],
    quantum: int,
    *,
    max_params: float | None,
    max_flops: float | None,
    max_width: int = 4096,
) -> tuple[WidthFit | None, WidthFit | None]:
    """Scan base widths ``quantum, 2*quantum, ... <= max_width`` until one is over budget.

    ``build(width)`` gives the spec at a base width, or None (or raises UserError) when that width is not valid
    (skipped). Returns the widest width within budget (None when the narrowest valid one is already over it) and
    the first valid width over budget (None when every valid width up to ``max_width`` fits). When no width is
    valid and ``build`` raised, the last UserError is raised again: it names the mistake, which no budget fixes.

    Example:
        >>> best, over = widest_within(lambda w: layout_spec("DW+PW", w), 8, max_params=50_000, max_flops=None)
        >>> best.params <= 50_000 < over.params, over.width - best.width
        (True, 8)
    """
    from igcnas.cost import count

    best: WidthFit | None = None
    invalid: UserError | None = None
    width = quantum
    while width <= max_width:
        try:
            spec = build(width)
        except UserError as error:
            spec, invalid = None, error
        if spec is not None:
            cost = count(spec)
            point = WidthFit(width, spec, cost.params, cost.flops)
            if budget_violations(cost.params, cost.flops, max_params=max_params, max_flops=max_flops)[1]:
                return best, point
            best = point
        width += quantum
    if best is None and invalid is not None:
        raise invalid
    return best, None


_BLOCK_OPTIONS = ("groups", "group_widths", "bottleneck", "relu_after")


def _quantum(groups: tuple[int | None, ...] | None) -> int:
    """Width step that keeps every fixed group count dividing the widths."""
    values = [g for g in (groups or ()) if g]
    return math.lcm(*values) if values else 2
