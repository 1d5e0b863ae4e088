"""BatchNorm with the ReLU after it fused in: fewer passes over the activations when training on CPU.

:class:`BatchNormAct2d` is an ``nn.BatchNorm2d`` (same parameters, buffers and state_dict keys) whose forward
is ``relu(batch_norm(x))`` (or plain ``batch_norm(x)`` with ``relu=False``). When training on a channels_last
float32 CPU tensor and the native kernels are available (:mod:`igcnas.nn._native`), forward and backward run
in a C kernel (``_csrc/bn_act.c``): statistics then normalise+ReLU in the forward (3 passes over the tensor
instead of 5: BN's 3 plus ReLU's 2), and in the backward two passes that recompute the ReLU mask from the
input (5 instead of 8). The running statistics are updated exactly as ``nn.BatchNorm2d`` does. Everywhere else
(eval mode, NCHW or non-float32 inputs, autocast, CUDA, scripting, tracing, export, fvcore) it runs the
reference ``F.batch_norm`` + ``relu_``, the same graph the naive build (``nn.BatchNorm2d`` + ``nn.ReLU``) has.

Example:
    >>> import torch
    >>> bn = BatchNormAct2d(8, relu=True)
    >>> x = torch.randn(4, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    >>> bool((bn(x) >= 0).all())
    True
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from igcnas.nn import _native, tune
from igcnas.nn._native import check_code, data_ptr
from igcnas.nn.plan import ConvPlan, native_kernels_usable

__all__ = ["BatchNormAct2d", "batch_coefficients", "batch_norm_act", "batch_norm_backward"]


def batch_coefficients(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """The training BatchNorm's coefficients of the channels_last float32 CPU batch ``x``, by the native kernels
    (one pass over ``x``): float32, 5 rows of C (scale, shift, mean, invstd, unbiased variance; see
    ``bna_coefficients`` in ``_csrc/bn_act.c``). ``y = x * scale + shift`` is the normalised batch."""
    lib = _native.library()
    assert lib is not None
    n, channels, h, w = x.shape
    pixels = n * h * w
    stats = torch.empty(2 * channels, dtype=torch.float64)  # mean, biased variance
    coef = torch.empty(5 * channels, dtype=torch.float32)
    at = stats.data_ptr()
    check_code(lib.bna_stats(data_ptr(x), pixels, channels, at, at + 8 * channels, torch.get_num_threads()),
               "batch norm")
    gamma = None if weight is None else weight.detach().float().contiguous()
    beta = None if bias is None else bias.detach().float().contiguous()
    lib.bna_coefficients(at, at + 8 * channels, data_ptr(gamma), data_ptr(beta), float(eps), channels, pixels,
                         coef.data_ptr())
    return coef


def batch_norm_backward(
    x: Tensor, dy: Tensor, coef: Tensor, *, relu: bool, need_x: bool, need_weight: bool, need_bias: bool,
    masked_by: Tensor | None = None, sums: Tensor | None = None,
) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """``(dx, dgamma, dbeta, dz)`` (each None where not needed) of the training BatchNorm (+ ReLU, its mask
    recomputed from ``x``) whose forward on ``x`` gave ``coef`` (:func:`batch_coefficients`), for the output
    gradient ``dy`` (both channels_last float32). With ``masked_by`` (the output of a BN + residual sum + ReLU;
    ``relu`` False), the gradient is first masked where that output is not positive, and ``dz`` is the masked
    gradient (what the sum passes on to the residual), written by the kernel's first pass. With ``sums`` (float64,
    2C: the masked gradient's sum and its sum times ``x - mean``, taken by the pass that wrote ``dy``) the kernel
    skips its first pass."""
    lib = _native.library()
    assert lib is not None
    n, channels, h, w = x.shape
    dz = torch.empty_like(x, memory_format=torch.channels_last) if masked_by is not None else None
    dx = torch.empty_like(x, memory_format=torch.channels_last) if need_x else None
    grads = torch.empty(2 * channels, dtype=torch.float32) if need_weight or need_bias else None
    base, into = coef.data_ptr(), data_ptr(grads)
    code = lib.bna_backward(
        data_ptr(x), data_ptr(dy), data_ptr(masked_by), data_ptr(dz), data_ptr(sums), n * h * w, channels,
        base + 8 * channels,
        base + 12 * channels, base, base + 4 * channels, int(relu), data_ptr(dx), into if need_weight else None,
        into + 4 * channels if need_bias and into else None, torch.get_num_threads(),
    )  # fmt: skip
    check_code(code, "batch norm backward")
    grad_weight = grads[:channels] if need_weight and grads is not None else None
    grad_bias = grads[channels:] if need_bias and grads is not None else None
    return dx, grad_weight, grad_bias, dz


class _BatchNormAct(torch.autograd.Function):
    """Training-mode batch norm (+ residual sum) (+ ReLU) on a channels_last float32 CPU tensor, natively.

    ``relu(bn(x) [+ residual])``: with a residual (a block's shortcut), the sum and the ReLU after it run in the
    normalising pass; the backward masks the gradient by the output and runs the kernel without ReLU.
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, relu: bool,
        residual: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(y, coefficients)``: the coefficients (float32, 5 rows of C: scale, shift, mean, invstd, unbiased
        variance; see ``bna_coefficients`` in ``_csrc/bn_act.c``) give the running statistics their update."""
        lib = _native.library()
        assert lib is not None
        x = x.contiguous(memory_format=torch.channels_last)
        n, channels, h, w = x.shape
        pixels = n * h * w
        coef = batch_coefficients(x, weight, bias, eps)
        threads = torch.get_num_threads()
        base = coef.data_ptr()
        y = torch.empty_like(x, memory_format=torch.channels_last)
        r = None if residual is None else residual.detach().contiguous(memory_format=torch.channels_last)
        lib.bna_apply_add(data_ptr(x), data_ptr(r), pixels, channels, base, base + 4 * channels, int(relu),
                          data_ptr(y), threads)  # r NULL: BN (+ ReLU) alone
        # with a residual, the ReLU mask is the output's (y > 0), saved when there is a ReLU
        masked_by_output = residual is not None and relu
        ctx.save_for_backward(x, coef, *((y,) if masked_by_output else ()))
        ctx.relu = relu and residual is None  # the kernel's own ReLU (recomputed from x)
        ctx.masked_by_output = masked_by_output
        ctx.mark_non_differentiable(coef)
        return y, coef

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad: Tensor, _grad_coef: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, None, None, Tensor | None]:
        x, coef, *output = ctx.saved_tensors
        dy = _native.kernel_grad(grad)
        # the ReLU after the residual sum: dy masked where the output is not positive, in the kernel's first pass
        dx, grad_weight, grad_bias, dz = batch_norm_backward(
            x, dy, coef, relu=ctx.relu, need_x=ctx.needs_input_grad[0], need_weight=ctx.needs_input_grad[1],
            need_bias=ctx.needs_input_grad[2], masked_by=output[0] if ctx.masked_by_output else None)
        # the sum passes the (masked) gradient through to the residual (an input only when one was given)
        passed = dy if dz is None else dz
        grad_residual = passed if len(ctx.needs_input_grad) > 5 and ctx.needs_input_grad[5] else None
        return dx, grad_weight, grad_bias, None, None, grad_residual


class BatchNormAct2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` followed by an optional ReLU, with a fused native training path on CPU.

    Same parameters, buffers and state_dict keys as ``nn.BatchNorm2d`` (the ReLU has none), so a network
    built with it loads the weights of one built with ``nn.BatchNorm2d`` + ``nn.ReLU`` and vice versa. Because it
    is an ``nn.BatchNorm2d``, ``nn.SyncBatchNorm.convert_sync_batchnorm`` would replace it and drop the ReLU: for
    data-parallel training build with ``impl="naive"`` (plain BN + ReLU modules) before converting.

    Example:
        >>> bn = BatchNormAct2d(4, relu=False)
        >>> sorted(bn.state_dict()) == sorted(nn.BatchNorm2d(4).state_dict())
        True
    """

    def __init__(self, num_features: int, *, relu: bool, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.relu = bool(relu)

    def forward(self, input: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self._reference(input)
        return self._dispatch(input)

    def _reference(self, x: Tensor) -> Tensor:
        """``nn.BatchNorm2d`` forward, then ``relu_`` (the naive build's graph)."""
        y = super().forward(x)
        return torch.relu_(y) if self.relu else y

    @torch.jit.unused
    def uses_native(self, x: Tensor, *, residual: Tensor | None = None, add_relu: bool = False) -> bool:
        """Whether this forward on ``x`` (with ``residual``: :meth:`forward_add`'s) takes the native kernel."""
        return (
            self.native_usable(x, residual=residual)
            and self.form_for(x, residual=residual is not None, add_relu=add_relu) == "native"
        )

    @torch.jit.unused
    def native_usable(self, x: Tensor, *, residual: Tensor | None = None) -> bool:
        """Whether the native kernels can compute this training forward on ``x`` (whatever form is faster)."""
        return (
            native_kernels_usable()  # first: not while tracing (the shape tests below would warn), autocast...
            and self.training
            and self.track_running_stats
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.dim() == 4
            and x.shape[1] == self.num_features  # else nn.BatchNorm2d's own error
            and x.shape[0] * x.shape[2] * x.shape[3] > 1
            and x.is_contiguous(memory_format=torch.channels_last)
            and (residual is None or (residual.shape == x.shape and residual.dtype == torch.float32
                                      and residual.device.type == "cpu"))
        )

    @torch.jit.unused
    def form_for(self, x: Tensor, *, residual: bool = False, add_relu: bool = False) -> str:
        """``native`` or ``reference`` for this training input: the form measured faster on this machine
        (:func:`igcnas.nn.tune.decide`), the prior being native for BN + ReLU and PyTorch's for BN alone.

        With ``residual`` the op is :meth:`forward_add`'s BN + residual sum (+ ReLU with ``add_relu``), measured
        as its own signature against PyTorch's BN, add and ReLU; its prior is native (two passes fewer).
        """
        key = (x.shape[2], x.shape[3], residual, add_relu, torch.get_num_threads(), torch.is_inference_mode_enabled())
        found = tune.memo_lookup(self, "_form_memo", key)
        if found is not None:
            tune.note_form(self, mode="train", kind=found[0], plan=found[1])
            return str(found[1].form)
        relu = add_relu if residual else self.relu
        op = f"{'BN+add' if residual else 'BN'}{'+ReLU' if relu else ''}"
        prior = ConvPlan("native" if relu or residual else "reference", True, "table")
        if torch.is_inference_mode_enabled():  # no backward to time here: the prior
            tune.note_form(self, mode="train", kind=op, plan=prior)
            tune.memo_store(self, "_form_memo", key, (op, prior))
            return prior.form
        threads = torch.get_num_threads()
        text = f"{op} {self.num_features} {x.shape[2]}x{x.shape[3]} float32 t{threads} train cl"

        def plans() -> list[ConvPlan]:
            return [ConvPlan("reference", True, "measured: PyTorch's batch norm"),
                    ConvPlan("native", True, "measured: native kernel")]

        def seconds(candidates: list[ConvPlan]) -> dict[str, float]:
            return _measure_forms(self.num_features, tuple(x.shape), relu=relu, eps=self.eps,
                                  forms=[p.form for p in candidates], residual=residual)

        chosen = tune.decide(text, threads=threads, prior=prior, plans=plans, seconds=seconds)
        tune.note_form(self, mode="train", kind=op, plan=chosen)
        tune.memo_store(self, "_form_memo", key, (op, chosen))  # under the settings as they are after deciding
        return chosen.form

    @torch.jit.unused
    def forward_add(self, x: Tensor, residual: Tensor, *, relu: bool) -> Tensor:
        """``relu(bn(x) + residual)`` (the ReLU only with ``relu``): a block's last BatchNorm, its shortcut sum
        and its closing ReLU, in one pass of the native kernel where it applies (measured per signature, as the
        BN is), else the same three ops as the naive build. This module's own ReLU must be off.

        Example:
            >>> bn = BatchNormAct2d(4, relu=False)
            >>> x, r = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
            >>> torch.allclose(bn.forward_add(x, r, relu=True), torch.relu(nn.BatchNorm2d(4)(x) + r), atol=1e-6)
            True
        """
        if self.relu:
            raise ValueError("forward_add needs a BatchNormAct2d built with relu=False (the ReLU follows the sum)")
        if not self.uses_native(x, residual=residual, add_relu=relu):
            return self._reference_add(x, residual, relu=relu)
        return self._native(x, relu=relu, residual=residual)

    def _reference_add(self, x: Tensor, residual: Tensor, *, relu: bool) -> Tensor:
        """``relu(bn(x) + residual)`` as the naive build computes it (BN, add, then ReLU with ``relu``)."""
        y = self._reference(x) + residual
        return torch.relu(y) if relu else y

    @torch.jit.unused
    def _native(self, x: Tensor, *, relu: bool, residual: Tensor | None = None) -> Tensor:
        """The native kernel's training forward (see :class:`_BatchNormAct`), running statistics updated."""
        y, coef = _BatchNormAct.apply(x, self.weight, self.bias, self.eps, relu, residual)
        self._update_running_stats(coef)
        return y

    @torch.jit.unused
    def _dispatch(self, x: Tensor) -> Tensor:
        """The native training path where it applies, else the reference."""
        if not self.uses_native(x):
            return self._reference(x)
        return self._native(x, relu=self.relu)

    @torch.jit.unused
    def _update_running_stats(self, coef: Tensor) -> None:
        """``nn.BatchNorm2d``'s update (momentum, or the cumulative average without one) from the batch mean and
        unbiased variance in ``coef`` (:class:`_BatchNormAct`'s coefficients: rows 2 and 4)."""
        assert self.num_batches_tracked is not None and self.running_mean is not None
        assert self.running_var is not None
        channels = self.num_features
        rm, rv = self.running_mean, self.running_var
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            if rm.dtype == rv.dtype == torch.float32 and rm.is_contiguous() and rv.is_contiguous():
                lib = _native.library()
                assert lib is not None
                lib.bna_running_update(coef.data_ptr(), channels, float(factor), rm.data_ptr(), rv.data_ptr())
                return
            mean, unbiased = coef[2 * channels:3 * channels], coef[4 * channels:]
            rm.lerp_(mean.to(rm.dtype), factor)
            rv.lerp_(unbiased.to(rv.dtype), factor)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, relu={self.relu}"


def _measure_forms(channels: int, shape: tuple[int, ...], *, relu: bool, eps: float,
                   forms: list[str], residual: bool = False) -> dict[str, float]:
    """Median seconds of a training step (forward + backward) of each form on a random channels_last input
    (with ``residual``: BN, a residual sum, then the ReLU if ``relu``)."""
    module = BatchNormAct2d(channels, relu=relu and not residual, eps=eps)
    r = tune.timing_input(shape, channels_last=True, grad=True) if residual else None

    def step(form: str, x: Tensor) -> Tensor:
        if form == "native":
            return _BatchNormAct.apply(x, module.weight, module.bias, eps, relu, r)[0]
        if r is not None:
            return module._reference_add(x, r, relu=relu)
        return module._reference(x)

    return tune.time_steps(shape, {form: functools.partial(step, form) for form in forms}, grad=True,
                           channels_last=True, params=[*module.parameters(), *([] if r is None else [r])])


def batch_norm_act(channels: int, *, relu: bool, impl: str = "auto") -> Iterator[tuple[str, nn.Module]]:
    """The (suffix, module) pairs of BN (+ ReLU) for ``impl``: one :class:`BatchNormAct2d` unless naive.

    The suffix is ``"bn"`` or ``"relu"``, so callers name modules ``f"{suffix}{index}"`` as before.

    Example:
        >>> [(name, type(m).__name__) for name, m in batch_norm_act(8, relu=True, impl="naive")]
        [('bn', 'BatchNorm2d'), ('relu', 'ReLU')]
        >>> [(name, type(m).__name__) for name, m in batch_norm_act(8, relu=True)]
        [('bn', 'BatchNormAct2d')]
    """
    if impl != "naive":  # its training form measured on the machine (BN alone: PyTorch's unless native is faster)
        yield "bn", BatchNormAct2d(channels, relu=relu)
        return
    yield "bn", nn.BatchNorm2d(channels)
    if relu:
        yield "relu", nn.ReLU(inplace=True)

