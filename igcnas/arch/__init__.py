"""Architecture specs and the zoo of the papers' reference networks."""

from __future__ import annotations

from igcnas.arch.layout import layout_arch
from igcnas.arch.plan import BlockPlan, plan_block
from igcnas.arch.spec import (
    ArchSpec,
    BlockSpec,
    HeadSpec,
    KernelSpec,
    StageSpec,
    StemSpec,
    load_spec,
)

__all__ = [
    "ArchSpec",
    "BlockPlan",
    "BlockSpec",
    "HeadSpec",
    "KernelSpec",
    "StageSpec",
    "StemSpec",
    "layout_arch",
    "load_spec",
    "plan_block",
]
