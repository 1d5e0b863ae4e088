"""Torch modules of igcnas: sparse-kernel conv operators (:mod:`igcnas.nn.ops`)."""

from __future__ import annotations

from igcnas.nn.ops import (
    ChannelShuffle,
    ConvPlan,
    ConvSpec,
    FastSparseConv2d,
    SparseConv2d,
    channel_shuffle,
    dense_weight,
    merged_weight,
    select_plan,
    sparse_conv,
)

__all__ = [
    "ChannelShuffle",
    "ConvPlan",
    "ConvSpec",
    "FastSparseConv2d",
    "SparseConv2d",
    "channel_shuffle",
    "dense_weight",
    "merged_weight",
    "select_plan",
    "sparse_conv",
]
