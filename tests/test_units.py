"""Counts with units (:func:`igcnas.units.parse_count`): what is refused, and how."""

from __future__ import annotations

import pytest

from igcnas.errors import UserError
from igcnas.units import parse_count


@pytest.mark.parametrize("text", ["0.4", "0.5", 0.4, "4e-1", "0.0004k"])
def test_a_count_that_rounds_to_zero_is_refused(text: str | float) -> None:
    with pytest.raises(UserError) as refused:
        parse_count(text, field="--max-params")
    message = str(refused.value)
    assert message == f"--max-params: {text!r} rounds to 0; give a count of at least 1 (e.g. 50k)"


@pytest.mark.parametrize(("text", "value"), [("0.6", 1), ("1", 1), ("1.5", 2), ("0.5M", 500_000), ("1.2G", 1_200_000_000)])
def test_counts_round_to_the_nearest_integer(text: str, value: int) -> None:
    assert parse_count(text) == value


@pytest.mark.parametrize("text", ["0", "-5", "inf", "nan"])
def test_zero_negative_and_non_finite_counts_are_refused(text: str) -> None:
    with pytest.raises(UserError):
        parse_count(text, field="--max-flops")
