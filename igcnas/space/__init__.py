"""The sparse-kernel design space: kernel kinds, chains, information fields, conditions and pruning."""

from __future__ import annotations

from igcnas.space.chain import (
    Chain,
    InfoField,
    connectivity,
    field_trace,
    info_field,
    is_dense,
    kernel_mask,
    loose_complementary,
    parse_design,
    shuffle_permutation,
    standard_field,
    strict_complementary,
)
from igcnas.space.enumerate import (
    RULES,
    SpaceOptions,
    SpaceResult,
    Verdict,
    evaluate_design,
    param_formula,
    prune_design_space,
)
from igcnas.space.kernels import KERNEL_KINDS, SPARSE_KINDS, Kernel, KernelKind, divisors, kernel_kind

__all__ = [
    "Chain",
    "InfoField",
    "Kernel",
    "KernelKind",
    "KERNEL_KINDS",
    "SPARSE_KINDS",
    "RULES",
    "SpaceOptions",
    "SpaceResult",
    "Verdict",
    "connectivity",
    "divisors",
    "evaluate_design",
    "field_trace",
    "info_field",
    "is_dense",
    "kernel_kind",
    "kernel_mask",
    "loose_complementary",
    "param_formula",
    "parse_design",
    "prune_design_space",
    "shuffle_permutation",
    "standard_field",
    "strict_complementary",
]
