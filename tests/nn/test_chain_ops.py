"""Fused chains of grouped 1x1 convs (igcnas.nn.chain_ops): equal the naive sequence, deterministic, fall back."""

from __future__ import annotations

import warnings
from collections import OrderedDict

import pytest
import torch
from torch import nn

from igcnas.nn import _native, chain_ops
from igcnas.nn.chain_ops import FusedSequential, chain_prefixes, chain_runs, fuse_chains, run_chain
from igcnas.nn.network import build
from igcnas.nn.ops import FastSparseConv2d, sparse_conv
from igcnas.zoo import get_zoo

pytestmark = pytest.mark.usefixtures("at_most_two_threads")



def _cl(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


# channels (L + 1 entries), per layer (groups, shuffle_groups or None), input (N, H, W)
CHAINS = [
    ((416, 416, 416, 416), [(52, 52)] * 3, (2, 9, 9)),  # IGCV2*-C416 branch convs, P = 162 (partial tiles)
    ((64, 64, 64), [(8, 8), (8, 8)], (1, 5, 7)),  # IGCV2-C64, batch 1, odd pixel count
    ((48, 48, 48, 48, 48), [(6, None), (4, 12), (8, None), (2, 24)], (2, 3, 5)),  # L = 4, mixed shuffles
    ((24, 48, 12, 36), [(4, 6), (3, 4), (2, 3)], (1, 4, 4)),  # varying widths, Cout != Cin
    ((32, 32, 32), [(4, None), (16, None)], (3, 8, 8)),  # no shuffles, whole step of tiles
    ((40, 40, 40), [(10, 10), (5, 8)], (1, 1, 1)),  # a single pixel
]


def _chain(channels: tuple[int, ...], layers: list[tuple[int, int | None]], impl: str) -> list[nn.Module]:
    return [
        sparse_conv(channels[i], channels[i + 1], 1, groups=g, shuffle_groups=s, impl=impl)  # type: ignore[arg-type]
        for i, (g, s) in enumerate(layers)
    ]


def _pair(channels: tuple[int, ...], layers: list[tuple[int, int | None]]) -> tuple[nn.Sequential, FusedSequential]:
    torch.manual_seed(0)
    naive = nn.Sequential(*_chain(channels, layers, "naive"))
    fast = FusedSequential(*_chain(channels, layers, "fast"))
    fast.load_state_dict(naive.state_dict())
    return naive, fast


def _grads(model: nn.Module, x: torch.Tensor, dy: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    x = x.detach().requires_grad_(True)
    y = model(x)
    y.backward(dy)
    assert x.grad is not None
    return y, [x.grad, *(p.grad for p in model.parameters())]  # type: ignore[misc]


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, float(b.detach().abs().max())))


@pytest.mark.parametrize(("channels", "layers", "shape"), CHAINS)
def test_fused_chain_matches_naive_values_and_gradients(native, channels, layers, shape) -> None:
    naive, fast = _pair(channels, layers)
    assert [len(run) for run in chain_runs(list(fast))] == [len(layers)]
    n, h, w = shape
    x = torch.randn(n, channels[0], h, w)
    dy = torch.randn(n, channels[-1], h, w)  # NCHW output gradient (the fused output is channels_last)
    ref, ref_grads = _grads(naive, x, dy)
    calls: list[int] = []
    original = _native._PointwiseChain.apply
    try:
        _native._PointwiseChain.apply = lambda *a: calls.append(1) or original(*a)  # type: ignore[method-assign]
        out, grads = _grads(fast, _cl(x), dy)
    finally:
        _native._PointwiseChain.apply = original  # type: ignore[method-assign]
    assert calls == [1]
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert _close(out, ref)
    for got, want in zip(grads, ref_grads, strict=True):
        assert got.shape == want.shape and _close(got, want)


def test_fused_chain_is_deterministic_and_partial_gradients(native) -> None:
    naive, fast = _pair((416, 416, 416, 416), [(52, 52)] * 3)
    x = _cl(torch.randn(2, 416, 11, 13))
    dy = torch.randn(2, 416, 11, 13)
    first = _grads(fast, x, dy)
    fast.zero_grad()
    second = _grads(fast, x, dy)
    for a, b in zip([first[0], *first[1]], [second[0], *second[1]], strict=True):
        assert torch.equal(a, b)
    # only some weights need gradients, the input none
    fast.zero_grad()
    fast[1].weight.requires_grad_(False)
    y = fast(x)
    y.backward(dy)
    assert fast[1].weight.grad is None
    assert fast[0].weight.grad is not None and torch.equal(fast[0].weight.grad, first[1][1])
    assert fast[2].weight.grad is not None and torch.equal(fast[2].weight.grad, first[1][3])


def test_falls_back_when_native_is_off_or_input_does_not_fit(native, monkeypatch: pytest.MonkeyPatch) -> None:
    naive, fast = _pair((64, 64, 64), [(8, 8), (8, 8)])
    x = torch.randn(2, 64, 4, 4)
    ref = naive(x)

    def boom(*args: object, **kwargs: object) -> torch.Tensor:
        raise AssertionError("the fused kernel must not run")

    monkeypatch.setattr(_native, "pointwise_chain", boom)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fast(x).dtype == torch.bfloat16
    assert torch.allclose(fast.double()(x.double()), ref.double(), atol=1e-4)
    fast.float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings of the reference shuffle's shape tests
        traced = torch.jit.trace(fast, x, check_trace=False)
    assert torch.allclose(traced(x), ref, atol=1e-4)
    assert torch.allclose(torch.jit.script(fast)(x), ref, atol=1e-4)
    handle = fast[0].register_forward_hook(lambda *a: None)
    assert torch.allclose(fast(x), ref, atol=1e-4)
    handle.remove()
    seen: list[int] = []
    handle = fast[1].register_full_backward_hook(lambda *a: seen.append(1))  # type: ignore[arg-type]
    fast(x.clone().requires_grad_(True)).sum().backward()
    handle.remove()
    assert seen == [1]  # the member's backward hook ran: the chain was not fused around it
    monkeypatch.setattr(_native, "native_available", lambda: False)
    assert torch.allclose(fast(_cl(x)), ref, atol=1e-4)


def test_auto_nchw_inference_keeps_the_reference_and_runs_are_maximal() -> None:
    convs = _chain((16, 16, 16, 16), [(4, 4), (4, None), (2, 8)], "fast")
    mixed: list[nn.Module] = [
        convs[0],
        nn.ReLU(),
        convs[1],
        convs[2],
        sparse_conv(16, 16, 3, groups=4, impl="fast"),
        sparse_conv(16, 16, 1, groups=4, stride=2, impl="fast"),
        sparse_conv(16, 16, 1, groups=4, impl="fast"),
    ]
    assert [[id(c) for c in run] for run in chain_runs(mixed)] == [[id(convs[1]), id(convs[2])]]
    assert chain_runs([sparse_conv(16, 16, 1, groups=4, impl="naive")] * 2) == []
    plain = nn.Sequential(OrderedDict(a=nn.ReLU(), b=nn.ReLU()))
    assert fuse_chains(plain) is plain
    seq = fuse_chains(nn.Sequential(OrderedDict(conv0=convs[1], conv1=convs[2])))
    assert isinstance(seq, FusedSequential) and list(seq.state_dict()) == ["conv0.weight", "conv1.weight"]
    x = torch.randn(2, 16, 40, 40)  # NCHW, auto, inference: the first conv keeps the reference form
    with torch.no_grad():
        y = run_chain(x, [c for c in convs[1:] if isinstance(c, FastSparseConv2d)])
        ref = convs[2](convs[1](x))
    assert torch.allclose(y, ref, atol=1e-5)


def test_zoo_network_gets_chains_with_unchanged_state_dict(native) -> None:
    spec = get_zoo("IGCV2-C64-D20").spec
    torch.manual_seed(0)
    naive, fast = build(spec, impl="naive"), build(spec)
    assert list(naive.state_dict()) == list(fast.state_dict())
    assert [k for k, _ in naive.named_parameters()] == [k for k, _ in fast.named_parameters()]
    convs = [k for k, m in naive.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs == [k for k, m in fast.named_modules() if isinstance(m, nn.Conv2d)]
    bodies = [m for m in fast.modules() if isinstance(m, FusedSequential)]
    assert bodies and all(chain_runs(list(body)) for body in bodies)
    fast.load_state_dict(naive.state_dict())
    x = torch.randn(2, 3, 32, 32)
    naive.train()
    fast.train()
    out_naive, out_fast = naive(x), fast(x)
    assert torch.allclose(out_fast, out_naive, atol=1e-4, rtol=1e-4)
    out_naive.square().sum().backward()
    out_fast.square().sum().backward()
    grads = dict(fast.named_parameters())
    for name, param in naive.named_parameters():
        assert param.grad is not None and _close(grads[name].grad, param.grad), name  # type: ignore[arg-type]


@pytest.mark.parametrize("fused_faster", [True, False])
def test_fusion_is_decided_by_timing_the_chain_against_its_convs(
    fused_faster: bool, monkeypatch: pytest.MonkeyPatch, fresh_tune: None
) -> None:
    if not _native.native_available():
        pytest.skip(f"native kernel {_native.native_status()}")
    from igcnas.nn import chain_ops, tune

    timed: list[list[str]] = []

    def fake(shape, convs, plans, *, grad, channels_last, forms):  # type: ignore[no-untyped-def]
        assert len(plans) == len(convs) == 2 and grad and channels_last
        timed.append(sorted(forms))
        return {"native": 1.0 if fused_faster else 2.0, "reference": 1.5}

    monkeypatch.setattr(chain_ops, "_time_chain", fake)
    fused_runs: list[int] = []
    real = _native.pointwise_chain
    monkeypatch.setattr(_native, "pointwise_chain", lambda *a, **kw: fused_runs.append(1) or real(*a, **kw))
    naive, fast = _pair((64, 64, 64), [(8, 8), (8, None)])
    x = _cl(torch.randn(2, 64, 6, 6)).requires_grad_(True)
    for _ in range(3):  # measured once, then the memo and the cache answer
        assert _close(fast(x), naive(x))
    assert timed == [["native", "reference"]] and len(fused_runs) == (3 if fused_faster else 0)
    (text,) = [t for t in tune.choices() if t.startswith("CHAIN")]
    assert text == f"CHAIN 64->64->64 g8,8 sh8,1 6x6 float32 t{torch.get_num_threads()} train cl"
    assert tune.last_forms(fast)["train"].get("PWG chain") == ("native" if fused_faster else None)


def test_a_fresh_module_finds_the_cached_chain_choice_without_copying_activations() -> None:
    if not _native.native_available():
        pytest.skip(f"native kernel {_native.native_status()}")
    from torch.profiler import ProfilerActivity, profile

    from igcnas.nn.chain_ops import chain_form

    x = _cl(torch.randn(2, 64, 16, 16)).requires_grad_(True)
    chain_form(x, _chain((64, 64, 64, 64), [(8, 8)] * 3, "fast"))  # type: ignore[arg-type]  # measured or cached
    fresh = _chain((64, 64, 64, 64), [(8, 8)] * 3, "fast")  # a new model (e.g. each proxy score): memo empty
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        chain_form(x, fresh)  # type: ignore[arg-type]
    copies = [e.key for e in prof.key_averages() if e.key in ("aten::copy_", "aten::clone")]
    assert copies == []  # the convs' inputs are probed with empty tensors of their shape, not built


# channels, depthwise k, per chain layer (out channels, groups, shuffle_groups or None), input (N, H, W)
PREFIXED = [
    (64, 3, [(64, 8, None), (64, 8, 8)], (2, 32, 32)),  # IGCV2-C64 stage 1: a span of tiles is one row
    (416, 3, [(416, 52, None), (416, 52, 52), (416, 52, None)], (1, 9, 11)),  # IGCV2*-C416, spans across rows
    (24, 5, [(48, 4, 6), (24, 3, 4)], (3, 5, 7)),  # k = 5, channels not a multiple of a vector, Cout != Cin
    (216, 3, [(216, 27, None), (216, 27, 27)], (1, 8, 8)),  # 216 = 13 vectors + 8 scalar channels
    (16, 7, [(16, 4, 4), (16, 4, None)], (1, 1, 1)),  # a single pixel: every tap but the centre out of range
]


def _prefixed(channels: int, k: int, layers: list[tuple[int, int, int | None]], impl: str) -> list[nn.Module]:
    modules: list[nn.Module] = [sparse_conv(channels, channels, k, groups=channels, impl=impl)]  # type: ignore[arg-type]
    width = channels
    for out, g, s in layers:
        modules.append(sparse_conv(width, out, 1, groups=g, shuffle_groups=s, impl=impl))  # type: ignore[arg-type]
        width = out
    return modules


@pytest.mark.parametrize(("channels", "k", "layers", "shape"), PREFIXED)
def test_depthwise_prefix_matches_naive_values_and_gradients(
    native, monkeypatch: pytest.MonkeyPatch, channels, k, layers, shape
) -> None:
    torch.manual_seed(0)
    naive = nn.Sequential(*_prefixed(channels, k, layers, "naive"))
    fast = FusedSequential(*_prefixed(channels, k, layers, "fast"))
    fast.load_state_dict(naive.state_dict())
    assert [(dw is fast[0], len(run)) for dw, run in chain_prefixes(list(fast))] == [(True, len(layers))]
    monkeypatch.setattr(chain_ops, "prefix_form", lambda *a: "native")  # fused whatever this machine measures
    prefixed: list[bool] = []
    real = _native.pointwise_chain
    monkeypatch.setattr(_native, "pointwise_chain",
                        lambda *a, **kw: prefixed.append(kw.get("depthwise") is not None) or real(*a, **kw))
    n, h, w = shape
    x = torch.randn(n, channels, h, w)
    dy = torch.randn(n, layers[-1][0], h, w)
    ref, ref_grads = _grads(naive, x, dy)
    out, grads = _grads(fast, _cl(x), dy)
    assert prefixed == [True]  # one op: the depthwise conv ran inside the chain
    assert _close(out, ref)
    for got, want in zip(grads, ref_grads, strict=True):  # x, the depthwise weight, then the chain's weights
        assert got.shape == want.shape and _close(got, want)
    fast.zero_grad()
    again = _grads(fast, _cl(x), dy)  # deterministic for a thread count
    for a, b in zip([out, *grads], [again[0], *again[1]], strict=True):
        assert torch.equal(a, b)


def test_depthwise_prefix_partial_gradients_and_bad_weight(native) -> None:
    torch.manual_seed(0)
    dw, *convs = _prefixed(64, 3, [(64, 8, None), (64, 8, 8)], "fast")
    weights = [c.weight for c in convs]  # type: ignore[union-attr]
    x = _cl(torch.randn(2, 64, 6, 6))
    dy = torch.randn(2, 64, 6, 6)
    full = _native.pointwise_chain(x.requires_grad_(True), weights, [8, 8], [1, 8], depthwise=dw.weight)
    full.backward(dy)
    want = [t.grad.clone() for t in (x, dw.weight, *weights)]  # type: ignore[union-attr]
    for t in (x, dw.weight, *weights):
        t.grad = None
    dw.weight.requires_grad_(False)  # the chain's weights alone, then the depthwise weight alone
    _native.pointwise_chain(x.detach(), weights, [8, 8], [1, 8], depthwise=dw.weight).backward(dy)
    assert dw.weight.grad is None and all(torch.equal(w.grad, g) for w, g in zip(weights, want[2:], strict=True))
    dw.weight.requires_grad_(True)
    frozen = [w.detach() for w in weights]
    _native.pointwise_chain(x.detach(), frozen, [8, 8], [1, 8], depthwise=dw.weight).backward(dy)
    assert torch.equal(dw.weight.grad, want[1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"depthwise must be a float32 CPU \(64, 1, k, k\) weight"):
        _native.pointwise_chain(x, weights, [8, 8], [1, 8], depthwise=torch.randn(64, 1, 3, 5))


@pytest.mark.parametrize("fused_faster", [True, False])
def test_depthwise_prefix_is_decided_by_timing_it_against_the_conv_alone(
    fused_faster: bool, monkeypatch: pytest.MonkeyPatch, fresh_tune: None
) -> None:
    if not _native.native_available():
        pytest.skip(f"native kernel {_native.native_status()}")
    from igcnas.nn import tune

    timed: list[list[str]] = []

    def fake(shape, depthwise, own, convs, *, grad, channels_last, forms):  # type: ignore[no-untyped-def]
        assert len(convs) == 2 and grad and channels_last and depthwise.spec.kind == "DW"
        timed.append(sorted(forms))
        return {"native": 1.0 if fused_faster else 2.0, "reference": 1.5}

    monkeypatch.setattr(chain_ops, "_time_prefix", fake)
    monkeypatch.setattr(chain_ops, "chain_form", lambda *a: "native")  # the chain itself fused
    torch.manual_seed(0)
    naive = nn.Sequential(*_prefixed(64, 3, [(64, 8, None), (64, 8, 8)], "naive"))
    fast = FusedSequential(*_prefixed(64, 3, [(64, 8, None), (64, 8, 8)], "fast"))
    fast.load_state_dict(naive.state_dict())
    x = _cl(torch.randn(2, 64, 6, 6)).requires_grad_(True)
    for _ in range(3):  # measured once, then the memo and the cache answer
        assert _close(fast(x), naive(x))
    assert timed == [["native", "reference"]]
    (text,) = [t for t in tune.choices() if t.startswith("DWCHAIN")]
    assert text == f"DWCHAIN k3 64->64->64 g8,8 sh1,8 6x6 float32 t{torch.get_num_threads()} train cl"
    assert tune.last_forms(fast)["train"].get("DW+PWG chain") == ("native" if fused_faster else None)


@pytest.mark.parametrize("trainable", [(), (0,), (2,), (0, 2)])
def test_the_backward_computes_what_is_asked_and_only_that(native, trainable: tuple[int, ...]) -> None:
    """The input gradient with any subset of the weights trainable (none: jacob_cov's frozen network); the layers'
    inputs are recomputed only up to the highest trainable layer."""
    naive, fast = _pair((48, 48, 48, 48), [(6, 6), (8, 8), (6, None)])
    for model in (naive, fast):
        for index, conv in enumerate(model):
            conv.weight.requires_grad_(index in trainable)
    x = torch.randn(2, 48, 7, 5)
    dy = torch.randn(2, 48, 7, 5)
    ref, ref_grads = _grads(naive, x, dy)
    out, grads = _grads(fast, _cl(x), dy)
    assert _close(grads[0], ref_grads[0])
    for index, (a, b) in enumerate(zip(fast, naive, strict=True)):
        assert (a.weight.grad is None) == (index not in trainable)
        if index in trainable:
            assert _close(a.weight.grad, b.weight.grad)
