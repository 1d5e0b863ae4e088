"""igcnas: neural-architecture search over sparse-kernel chains (IGCV1/V2/V3 and 'Penetrating the Fog').

The light-weight design-space API (``igcnas.space``) imports without torch; everything that needs torch, optuna
or pandas is imported on first use.

Example:
    >>> import igcnas
    >>> igcnas.prune_design_space(channels=64).verdict("PWG+DW+PWG").survives
    True
"""

from __future__ import annotations

import importlib
from typing import Any

from igcnas.errors import IgcnasError, UserError
from igcnas.space import (
    Chain,
    InfoField,
    Kernel,
    evaluate_design,
    info_field,
    loose_complementary,
    prune_design_space,
    strict_complementary,
)
from igcnas.units import format_count, parse_count

__version__ = "0.1.0"

# public name -> module that defines it (imported lazily: these pull in torch/pandas)
_LAZY: dict[str, str] = {
    "load_exported": "igcnas.export",
    "load_study": "igcnas.search",
    "pareto_front": "igcnas.analysis",
}

__all__ = [
    "Chain",
    "IgcnasError",
    "InfoField",
    "Kernel",
    "UserError",
    "evaluate_design",
    "format_count",
    "info_field",
    "loose_complementary",
    "parse_count",
    "prune_design_space",
    "strict_complementary",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    """Import heavy public names on first access."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'igcnas' has no attribute {name!r}")
