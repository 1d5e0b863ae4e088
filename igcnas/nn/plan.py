"""The decision table of :class:`~igcnas.nn.ops.FastSparseConv2d`: which form a sparse conv runs, where.

:func:`select_plan` maps a :class:`ConvSpec` (the conv's shape), a device type and ``impl`` to a
:class:`ConvPlan` (``reference`` | ``grouped`` | ``dense`` | ``native``, the forms of :mod:`igcnas.nn.ops`): a
fixed table, no autotuning; :func:`native_kernels_usable` says whether the C kernels may run right now.

Decision table (CPU; fast = ``impl="fast"``; auto differs only for NCHW inputs, see below). Speed-ups are
fast/reference of one op, training step (fwd + bwd), batch 64, float32, 1 thread (thread CPU time, on this
project's shared 2-core AVX-512 Xeon), for a channels_last input and for an NCHW input (fast pays the
conversion); block-level numbers come from ``python -m igcnas.bench.ops``::

    kind  case (G = groups, W = channels/group)  form     example                         CL in  NCHW in
    ----  -----------------------------------  -------  ------------------------------  -----  -------
    PW    1x1, G = 1 (shuffle folded)          dense    64->64, shuffle 4, 32x32        1.37x    1.85x
    CONV  kxk, G = 1 (shuffle folded)          dense    3x3 32->32, 32x32               1.01x    1.45x
    PWG   stride 1, (in/G)*(out/G) <=          native   see the table below
          NATIVE_MAX_GROUP_WEIGHTS (4096)
    PWG   otherwise (or native not built):
          in*out*(G-1)/G <= 4096 (<= 16384     dense    48, G=2, shuffle 24, 32x32      2.24x    2.29x
          with a shuffle, which is folded)              192->32, G=2, shuffle 2, 32x32  1.96x    1.70x
          more extra MACs than that            grouped  416, G=52, shuffle 52, 32x32    1.12x    1.45x
    GC    (in/G)*(out/G) <=                    native   see the GC table below
          NATIVE_GC_MAX_GROUP_WEIGHTS (16)
    GC    otherwise (or native not built):
          W < MERGE_WIDTH (8)                  grouped  3x3 48, G=24 (W=2 -> merge 4)   1.21x    3.08x
          merge s = G (all in 8 channels)      dense
          W >= MERGE_WIDTH                     grouped  3x3 64, G=4, stride 2           1.01x    1.03x
    DW    kxk, G = in                          grouped  3x3 96, 32x32                   1.00x    1.81x
                                                        3x3 96, stride 2, shuffle 2     1.22x    1.05x

The ``native`` rows: ms per op, forward / training step (fwd + bwd), batch 64, 32x32, float32, channels_last
input, 2 threads, median of 9 (wall time, same machine; ``form`` = what the table chose before the kernel)::

    case (in->out, G, shuffle)  form     naive fwd / step  form fwd / step  native fwd / step  step speed-up
    --------------------------  -------  ----------------  ---------------  -----------------  -------------
    416, G=52, shuffle 52       grouped      34.2 / 93.0      31.0 / 87.0       11.8 / 33.1      2.63x
    416, G=52                   grouped      19.6 / 67.4      20.5 / 67.5       11.7 / 32.8      2.06x
    208, G=26, shuffle 26       grouped      16.1 / 44.3      14.7 / 41.4        6.0 / 16.6      2.49x
    64, G=8, shuffle 8          dense         5.0 / 12.9       4.2 / 12.0        1.9 /  5.6      2.16x
    48, G=2, shuffle 24         dense         3.0 /  8.9       2.5 /  7.6        1.5 /  4.7      1.61x
    32->192, G=2                dense         6.0 / 18.1       6.0 / 17.3        4.1 / 11.7      1.48x
    192->32, G=2, shuffle 2     dense        10.6 / 26.5       8.4 / 23.3        4.7 / 14.4      1.62x
    128, G=2, shuffle 2         dense                          8.7 / 27.4        8.2 / 24.3      1.13x
    512, G=8, shuffle 8         grouped                       34.8 / 116         29.0 / 106      1.10x
    256, G=2 (128x128 / group)  grouped                       16.2 / 60.5       22.1 / 86.3      0.70x (not used)

At 1 thread the step speed-ups were 1.55-2.7x on the first seven rows (416, G=52, shuffle 52: 171 -> 63 ms). The
kernel is bound by memory traffic (it reads the input once and writes the output once, with non-temporal stores
for outputs of 16 MiB and more) plus its small matmuls; oneDNN's grouped GEMMs win once a group's weight is large
(128 x 128), hence the ``NATIVE_MAX_GROUP_WEIGHTS`` limit. For an NCHW input ``auto`` inference converts to
channels_last for the native form only when it also folds a shuffle (416, G=52, shuffle 52: 39 ms both ways;
without a shuffle the reference NCHW conv was faster, 31 vs 40 ms).

The native GC rows (3x3, same setup, median of 7; ``form`` = the table without the kernel, ``grouped`` with
``m`` adjacent groups merged; W = in/G x out/G; IGC-L24M2-D20 / IGCV1-C96 stage shapes, then wider groups and
depthwise convs for the rule)::

    case (in->out, G, shuffle, size)  W      form  naive fwd / step  form fwd / step  native fwd / step  step
    --------------------------------  -----  ----  ----------------  ---------------  -----------------  -----
    48, G=24, 32x32                   2 x 2  m4        4.6 / 14.8       3.3 / 11.4        1.9 /  6.5     1.76x
    48, G=24, shuffle 2, 32x32        2 x 2  m4        7.0 / 20.6       4.8 / 15.3        2.2 /  7.5     2.04x
    96, G=48, shuffle 2, 16x16        2 x 2  m4        3.4 /  9.7       2.2 /  7.1        1.0 /  3.3     2.17x
    192, G=96, shuffle 2, 8x8         2 x 2  m4        2.0 /  5.4       1.1 /  3.6        0.5 /  1.6     2.22x
    48->96, G=24, stride 2, 32x32     2 x 4  m2        1.7 /  7.0       1.8 /  6.1        1.9 /  5.5     1.12x
    96, G=24, 16x16                   4 x 4  m2        1.7 /  5.8       1.6 /  5.7        1.6 /  5.2     1.08x
    64, G=16, 32x32                   4 x 4  m2        5.0 / 17.6       5.2 / 17.1        4.8 / 14.6     1.17x
    96->192, G=24, stride 2, 16x16    4 x 8  m1        0.9 /  3.4       1.0 /  3.4        1.9 /  4.7     0.72x
    192, G=24, 8x8                    8 x 8  m1        1.0 /  3.0       0.9 /  3.0        1.6 /  4.9     0.62x
    64, G=8, 32x32                    8 x 8  m1        4.9 / 16.9       4.9 / 17.1        8.6 / 27.7     0.62x
    DW 96, 32x32                      1 x 1  -         2.6 /  9.3       2.7 /  9.0        3.9 / 10.4     0.86x
    DW 192, 16x16                     1 x 1  -         0.7 /  3.3       0.7 /  3.1        1.0 /  3.7     0.85x
    DW 96, stride 2, shuffle 2, 32x32 1 x 1  -         4.6 / 12.0       3.1 /  9.8        2.3 /  6.6     1.48x

The GC kernel expands each input row into ``in/G`` copies in output-channel order, so that every product is a
depthwise conv vectorised across channels; that costs ``out/G`` times the input per row, so it wins only for the
narrowest groups (where ``merge`` multiplies the most zeros): hence ``NATIVE_GC_MAX_GROUP_WEIGHTS`` (the last
five rows are not used). In this table depthwise convs keep oneDNN's channels_last kernel (the rows above were
measured with the expanding kernel). The native kernel is a candidate for every depthwise conv that
:mod:`igcnas.nn.tune` measures on the machine: with stride 1 and no shuffle it runs ``_csrc/dw_conv.c``, which
reads the rows in place (no expansion) and streams large outputs past the caches; otherwise the expanding kernel.

At 2 threads on the (shared) machine the NCHW grouped kernels of the reference were 2-3x slower than at 1
thread, so the 2-thread speed-ups of whole blocks are larger. ``impl="auto"`` is ``fast`` except for an NCHW input on CPU: there it keeps the reference form (no conversion to channels_last)
for inference (no autograd) unless the op is a GC or a ``dense``/``native`` form folding a shuffle (the measured inference
speed-ups with conversion were 0.4-1.0x), and for tiny inputs (N*H*W < ``AUTO_MIN_PIXELS``), GC excepted.
On channels_last inputs (what every fast op outputs, so every layer after the first in a network) ``auto`` =
``fast``.

On CUDA and other accelerators the plan is the reference form, except that a shuffle before a ``groups == 1``
conv is folded into the weight (no activation copy): cuDNN runs grouped and depthwise convs natively, and no
accelerator was available to measure anything else, so nothing cleverer is claimed there. Every path but
``native`` (CPU float32 only, with a fallback) is plain ``F.conv2d`` / ``reshape`` / ``permute`` / elementwise
code, so it is device agnostic and works under autocast (fp16/bf16) and with channels_last tensors; the tests run
the CUDA plans on CPU tensors.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from igcnas.errors import UserError
from igcnas.nn import _native

__all__ = [
    "Impl",
    "KernelKind",
    "PlanForm",
    "PwKernel",
    "ConvSpec",
    "ConvPlan",
    "DENSE_EXTRA_MACS",
    "DENSE_EXTRA_MACS_SHUFFLED",
    "MERGE_WIDTH",
    "AUTO_MIN_PIXELS",
    "NATIVE_MAX_GROUP_WEIGHTS",
    "NATIVE_GC_MAX_GROUP_WEIGHTS",
    "NATIVE_GC_TUNED_MAX_GROUP_WEIGHTS",
    "native_kernels_usable",
    "native_candidate",
    "native_measurable",
    "select_plan",
]

Impl = Literal["auto", "naive", "fast"]
KernelKind = Literal["PW", "PWG", "DW", "GC", "CONV"]
PlanForm = Literal["reference", "grouped", "dense", "native"]
PwKernel = Literal["tiles", "direct"]

#: a grouped 1x1 conv runs as one dense (block-diagonal) GEMM on CPU when the zeros it multiplies cost at most
#: this many extra multiply-adds per output pixel (``in * out * (groups - 1) / groups``) ...
DENSE_EXTRA_MACS = 4096
#: ... or this many when a shuffle precedes it (the dense form folds the shuffle; grouped has to copy)
DENSE_EXTRA_MACS_SHUFFLED = 16384
#: ``impl="auto"`` keeps an NCHW input NCHW (reference form) below this many pixels (N * H * W), GC excepted
AUTO_MIN_PIXELS = 1024
#: a kxk group conv (GC) on CPU merges adjacent groups into block-diagonal groups up to this many channels wide
MERGE_WIDTH = 8
#: a stride-1 grouped 1x1 conv (PWG) runs the native C kernel on CPU when each group's weight has at most this many
#: entries (``in / groups * out / groups``) and the kernel is available; wider groups keep the oneDNN/GEMM forms
NATIVE_MAX_GROUP_WEIGHTS = 4096
#: a kxk group conv (GC) runs the native C kernel on CPU when its groups are this narrow: ``in / groups * out /
#: groups`` (weights per group and tap) at most this (2 x 2, 2 x 4, 4 x 4 channels); wider groups keep oneDNN
NATIVE_GC_MAX_GROUP_WEIGHTS = 16
#: the native kernel is also a measured candidate (igcnas.nn.tune) for GC groups up to this many weights per tap (up
#: to 8 x 8 channels), where it may beat oneDNN on this machine
NATIVE_GC_TUNED_MAX_GROUP_WEIGHTS = 64


def _is_exporting() -> bool:
    """True inside ``torch.export`` (the API is absent from older torch releases)."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting()) if is_exporting is not None else False



@dataclass(frozen=True)
class ConvSpec:
    """Shape of one sparse conv: ``conv(shuffle(x))`` with padding ``kernel_size // 2`` and no bias.

    ``shuffle_groups`` is 1 when there is no shuffle (also for a shuffle that is the identity: 1 or ``in``).

    Example:
        >>> ConvSpec(48, 48, 3, groups=24).kind
        'GC'
    """

    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int = 1
    groups: int = 1
    shuffle_groups: int = 1

    def __post_init__(self) -> None:
        for name in ("in_channels", "out_channels", "kernel_size", "stride", "groups", "shuffle_groups"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"sparse_conv: {name}={value!r} is not a positive integer (e.g. {name}=1)")
        if self.kernel_size % 2 == 0:
            raise UserError(
                f"sparse_conv: kernel_size={self.kernel_size} is even; padding k//2 keeps the size only for "
                "odd kernels (use 1, 3, 5 ...)"
            )
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise UserError(
                f"sparse_conv: groups={self.groups} must divide in_channels={self.in_channels} and "
                f"out_channels={self.out_channels}; pick a common divisor"
            )
        if self.in_channels % self.shuffle_groups:
            raise UserError(
                f"sparse_conv: shuffle_groups={self.shuffle_groups} must divide in_channels="
                f"{self.in_channels}; pick a divisor of {self.in_channels} or None for no shuffle"
            )

    @property
    def kind(self) -> KernelKind:
        """PW, PWG (1x1, dense / grouped), DW (groups == in), GC (k > 1, grouped) or CONV (k > 1, dense)."""
        if self.kernel_size == 1:
            return "PW" if self.groups == 1 else "PWG"
        if self.groups == 1:
            return "CONV"
        return "DW" if self.groups == self.in_channels else "GC"

    @property
    def group_weights(self) -> int:
        """Weights per group and tap: ``in / groups * out / groups`` (what the native kernels' bounds count)."""
        return (self.in_channels // self.groups) * (self.out_channels // self.groups)

    @property
    def has_shuffle(self) -> bool:
        """Whether the input shuffle is a real permutation."""
        return 1 < self.shuffle_groups < self.in_channels

    def macs(self, height: int, width: int) -> int:
        """Multiply-adds per image of the sparse conv on an ``height x width`` input (the budget's FLOPs)."""
        pad = self.kernel_size // 2
        ho = (height + 2 * pad - self.kernel_size) // self.stride + 1
        wo = (width + 2 * pad - self.kernel_size) // self.stride + 1
        per_pixel = self.out_channels * (self.in_channels // self.groups) * self.kernel_size**2
        return per_pixel * ho * wo


@dataclass(frozen=True)
class ConvPlan:
    """How a :class:`~igcnas.nn.ops.FastSparseConv2d` computes its forward on one device type.

    ``form``: ``reference`` | ``grouped`` | ``dense`` | ``native`` (the forms of :mod:`igcnas.nn.ops`); ``channels_last``: whether the
    input is converted to channels_last first; ``merge``: for ``grouped``, how many adjacent groups run as one
    block-diagonal group (1 = the conv's own groups); ``kernel``: for a ``native`` PWG, which C kernel runs it
    (``tiles``: pixel tiles transposed in registers, ``_csrc/group_pw.c``; ``direct``: the channels_last rows read
    in place, ``_csrc/group_direct.c``); ``reason``: the decision-table row that chose it.
    """

    form: PlanForm
    channels_last: bool
    reason: str
    merge: int = 1
    kernel: PwKernel = "tiles"


def _merge_factor(spec: ConvSpec) -> int:
    """Largest divisor ``s`` of ``groups`` whose merged groups are at most MERGE_WIDTH channels wide (>= 1)."""
    width = max(spec.in_channels, spec.out_channels) // spec.groups
    divisors = [s for s in range(1, spec.groups + 1) if spec.groups % s == 0 and s * width <= MERGE_WIDTH]
    return max(divisors, default=1)


def select_plan(
    spec: ConvSpec,
    device_type: str,
    impl: Impl = "auto",
    *,
    channels_last_input: bool = True,
    grad: bool = True,
    pixels: int = AUTO_MIN_PIXELS,
    native: bool | None = None,
) -> ConvPlan:
    """The forward form for ``spec`` on ``device_type`` ("cpu", "cuda", ...) under ``impl`` (decision table).

    ``impl="fast"`` depends on the spec and device only. ``impl="auto"`` also looks at the input: on CPU, for
    an NCHW input (``channels_last_input=False``) it keeps the reference form where converting to channels_last
    does not pay: without autograd (``grad=False``) unless the op is a GC or a dense/native form that folds a shuffle,
    and for tiny inputs (``pixels`` = N * H * W below ``AUTO_MIN_PIXELS``, GC excepted). ``native``: whether the
    C kernel of :mod:`igcnas.nn._native` may be used (``None``: where it could be chosen, whether it builds here).

    Example:
        >>> select_plan(ConvSpec(48, 48, 1, groups=2, shuffle_groups=24), "cpu", native=False).form
        'dense'
        >>> select_plan(ConvSpec(256, 256, 1, groups=2), "cpu").form
        'grouped'
        >>> select_plan(ConvSpec(48, 48, 3, groups=48), "cpu").form
        'grouped'
        >>> select_plan(ConvSpec(48, 48, 3, groups=48), "cpu", channels_last_input=False, grad=False).form
        'reference'
    """
    if native is None:
        native = native_candidate(spec, device_type, impl) and native_kernels_usable()
    plan = _device_plan(spec, device_type, impl, native)
    if impl != "auto" or device_type != "cpu" or plan.form == "reference" or channels_last_input:
        return plan
    if spec.kind == "GC":
        return plan  # NCHW grouped kernels are 3-10x slower: converting always pays
    if pixels < AUTO_MIN_PIXELS:
        return ConvPlan(
            "reference", False, f"auto: tiny NCHW input ({pixels} pixels), conversion does not pay"
        )
    if not grad and not (plan.form in ("dense", "native") and spec.has_shuffle):
        return ConvPlan("reference", False, "auto: NCHW inference, conversion to channels_last does not pay")
    return plan


def native_candidate(spec: ConvSpec, device_type: str, impl: str) -> bool:
    """Whether the decision table picks the native kernel for ``spec`` (if it is available): narrow CPU PWG/GC."""
    if device_type != "cpu" or impl == "naive":
        return False
    if spec.kind == "GC":
        return spec.group_weights <= NATIVE_GC_MAX_GROUP_WEIGHTS
    return spec.kind == "PWG" and spec.stride == 1 and spec.group_weights <= NATIVE_MAX_GROUP_WEIGHTS


def native_measurable(spec: ConvSpec) -> bool:
    """Whether the native kernel is one of the CPU forms :mod:`igcnas.nn.tune` times for ``spec`` (beyond the
    table's :func:`native_candidate`): a stride-1 PWG, a DW, or a GC of at most
    :data:`NATIVE_GC_TUNED_MAX_GROUP_WEIGHTS` weights per group and tap."""
    return ((spec.kind == "PWG" and spec.stride == 1) or spec.kind == "DW"
            or (spec.kind == "GC" and spec.group_weights <= NATIVE_GC_TUNED_MAX_GROUP_WEIGHTS))


@functools.lru_cache(maxsize=4096)
def _device_plan(spec: ConvSpec, device_type: str, impl: str, native: bool = False) -> ConvPlan:
    """The input-independent plan of ``select_plan`` (= the ``fast`` plan); ``native``: the C kernel is usable."""
    if impl not in get_args(Impl):
        raise UserError(f"sparse_conv: impl={impl!r} is not one of {get_args(Impl)}")
    if impl == "naive":
        return ConvPlan("reference", False, "impl='naive' always runs the reference")
    kind = spec.kind
    if device_type != "cpu":
        if spec.groups == 1 and spec.has_shuffle:
            return ConvPlan("dense", False, f"{device_type}: shuffle folded into the weight of a dense conv")
        return ConvPlan("reference", False, f"{device_type}: native (cuDNN) grouped/depthwise conv")
    if spec.groups == 1:
        return ConvPlan("dense", True, f"cpu {kind}: channels_last conv, shuffle folded into the weight")
    if kind == "DW":
        return ConvPlan("grouped", True, "cpu DW: channels_last oneDNN depthwise conv")
    if native and native_candidate(spec, device_type, impl):  # PWG or narrow GC
        what, bound = (
            ("grouped 1x1 kernel", f"weights/group <= {NATIVE_MAX_GROUP_WEIGHTS}")
            if kind == "PWG"
            else ("grouped kxk kernel", f"weights/group/tap <= {NATIVE_GC_MAX_GROUP_WEIGHTS}")
        )
        return ConvPlan("native", True, f"cpu {kind}: native {what}, shuffle folded ({spec.group_weights} {bound})")
    if kind == "PWG":
        limit = DENSE_EXTRA_MACS_SHUFFLED if spec.has_shuffle else DENSE_EXTRA_MACS
        extra = spec.in_channels * spec.out_channels * (spec.groups - 1) // spec.groups
        if extra <= limit:
            return ConvPlan("dense", True, f"cpu PWG: dense GEMM ({extra} extra MACs/pixel <= {limit})")
        return ConvPlan(
            "grouped", True, f"cpu PWG: channels_last grouped conv ({extra} extra MACs/pixel > {limit})"
        )
    merge = _merge_factor(spec)
    if merge == spec.groups:
        return ConvPlan("dense", True, f"cpu GC: all groups fit in {MERGE_WIDTH} channels, one dense conv")
    return ConvPlan(
        "grouped", True, f"cpu GC: channels_last grouped conv, {merge} groups merged per block", merge=merge
    )


def _is_compiling() -> bool:
    """True while ``torch.compile`` traces (the API is absent from older torch releases)."""
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return bool(is_compiling()) if is_compiling is not None else False


def native_kernels_usable() -> bool:
    """Whether the native CPU kernels may run now: built, and not under CPU autocast, torch.compile or tracing.

    While ``torch.compile``, ``torch.jit.trace`` or ``torch.export`` trace a model, the torch forms run instead:
    they go into the graph, where a ctypes call would break it.
    """
    if torch.jit.is_tracing() or _is_exporting() or _is_compiling() or _autocast_on_cpu():
        return False
    return _native.native_available()


def _autocast_on_cpu() -> bool:
    """Whether CPU autocast is on (``is_autocast_enabled`` takes a device type from torch 2.4 on)."""
    try:
        return bool(torch.is_autocast_enabled("cpu"))
    except TypeError:  # torch < 2.4
        return bool(torch.is_autocast_cpu_enabled())
