"""The kernel vocabulary: standard convolution and the four sparse kernels of the Fog paper."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from igcnas.errors import UserError

__all__ = ["KernelKind", "KERNEL_KINDS", "SPARSE_KINDS", "kernel_kind", "Kernel", "divisors", "is_bottleneck_form"]

Grouping = Literal["dense", "grouped", "channelwise"]


@dataclass(frozen=True)
class KernelKind:
    """One kind of convolution kernel: its spatial size, how it splits channels, and a one-letter token."""

    name: str
    spatial: bool  # k x k (True) or 1 x 1 (False)
    grouping: Grouping
    token: str  # one character, used by the repeated-pattern regex
    description: str


KERNEL_KINDS: dict[str, KernelKind] = {
    kind.name: kind
    for kind in (
        KernelKind("CONV", True, "dense", "S", "standard k x k convolution (the reference)"),
        KernelKind("GC", True, "grouped", "G", "k x k group convolution with g groups"),
        KernelKind("DW", True, "channelwise", "D", "k x k depthwise (channel-wise) convolution"),
        KernelKind("PW", False, "dense", "P", "1 x 1 pointwise convolution"),
        KernelKind("PWG", False, "grouped", "Q", "1 x 1 pointwise group convolution with g groups"),
    )
}

SPARSE_KINDS: tuple[str, ...] = ("GC", "DW", "PW", "PWG")


def kernel_kind(name: str) -> KernelKind:
    """Look a kernel kind up by name; an unknown name raises UserError listing the known ones."""
    try:
        return KERNEL_KINDS[name.upper()]
    except (KeyError, AttributeError):
        raise UserError(
            f"unknown kernel kind {name!r}; known kinds: {', '.join(KERNEL_KINDS)}"
        ) from None


def is_bottleneck_form(kinds: tuple[str, ...] | list[str]) -> bool:
    """A low-rank bottleneck chain C -> K -> F: at least 3 kernels, the first and last pointwise (PW or PWG)."""
    pointwise = {"PW", "PWG"}
    return len(kinds) >= 3 and kinds[0] in pointwise and kinds[-1] in pointwise


def divisors(n: int) -> list[int]:
    """All positive divisors of ``n`` in increasing order."""
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


@dataclass(frozen=True)
class Kernel:
    """One kernel in a chain.

    ``groups`` is the number of groups (1 for PW/CONV, the channel count for DW); ``shuffle_in`` is the
    interleaving permutation applied to this kernel's *input* channels (IGC's channel shuffle with that many
    groups), or None for no permutation; ``out_channels`` None keeps the input width.
    """

    kind: str
    groups: int = 1
    out_channels: int | None = None
    shuffle_in: int | None = None
    kernel_size: int = 3

    @property
    def info(self) -> KernelKind:
        """The kernel kind's description."""
        return kernel_kind(self.kind)

    @property
    def size(self) -> int:
        """The spatial kernel size actually used (1 for pointwise kinds)."""
        return self.kernel_size if self.info.spatial else 1

    def resolved_groups(self, in_channels: int) -> int:
        """The group count for a given input width (DW: one group per channel)."""
        return in_channels if self.info.grouping == "channelwise" else self.groups

    def resolved_out(self, in_channels: int) -> int:
        """The output width for a given input width."""
        return in_channels if self.out_channels is None else self.out_channels

    def params(self, in_channels: int) -> int:
        """Weights of this kernel (no bias): k*k*C_in*C_out/g."""
        groups = self.resolved_groups(in_channels)
        return self.size * self.size * in_channels * self.resolved_out(in_channels) // groups

    def label(self, in_channels: int | None = None) -> str:
        """Short human label such as ``PWG(g=4)`` or ``GC(g=8)``."""
        if self.info.grouping == "grouped":
            return f"{self.kind}(g={self.groups})"
        return self.kind
