"""Closed-form design rules from the papers, solved exactly over integers.

* IGCV2 balance condition (Eq. 6-11): L group convolutions with branch widths K_1..K_L, prod K_l = C, cost
  Q = C * (S*K_1 + K_2 + ... + K_L); minimal when S*K_1 = K_2 = ... = K_L = (S*C)^(1/L). The channel-wise form
  (first kernel a depthwise 3x3, K_1 = 1) gives K_l = C^(1/(L-1)).
* Fog Theorem 1: GC(M) + PWG(N) over an intermediate width C keeps the full information field iff M*N <= C, and its
  parameters 9*C*C/M + C*F/N are smallest iff M*N = C.
* Fog Section 3.3: the greatest width reachable by each final design under a parameter budget P.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

from igcnas.errors import UserError
from igcnas.space.kernels import divisors

__all__ = [
    "BalanceSolution",
    "balance_condition",
    "balanced_branch_widths",
    "Theorem1Solution",
    "theorem1_groups",
    "FINAL_DESIGNS",
    "design_params",
    "greatest_width",
    "continuous_greatest_width",
]


@dataclass(frozen=True)
class BalanceSolution:
    """Integer branch widths K_1..K_L (prod = C) with their parameter count and the continuous optimum."""

    branch_widths: tuple[int, ...]
    params: int
    continuous_params: float
    continuous_width: float


def _check_positive(name: str, value: int) -> None:
    """Raise UserError unless value is a positive integer."""
    if not isinstance(value, int) or value < 1:
        raise UserError(f"{name}: {value!r} must be a positive integer")


def balance_condition(channels: int, groups_convs: int, *, spatial: int = 9) -> float:
    """The balanced branch width (S*C)^(1/L) of IGCV2 Eq. 11 (a real number)."""
    _check_positive("channels", channels)
    _check_positive("L", groups_convs)
    return float((spatial * channels) ** (1.0 / groups_convs))


def balanced_branch_widths(
    channels: int, group_convs: int, *, spatial: int = 9, channelwise_first: bool = False
) -> BalanceSolution:
    """Integer branch widths minimising Q = C*(S*K_1 + sum_{l>=2} K_l) subject to prod K_l = C.

    With ``channelwise_first`` the first kernel is a channel-wise S-sized convolution (K_1 = 1) and only
    K_2..K_L are chosen (IGCV2's recommended form, balance K_l = C^(1/(L-1))).

    Example:
        >>> balanced_branch_widths(64, 3, spatial=9, channelwise_first=True).branch_widths
        (1, 8, 8)
    """
    _check_positive("channels", channels)
    _check_positive("L", group_convs)
    if channelwise_first and group_convs < 2:
        raise UserError("L: the channel-wise form needs L >= 2 group convolutions")
    free = group_convs - 1 if channelwise_first else group_convs
    weights = [1] * free if channelwise_first else [spatial] + [1] * (free - 1)

    @cache
    def best(remaining: int, index: int) -> tuple[int, tuple[int, ...]]:
        if index == len(weights) - 1:
            return weights[index] * remaining, (remaining,)
        choice: tuple[int, tuple[int, ...]] | None = None
        for d in divisors(remaining):
            cost, rest = best(remaining // d, index + 1)
            candidate = (weights[index] * d + cost, (d, *rest))
            if choice is None or candidate < choice:
                choice = candidate
        assert choice is not None
        return choice

    cost, widths = best(channels, 0)
    if channelwise_first:
        widths = (1, *widths)
        cost += spatial  # the channel-wise kernel: S weights per channel
        continuous = channels * ((group_convs - 1) * channels ** (1 / (group_convs - 1)) + spatial)
        width = channels ** (1 / (group_convs - 1))
    else:
        continuous = channels * group_convs * (spatial * channels) ** (1 / group_convs)
        width = (spatial * channels) ** (1 / group_convs)
    return BalanceSolution(tuple(widths), channels * cost, continuous, width)


@dataclass(frozen=True)
class Theorem1Solution:
    """Group numbers (M, N) of GC(M)+PWG(N) with the smallest parameter count at full information field."""

    m: int
    n: int
    params: int


def theorem1_groups(channels: int, out_channels: int | None = None, *, kernel_size: int = 3) -> Theorem1Solution:
    """Minimise k*k*C*C/M + C*F/N over divisors M, N of C with M*N <= C (full field); the optimum has M*N = C.

    Example:
        >>> s = theorem1_groups(64)
        >>> s.m * s.n
        64
    """
    _check_positive("channels", channels)
    out = channels if out_channels is None else out_channels
    _check_positive("out_channels", out)
    area = kernel_size * kernel_size
    best: Theorem1Solution | None = None
    for m in divisors(channels):
        for n in divisors(channels):
            if m * n > channels or out % n:
                continue
            params = area * channels * channels // m + channels * out // n
            if best is None or (params, -m * n) < (best.params, -best.m * best.n):
                best = Theorem1Solution(m, n, params)
    if best is None:
        raise UserError(f"out_channels: no group number divides both C={channels} and F={out}")
    return best


FINAL_DESIGNS: tuple[str, ...] = ("DW+PW", "GC+PWG", "PW+DW+PW", "PWG+DW+PWG")


def design_params(
    design: str, channels: int, *, alpha: int = 1, bottleneck_ratio: int = 4, kernel_size: int = 3
) -> tuple[int, tuple[int, ...]] | None:
    """Smallest parameter count of one Fog final design at input width C, output F = alpha*C.

    Returns (params, groups) minimised over admissible group numbers keeping the full information field, or None
    when no admissible assignment exists (e.g. the bottleneck width is not an integer).
    """
    area = kernel_size * kernel_size
    c = channels
    f = alpha * c
    if design == "DW+PW":
        return area * c + c * f, ()
    if design == "GC+PWG":
        options = [
            (area * c * c // m + c * f // n, (m, n))
            for m in divisors(c)
            for n in divisors(c)
            if m * n <= c and f % n == 0
        ]
        return min(options) if options else None
    if design in ("PW+DW+PW", "PWG+DW+PWG"):
        if f % bottleneck_ratio:
            return None
        k = f // bottleneck_ratio
        if design == "PW+DW+PW":
            return c * k + area * k + k * f, ()
        options = [
            (c * k // m + area * k + k * f // n, (m, n))
            for m in divisors(math.gcd(c, k))
            for n in divisors(math.gcd(k, f))
            if m * n <= k
        ]
        return min(options) if options else None
    raise UserError(f"design: {design!r} is not one of the final designs {', '.join(FINAL_DESIGNS)}")


def _relaxed_params(design: str, c: float, *, alpha: float, bottleneck_ratio: float, area: int) -> float:
    """Real-valued lower bound of a design's parameters at width c (AM-GM with M*N at its Theorem-1 optimum)."""
    f = alpha * c
    if design == "DW+PW":
        return area * c + c * f
    if design == "GC+PWG":
        # area*C*C/M + C*F/N with M*N = C: minimum 2*C*sqrt(area*F)
        return 2 * c * math.sqrt(area * f)
    k = f / bottleneck_ratio
    if design == "PW+DW+PW":
        return c * k + area * k + k * f
    if design == "PWG+DW+PWG":
        # C*K/M + K*F/N with M*N = K: minimum 2*sqrt(K*C*F)
        return area * k + 2 * math.sqrt(k * c * f)
    raise UserError(f"design: {design!r} is not one of the final designs {', '.join(FINAL_DESIGNS)}")


def continuous_greatest_width(
    design: str, max_params: float, *, alpha: float = 1.0, bottleneck_ratio: float = 4.0, kernel_size: int = 3
) -> float:
    """The paper's real-valued greatest width G for a budget P (Fog Section 3.3), by bisection on the bound."""
    area = kernel_size * kernel_size
    lo, hi = 0.0, max(float(max_params), 1.0)
    for _ in range(200):
        mid = (lo + hi) / 2
        if _relaxed_params(design, mid, alpha=alpha, bottleneck_ratio=bottleneck_ratio, area=area) <= max_params:
            lo = mid
        else:
            hi = mid
    return lo


def greatest_width(
    design: str, max_params: int, *, alpha: int = 1, bottleneck_ratio: int = 4, kernel_size: int = 3
) -> tuple[int, int, tuple[int, ...]]:
    """Greatest input width C whose design fits ``max_params`` (exact integer search; Fog Section 3.3).

    Integer widths above the real-valued bound of :func:`continuous_greatest_width` cannot fit, so the
    search scans down from there. Returns (width, params, groups).

    Example:
        >>> greatest_width("DW+PW", 10_000)[0]
        95
    """
    _check_positive("max_params", max_params)
    bound = continuous_greatest_width(
        design, max_params, alpha=alpha, bottleneck_ratio=bottleneck_ratio, kernel_size=kernel_size
    )
    for c in range(int(math.floor(bound + 1e-9)), 0, -1):
        cost = design_params(design, c, alpha=alpha, bottleneck_ratio=bottleneck_ratio, kernel_size=kernel_size)
        if cost is not None and cost[0] <= max_params:
            return c, cost[0], cost[1]
    raise UserError(f"max_params: {max_params} is too small for any width of {design}")
