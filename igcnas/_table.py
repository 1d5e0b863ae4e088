"""Plain-text tables for terminal output."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["render_table"]


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, *, title: str = "") -> str:
    """Render dict rows as an aligned text table (numbers right-aligned).

    Example:
        >>> print(render_table([{"a": 1, "b": "x"}]))
        a  b
        -  -
        1  x
    """
    if columns is None:
        columns = list(rows[0].keys()) if rows else []
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    widths = [max([len(str(col))] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]
    numeric = [all(_is_number(row.get(col)) for row in rows if row.get(col) is not None) for col in columns]

    def fmt(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    lines = [title] if title else []
    lines.append(fmt([str(c) for c in columns]))
    lines.append(fmt(["-" * w for w in widths]))
    lines.extend(fmt(r) for r in cells)
    return "\n".join(lines)


def _is_number(value: Any) -> bool:
    """True for ints and floats (not bools)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    """Format one cell."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
