"""Seeded fuzz of the native kernels against float64 references: random shapes, layouts, strides and threads.

Covers the module paths (``sparse_conv(..., impl="fast")`` 1x1 and k x k, :class:`FusedSequential` chains,
:class:`BatchNormAct2d`) and direct calls to ``group_pointwise`` (both its kernels) / ``group_conv`` / ``pointwise_chain`` with
shapes outside the decision rule, plus zero-size inputs (an empty H or W with stride > 1 once wrote past the
output; a non-contiguous weight once reached the kernel as a freed temporary). Every case is fixed by the seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from igcnas.nn import _native
from igcnas.nn.chain_ops import FusedSequential
from igcnas.nn.norm import BatchNormAct2d
from igcnas.nn.ops import channel_shuffle, sparse_conv

pytestmark = pytest.mark.skipif(
    not _native.native_available(), reason=f"native kernels {_native.native_status()}"
)

SEEDS = [0, 1, 2]
LAYOUTS = [
    "cl",
    "cl",
    "nchw",
    "slice",
    "permuted",
]  # channels_last twice: the layout the kernels are made for
GRAD_KINDS = ["cl", "nchw", "slice", "double"]
ZERO_SIZES = [(0, 5, 5), (2, 0, 7), (2, 7, 0), (2, 0, 0), (0, 0, 3)]

# random cases per (seed, thread count) run
PW_CASES = 200
GC_CASES = 200
CHAIN_CASES = 160
BN_CASES = 200
DIRECT_CASES = 270  # a third each: group_pointwise, group_conv, pointwise_chain
ZERO_CASES = 60


@pytest.fixture(autouse=True)
def _table_forms(table_forms: None) -> None:
    """The fuzz cases test the kernels the table picks, on random shapes that measuring would only slow down."""


@pytest.fixture(params=[1, 2], ids=["threads1", "threads2"])
def threads(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test with this many intra-op threads and restore the old count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    try:
        yield request.param
    finally:
        torch.set_num_threads(before)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _ref_conv(x: Tensor, w: Tensor, groups: int, shuffle: int, stride: int, k: int) -> Tensor:
    return F.conv2d(channel_shuffle(x, shuffle) if shuffle > 1 else x, w, None, stride, k // 2, 1, groups)


class Fuzz:
    """The random source of one run, the configuration of the case under test and the mismatches found."""

    def __init__(self, seed: int, threads: int, zero_size: bool = False) -> None:
        self.rng = random.Random(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.threads = threads
        self.zero_size = zero_size
        self.config = ""
        self.mismatches: list[str] = []

    def randn(self, *shape: int) -> Tensor:
        return torch.randn(*shape, generator=self.gen)

    def size(self) -> tuple[int, int, int]:
        """(N, H, W): small and odd (tails of the 16-pixel tiles), or one with a zero where testing those."""
        if self.zero_size:
            return self.rng.choice(ZERO_SIZES)
        return self.rng.randint(1, 5), self.rng.randint(1, 13), self.rng.randint(1, 13)

    def describe(self, **config: Any) -> None:
        self.config = (
            ", ".join(f"{key}={value}" for key, value in config.items()) + f", threads={self.threads}"
        )

    def input(self, n: int, c: int, h: int, w: int, layout: str) -> Tensor:
        """A leaf-to-be (not requiring grad) with the given memory layout; ``.detach()`` keeps its strides."""
        if layout == "cl":
            return self.randn(n, c, h, w).contiguous(memory_format=torch.channels_last)
        if layout == "nchw":
            return self.randn(n, c, h, w)
        if layout == "slice":  # every other column: not dense
            return self.randn(n, c, h, 2 * w)[..., ::2]
        if layout == "permuted":  # dense but (N, H, C, W) in memory
            return self.randn(n, h, c, w).permute(0, 2, 1, 3)
        raise ValueError(layout)

    def grad(self, shape: tuple[int, ...], kind: str) -> Tensor:
        if kind == "cl":
            return self.randn(*shape).contiguous(memory_format=torch.channels_last)
        if kind == "nchw":
            return self.randn(*shape)
        if kind == "slice":
            n, c, h, w = shape
            return self.randn(n, c, h, 2 * w)[..., ::2]
        if kind == "double":
            return self.randn(*shape).double().contiguous(memory_format=torch.channels_last)
        raise ValueError(kind)

    def weight(self, shape: tuple[int, int, int, int], contiguous: bool, requires_grad: bool) -> Tensor:
        """A leaf weight, or a non-contiguous one (the transpose of an (in, out, kh, kw) tensor)."""
        o, i, kh, kw = shape
        w = self.randn(*shape) if contiguous else self.randn(i, o, kh, kw).transpose(0, 1)
        return w.detach().requires_grad_(requires_grad)

    def close(self, got: Tensor | None, want: Tensor | None, what: str, scale: float = 1.0) -> None:
        """Record a mismatch of ``got`` (float32) against the float64 ``want``, relative to ``want``'s range."""
        if got is None or want is None:
            if (got is None) != (want is None):
                self.fail(what, f"gradient is {got!r:.40} but the reference's is {want!r:.40}")
            return
        if got.shape != want.shape:
            self.fail(what, f"shape {tuple(got.shape)} != {tuple(want.shape)}")
            return
        if got.numel() == 0:
            return
        err = (got.double() - want.double()).abs().max().item()
        tol = 1e-4 * max(1.0, want.abs().max().item()) * scale
        if not err <= tol:  # also catches NaN
            self.fail(what, f"max error {err:.3g} > tolerance {tol:.3g}")

    def fail(self, what: str, why: str) -> None:
        self.mismatches.append(f"{what} [{self.config}]: {why}")

    def run(self, cases: int, case: Callable[[Fuzz, int], None]) -> None:
        for i in range(cases):
            self.config = f"case {i}"
            try:
                case(self, i)
            except Exception as exc:
                raise AssertionError(f"case {i} [{self.config}] raised {exc!r}") from exc
        assert not self.mismatches, f"{len(self.mismatches)} mismatches:\n" + "\n".join(self.mismatches[:20])


def _count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Count the calls of ``_native.<name>`` (the module paths look it up on the module at call time)."""
    original: Callable[..., Tensor] = getattr(_native, name)
    calls = [0]

    def counting(*args: Any, **kwargs: Any) -> Tensor:
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(_native, name, counting)
    return calls


def _compare(
    fz: Fuzz,
    run: Callable[[Tensor], Tensor],
    reference: Callable[[Tensor], Tensor],
    x: Tensor,
    weights: list[tuple[Tensor, Tensor]],
    grad_kind: str,
    rx: bool,
    scale: float,
    channels_last_out: bool = False,
) -> None:
    """``run`` (float32) against ``reference`` (float64) on ``x``: the output, dx and each (ours, ref) weight grad."""
    n, _, h, w = x.shape
    if x.numel() == 0:
        reference = _empty_reference(reference)
    xa = x.detach().requires_grad_(rx)  # keeps x's strides (a clone would make a sliced x contiguous)
    xb = x.detach().double().requires_grad_(rx)
    ya, yb = run(xa), reference(xb)
    fz.close(ya, yb, "y", scale)
    if channels_last_out and not ya.is_contiguous(memory_format=torch.channels_last):
        fz.fail("y", f"output strides {ya.stride()} are not channels_last")
    if not (rx or any(wa.requires_grad for wa, _ in weights)):
        return
    g = fz.grad(tuple(yb.shape), grad_kind)
    ya.backward(g)
    yb.backward(g.double())
    fz.close(xa.grad, xb.grad, "dx", scale)
    for layer, (wa, wb) in enumerate(weights):
        fz.close(wa.grad, wb.grad, f"dw{layer}", scale * math.sqrt(max(1, n * h * w)))


def _empty_reference(reference: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``reference`` for an input with no elements (torch's conv2d rejects H or W = 0): the output shape from a
    probe with one row/column where the input has none, no values, zero gradients for x and every weight used."""

    def run(x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        probe = reference(x.new_zeros(1, c, max(h, 1), max(w, 1)))
        shape = (n, probe.shape[1], probe.shape[2] if h else 0, probe.shape[3] if w else 0)
        return probe.new_zeros(shape) + 0 * (x.sum() + probe.sum())

    return run


def _load(conv: nn.Module, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Put ``weight`` into ``conv`` (with its requires_grad); return (conv.weight, float64 reference leaf)."""
    param = conv.get_parameter("weight")
    with torch.no_grad():
        param.copy_(weight)
    param.requires_grad_(weight.requires_grad)
    return param, weight.detach().double().requires_grad_(weight.requires_grad)


# ---------------------------------------------------------------------------------------------- 1x1 module path
def _pointwise_module_case(fz: Fuzz, i: int) -> None:
    rng = fz.rng
    cin = rng.choice([2, 3, 4, 6, 8, 12, 16, 18, 24, 32, 40, 48, 64, 96])
    groups = rng.choice([d for d in _divisors(cin) if d > 1])
    og = rng.choice([1, 2, 3, 4, 5, 8, 16, 17, 26, 40])
    cout = groups * og
    shuffle = rng.choice(_divisors(cin))
    n, h, w = fz.size()
    layout, grad_kind = rng.choice(LAYOUTS), rng.choice(GRAD_KINDS)
    rx, rw = rng.random() < 0.8, rng.random() < 0.8
    fz.describe(
        path="1x1 module",
        cin=cin,
        cout=cout,
        groups=groups,
        shuffle=shuffle,
        nhw=(n, h, w),
        layout=layout,
        grad=grad_kind,
        rx=rx,
        rw=rw,
    )
    conv = sparse_conv(cin, cout, 1, groups=groups, shuffle_groups=shuffle, impl="fast")
    wa, wb = _load(conv, fz.weight((cout, cin // groups, 1, 1), True, rw))
    _compare(
        fz,
        conv,
        lambda x: _ref_conv(x, wb, groups, shuffle, 1, 1),
        fz.input(n, cin, h, w, layout),
        [(wa, wb)],
        grad_kind,
        rx,
        math.sqrt(cin // groups + og),
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_pointwise_module_matches_float64(seed: int, threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_calls(monkeypatch, "group_pointwise")
    Fuzz(seed, threads).run(PW_CASES, _pointwise_module_case)
    assert calls[0] >= PW_CASES // 2, f"the native 1x1 kernel ran in only {calls[0]} of {PW_CASES} cases"


# ---------------------------------------------------------------------------------------------- k x k module path
def _kxk_module_case(fz: Fuzz, i: int) -> None:
    rng = fz.rng
    k, stride = rng.choice([3, 5]), rng.choice([1, 2])
    ig, og = rng.choice(
        [
            (1, 1),
            (1, 2),
            (2, 1),
            (2, 2),
            (2, 4),
            (4, 2),
            (4, 4),
            (1, 4),
            (1, 8),
            (8, 2),
            (1, 16),
            (16, 1),
            (3, 5),
        ]
    )
    groups = rng.choice([2, 3, 4, 6, 8, 12, 16, 24, 48])
    cin, cout = ig * groups, og * groups
    shuffle = rng.choice(_divisors(cin))
    n, h, w = fz.size()
    layout, grad_kind = rng.choice(LAYOUTS), rng.choice(GRAD_KINDS)
    rx, rw = rng.random() < 0.8, rng.random() < 0.8
    fz.describe(
        path="kxk module",
        cin=cin,
        cout=cout,
        groups=groups,
        shuffle=shuffle,
        k=k,
        stride=stride,
        nhw=(n, h, w),
        layout=layout,
        grad=grad_kind,
        rx=rx,
        rw=rw,
    )
    conv = sparse_conv(cin, cout, k, stride=stride, groups=groups, shuffle_groups=shuffle, impl="fast")
    wa, wb = _load(conv, fz.weight((cout, ig, k, k), True, rw))
    _compare(
        fz,
        conv,
        lambda x: _ref_conv(x, wb, groups, shuffle, stride, k),
        fz.input(n, cin, h, w, layout),
        [(wa, wb)],
        grad_kind,
        rx,
        k * math.sqrt(ig + og),
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_kxk_module_matches_float64(seed: int, threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_calls(monkeypatch, "group_conv")
    Fuzz(seed, threads).run(GC_CASES, _kxk_module_case)
    # wide groups (Ig x Og > 16) and depthwise stay with oneDNN: about half the cases are native
    assert calls[0] >= GC_CASES // 3, f"the native k x k kernel ran in only {calls[0]} of {GC_CASES} cases"


# ---------------------------------------------------------------------------------------------- fused chains
def _chain_specs(fz: Fuzz, layers: int, any_groups: bool) -> list[tuple[int, int, int, int]]:
    """(in, out, groups, shuffle_groups) per layer, channels connected, at most 128 channels."""
    rng = fz.rng
    c = rng.choice([4, 6, 8, 12, 16, 24, 32, 48, 64])
    specs = []
    for _ in range(layers):
        g = rng.choice([d for d in _divisors(c) if d > 1 or any_groups])
        og = rng.choice([1, 2, 3, 4, 8, 16] if any_groups else [1, 2, 4, 8])
        og = og if g * og <= 128 else max(1, 128 // g)
        specs.append((c, g * og, g, rng.choice(_divisors(c))))
        c = g * og
    return specs


def _chain_reference(specs: list[tuple[int, int, int, int]], wbs: list[Tensor]) -> Callable[[Tensor], Tensor]:
    def reference(x: Tensor) -> Tensor:
        for (_, _, g, s), wb in zip(specs, wbs, strict=True):
            x = _ref_conv(x, wb, g, s, 1, 1)
        return x

    return reference


def _chain_scale(specs: list[tuple[int, int, int, int]]) -> float:
    return math.prod(math.sqrt(ci // g) for ci, _, g, _ in specs)


def _chain_module_case(fz: Fuzz, i: int) -> None:
    rng = fz.rng
    specs = _chain_specs(fz, rng.randint(2, 4), any_groups=False)
    n, h, w = fz.size()
    layout, grad_kind = rng.choice(LAYOUTS), rng.choice(GRAD_KINDS)
    rx, rws = rng.random() < 0.8, [rng.random() < 0.7 for _ in specs]
    fz.describe(
        path="FusedSequential", specs=specs, nhw=(n, h, w), layout=layout, grad=grad_kind, rx=rx, rws=rws
    )
    convs = [sparse_conv(ci, co, 1, groups=g, shuffle_groups=s, impl="fast") for ci, co, g, s in specs]
    weights = [
        _load(conv, fz.weight((co, ci // g, 1, 1), True, r))
        for conv, (ci, co, g, _), r in zip(convs, specs, rws, strict=True)
    ]
    _compare(
        fz,
        FusedSequential(*convs),
        _chain_reference(specs, [wb for _, wb in weights]),
        fz.input(n, specs[0][0], h, w, layout),
        weights,
        grad_kind,
        rx,
        _chain_scale(specs),
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_fused_chain_matches_float64(seed: int, threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_calls(monkeypatch, "pointwise_chain")
    Fuzz(seed, threads).run(CHAIN_CASES, _chain_module_case)
    assert calls[0] >= CHAIN_CASES // 2, (
        f"the fused chain kernel ran in only {calls[0]} of {CHAIN_CASES} cases"
    )


# ---------------------------------------------------------------------------------------------- BatchNorm + ReLU
# (offset, scale) of the input: mean / std at most 10 (a large ratio loses the normalised value to float32
# cancellation, in torch's own CPU batch norm as much as in the kernel)
BN_INPUTS = [(0.0, 1.0), (0.0, 0.01), (0.0, 10.0), (3.0, 1.0), (3.0, 10.0), (100.0, 10.0)]


def _batchnorm_case(fz: Fuzz, i: int, native_runs: list[int]) -> None:
    rng = fz.rng
    c = rng.choice([1, 2, 3, 5, 8, 16, 17, 33, 64])
    n, h, w = fz.size()
    w = 2 if n * h * w == 1 else w  # training batch norm needs more than one value per channel
    relu, momentum, steps = rng.random() < 0.8, rng.choice([0.1, None]), rng.randint(1, 2)
    layout, grad_kind = rng.choice(["cl", "cl", "cl", "nchw"]), rng.choice(GRAD_KINDS)
    rx, rw = rng.random() < 0.8, rng.random() < 0.8
    offset, scale = rng.choice(BN_INPUTS)
    fz.describe(
        path="BatchNormAct2d",
        c=c,
        nhw=(n, h, w),
        relu=relu,
        momentum=momentum,
        steps=steps,
        layout=layout,
        grad=grad_kind,
        rx=rx,
        rw=rw,
        offset=offset,
        scale=scale,
    )
    x = fz.input(n, c, h, w, layout) * scale + offset
    mod = BatchNormAct2d(c, relu=relu, momentum=momentum)
    ref = nn.BatchNorm2d(c, momentum=momentum).double()
    with torch.no_grad():
        for name, value in (
            ("weight", fz.randn(c)),
            ("bias", fz.randn(c)),
            ("running_mean", fz.randn(c)),
            ("running_var", torch.rand(c, generator=fz.gen) + 0.5),
        ):
            getattr(mod, name).copy_(value)
            getattr(ref, name).copy_(value)
    for p in (*mod.parameters(), *ref.parameters()):
        p.requires_grad_(rw)
    native_runs[0] += mod.uses_native(x)
    xa, xb = x.detach().requires_grad_(rx), x.detach().double().requires_grad_(rx)
    for _ in range(steps):
        ya, yb = mod(xa), ref(xb)
        fz.close(ya, torch.relu(yb) if relu else yb, "y", 10.0)
    fz.close(mod.running_mean, ref.running_mean, "running_mean")
    fz.close(mod.running_var, ref.running_var, "running_var", 10.0)
    tracked, ref_tracked = mod.num_batches_tracked, ref.num_batches_tracked
    if tracked is None or ref_tracked is None or int(tracked) != int(ref_tracked):
        fz.fail("num_batches_tracked", f"{tracked} != {ref_tracked}")
    if not (rx or rw):
        return
    if relu:
        # the ReLU mask of the output checked above: a value within rounding of 0 may fall either side
        yb = yb * (ya.detach() > 0)
    g = fz.grad(tuple(yb.shape), grad_kind)
    ya.backward(g)
    yb.backward(g.double())
    fz.close(xa.grad, xb.grad, "dx", 100.0)
    fz.close(mod.weight.grad, ref.weight.grad, "dgamma", 10 * math.sqrt(n * h * w))
    fz.close(mod.bias.grad, ref.bias.grad, "dbeta", 10 * math.sqrt(n * h * w))


@pytest.mark.parametrize("seed", SEEDS)
def test_batchnorm_relu_matches_float64(seed: int, threads: int) -> None:
    native_runs = [0]
    Fuzz(seed, threads).run(BN_CASES, lambda fz, i: _batchnorm_case(fz, i, native_runs))
    assert native_runs[0] >= BN_CASES // 2, (
        f"the native batch norm ran in only {native_runs[0]} of {BN_CASES}"
    )


# ---------------------------------------------------------------------------------------------- direct kernel calls
def _direct_pointwise_case(fz: Fuzz, i: int) -> None:
    """Any groups, 1 and wide ones included (outside the decision rule), and non-contiguous weights."""
    rng = fz.rng
    cin = rng.choice([2, 3, 4, 6, 8, 12, 16, 18, 24, 32, 40, 48, 64, 96])
    groups, og = rng.choice(_divisors(cin)), rng.choice([1, 2, 3, 4, 5, 8, 16, 17, 26, 40])
    cout, shuffle = groups * og, rng.choice(_divisors(cin))
    n, h, w = fz.size()
    layout, grad_kind = rng.choice(LAYOUTS), rng.choice(GRAD_KINDS)
    rx, rw, contiguous = rng.random() < 0.8, rng.random() < 0.8, rng.random() < 0.67
    kernel = rng.choice(["tiles", "direct"])
    fz.describe(
        path="group_pointwise",
        kernel=kernel,
        cin=cin,
        cout=cout,
        groups=groups,
        shuffle=shuffle,
        nhw=(n, h, w),
        layout=layout,
        grad=grad_kind,
        rx=rx,
        rw=rw,
        contiguous_weight=contiguous,
    )
    wa = fz.weight((cout, cin // groups, 1, 1), contiguous, rw)
    wb = wa.detach().double().requires_grad_(rw)
    _compare(
        fz,
        lambda x: _native.group_pointwise(x, wa, groups, shuffle, kernel=kernel),
        lambda x: _ref_conv(x, wb, groups, shuffle, 1, 1),
        fz.input(n, cin, h, w, layout),
        [(wa, wb)],
        grad_kind,
        rx,
        math.sqrt(cin // groups + og),
        channels_last_out=True,
    )


def _direct_conv_case(fz: Fuzz, i: int) -> None:
    """k in 1, 3, 5, stride up to 3, channels per group up to 17 x 20, non-contiguous weights."""
    rng = fz.rng
    k, stride = rng.choice([1, 3, 5]), rng.choice([1, 2, 3])
    ig, og = rng.choice([1, 2, 3, 4, 5, 8, 17]), rng.choice([1, 2, 3, 4, 6, 8, 16, 20])
    groups = rng.choice([1, 2, 3, 4, 6, 8, 12, 16, 24])
    cin, cout = ig * groups, og * groups
    shuffle = rng.choice(_divisors(cin))
    n, h, w = fz.size()
    layout, grad_kind = rng.choice(LAYOUTS), rng.choice(GRAD_KINDS)
    rx, rw, contiguous = rng.random() < 0.8, rng.random() < 0.8, rng.random() < 0.67
    fz.describe(
        path="group_conv",
        cin=cin,
        cout=cout,
        groups=groups,
        shuffle=shuffle,
        k=k,
        stride=stride,
        nhw=(n, h, w),
        layout=layout,
        grad=grad_kind,
        rx=rx,
        rw=rw,
        contiguous_weight=contiguous,
    )
    wa = fz.weight((cout, ig, k, k), contiguous, rw)
    wb = wa.detach().double().requires_grad_(rw)
    _compare(
        fz,
        lambda x: _native.group_conv(x, wa, groups, shuffle, stride),
        lambda x: _ref_conv(x, wb, groups, shuffle, stride, k),
        fz.input(n, cin, h, w, layout),
        [(wa, wb)],
        grad_kind,
        rx,
        k * math.sqrt(ig + og),
        channels_last_out=True,
    )


def _direct_chain_case(fz: Fuzz, i: int) -> None:
    """1 to 4 layers, groups 1 included, some non-contiguous weights."""
    rng = fz.rng
    specs = _chain_specs(fz, rng.randint(1, 4), any_groups=True)
    n, h, w = fz.size()
    layout, grad_kind = rng.choice(LAYOUTS), rng.choice(GRAD_KINDS)
    rx = rng.random() < 0.8
    rws, contiguous = [rng.random() < 0.7 for _ in specs], [rng.random() < 0.7 for _ in specs]
    fz.describe(
        path="pointwise_chain",
        specs=specs,
        nhw=(n, h, w),
        layout=layout,
        grad=grad_kind,
        rx=rx,
        rws=rws,
        contiguous_weights=contiguous,
    )
    was = [
        fz.weight((co, ci // g, 1, 1), cont, r)
        for (ci, co, g, _), cont, r in zip(specs, contiguous, rws, strict=True)
    ]
    wbs = [wa.detach().double().requires_grad_(r) for wa, r in zip(was, rws, strict=True)]
    _compare(
        fz,
        lambda x: _native.pointwise_chain(x, was, [sp[2] for sp in specs], [sp[3] for sp in specs]),
        _chain_reference(specs, wbs),
        fz.input(n, specs[0][0], h, w, layout),
        list(zip(was, wbs, strict=True)),
        grad_kind,
        rx,
        _chain_scale(specs),
        channels_last_out=True,
    )


DIRECT = [_direct_pointwise_case, _direct_conv_case, _direct_chain_case]


@pytest.mark.parametrize("seed", SEEDS)
def test_direct_kernel_calls_match_float64(seed: int, threads: int) -> None:
    Fuzz(seed, threads).run(DIRECT_CASES, lambda fz, i: DIRECT[i % len(DIRECT)](fz, i))


# ---------------------------------------------------------------------------------------------- zero-size inputs
# (the k x k module path is left out: where it falls back to oneDNN, torch's conv2d rejects H or W = 0 itself;
# group_conv is called directly instead, with strides up to 3)
ZERO_SIZE = [_pointwise_module_case, _chain_module_case, *DIRECT]


@pytest.mark.parametrize("seed", SEEDS)
def test_zero_size_inputs_give_empty_outputs_and_zero_weight_grads(seed: int, threads: int) -> None:
    # N, H or W = 0 on every conv path: the output's shape, an empty dx and an all-zero dw (against the reference)
    Fuzz(seed, threads, zero_size=True).run(ZERO_CASES, lambda fz, i: ZERO_SIZE[i % len(ZERO_SIZE)](fz, i))
