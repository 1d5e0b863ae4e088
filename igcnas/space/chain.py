"""Chains of kernels: validation, composed channel connectivity, information field, complementary conditions.

The composed kernel of a chain ``W_L P_L ... W_2 P_2 W_1`` is represented over channels only (the spatial part is
a sum of kernel extents): each kernel contributes a block-diagonal connectivity mask, each permutation a
permutation matrix. Integer products count *paths* between an input and an output channel (IGCV2's complementary
condition asks for exactly one); boolean products give reachability, from which the information field's channel
extent is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from igcnas.errors import UserError
from igcnas.space.kernels import Kernel, kernel_kind

__all__ = [
    "Chain",
    "InfoField",
    "shuffle_permutation",
    "kernel_mask",
    "compose_kernel",
    "canonical_shuffle",
    "connectivity",
    "info_field",
    "field_trace",
    "standard_field",
    "is_dense",
    "strict_complementary",
    "loose_complementary",
    "parse_design",
]

_PATH_CAP = 2**40  # path counts are clipped here so long dense chains cannot overflow int64


@dataclass(frozen=True, order=True)
class InfoField:
    """Information field (spatial height, spatial width, channels) of one output activation (Fog, Def. 1)."""

    height: int
    width: int
    channels: int

    def as_tuple(self) -> tuple[int, int, int]:
        """The field as ``(h, w, c)``."""
        return (self.height, self.width, self.channels)

    def grows_from(self, other: InfoField) -> bool:
        """True when some component is larger than in ``other`` (fields never shrink along a chain)."""
        return self.as_tuple() != other.as_tuple() and all(
            a >= b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)
        )

    def exceeds(self, other: InfoField) -> bool:
        """True when some component is larger than in ``other``."""
        return any(a > b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True))

    def __str__(self) -> str:
        return f"({self.height},{self.width},{self.channels})"


def standard_field(channels: int, kernel_size: int = 3) -> InfoField:
    """The information field of a standard k x k convolution over ``channels`` inputs: (k, k, C)."""
    return InfoField(kernel_size, kernel_size, channels)


@dataclass(frozen=True)
class Chain:
    """A chain of kernels applied in order to ``in_channels`` input channels.

    Example:
        >>> from igcnas.space import Chain, Kernel
        >>> igc = Chain(48, (Kernel("GC", groups=24), Kernel("PWG", groups=2, shuffle_in=24)))
        >>> str(info_field(igc)), strict_complementary(igc)
        ('(3,3,48)', True)
    """

    in_channels: int
    kernels: tuple[Kernel, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.in_channels, int) or self.in_channels < 1:
            raise UserError(f"in_channels: {self.in_channels!r} must be a positive integer")
        if not self.kernels:
            raise UserError("kernels: a chain needs at least one kernel")
        width = self.in_channels
        for index, kernel in enumerate(self.kernels):
            where = f"kernels[{index}] ({kernel.kind})"
            info = kernel_kind(kernel.kind)
            out = kernel.resolved_out(width)
            groups = kernel.resolved_groups(width)
            if out < 1:
                raise UserError(f"{where}.out_channels: {out} must be positive")
            if info.grouping == "channelwise" and out != width:
                raise UserError(
                    f"{where}.out_channels: a depthwise kernel keeps the width ({width}), got {out}; "
                    "drop out_channels or use GC"
                )
            if info.grouping == "dense" and kernel.groups != 1:
                raise UserError(f"{where}.groups: {kernel.kind} is dense and takes groups=1, got {kernel.groups}")
            if groups < 1 or width % groups or out % groups:
                raise UserError(
                    f"{where}.groups: {groups} groups must divide the input width {width} and the output "
                    f"width {out}; pick a common divisor"
                )
            if kernel.shuffle_in is not None and (kernel.shuffle_in < 1 or width % kernel.shuffle_in):
                raise UserError(f"{where}.shuffle_in: {kernel.shuffle_in} must divide the width {width} it permutes")
            if kernel.kernel_size < 1 or kernel.kernel_size % 2 == 0:
                raise UserError(f"{where}.kernel_size: {kernel.kernel_size} must be a positive odd number")
            width = out

    @property
    def out_channels(self) -> int:
        """Width after the last kernel."""
        width = self.in_channels
        for kernel in self.kernels:
            width = kernel.resolved_out(width)
        return width

    def widths(self) -> list[int]:
        """Input width of every kernel followed by the output width (length L+1)."""
        widths = [self.in_channels]
        for kernel in self.kernels:
            widths.append(kernel.resolved_out(widths[-1]))
        return widths

    @property
    def design(self) -> str:
        """The type sequence, e.g. ``PWG+DW+PWG``."""
        return "+".join(k.kind for k in self.kernels)

    def params(self) -> int:
        """Weights of all kernels (no BN, no bias)."""
        widths = self.widths()
        return sum(k.params(w) for k, w in zip(self.kernels, widths, strict=False))

    def describe(self) -> str:
        """Kernels with groups and permutations, e.g. ``GC(g=24) > shuffle(24) > PWG(g=2)``."""
        parts: list[str] = []
        for kernel in self.kernels:
            if kernel.shuffle_in is not None:
                parts.append(f"shuffle({kernel.shuffle_in})")
            parts.append(kernel.label())
        return " > ".join(parts)


def parse_design(text: str) -> tuple[str, ...]:
    """Parse ``"PWG+DW+PWG"`` (also ``,`` or spaces between kinds) into kernel kind names, checking each name and
    that no separator stands without a kernel on each side (``GC++PW``, ``+GC``)."""
    stripped = text.strip()
    if not stripped:
        raise UserError(f"design: {text!r} names no kernel; write kinds joined by '+', e.g. PWG+DW+PWG")
    tokens = re.split(r"\s*[+,]\s*|\s+", stripped)
    if "" in tokens:
        raise UserError(f"design: {text!r} has a '+' or ',' without a kernel kind on each side; write kinds "
                        "joined by '+', e.g. PWG+DW+PWG")
    return tuple(kernel_kind(t).name for t in tokens)


def shuffle_permutation(channels: int, groups: int) -> np.ndarray:
    """Index array ``p`` of IGC's interleaving shuffle: output position ``m*groups + l`` takes input ``l*(C/groups) + m``."""
    return np.arange(channels).reshape(groups, channels // groups).T.reshape(-1)


def kernel_mask(in_channels: int, out_channels: int, groups: int) -> np.ndarray:
    """Block-diagonal 0/1 mask (out x in) of a group convolution's channel connections."""
    out_group = np.arange(out_channels) // (out_channels // groups)
    in_group = np.arange(in_channels) // (in_channels // groups)
    return (out_group[:, None] == in_group[None, :]).astype(np.int64)


def compose_kernel(matrix: np.ndarray, kernel: Kernel, width: int) -> np.ndarray:
    """Compose one kernel (with its input permutation) onto a path-count matrix (rows: channels, cols: inputs)."""
    if kernel.shuffle_in is not None:
        matrix = matrix[shuffle_permutation(width, kernel.shuffle_in)]
    out = kernel.resolved_out(width)
    groups = kernel.resolved_groups(width)
    # sum rows inside each input group, then repeat for every output channel of that group
    grouped = matrix.reshape(groups, width // groups, -1).sum(axis=1)
    result = np.repeat(grouped, out // groups, axis=0)
    return np.minimum(result, _PATH_CAP)


def connectivity(chain: Chain, *, upto: int | None = None) -> np.ndarray:
    """Path counts (out x in) of the composed kernel of the first ``upto`` kernels (all by default)."""
    matrix = np.eye(chain.in_channels, dtype=np.int64)
    width = chain.in_channels
    for kernel in chain.kernels[: upto if upto is not None else len(chain.kernels)]:
        matrix = compose_kernel(matrix, kernel, width)
        width = kernel.resolved_out(width)
    return matrix


def field_trace(chain: Chain) -> list[InfoField]:
    """Information field before the chain (1,1,1) and after each kernel, left to right."""
    fields = [InfoField(1, 1, 1)]
    matrix = np.eye(chain.in_channels, dtype=np.int64)
    width = chain.in_channels
    spatial = 1
    for kernel in chain.kernels:
        matrix = compose_kernel(matrix, kernel, width)
        width = kernel.resolved_out(width)
        spatial += kernel.size - 1
        channels = int((matrix > 0).sum(axis=1).min())
        fields.append(InfoField(spatial, spatial, channels))
    return fields


def info_field(chain: Chain) -> InfoField:
    """Information field of the whole chain; channels is the smallest count over output channels."""
    return field_trace(chain)[-1]


def is_dense(chain: Chain) -> bool:
    """True when every output channel depends on every input channel."""
    return bool((connectivity(chain) > 0).all())


def strict_complementary(chain: Chain) -> bool:
    """IGCV1/IGCV2 complementary condition: exactly one path between every input and every output channel."""
    return bool((connectivity(chain) == 1).all())


def loose_complementary(chain: Chain, super_channels: int) -> bool:
    """IGCV3's loose condition: strict complementarity over ``super_channels`` super-channels.

    Operational form used here: every grouped kernel has one branch per super-channel (its group count equals
    ``super_channels``, as IGCV3's G1 = G2 = C_s), the composed kernel is dense, and every (input, output) pair
    is joined by the same number of paths (the channels of a super-channel are interchangeable, so paths repeat
    uniformly; with one channel per super-channel this is the strict condition's "exactly one").
    """
    if super_channels < 1:
        raise UserError(f"super_channels: {super_channels} must be a positive integer")
    width = chain.in_channels
    for kernel in chain.kernels:
        groups = kernel.resolved_groups(width)
        if kernel_kind(kernel.kind).grouping == "grouped" and groups != super_channels:
            return False
        width = kernel.resolved_out(width)
    paths = connectivity(chain)
    return bool((paths > 0).all() and (paths == paths.flat[0]).all())


def canonical_shuffle(reach: np.ndarray) -> int | None:
    """IGCV2's interleave before the next grouped kernel: shuffle by the number of reach classes.

    ``reach`` is the boolean reach matrix of the prefix (rows: its output channels, columns: chain inputs). Rows
    of one group are contiguous; the shuffle by the number of classes puts one channel of every class side by
    side. Returns None where no shuffle helps (all rows equal, or the prefix is the identity).
    """
    channels = reach.shape[0]
    equal = (reach == reach[0]).all(axis=1)
    run = channels if equal.all() else int(np.argmin(equal))
    if run >= channels or channels % run:
        return None
    if run == 1 and reach.shape[0] == reach.shape[1] and (reach == np.eye(channels, dtype=bool)).all():
        return None
    return channels // run
