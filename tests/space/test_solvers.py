from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igcnas.errors import UserError
from igcnas.space import divisors
from igcnas.space.solvers import (
    FINAL_DESIGNS,
    balanced_branch_widths,
    continuous_greatest_width,
    design_params,
    greatest_width,
    theorem1_groups,
)

CHANNELS = st.sampled_from([8, 12, 16, 24, 32, 36, 48, 64, 72, 96, 128])


def brute_force_products(c: int, length: int):
    """Every ordered factorisation of c into `length` positive factors."""
    for combo in itertools.product(divisors(c), repeat=length - 1):
        prod = math.prod(combo)
        if c % prod == 0:
            yield (*combo, c // prod)


@settings(max_examples=60, deadline=None)
@given(c=CHANNELS, L=st.integers(2, 4), spatial=st.sampled_from([1, 9, 25]))
def test_balance_solver_minimises_params(c, L, spatial):
    solution = balanced_branch_widths(c, L, spatial=spatial)
    assert math.prod(solution.branch_widths) == c
    brute = min(c * (spatial * k[0] + sum(k[1:])) for k in brute_force_products(c, L))
    assert solution.params == brute
    assert solution.params >= solution.continuous_params - 1e-6  # Jensen: the real optimum is a lower bound


@settings(max_examples=60, deadline=None)
@given(c=CHANNELS, L=st.integers(2, 4))
def test_channelwise_balance(c, L):
    solution = balanced_branch_widths(c, L, spatial=9, channelwise_first=True)
    assert solution.branch_widths[0] == 1 and math.prod(solution.branch_widths) == c
    brute = min(c * (9 + sum(k)) for k in brute_force_products(c, L - 1))
    assert solution.params == brute


def test_channelwise_balance_matches_paper_example():
    assert balanced_branch_widths(64, 3, channelwise_first=True).branch_widths == (1, 8, 8)
    assert math.isclose(balanced_branch_widths(64, 3, channelwise_first=True).continuous_width, 8.0)


@settings(max_examples=60, deadline=None)
@given(c=CHANNELS, alpha=st.sampled_from([1, 2, 4]))
def test_theorem1_optimum_has_m_times_n_equal_c(c, alpha):
    f = alpha * c
    solution = theorem1_groups(c, f)
    brute = min(
        9 * c * c // m + c * f // n for m in divisors(c) for n in divisors(c) if m * n <= c and f % n == 0
    )
    assert solution.params == brute
    assert solution.m * solution.n == c  # Theorem 1


@settings(max_examples=40, deadline=None)
@given(design=st.sampled_from(FINAL_DESIGNS), budget=st.integers(2_000, 400_000), alpha=st.sampled_from([1, 2]))
def test_greatest_width_is_the_largest_fitting_width(design, budget, alpha):
    try:
        width, params, _ = greatest_width(design, budget, alpha=alpha)
    except UserError:
        return
    assert params <= budget
    assert width <= continuous_greatest_width(design, budget, alpha=alpha) + 1e-6
    # brute force: no wider width fits (scan a generous range above)
    for c in range(width + 1, int(width * 1.5) + 8):
        cost = design_params(design, c, alpha=alpha)
        assert cost is None or cost[0] > budget


def test_greatest_width_errors():
    with pytest.raises(UserError, match="too small"):
        greatest_width("PWG+DW+PWG", 3)
    with pytest.raises(UserError, match="final designs"):
        greatest_width("GC+DW", 1000)
