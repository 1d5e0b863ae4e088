"""Sparse-kernel convolutions (GC, DW, PW, PWG) behind an IGC channel shuffle, in a reference and a fast form.

``sparse_conv(in, out, k, stride=, groups=, shuffle_groups=, impl=)`` computes ``conv(shuffle(x))`` where
``conv`` is ``nn.Conv2d(in, out, k, stride, padding=k // 2, groups=groups, bias=False)`` and ``shuffle`` is
:func:`channel_shuffle` with ``shuffle_groups`` (applied to the *input*; ``None`` = no shuffle).

Every implementation is an ``nn.Conv2d`` subclass holding exactly one parameter, ``weight`` of shape
``(out, in // groups, k, k)``, so state_dicts are interchangeable and parameter counts equal:

* ``impl="naive"`` -> :class:`SparseConv2d`: a :class:`ChannelShuffle` module followed by the ``nn.Conv2d``
  forward, exactly as the public IGC code does. This is the reference.
* ``impl="fast"`` / ``"auto"`` -> :class:`FastSparseConv2d`: same parameter, same math, computed in the form
  that runs fastest on the input's device, chosen at forward time by :func:`select_plan` (a fixed decision
  table, no autotuning). The forms:

  ``reference``  shuffle + ``F.conv2d(groups=g)`` on the input as given (the shuffle keeps channels_last).
  ``grouped``    input made channels_last, shuffle as one NHWC copy (``F.channel_shuffle``), then
                 ``F.conv2d`` with the conv's groups, or with ``merge`` adjacent groups fused into one
                 block-diagonal group (:func:`merged_weight`) when the groups are narrower than ``MERGE_WIDTH``.
  ``dense``      the weight expanded to its block-diagonal dense ``(out, in, k, k)`` form with the input
                 shuffle folded into its input-channel order (:func:`dense_weight`: a weight permutation
                 instead of an activation copy), then one dense channels_last conv (a GEMM for 1x1).
  ``native``     (CPU, stride-1 PWG and narrow GC, float32) small C kernels (:mod:`igcnas.nn._native`, built
                 on first use with the system compiler) that run the grouped 1x1 conv (forward and both
                 backward products, input and weight gradients in one pass over the output gradient) or the
                 grouped kxk conv (any odd k, any stride; forward, input gradient as the transposed conv,
                 weight gradient) on channels_last tensors with the shuffle folded into their indexing, without
                 multiplying the zeros of ``merge``. Not built (no compiler, not Linux,
                 ``IGCNAS_NATIVE=0``), under autocast or for another dtype, the op uses the form the table has
                 without it.

  The weight expansions are differentiable and exact (they multiply by 0/1), so gradients reach ``weight``
  unchanged. ``dense``/``merge`` execute ``groups``- (``merge``-) fold the sparse conv's multiply-adds; they are
  chosen only where that is still faster (memory-bound sizes).

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
five rows are not used). Depthwise convs keep oneDNN's channels_last kernel (it wins without a shuffle; with a
shuffle the native kernel would win, 1.48x, which the table does not use yet).

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

Exporting and counting: while a module is being scripted (``torch.jit.script``), traced (``torch.jit.trace``,
``torch.onnx.export(dynamo=False)``, fvcore's ``FlopCountAnalysis``) or exported (``torch.export``), the fast
module emits the reference graph (shuffle + one ``aten::_convolution``). So TorchScript and ONNX work for both
impls, the exported graph is the portable one, and fvcore counts a fast module exactly like the naive one:
the sparse conv's multiply-adds ``out * (in / groups) * k * k * H_out * W_out`` per image, not the ``groups``-fold
MACs of the dense execution form. A scripted/traced fast module therefore runs the reference path.

Example:
    >>> import torch
    >>> conv = sparse_conv(48, 48, 1, groups=2, shuffle_groups=24)
    >>> ref = sparse_conv(48, 48, 1, groups=2, shuffle_groups=24, impl="naive")
    >>> _ = ref.load_state_dict(conv.state_dict())
    >>> x = torch.randn(2, 48, 8, 8)
    >>> torch.allclose(conv(x), ref(x), atol=1e-5)
    True
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from igcnas.errors import UserError
from igcnas.nn import _native

__all__ = [
    "Impl",
    "KernelKind",
    "PlanForm",
    "ConvSpec",
    "ConvPlan",
    "DENSE_EXTRA_MACS",
    "DENSE_EXTRA_MACS_SHUFFLED",
    "MERGE_WIDTH",
    "AUTO_MIN_PIXELS",
    "NATIVE_MAX_GROUP_WEIGHTS",
    "NATIVE_GC_MAX_GROUP_WEIGHTS",
    "channel_shuffle",
    "ChannelShuffle",
    "SparseConv2d",
    "FastSparseConv2d",
    "sparse_conv",
    "native_kernels_usable",
    "native_candidate",
    "select_plan",
    "dense_weight",
    "merged_weight",
]

Impl = Literal["auto", "naive", "fast"]
KernelKind = Literal["PW", "PWG", "DW", "GC", "CONV"]
PlanForm = Literal["reference", "grouped", "dense", "native"]

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


def _is_channels_last(x: Tensor) -> bool:
    """True when ``x`` is stored NHWC and not also NCHW-contiguous (ambiguous shapes count as NCHW)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _is_exporting() -> bool:
    """True inside ``torch.export`` (the API is absent from older torch releases)."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting()) if is_exporting is not None else False


def _shuffle(x: Tensor, groups: int) -> Tensor:
    """Channel shuffle without argument checks; keeps channels_last tensors channels_last (scriptable)."""
    n, c, h, w = x.shape
    if groups <= 1 or groups >= c:
        return x
    if _is_channels_last(x):
        y = x.permute(0, 2, 3, 1).reshape(n, h, w, groups, c // groups).transpose(3, 4).reshape(n, h, w, c)
        return y.permute(0, 3, 1, 2)
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """The IGC interleave permutation of the channels of an ``(N, C, H, W)`` tensor.

    Output channel ``m * groups + l`` takes input channel ``l * (C // groups) + m``, i.e.
    ``x.view(N, groups, C // groups, H, W).transpose(1, 2).reshape(N, C, H, W)``. Channels_last inputs give
    channels_last outputs (same values). ``groups`` 1 and ``C`` are the identity.

    Example:
        >>> x = torch.arange(6.0).view(1, 6, 1, 1)
        >>> channel_shuffle(x, 2).flatten().tolist()
        [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    """
    if x.dim() != 4:
        raise UserError(f"channel_shuffle: x has shape {tuple(x.shape)}; give a 4-D (N, C, H, W) tensor")
    c = x.shape[1]
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or c % groups:
        raise UserError(
            f"channel_shuffle: groups={groups!r} does not divide the {c} channels; "
            f"give a positive divisor of {c}"
        )
    return _shuffle(x, groups)


class ChannelShuffle(nn.Module):
    """Module form of :func:`channel_shuffle` (no parameters).

    Example:
        >>> ChannelShuffle(2)(torch.arange(4.0).view(1, 4, 1, 1)).flatten().tolist()
        [0.0, 2.0, 1.0, 3.0]
    """

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = int(groups)

    def forward(self, x: Tensor) -> Tensor:
        return _shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


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
    """How a :class:`FastSparseConv2d` computes its forward on one device type.

    ``form``: ``reference`` | ``grouped`` | ``dense`` | ``native`` (see the module docstring); ``channels_last``: whether the
    input is converted to channels_last first; ``merge``: for ``grouped``, how many adjacent groups run as one
    block-diagonal group (1 = the conv's own groups); ``reason``: the decision-table row that chose it.
    """

    form: PlanForm
    channels_last: bool
    reason: str
    merge: int = 1


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
    group_weights = (spec.in_channels // spec.groups) * (spec.out_channels // spec.groups)
    if spec.kind == "GC":
        return group_weights <= NATIVE_GC_MAX_GROUP_WEIGHTS
    return spec.kind == "PWG" and spec.stride == 1 and group_weights <= NATIVE_MAX_GROUP_WEIGHTS


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
        group_weights = (spec.in_channels // spec.groups) * (spec.out_channels // spec.groups)
        what, bound = (
            ("grouped 1x1 kernel", f"weights/group <= {NATIVE_MAX_GROUP_WEIGHTS}")
            if kind == "PWG"
            else ("grouped kxk kernel", f"weights/group/tap <= {NATIVE_GC_MAX_GROUP_WEIGHTS}")
        )
        return ConvPlan("native", True, f"cpu {kind}: native {what}, shuffle folded ({group_weights} {bound})")
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


def merged_weight(weight: Tensor, groups: int, merge: int) -> Tensor:
    """Weight of the same conv run with ``groups // merge`` groups: each ``merge`` adjacent groups become one.

    The merged group's weight is block diagonal (zeros between the original groups), so
    ``F.conv2d(x, merged_weight(w, g, s), groups=g // s) == F.conv2d(x, w, groups=g)``. Differentiable.

    Example:
        >>> merged_weight(torch.randn(8, 2, 3, 3), 4, 2).shape
        torch.Size([8, 4, 3, 3])
    """
    if merge == 1:
        return weight
    out_channels, in_per_group, kh, kw = weight.shape
    blocks = groups // merge
    eye = torch.eye(merge, dtype=weight.dtype, device=weight.device).view(1, merge, 1, merge, 1, 1, 1)
    merged = weight.reshape(blocks, merge, out_channels // groups, 1, in_per_group, kh, kw) * eye
    return merged.reshape(out_channels, merge * in_per_group, kh, kw)


def dense_weight(weight: Tensor, groups: int, shuffle_groups: int = 1) -> Tensor:
    """Dense ``(out, in, k, k)`` weight of ``conv(shuffle(x), weight, groups)`` as one ``groups=1`` conv.

    The block-diagonal expansion of the grouped ``weight`` with its input channels reordered by the inverse of
    the shuffle, so that ``F.conv2d(x, dense_weight(w, g, s)) == F.conv2d(channel_shuffle(x, s), w, groups=g)``.
    Differentiable: the gradient of ``weight`` is the matching block of the dense gradient.

    Example:
        >>> w = torch.randn(4, 2, 1, 1)
        >>> dense_weight(w, 2).shape
        torch.Size([4, 4, 1, 1])
    """
    dense = merged_weight(weight, groups, groups)
    out_channels, in_channels, kh, kw = dense.shape
    if 1 < shuffle_groups < in_channels:
        # the inverse of channel_shuffle(., s) is channel_shuffle(., in // s); apply it to the input-channel axis
        n_per = in_channels // shuffle_groups
        dense = dense.reshape(out_channels, n_per, shuffle_groups, kh, kw).transpose(1, 2)
        dense = dense.reshape(out_channels, in_channels, kh, kw)
    return dense


def _native_usable(x: Tensor, weight: Tensor, spec: ConvSpec) -> bool:
    """Whether a native kernel can run this forward (float32 CPU tensors, no autocast, PWG stride 1, built)."""
    if spec.kernel_size == 1:
        fits = spec.stride == 1 and _native.supports(x, weight)
    else:
        fits = _native.supports_conv(x, weight, spec.stride)
    return fits and native_kernels_usable()


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


class SparseConv2d(nn.Conv2d):
    """Reference sparse conv: :class:`ChannelShuffle` on the input, then the ``nn.Conv2d`` forward.

    An ``nn.Conv2d`` (bias-free, padding ``k // 2``) with a ``shuffle`` child module; ``weight`` is the only
    parameter. Build it with :func:`sparse_conv` (``impl="naive"``).

    Example:
        >>> conv = SparseConv2d(ConvSpec(8, 8, 3, groups=4, shuffle_groups=2))
        >>> conv(torch.randn(1, 8, 5, 5)).shape
        torch.Size([1, 8, 5, 5])
    """

    def __init__(self, spec: ConvSpec) -> None:
        super().__init__(
            spec.in_channels,
            spec.out_channels,
            spec.kernel_size,
            stride=spec.stride,
            padding=spec.kernel_size // 2,
            groups=spec.groups,
            bias=False,
        )
        self.spec = spec
        self.shuffle_groups = spec.shuffle_groups
        self.shuffle: nn.Module = ChannelShuffle(spec.shuffle_groups) if spec.has_shuffle else nn.Identity()

    def forward(self, input: Tensor) -> Tensor:
        return self._reference_forward(input)

    def _reference_forward(self, x: Tensor) -> Tensor:
        """``nn.Conv2d`` forward of the shuffled input (the graph exporters and fvcore see)."""
        return self._conv_forward(self.shuffle(x), self.weight, None)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return f"{text}, shuffle_groups={self.shuffle_groups}" if self.spec.has_shuffle else text


class FastSparseConv2d(SparseConv2d):
    """Same parameter and math as :class:`SparseConv2d`, computed in the fastest form for the input's device.

    The form comes from :func:`select_plan` (see the module docstring). Scripting, tracing and export see the
    reference graph. Build it with :func:`sparse_conv` (``impl="fast"`` or ``"auto"``).

    Example:
        >>> conv = FastSparseConv2d(ConvSpec(48, 48, 1, groups=2, shuffle_groups=24))
        >>> conv.plan("cpu").form in ("native", "dense")  # native where the C kernel builds
        True
    """

    def __init__(self, spec: ConvSpec, *, impl: Impl = "auto") -> None:
        super().__init__(spec)
        if impl not in ("auto", "fast"):
            raise UserError(
                f"FastSparseConv2d: impl={impl!r}; use 'auto' or 'fast' (or SparseConv2d for 'naive')"
            )
        self.impl: str = impl

    def plan(self, device_type: str) -> ConvPlan:
        """The plan this module runs on ``device_type`` for a channels_last training input."""
        return select_plan(self.spec, device_type, self.impl)  # type: ignore[arg-type]

    def forward(self, input: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self._reference_forward(input)
        return self._dispatch(input)

    @torch.jit.unused
    def _dispatch(self, x: Tensor) -> Tensor:
        """Reference graph while tracing/exporting, else the planned fast form."""
        if torch.jit.is_tracing() or _is_exporting():
            return self._reference_forward(x)
        if x.dim() != 4:
            raise UserError(
                f"sparse_conv: input has shape {tuple(x.shape)}; give a batched 4-D (N, C, H, W) tensor"
            )
        plan = select_plan(
            self.spec,
            x.device.type,
            self.impl,  # type: ignore[arg-type]
            channels_last_input=x.is_contiguous(memory_format=torch.channels_last),
            grad=torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad),
            pixels=x.shape[0] * x.shape[2] * x.shape[3],
        )
        return self.run_plan(x, plan)

    @torch.jit.unused
    def run_plan(self, x: Tensor, plan: ConvPlan) -> Tensor:
        """Compute the forward with an explicit ``plan`` (any plan is valid on any device)."""
        spec = self.spec
        if plan.form == "native":
            if _native_usable(x, self.weight, spec):
                if spec.kernel_size == 1:
                    return _native.group_pointwise(x, self.weight, spec.groups, spec.shuffle_groups)
                return _native.group_conv(x, self.weight, spec.groups, spec.shuffle_groups, spec.stride)
            # autocast, another dtype or device, or the kernel is not built: the torch form the table has without it
            plan = _device_plan(spec, x.device.type, self.impl, False)
        if plan.form == "reference":
            return self._reference_forward(x)
        if plan.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if plan.form == "dense":
            weight = dense_weight(self.weight, spec.groups, spec.shuffle_groups)
            return F.conv2d(x, weight, None, self.stride, self.padding)
        if spec.has_shuffle:
            # oneDNN-friendly native kernel on CPU (keeps channels_last); same permutation as channel_shuffle
            x = (
                F.channel_shuffle(x, spec.shuffle_groups)
                if x.device.type == "cpu"
                else _shuffle(x, spec.shuffle_groups)
            )
        weight = merged_weight(self.weight, spec.groups, plan.merge)
        return F.conv2d(x, weight, None, self.stride, self.padding, 1, spec.groups // plan.merge)


def sparse_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    groups: int = 1,
    shuffle_groups: int | None = None,
    impl: Impl = "auto",
) -> SparseConv2d:
    """``y = conv(shuffle(x))``: a sparse-kernel conv (GC, DW, PW or PWG) behind an optional IGC shuffle.

    ``conv`` = ``nn.Conv2d(in, out, k, stride, padding=k // 2, groups=groups, bias=False)``; ``shuffle`` =
    :func:`channel_shuffle` ``(x, shuffle_groups)`` when given. ``impl``: ``"naive"`` (reference
    :class:`SparseConv2d`), ``"fast"`` or ``"auto"`` (:class:`FastSparseConv2d`, see the module docstring for the
    decision table). All impls hold the same ``weight`` of shape ``(out, in // groups, k, k)``.

    Example:
        >>> block = torch.nn.Sequential(
        ...     sparse_conv(48, 48, 3, groups=24),                     # IGC-L24M2 primary: 24 x (3x3, 2)
        ...     sparse_conv(48, 48, 1, groups=2, shuffle_groups=24),   # interleave, secondary: 2 x (1x1, 24)
        ... )
        >>> block(torch.randn(2, 48, 8, 8)).shape
        torch.Size([2, 48, 8, 8])
    """
    if impl not in get_args(Impl):
        raise UserError(f"sparse_conv: impl={impl!r} is not one of 'auto', 'naive', 'fast'")
    if shuffle_groups is not None and (
        isinstance(shuffle_groups, bool) or not isinstance(shuffle_groups, int) or shuffle_groups < 1
    ):
        raise UserError(
            f"sparse_conv: shuffle_groups={shuffle_groups!r} is not a positive integer; give a divisor of "
            f"in_channels={in_channels} or None for no shuffle"
        )
    spec = ConvSpec(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        groups=groups,
        shuffle_groups=1 if shuffle_groups is None else shuffle_groups,
    )
    if impl == "naive":
        return SparseConv2d(spec)
    return FastSparseConv2d(spec, impl=impl)
