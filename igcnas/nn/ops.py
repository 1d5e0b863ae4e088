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
                 multiplying the zeros of ``merge``. A grouped 1x1 conv has two kernels, measured against each
                 other (:mod:`igcnas.nn.tune`; ``ConvPlan.kernel``): pixel tiles transposed in registers, and
                 the channels_last rows read in place with each input broadcast. Not built (no compiler, not Linux,
                 ``IGCNAS_NATIVE=0``), under autocast or for another dtype, the op uses the form the table has
                 without it.

  The weight expansions are differentiable and exact (they multiply by 0/1), so gradients reach ``weight``
  unchanged. ``dense``/``merge`` execute ``groups``- (``merge``-) fold the sparse conv's multiply-adds; they are
  chosen only where that is still faster (memory-bound sizes).

Which form runs for which conv on which device is :func:`select_plan`'s decision table, documented with the
measurements behind each row in :mod:`igcnas.nn.plan` (its names are re-exported here).

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

from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from igcnas.errors import UserError
from igcnas.nn import _native
from igcnas.nn import tune as _tune
from igcnas.nn.plan import (
    AUTO_MIN_PIXELS,
    DENSE_EXTRA_MACS,
    DENSE_EXTRA_MACS_SHUFFLED,
    MERGE_WIDTH,
    NATIVE_GC_MAX_GROUP_WEIGHTS,
    NATIVE_MAX_GROUP_WEIGHTS,
    ConvPlan,
    ConvSpec,
    Impl,
    KernelKind,
    PlanForm,
    _device_plan,
    _is_compiling,
    _is_exporting,
    native_candidate,
    native_kernels_usable,
    select_plan,
)

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

    The form comes from :func:`select_plan` (the table in :mod:`igcnas.nn.plan`). Scripting, tracing and
    export see the reference graph. Build it with :func:`sparse_conv` (``impl="fast"`` or ``"auto"``).

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
        return self.run_plan(x, self.plan_for(x))

    @torch.jit.unused
    def plan_for(self, x: Tensor) -> ConvPlan:
        """The plan for input ``x``: the table's (:func:`select_plan`), replaced on the CPU by the form measured
        fastest on this machine (:mod:`igcnas.nn.tune`). Memoised per module by what it depends on (device,
        shape, dtype, grad, memory format, threads, tuning settings), so a training step does not rebuild it."""
        grad = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        channels_last = x.is_contiguous(memory_format=torch.channels_last)
        compiling = _is_compiling()  # then nothing else below may run: torch.get_num_threads breaks the graph
        key = None if compiling else (x.device.type, tuple(x.shape), x.dtype, grad, channels_last,
                                      torch.get_num_threads())
        found: ConvPlan | None = None if key is None else _tune.memo_lookup(self, "_plan_memo", key)
        if found is not None:
            _tune.note_form(self, mode="train" if grad else "eval", kind=self.spec.kind, plan=found)
            return found
        plan = select_plan(
            self.spec,
            x.device.type,
            self.impl,  # type: ignore[arg-type]
            channels_last_input=channels_last,
            grad=grad,
            pixels=x.shape[0] * x.shape[2] * x.shape[3],
        )
        table = plan
        if x.device.type == "cpu" and not compiling:
            plan = _tune.tuned_plan(self.spec, x, grad=grad, prior=table)
        # not memoised: a table plan in mode cache (a choice cached later, e.g. by 'igcnas tune', is then used)
        if key is not None and (plan is not table or _tune.tune_mode() != "cache"):
            _tune.memo_store(self, "_plan_memo", key, plan)  # under the settings as they are after deciding
        _tune.note_form(self, mode="train" if grad else "eval", kind=self.spec.kind, plan=plan)
        return plan

    @torch.jit.unused
    def run_plan(self, x: Tensor, plan: ConvPlan) -> Tensor:
        """Compute the forward with an explicit ``plan`` (any plan is valid on any device)."""
        spec = self.spec
        if plan.form == "native":
            if _native_usable(x, self.weight, spec):
                if spec.kernel_size == 1:
                    return _native.group_pointwise(x, self.weight, spec.groups, spec.shuffle_groups,
                                                   kernel=plan.kernel)
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
    :class:`SparseConv2d`), ``"fast"`` or ``"auto"`` (:class:`FastSparseConv2d`; decision table:
    :mod:`igcnas.nn.plan`). All impls hold the same ``weight`` of shape ``(out, in // groups, k, k)``.

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
