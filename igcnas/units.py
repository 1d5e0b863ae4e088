"""Human units for counts: ``0.5M``, ``300M``, ``1.2G``, ``12k`` (parse and format)."""

from __future__ import annotations

import math
import re

from igcnas.errors import UserError

__all__ = ["parse_count", "format_count"]

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtT]?)\s*$")


def parse_count(text: str | float | int, *, field: str = "value") -> int:
    """Parse a positive count written with an optional k/M/G/T suffix; it must round to at least 1.

    Example:
        >>> parse_count("0.5M")
        500000
        >>> parse_count("1.2G")
        1200000000
    """
    if isinstance(text, bool):
        raise UserError(f"{field}: {text!r} is not a count (write e.g. 0.5M, 300M or 1.2G)")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = _PATTERN.match(str(text))
        if not match:
            raise UserError(
                f"{field}: {text!r} is not a count; write a number with an optional suffix k, M, G or T "
                "(e.g. 0.5M, 300M, 1.2G)"
            )
        value = float(match.group(1)) * _SUFFIX[match.group(2).upper()]
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"{field}: {text!r} must be a positive number (e.g. 0.5M)")
    rounded = int(round(value))
    if rounded < 1:  # 0.4 is positive but counts nothing (and a budget of 0 divides by zero)
        raise UserError(f"{field}: {text!r} rounds to 0; give a count of at least 1 (e.g. 50k)")
    return rounded


def format_count(value: float | int | None, *, digits: int = 3) -> str:
    """Format a count with a k/M/G suffix and ``digits`` significant digits (``-`` for None/NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    value = float(value)
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g}{suffix}"
    return f"{value:.{digits}g}" if value != int(value) else str(int(value))
