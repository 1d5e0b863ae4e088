"""Sparse-kernel convolutions (GC, DW, PW, PWG) behind an IGC channel shuffle, in a reference and a fast form.

``sparse_conv(in, out, k, stride=, groups=, shuffle_groups=, impl=)`` computes ``conv(shuffle(x))`` where
``conv`` is ``nn.Conv2d(in, out, k, stride, padding=k // 2, groups=groups, bias=False)`` and ``shuffle`` is
:func:`channel_shuffle` with ``shuffle_groups`` (applied to the *input*; ``None`` = no shuffle).

Every implementation is an ``nn.Conv2d`` subclass holding exactly one parameter, ``weight`` of shape
``(out, in // groups, k, k)``, so state_dicts are interchangeable and parameter counts equal:

* ``impl="naive"`` -> :class:`SparseConv2d`: a :class:`ChannelShuffle` module followed by the ``nn.Conv2d``
  forward, exactly as the public IGC code does. This is the reference.
* ``impl="fast"`` / ``"auto"`` -> :class:`FastSparseConv2d`: same parameter, same math, but the form that runs
  fastest on the device of the input, chosen at forward time by :func:`select_plan` (deterministic, no
  autotuning). The forms are:

  ``reference``  shuffle (memory-format preserving) + ``F.conv2d(groups=g)`` on the input as given.
  ``grouped``    input made channels_last, shuffle done as one NHWC copy, ``F.conv2d(groups=g)`` (oneDNN's
                 channels_last grouped/depthwise kernels; the NCHW ones are 3-10x slower on CPU).
  ``dense``      the grouped weight expanded to its block-diagonal dense ``(out, in, k, k)`` form with the input
                 shuffle folded into the weight's input-channel order (a weight permutation instead of an
                 activation copy), then one dense channels_last conv. It multiplies ``groups``-fold the
                 multiply-adds that are actually executed, but a dense 1x1 conv is one GEMM, while PyTorch's CPU
                 grouped 1x1 conv is a slow loop. The weight expansion is differentiable, so gradients reach
                 ``weight`` exactly.

Decision table (CPU, float32, 2 threads; measured with ``igcnas.bench.ops`` and the notes in the report;
``G`` = groups, ``W`` = channels per group, ``shuffle`` = shuffle_groups given)::

    kind   case                          fast      auto      why
    ----   ----------------------------  --------  --------  ------------------------------------------------
    PW     1x1, G = 1                    dense     dense     shuffle folds into the weight: no copy
    CONV   kxk, G = 1                    dense     dense     same; channels_last oneDNN conv
    PWG    1x1, G <= 4 (any W)           dense     dense     GEMM with G-fold MACs beats the grouped loop
    PWG    1x1, G > 4                    grouped   grouped   G-fold MACs no longer pay; oneDNN grouped NHWC
    GC     kxk, 1 < G < in               grouped   grouped   oneDNN NHWC grouped conv (NCHW is ~10x slower)
    DW     kxk, G = in                   grouped   grouped   oneDNN NHWC depthwise (~3x faster than NCHW)

``auto`` equals ``fast`` on CPU for every row above: for each kind the fast form was faster than the reference
in every measured case (batch 1 and 64, 8x8 to 32x32, NCHW and channels_last input). On CUDA and other
accelerators the fast plan is the reference form except that a shuffle before a ``groups == 1`` conv is folded
into the weight (no activation copy); cuDNN runs grouped and depthwise convs natively, and no accelerator was
available to measure anything else, so nothing cleverer is claimed there. The code paths are plain
``F.conv2d`` / ``reshape`` / ``permute`` calls, so they are device agnostic and work under autocast
(fp16/bf16) and with channels_last tensors.

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

__all__ = [
    "Impl",
    "KernelKind",
    "PlanForm",
    "ConvSpec",
    "ConvPlan",
    "DENSE_MAX_GROUPS",
    "channel_shuffle",
    "ChannelShuffle",
    "SparseConv2d",
    "FastSparseConv2d",
    "sparse_conv",
    "select_plan",
    "dense_weight",
]

Impl = Literal["auto", "naive", "fast"]
KernelKind = Literal["PW", "PWG", "DW", "GC", "CONV"]
PlanForm = Literal["reference", "grouped", "dense"]

#: largest group count of a 1x1 conv that the CPU fast path runs as one dense (block-diagonal) GEMM
DENSE_MAX_GROUPS = 4


def _is_channels_last(x: Tensor) -> bool:
    """True when ``x`` is stored NHWC and not also NCHW-contiguous (ambiguous shapes count as NCHW)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


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

    ``form``: ``reference`` | ``grouped`` | ``dense`` (see the module docstring); ``channels_last``: whether the
    input is converted to channels_last first; ``reason``: the decision-table row that chose it.
    """

    form: PlanForm
    channels_last: bool
    reason: str


@functools.lru_cache(maxsize=4096)
def select_plan(spec: ConvSpec, device_type: str, impl: Impl = "auto") -> ConvPlan:
    """The forward form for ``spec`` on ``device_type`` ("cpu", "cuda", ...) under ``impl`` (decision table).

    Example:
        >>> select_plan(ConvSpec(48, 48, 1, groups=2, shuffle_groups=24), "cpu").form
        'dense'
        >>> select_plan(ConvSpec(48, 48, 3, groups=48), "cpu").form
        'grouped'
    """
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
        return ConvPlan("dense", True, f"cpu {kind}: channels_last dense conv, shuffle folded into the weight")
    if kind == "PWG" and spec.groups <= DENSE_MAX_GROUPS:
        return ConvPlan(
            "dense", True, f"cpu PWG with groups <= {DENSE_MAX_GROUPS}: block-diagonal dense GEMM"
        )
    return ConvPlan("grouped", True, f"cpu {kind}: channels_last oneDNN grouped conv")


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
    out_channels, in_per_group, kh, kw = weight.shape
    in_channels = in_per_group * groups
    dense = weight
    if groups > 1:
        eye = torch.eye(groups, dtype=weight.dtype, device=weight.device).view(groups, 1, groups, 1, 1, 1)
        blocks = weight.reshape(groups, out_channels // groups, 1, in_per_group, kh, kw) * eye
        dense = blocks.reshape(out_channels, in_channels, kh, kw)
    if 1 < shuffle_groups < in_channels:
        # the inverse of channel_shuffle(., s) is channel_shuffle(., in // s); apply it to the input-channel axis
        n_per = in_channels // shuffle_groups
        dense = dense.reshape(out_channels, n_per, shuffle_groups, kh, kw).transpose(1, 2)
        dense = dense.reshape(out_channels, in_channels, kh, kw)
    return dense


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
        >>> conv.plan("cpu").form
        'dense'
    """

    def __init__(self, spec: ConvSpec, *, impl: Impl = "auto") -> None:
        super().__init__(spec)
        if impl not in ("auto", "fast"):
            raise UserError(f"FastSparseConv2d: impl={impl!r}; use 'auto' or 'fast' (or SparseConv2d for 'naive')")
        self.impl: str = impl

    def plan(self, device_type: str) -> ConvPlan:
        """The plan this module runs on ``device_type``."""
        return select_plan(self.spec, device_type, self.impl)  # type: ignore[arg-type]

    def forward(self, input: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self._reference_forward(input)
        return self._dispatch(input)

    @torch.jit.unused
    def _dispatch(self, x: Tensor) -> Tensor:
        """Reference graph while tracing/exporting, else the planned fast form."""
        if torch.jit.is_tracing() or torch.compiler.is_exporting():
            return self._reference_forward(x)
        if x.dim() != 4:
            raise UserError(
                f"sparse_conv: input has shape {tuple(x.shape)}; give a batched 4-D (N, C, H, W) tensor"
            )
        return self.run_plan(x, self.plan(x.device.type))

    @torch.jit.unused
    def run_plan(self, x: Tensor, plan: ConvPlan) -> Tensor:
        """Compute the forward with an explicit ``plan`` (any plan is valid on any device)."""
        if plan.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        spec = self.spec
        if plan.form == "dense":
            weight = dense_weight(self.weight, spec.groups, spec.shuffle_groups)
            return F.conv2d(x, weight, None, self.stride, self.padding)
        return F.conv2d(_shuffle(x, spec.shuffle_groups), self.weight, None, self.stride, self.padding, 1, spec.groups)


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
