"""A training BatchNorm folded into the native conv that reads its output: a depthwise conv (and the chain of
grouped 1x1 convs after it), a run of grouped 1x1 convs, or a grouped k x k conv (and, for IGCV1's pair, the
grouped 1x1 convs after it: the chain kernel then computes the grouped conv per span of pixels as it computes a
depthwise conv, its output never written, and the backward recomputes it).

IGCV3's expand conv is followed by a BatchNorm and then the depthwise conv, and its BatchNorm + ReLU by the
project conv; an IGCV2 unit's chain by a BatchNorm + ReLU and then the next unit's depthwise conv, which runs fused
with the chain after it (:mod:`igcnas.nn.chain_ops`); an IGCV1 block's closing BatchNorm + ReLU by the next block's
grouped 3x3 conv. Run one after the other, the BatchNorm's normalising pass
reads the activation and writes it again, and the conv reads that copy. Folded (:func:`normed`), the BatchNorm's
statistics pass runs as before, and the conv reads the BatchNorm's *input*, applying the per-channel scale and
shift (and the ReLU) as it loads each value: the normalised tensor is never written. The backward recomputes it in
the same way for the conv's weight gradient, writes the gradient of the normalised tensor, and runs the
BatchNorm's backward on it (``_csrc/dw_conv.c``, ``_csrc/pw_chain.c``, ``_csrc/group_conv.c``,
``_csrc/bn_act.c``). The kernel that writes that gradient (the depthwise or grouped conv's backward, else the
chain's) also adds up the two sums the BatchNorm's backward
needs while the rows it has just written are in cache, so that backward skips its own pass over them.

Whether a pair is folded is measured per signature, as the chains are (:func:`fold_form`), whichever form the
BatchNorm alone would take; folded with a chain after it, the depthwise conv always runs inside that chain. The
running statistics are updated as the BatchNorm itself updates them. Where the native kernels cannot run the
BatchNorm's training forward (eval mode, NCHW or non-float32 inputs, hooks, tracing...) the modules run one after
the other.

Example:
    >>> import torch
    >>> from igcnas.nn.norm import BatchNormAct2d
    >>> bn, dw = BatchNormAct2d(16, relu=True), torch.randn(16, 1, 3, 3)
    >>> x = torch.randn(2, 16, 6, 6).contiguous(memory_format=torch.channels_last)
    >>> ref = torch.nn.functional.conv2d(torch.relu(torch.nn.functional.batch_norm(
    ...     x, None, None, bn.weight, bn.bias, training=True)), dw, padding=1, groups=16)
    >>> from igcnas.nn import _native
    >>> ok = not _native.native_available() or torch.allclose(normed(x, bn, depthwise=dw), ref, atol=1e-4)
    >>> ok
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from igcnas.nn import _native, tune
from igcnas.nn.norm import BatchNormAct2d, batch_coefficients, batch_norm_backward
from igcnas.nn.ops import FastSparseConv2d
from igcnas.nn.plan import ConvPlan, native_measurable

__all__ = ["fold_form", "foldable", "group_member", "normed", "pair_member"]


def _through_batchnorm(ctx: Any, x: Tensor, coef: Tensor, grad_norm: Tensor | None,
                       sums: Tensor | None) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """The gradients of a folded BatchNorm's input, weight and bias (those its op's inputs 0-2 need; None where
    not asked or with no ``grad_norm``) from the gradient of its output, with the sums the conv's backward took."""
    if grad_norm is None:
        return None, None, None
    need_x, need_gamma, need_beta = ctx.needs_input_grad[:3]
    dx, grad_gamma, grad_beta, _ = batch_norm_backward(
        x, grad_norm, coef, relu=ctx.relu, need_x=need_x, need_weight=need_gamma, need_bias=need_beta, sums=sums)
    return dx, grad_gamma, grad_beta


class _Normed(torch.autograd.Function):
    """``chain(prefix(act(bn(x))))``: a training BatchNorm (+ ReLU) read by a depthwise or grouped 3x3 prefix conv
    (or none), then grouped 1x1 convs (at least one without the prefix conv; with a grouped prefix, at least one),
    the normalised tensor never written (see :func:`normed`)."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, relu: bool,
        prefix: Tensor | None,
        groups: tuple[int, ...], shuffles: tuple[int, ...], *weights: Tensor,
    ) -> tuple[Tensor, Tensor]:
        x = x.contiguous(memory_format=torch.channels_last)
        coef = batch_coefficients(x, weight, bias, eps)
        out = _native.chain_forward(x, weights, groups, shuffles, prefix, affine=coef, relu=relu)
        ctx.save_for_backward(x, coef, prefix, *weights)
        ctx.relu, ctx.groups, ctx.shuffles = relu, groups, shuffles
        ctx.mark_non_differentiable(coef)
        return out, coef

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor, _grad_coef: Tensor | None) -> tuple[Tensor | None, ...]:
        x, coef, prefix, *weights = ctx.saved_tensors
        need_bn, need_dw, need_w = any(ctx.needs_input_grad[:3]), ctx.needs_input_grad[5], ctx.needs_input_grad[8:]
        dy = _native.kernel_grad(grad)
        # the kernel that writes the gradient of the BatchNorm's output (the prefix conv's backward, else the
        # chain's) takes the BatchNorm backward's sums while it is in cache
        sums = torch.empty(2 * x.shape[1], dtype=torch.float64) if need_bn else None
        grad_norm, grad_dw, grad_ws = _native.chain_backward(
            x, dy, weights, ctx.groups, ctx.shuffles, prefix, need_input=need_bn, need_prefix=need_dw,
            need_w=need_w, affine=coef, relu=ctx.relu, bn_sums=sums)
        return (*_through_batchnorm(ctx, x, coef, grad_norm, sums), None, None, grad_dw, None, None, *grad_ws)


class _NormedConv(torch.autograd.Function):
    """``conv(act(bn(x)))`` for a grouped k x k ``conv`` (the native group conv kernel), the normalised tensor
    never written (see :func:`normed`)."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, relu: bool, conv_weight: Tensor,
        groups: int, shuffle_groups: int, stride: int,
    ) -> tuple[Tensor, Tensor]:
        x = x.contiguous(memory_format=torch.channels_last)
        coef = batch_coefficients(x, weight, bias, eps)
        out = _native.conv_forward(x, conv_weight, groups, shuffle_groups, stride, affine=coef, relu=relu)
        ctx.save_for_backward(x, coef, conv_weight)
        ctx.relu, ctx.conv = relu, (groups, shuffle_groups, stride)
        ctx.mark_non_differentiable(coef)
        return out, coef

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor, _grad_coef: Tensor | None) -> tuple[Tensor | None, ...]:
        x, coef, conv_weight = ctx.saved_tensors
        need_bn = any(ctx.needs_input_grad[:3])
        dy = _native.kernel_grad(grad)
        sums = torch.empty(2 * x.shape[1], dtype=torch.float64) if need_bn else None
        grad_norm, grad_w = _native.conv_backward(
            x, dy, conv_weight, *ctx.conv, need_input=need_bn, need_weight=ctx.needs_input_grad[5], affine=coef,
            relu=ctx.relu, bn_sums=sums)
        return (*_through_batchnorm(ctx, x, coef, grad_norm, sums), None, None, grad_w, None, None, None)


def normed(x: Tensor, bn: BatchNormAct2d, *, depthwise: Tensor | None = None,
           chain: Sequence[FastSparseConv2d] = (), conv: FastSparseConv2d | None = None) -> Tensor:
    """``chain(conv2d(bn(x), depthwise, groups=C))`` (without ``depthwise``: ``chain(bn(x))``; with ``conv``:
    ``chain(conv(bn(x)))``, or ``conv(bn(x))`` without a chain) for a training
    :class:`~igcnas.nn.norm.BatchNormAct2d` (its ReLU included), with ``bn``'s running statistics updated as its
    own forward updates them.

    ``x``: channels_last float32 CPU; ``depthwise``: a ``(C, 1, k, k)`` weight, stride 1, padding ``k // 2``;
    ``chain``: grouped 1x1 convs run fused (:func:`igcnas.nn._native.pointwise_chain`); ``conv``: a grouped k x k
    conv the native group conv kernel runs (:func:`group_member`), any stride, instead of the depthwise conv; with
    a ``chain`` it must be one the chain kernel computes per span of pixels as it computes a depthwise conv
    (:func:`pair_member`: 3x3, stride 1, no shuffle, groups of 2, 4 or 8 channels), its output never written. Differentiable in ``x``, the BatchNorm's weight and bias and the convs' weights.
    Requires the native kernels.
    """
    if x.dim() != 4 or x.shape[0] * x.shape[2] * x.shape[3] <= 1:
        raise ValueError(f"normed: a training BatchNorm needs more than 1 value per channel, got input size "
                         f"{tuple(x.shape)}")
    if conv is not None:
        if depthwise is not None:
            raise ValueError("normed: give conv or the depthwise conv, not both")
        spec = conv.spec
        if x.shape[1] != bn.num_features:
            raise ValueError(f"normed: the BatchNorm has {bn.num_features} channels, the input {x.shape[1]}")
        if not _native.supports_conv(x, conv.weight, spec.stride) or x.shape[1] != spec.in_channels:
            raise ValueError(f"normed: conv {spec.kind} {spec.in_channels}->{spec.out_channels} k{spec.kernel_size} "
                             f"needs a float32 CPU input of {spec.in_channels} channels and a float32 CPU weight, "
                             f"got x {x.dtype} {tuple(x.shape)}, weight {conv.weight.dtype} on {conv.weight.device}")
        if chain:
            if not pair_member(conv):
                raise ValueError(
                    f"normed: conv {spec.kind} {spec.in_channels}->{spec.out_channels} k{spec.kernel_size} "
                    f"s{spec.stride} g{spec.groups} sh{spec.shuffle_groups} cannot run in front of a chain (that "
                    f"needs k3, stride 1, no shuffle and groups of 2, 4 or 8 channels in and out, on a CPU with "
                    f"AVX); give it without the chain")
            return _normed_chain(x, bn, conv.weight, chain)
        out, coef = _NormedConv.apply(x, bn.weight, bn.bias, bn.eps, bn.relu, conv.weight, spec.groups,
                                      spec.shuffle_groups, spec.stride)
        bn._update_running_stats(coef)
        return out
    if depthwise is None and not chain:
        raise ValueError("normed: give the depthwise conv, the 1x1 convs after the BatchNorm, or both")
    if depthwise is not None:
        _native.check_depthwise("normed", x, depthwise)
    return _normed_chain(x, bn, depthwise, chain)


def _normed_chain(x: Tensor, bn: BatchNormAct2d, prefix: Tensor | None, chain: Sequence[FastSparseConv2d]) -> Tensor:
    """``chain(prefix(bn(x)))`` through :class:`_Normed`, the prefix conv checked by the caller."""
    weights = [c.weight for c in chain]
    groups, shuffles = tuple(c.spec.groups for c in chain), tuple(c.spec.shuffle_groups for c in chain)
    _native.check_chain("normed", x, weights, groups, shuffles, name="chain conv")
    out, coef = _Normed.apply(x, bn.weight, bn.bias, bn.eps, bn.relu, prefix, groups, shuffles, *weights)
    bn._update_running_stats(coef)
    return out


def group_member(module: Any) -> bool:
    """Whether ``module`` is a fast grouped k x k conv (GC) with groups narrow enough for the native group conv
    kernel to be measured (:func:`~igcnas.nn.plan.native_measurable`), which a BatchNorm can fold into."""
    return (isinstance(module, FastSparseConv2d) and module.spec.kind == "GC" and module.spec.kernel_size % 2 == 1
            and native_measurable(module.spec))


def pair_member(conv: FastSparseConv2d) -> bool:
    """Whether the grouped conv ``conv`` can run in front of a chain of 1x1 convs inside the chain kernel (IGCV1's
    GC -> PWG pair): 3x3, stride 1, no shuffle, as many channels out as in, in groups the kernels built here
    compute per span of pixels (:func:`~igcnas.nn._native.rot_prefix_usable`)."""
    spec = conv.spec
    return (spec.stride == 1 and not spec.has_shuffle and spec.in_channels == spec.out_channels
            and _native.rot_prefix_usable(spec.in_channels, conv.weight))


def foldable(bn: Any, conv: Any) -> bool:
    """Whether ``bn`` and the ``conv`` after it can fold: a :class:`BatchNormAct2d` tracking running statistics and,
    on its channels, a fast stride-1 unshuffled depthwise conv (3, 5 or 7), a grouped 1x1 conv the native kernels
    run (:func:`~igcnas.nn.chain_ops.chain_member`) or a grouped k x k one (:func:`group_member`), neither
    hooked."""
    from igcnas.nn.chain_ops import chain_member, hooked, prefix_member

    return (isinstance(bn, BatchNormAct2d) and isinstance(conv, FastSparseConv2d)
            and (prefix_member(conv) or chain_member(conv) or group_member(conv)) and bn.track_running_stats
            and conv.spec.in_channels == bn.num_features and not hooked(bn) and not hooked(conv))


def fold_form(x: Tensor, bn: BatchNormAct2d, depthwise: FastSparseConv2d | None,
              chain: Sequence[FastSparseConv2d], conv: FastSparseConv2d | None = None) -> str:
    """``native`` (``bn`` folded into ``depthwise`` and the fused ``chain`` after it, into ``chain`` alone, or into
    the grouped k x k ``conv``, with the ``chain`` after it inside the same kernel when given) or ``reference``
    (the modules one after the other, as they run unfolded; for a grouped conv with a chain, as they run without
    that fold, the BatchNorm folded into the grouped conv alone where that is measured faster) for the training
    input ``x``.

    Timed against each other once per signature (``BN+ReLU>DW k3 64 32x32 float32 t2 train cl``, with `` >
    CHAIN`` and the chain's signature after, ``BN+ReLU>CHAIN ...`` without the depthwise conv, or ``BN+ReLU>GC
    48->48 k3 s1 g24 sh1 32x32 float32 t2 train cl`` for a grouped conv, `` > CHAIN ...`` after it with a chain)
    and cached with
    the convs' forms; the prior, kept unless the other is faster by
    :data:`~igcnas.nn.tune.MARGIN` (and with tuning off), is ``reference``. Memoised per BatchNorm and input
    signature.
    """
    threads = torch.get_num_threads()
    key = (depthwise is None, len(chain), conv is None, tuple(x.shape), threads)
    found: ConvPlan | None = tune.memo_lookup(bn, "_fold_memo", key)
    if found is None:
        prior = ConvPlan("reference", True, "table: the BatchNorm runs alone")
        if tune.tune_mode() == "off":
            return prior.form
        from igcnas.nn.chain_ops import chain_signature

        text = f"{'BN+ReLU' if bn.relu else 'BN'}>"
        if depthwise is not None:
            text += (f"DW k{depthwise.spec.kernel_size} {x.shape[1]} {x.shape[2]}x{x.shape[3]} float32 t{threads} "
                     f"train cl{' > ' if chain else ''}")
        if conv is not None:
            text += tune.TuneKey.of(conv.spec, tuple(x.shape), dtype=x.dtype, grad=True, channels_last=True,
                                    threads=threads).text() + (" > " if chain else "")
        if chain:
            text += f"CHAIN {chain_signature(x, chain, grad=True, channels_last=True, threads=threads)}"

        def candidates() -> list[ConvPlan]:
            return [ConvPlan("reference", True, "measured: the BatchNorm alone, then the convs"),
                    ConvPlan("native", True, "measured: the BatchNorm folded into the conv after it")]

        def seconds(forms: list[ConvPlan]) -> dict[str, float]:
            return _time_fold(tuple(x.shape), bn, depthwise, chain, conv=conv, forms=[tune.label(p) for p in forms])

        found = tune.decide(text, threads=threads, prior=prior, plans=candidates, seconds=seconds)
        tune.memo_store(bn, "_fold_memo", key, found)
    if found.form == "native":
        kind = ("BN>DW fold" if depthwise is not None else "BN>PWG fold" if conv is None
                else "BN>GC+PWG fold" if chain else "BN>GC fold")
        tune.note_form(bn, mode="train", kind=kind, plan=found)
    return found.form


def _time_fold(shape: tuple[int, ...], bn: BatchNormAct2d, depthwise: FastSparseConv2d | None,
               chain: Sequence[FastSparseConv2d], *, conv: FastSparseConv2d | None = None,
               forms: list[str]) -> dict[str, float]:
    """Median seconds of a training step of the folded op (``native``) and of the modules unfolded
    (``reference``, each in its own measured form), on copies of the modules and a random input of ``shape``."""
    from igcnas.nn.chain_ops import FusedSequential, run_modules

    bn_copy = BatchNormAct2d(bn.num_features, relu=bn.relu, eps=bn.eps, momentum=bn.momentum)
    dw_copy = None if depthwise is None else FastSparseConv2d(depthwise.spec, impl="fast")
    chain_copies = [FastSparseConv2d(c.spec, impl="fast") for c in chain]
    conv_copy = None if conv is None else FastSparseConv2d(conv.spec, impl="fast")
    unfolded = FusedSequential(bn_copy, *([] if dw_copy is None else [dw_copy]),
                               *([] if conv_copy is None else [conv_copy]), *chain_copies)  # forward order
    steps: dict[str, Callable[[Tensor], Tensor]] = {
        "native": lambda x: normed(x, bn_copy, depthwise=None if dw_copy is None else dw_copy.weight,
                                   chain=chain_copies, conv=conv_copy),
        "reference": lambda x: unfolded._fused_forward(x, fold=False),
    }
    if conv_copy is not None and chain_copies:  # what runs without this fold: the grouped conv's own fold, if faster
        steps["reference"] = lambda x: run_modules(list(unfolded), x, pair_folds=False)
    return tune.time_steps(shape, {form: steps[form] for form in forms}, grad=True, channels_last=True,
                           params=unfolded.parameters())
