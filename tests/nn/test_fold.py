"""A training BatchNorm folded into the native conv after it (igcnas.nn.fold): equal to the modules unfolded
(values, every gradient, running statistics), deterministic, decided by timing, and unfolded where it cannot run."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from igcnas.nn import _native, chain_ops, fold, tune
from igcnas.nn.chain_ops import FusedSequential, fuse_chains
from igcnas.nn.norm import BatchNormAct2d
from igcnas.nn.ops import sparse_conv

pytestmark = pytest.mark.usefixtures("at_most_two_threads")


def _cl(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


def _bn(channels: int, relu: bool) -> BatchNormAct2d:
    bn = BatchNormAct2d(channels, relu=relu)
    with torch.no_grad():  # away from the identity, so that a missing scale or shift shows
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


def _assert_trains_as(out: torch.Tensor, ref: torch.Tensor, fast: nn.Module, naive: nn.Module) -> None:
    """``out`` (of ``fast``) equals ``ref`` (of ``naive``, the same weights), and so does every parameter's
    gradient of the sum of squares."""
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    out.square().sum().backward()
    ref.square().sum().backward()
    for (name, a), b in zip(fast.named_parameters(), naive.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-3 * max(1.0, float(b.grad.abs().max())),
                                   msg=name)


# channels, BN's ReLU, depthwise k (0: none), 1x1 layers after it (out, groups, shuffle), input (N, H, W)
CASES = [
    (192, True, 0, [(32, 2, 2)], (2, 5, 5)),  # IGCV3's project conv reads BN + ReLU; partial tiles
    (48, False, 0, [(48, 6, None), (48, 8, 6)], (1, 3, 7)),  # a BN read by a chain of two
    (32, False, 3, [], (2, 5, 6)),  # IGCV3: BN alone, then the depthwise conv
    (24, True, 5, [], (1, 7, 3)),  # a ReLU, k = 5, 24 channels (a vector and a scalar tail with AVX-512)
    (64, True, 3, [(64, 8, None), (64, 8, 8)], (2, 8, 8)),  # IGCV2: BN + ReLU, depthwise, then the chain
    (16, False, 7, [(16, 4, 4)], (2, 1, 1)),  # 1x1 images: every tap but the centre reads padding
]


def _reference(x: torch.Tensor, bn: BatchNormAct2d, dw: torch.Tensor | None,
               chain: list[tuple[torch.Tensor, int, int | None]]) -> torch.Tensor:
    """The same ops in float64 with PyTorch's functions (batch statistics, zero padding of the normalised input)."""
    y = F.batch_norm(x, None, None, bn.weight.double(), bn.bias.double(), training=True, eps=bn.eps)
    y = torch.relu(y) if bn.relu else y
    if dw is not None:
        y = F.conv2d(y, dw, padding=dw.shape[2] // 2, groups=x.shape[1])
    return _reference_chain(y, chain)


def _reference_chain(y: torch.Tensor, chain: list[tuple[torch.Tensor, int, int | None]]) -> torch.Tensor:
    """The 1x1 convs of ``chain`` (weight, groups, shuffle before it) on ``y`` with PyTorch's functions."""
    for weight, groups, shuffle in chain:
        if shuffle:
            n, c, h, w = y.shape
            y = y.reshape(n, shuffle, c // shuffle, h, w).transpose(1, 2).reshape(n, c, h, w)
        y = F.conv2d(y, weight, groups=groups)
    return y


def _chain(width: int, layers: list[tuple[int, int, int | None]]) -> tuple[list[nn.Module], int]:
    """Fast 1x1 convs of ``layers`` (out, groups, shuffle before it) on ``width`` channels, and their output width."""
    convs = []
    for out, groups, shuffle in layers:
        convs.append(sparse_conv(width, out, 1, groups=groups, shuffle_groups=shuffle, impl="fast"))
        width = out
    return convs, width


def _assert_close_all(got: list[torch.Tensor | None], want: list[torch.Tensor | None]) -> None:
    """Each float32 result of ``got`` equals its float64 reference in ``want`` (tolerances relative to its scale)."""
    for a, b in zip(got, want, strict=True):
        assert a is not None and b is not None
        torch.testing.assert_close(a.detach().double(), b, rtol=1e-4, atol=1e-4 * max(1.0, float(b.abs().max())))


@pytest.mark.parametrize(("channels", "relu", "k", "layers", "shape"), CASES)
def test_folded_op_equals_the_float64_reference(native, channels, relu, k, layers, shape) -> None:
    torch.manual_seed(0)
    bn = _bn(channels, relu)
    dw = sparse_conv(channels, channels, k, groups=channels, impl="fast") if k else None
    convs, width = _chain(channels, layers)
    n, h, w = shape
    x = _cl(torch.randn(n, channels, h, w)).requires_grad_(True)
    dy = torch.randn(n, width, h, w)
    y = fold.normed(x, bn, depthwise=None if dw is None else dw.weight, chain=convs)
    y.backward(dy)
    params = [bn.weight, bn.bias, *([] if dw is None else [dw.weight]), *(c.weight for c in convs)]
    got = [y, x.grad, *(p.grad for p in params)]
    x64 = x.detach().double().requires_grad_(True)
    ref_params = [p.detach().double().requires_grad_(True) for p in params]
    ref_bn = _bn(channels, relu).double()
    ref_bn.weight, ref_bn.bias = nn.Parameter(ref_params[0]), nn.Parameter(ref_params[1])
    first = 2 if dw is None else 3
    chain = [(p, c.spec.groups, c.spec.shuffle_groups if c.spec.has_shuffle else None)
             for p, c in zip(ref_params[first:], convs, strict=True)]
    ref = _reference(x64, ref_bn, None if dw is None else ref_params[2], chain)
    ref.backward(dy.double())
    want = [ref, x64.grad, ref_bn.weight.grad, ref_bn.bias.grad, *(p.grad for p in ref_params[2:])]
    _assert_close_all(got, want)
    # the running statistics: as nn.BatchNorm2d's update from this batch
    check = nn.BatchNorm2d(channels).double().train()
    check(x64.detach())
    assert bn.running_mean is not None and bn.running_var is not None and bn.num_batches_tracked is not None
    torch.testing.assert_close(bn.running_mean.double(), check.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var.double(), check.running_var, rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked) == 1
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        fold.normed(x[:1, :, :1, :1], bn, depthwise=None if dw is None else dw.weight, chain=convs)
    # deterministic for a thread count
    again = fold.normed(x.detach(), copy.deepcopy(bn), depthwise=None if dw is None else dw.weight, chain=convs)
    assert torch.equal(again, y)


def _block(relu: bool, chain: bool) -> list[nn.Module]:
    modules: list[nn.Module] = [sparse_conv(32, 32, 1, groups=2, impl="fast"), _bn(32, relu),
                                sparse_conv(32, 32, 3, groups=32, impl="fast")]
    if chain:
        modules += [sparse_conv(32, 32, 1, groups=4, impl="fast"), sparse_conv(32, 32, 1, groups=4, shuffle_groups=4,
                                                                               impl="fast")]
    return modules + [_bn(32, False)]


@pytest.mark.parametrize(("relu", "chain"), [(False, False), (True, True)])
def test_a_sequence_folds_where_measured_faster_and_equals_it_unfolded(
    native, monkeypatch: pytest.MonkeyPatch, relu: bool, chain: bool
) -> None:
    torch.manual_seed(0)
    seq = fuse_chains(nn.Sequential(*_block(relu, chain)))
    assert isinstance(seq, FusedSequential)  # a fold candidate alone makes it fused
    unfolded = copy.deepcopy(seq)
    folds: list[int] = []
    real = fold.normed
    monkeypatch.setattr(chain_ops, "normed",
                        lambda *a, **kw: folds.append((kw["depthwise"] is not None, len(kw["chain"]))) or real(*a, **kw))
    x = _cl(torch.randn(2, 32, 6, 6)).requires_grad_(True)
    monkeypatch.setattr(chain_ops, "fold_form", lambda *a: "reference")
    ref = unfolded(x)
    ref.square().sum().backward()
    ref_grads = [x.grad, *(p.grad for p in unfolded.parameters())]
    assert folds == []
    x.grad = None
    monkeypatch.setattr(chain_ops, "fold_form", lambda *a: "native")
    out = seq(x)
    out.square().sum().backward()
    # the BN after the expand conv into the depthwise conv (and its chain); the second BN into nothing (last)
    assert folds == [(True, 2 if chain else 0)]
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    for a, b in zip([x.grad, *(p.grad for p in seq.parameters())], ref_grads, strict=True):
        assert a is not None and b is not None
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4 * max(1.0, float(b.abs().max())))
    for a, b in zip(seq.buffers(), unfolded.buffers(), strict=True):
        torch.testing.assert_close(a, b)
    # eval mode, NCHW input, a hook: the modules one after the other (the fold is never asked)
    monkeypatch.setattr(chain_ops, "fold_form", lambda *a: pytest.fail("asked to fold"))
    seq.eval()
    seq(x)
    seq.train()
    FusedSequential(seq[1], seq[2])(x.detach().contiguous())  # the BatchNorm's own input in NCHW
    handle = seq[1].register_forward_hook(lambda *a: None)
    seq(x)
    handle.remove()


@pytest.mark.parametrize("folded_faster", [True, False])
def test_the_fold_is_decided_by_timing_it_against_the_modules_unfolded(
    folded_faster: bool, monkeypatch: pytest.MonkeyPatch, fresh_tune: None
) -> None:
    if not _native.native_available():
        pytest.skip(f"native kernel {_native.native_status()}")
    timed: list[list[str]] = []

    def fake(shape, bn, depthwise, chain, *, conv=None, forms):  # type: ignore[no-untyped-def]
        assert isinstance(bn, BatchNormAct2d) and depthwise.spec.kind == "DW" and chain == [] and conv is None
        timed.append(sorted(forms))
        return {"native": 1.0 if folded_faster else 2.0, "reference": 1.5}

    monkeypatch.setattr(fold, "_time_fold", fake)
    seq = fuse_chains(nn.Sequential(*_block(False, False)))
    x = _cl(torch.randn(2, 32, 6, 6)).requires_grad_(True)
    for _ in range(3):  # measured once, then the memo and the cache answer
        seq(x).sum().backward()
    assert timed == [["native", "reference"]]
    (text,) = [t for t in tune.choices() if ">DW" in t]
    assert text == f"BN>DW k3 32 6x6 float32 t{torch.get_num_threads()} train cl"
    assert tune.last_forms(seq)["train"].get("BN>DW fold") == ("native" if folded_faster else None)


def test_the_fold_into_a_grouped_conv_is_timed_for_real_and_cached(fresh_tune: None) -> None:
    if not _native.native_available():
        pytest.skip(f"native kernel {_native.native_status()}")
    seq = fuse_chains(nn.Sequential(_bn(16, True), sparse_conv(16, 16, 3, groups=8, impl="fast")))
    assert isinstance(seq, FusedSequential)
    x = _cl(torch.randn(2, 16, 5, 5)).requires_grad_(True)
    seq(x).sum().backward()
    texts = list(tune.choices())
    threads = torch.get_num_threads()
    assert f"BN+ReLU>GC 16->16 k3 s1 g8 sh1 5x5 float32 t{threads} train cl" in texts
    assert tune.choices()[f"BN+ReLU>GC 16->16 k3 s1 g8 sh1 5x5 float32 t{threads} train cl"].form in ("native",
                                                                                                     "reference")
    with pytest.raises(ValueError, match="the BatchNorm has 8 channels, the input 16"):
        fold.normed(x, _bn(8, True), conv=seq[1])


def test_the_real_timing_settles_the_unfolded_forms_without_deadlock(fresh_tune: None) -> None:
    """Timing the unfolded modules makes their own choices inside the fold's decision (a reentrant lock)."""
    if not _native.native_available():
        pytest.skip(f"native kernel {_native.native_status()}")
    seq = fuse_chains(nn.Sequential(*_block(True, True)))
    x = _cl(torch.randn(2, 32, 4, 4)).requires_grad_(True)
    seq(x).sum().backward()
    texts = list(tune.choices())
    assert any(t.startswith("BN+ReLU>DW k3 32 4x4") for t in texts)
    assert any(t.startswith("BN+ReLU 32 4x4") for t in texts)  # the BatchNorm's own form, decided inside


def test_an_igcv3_block_folds_both_batchnorms_into_the_convs_after_them(native, monkeypatch) -> None:
    from igcnas.bench.ops_blocks import igcv3_d_block

    torch.manual_seed(0)
    naive, block = igcv3_d_block(impl="naive"), igcv3_d_block()
    block.load_state_dict(naive.state_dict())
    folds: list[tuple[bool, int]] = []
    real = fold.normed
    monkeypatch.setattr(chain_ops, "normed",
                        lambda *a, **kw: folds.append((kw["depthwise"] is not None, len(kw["chain"]))) or real(*a, **kw))
    monkeypatch.setattr(chain_ops, "fold_form", lambda *a: "native")
    x = torch.randn(2, 32, 6, 6)
    out, ref = block(_cl(x)), naive(x)
    assert folds == [(True, 0), (False, 1)]  # expand's BN into the depthwise conv, BN + ReLU into the project conv
    _assert_trains_as(out, ref, block, naive)


def test_bad_weights_are_one_line_errors_and_a_hooked_conv_is_never_skipped(native, monkeypatch) -> None:
    torch.manual_seed(0)
    bn = _bn(32, True)
    x = _cl(torch.randn(2, 32, 4, 4))
    with pytest.raises(ValueError, match=r"normed: depthwise must be a float32 CPU \(32, 1, k, k\) weight"):
        fold.normed(x, bn, depthwise=torch.randn(32, 1, 9, 9))
    with pytest.raises(ValueError, match="normed: chain conv 0"):
        fold.normed(x, bn, chain=[sparse_conv(16, 16, 1, groups=4, impl="fast")])
    with pytest.raises(ValueError, match="give the depthwise conv"):
        fold.normed(x, bn)
    # BN + ReLU then a run of two 1x1 convs: a hook on the run's second conv keeps the modules apart
    seq = fuse_chains(nn.Sequential(_bn(32, True), sparse_conv(32, 32, 1, groups=4, impl="fast"),
                                    sparse_conv(32, 32, 1, groups=4, shuffle_groups=4, impl="fast")))
    monkeypatch.setattr(chain_ops, "fold_form", lambda *a: "native")
    seen: list[int] = []
    handle = seq[2].register_forward_hook(lambda *a: seen.append(1))
    seq(x)
    handle.remove()
    assert seen == [1]


# channels in, out, k, groups, shuffle, stride, BN's ReLU, input (N, H, W)
GC_CASES = [
    (48, 48, 3, 24, 1, 1, True, (2, 6, 7)),  # IGC-L24M2: the closing BN + ReLU into the next block's GC
    (48, 96, 3, 24, 1, 2, True, (2, 7, 6)),  # the first block of a stage: stride 2, odd sizes
    (40, 40, 3, 10, 4, 1, False, (1, 5, 5)),  # a shuffle before the conv, 40 channels (a masked strip), no ReLU
    (24, 24, 5, 8, 1, 1, True, (2, 4, 9)),  # k = 5, three channels a group
    (40, 40, 3, 10, 1, 1, True, (2, 5, 9)),  # groups of 4 read in place (group_rot.c), a masked strip
    (24, 24, 3, 12, 1, 1, False, (1, 6, 6)),  # groups of 2 in place, a masked strip, no ReLU
    (16, 16, 3, 8, 1, 1, True, (3, 3, 1)),  # one column: every pixel at both edges
    (40, 40, 3, 5, 1, 1, True, (2, 6, 7)),  # groups of 8 in place (a permute by index), a masked strip
]


@pytest.mark.parametrize(("cin", "cout", "k", "groups", "shuffle", "stride", "relu", "shape"), GC_CASES)
def test_a_batchnorm_folded_into_a_grouped_conv_equals_the_float64_reference(
        native, cin, cout, k, groups, shuffle, stride, relu, shape) -> None:
    torch.manual_seed(0)
    bn = _bn(cin, relu)
    conv = sparse_conv(cin, cout, k, groups=groups, shuffle_groups=shuffle, stride=stride, impl="fast")
    assert fold.group_member(conv) and fold.foldable(bn, conv)
    n, h, w = shape
    x = _cl(torch.randn(n, cin, h, w)).requires_grad_(True)
    y = fold.normed(x, bn, conv=conv)
    dy = torch.randn(y.shape)
    y.backward(dy)
    x64 = x.detach().double().requires_grad_(True)
    gamma, beta, weight = (p.detach().double().requires_grad_(True) for p in (bn.weight, bn.bias, conv.weight))
    z = F.batch_norm(x64, None, None, gamma, beta, training=True, eps=bn.eps)
    z = torch.relu(z) if relu else z
    if shuffle > 1:
        z = z.reshape(n, shuffle, cin // shuffle, h, w).transpose(1, 2).reshape(n, cin, h, w)
    ref = F.conv2d(z, weight, stride=stride, padding=k // 2, groups=groups)
    ref.backward(dy.double())
    for got, want in [(y, ref), (x.grad, x64.grad), (bn.weight.grad, gamma.grad), (bn.bias.grad, beta.grad),
                      (conv.weight.grad, weight.grad)]:
        assert got is not None and want is not None
        torch.testing.assert_close(got.detach().double(), want, rtol=1e-4,
                                   atol=1e-4 * max(1.0, float(want.abs().max())))
    check = nn.BatchNorm2d(cin).double().train()
    check(x64.detach())
    assert bn.running_mean is not None and bn.running_var is not None
    torch.testing.assert_close(bn.running_mean.double(), check.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var.double(), check.running_var, rtol=1e-5, atol=1e-6)
    # deterministic for a thread count, the backward included
    x2 = x.detach().clone().requires_grad_(True)
    again = fold.normed(x2, copy.deepcopy(bn), conv=conv)
    again.backward(dy)
    assert torch.equal(again, y) and x2.grad is not None and torch.equal(x2.grad, x.grad)


def test_a_grouped_conv_fold_refuses_a_mixed_call_and_a_wrong_input(native) -> None:
    bn, conv = _bn(16, True), sparse_conv(16, 16, 3, groups=8, impl="fast")
    x = _cl(torch.randn(2, 16, 4, 4))
    with pytest.raises(ValueError, match="give conv or the depthwise conv, not both"):
        fold.normed(x, bn, conv=conv, depthwise=torch.randn(16, 1, 3, 3))
    strided = sparse_conv(16, 16, 3, groups=8, stride=2, impl="fast")
    with pytest.raises(ValueError, match=r"normed: conv GC 16->16 k3 s2 g8 sh1 cannot run in front of a chain"):
        fold.normed(x, bn, conv=strided, chain=[sparse_conv(16, 16, 1, groups=4, impl="fast")])
    with pytest.raises(ValueError, match=r"normed: conv GC 16->16 k3 needs a float32 CPU input of 16 channels"):
        fold.normed(x.double(), bn, conv=conv)
    with pytest.raises(ValueError, match="bn_sums needs need_input and affine"):
        _native.conv_backward(x, x, conv.weight, 8, 1, 1, need_input=True, need_weight=False,
                              bn_sums=torch.empty(32, dtype=torch.float64))
    # the kernel itself refuses sums it could not fill (-2), whichever way it is called
    lib = _native.library()
    sums = torch.empty(32, dtype=torch.float64)
    w = conv.weight.detach().contiguous()
    code = lib.gc_backward(x.data_ptr(), None, w.data_ptr(), x.data_ptr(), None, None, 2, 4, 4, 16, 16, 8, 3, 1,
                           None, 0, None, sums.data_ptr(), 1)
    assert code == -2
    assert not fold.group_member(sparse_conv(16, 16, 3, groups=16, impl="fast"))  # depthwise: not this fold
    assert not fold.group_member(sparse_conv(16, 16, 3, groups=8, impl="naive"))


# channels, channels per group of the grouped 3x3 conv, 1x1 layers after it (out, groups, shuffle), BN's ReLU,
# input (N, H, W)
PAIR_CASES = [
    (48, 2, [(48, 2, 24)], True, (2, 6, 7)),  # IGC-L24M2's GC -> PWG, odd sizes: partial tiles
    (40, 4, [(40, 4, 10), (40, 8, 5)], False, (1, 5, 9)),  # groups of 4, a chain of two, a masked strip, no ReLU
    (40, 8, [(20, 4, None)], True, (2, 6, 6)),  # groups of 8 (a permute by index), fewer channels out
    (16, 2, [(16, 2, 8)], True, (3, 3, 1)),  # one column: every pixel at both edges
    (24, 2, [(24, 3, 8)], True, (2, 3, 37)),  # rows longer than a span: spans start and stop inside rows
    (24, 4, [(24, 2, 12)], True, (3, 3, 5)),  # 15 pixels an image: spans cross images
]


@pytest.mark.parametrize(("channels", "per_group", "layers", "relu", "shape"), PAIR_CASES)
def test_a_batchnorm_folded_into_a_grouped_conv_and_the_1x1_convs_after_it_equals_the_float64_reference(
        native, channels, per_group, layers, relu, shape) -> None:
    torch.manual_seed(0)
    bn = _bn(channels, relu)
    conv = sparse_conv(channels, channels, 3, groups=channels // per_group, impl="fast")
    if not _native.rot_prefix_usable(channels, conv.weight):
        pytest.skip("the grouped conv kernel that runs in front of a chain is not built for this CPU (no AVX)")
    chain, _ = _chain(channels, layers)
    n, h, w = shape
    x = _cl(torch.randn(n, channels, h, w)).requires_grad_(True)
    y = fold.normed(x, bn, conv=conv, chain=chain)
    dy = torch.randn(y.shape)
    y.backward(dy)
    x64 = x.detach().double().requires_grad_(True)
    params = [p.detach().double().requires_grad_(True) for p in (bn.weight, bn.bias, conv.weight)]
    weights = [c.weight.detach().double().requires_grad_(True) for c in chain]
    z = F.batch_norm(x64, None, None, params[0], params[1], training=True, eps=bn.eps)
    z = F.conv2d(torch.relu(z) if relu else z, params[2], padding=1, groups=channels // per_group)
    ref = _reference_chain(z, [(wt, g, sh) for wt, (_, g, sh) in zip(weights, layers, strict=True)])
    ref.backward(dy.double())
    got = [y, x.grad, bn.weight.grad, bn.bias.grad, conv.weight.grad, *(c.weight.grad for c in chain)]
    want = [ref, x64.grad, *(p.grad for p in params), *(wt.grad for wt in weights)]
    _assert_close_all(got, want)
    check = nn.BatchNorm2d(channels).double().train()
    check(x64.detach())
    assert bn.running_mean is not None
    torch.testing.assert_close(bn.running_mean.double(), check.running_mean, rtol=1e-5, atol=1e-6)
    x2 = x.detach().clone().requires_grad_(True)  # deterministic for a thread count, the backward included
    again = fold.normed(x2, copy.deepcopy(bn), conv=conv, chain=chain)
    again.backward(dy)
    assert torch.equal(again, y) and x2.grad is not None and torch.equal(x2.grad, x.grad)


@pytest.mark.parametrize("pair_faster", [True, False])
def test_igcv1_blocks_fold_the_batchnorm_into_the_pair_where_measured_faster_and_train_as_the_naive_build(
        native, monkeypatch, pair_faster: bool) -> None:
    import dataclasses

    from igcnas.nn.network import build
    from igcnas.zoo import get_zoo

    # IGC-L24M2's blocks (GC in groups of 2 -> PWG -> BN + ReLU, no shortcut), two stages of two on 8x8 images
    paper = get_zoo("IGC-L24M2-D20").spec
    spec = dataclasses.replace(paper, stages=tuple(dataclasses.replace(st, depth=2) for st in paper.stages[:2]),
                               input_shape=(3, 8, 8))
    torch.manual_seed(0)
    naive, fast = build(spec, impl="naive"), build(spec)
    fast.load_state_dict(naive.state_dict())
    gc = next(m for m in fast.modules() if getattr(m, "spec", None) is not None and m.spec.kind == "GC")
    if not _native.rot_prefix_usable(gc.spec.in_channels, gc.weight):
        pytest.skip("the grouped conv kernel that runs in front of a chain is not built for this CPU (no AVX)")
    calls: list[tuple[bool, int]] = []
    real = fold.normed
    monkeypatch.setattr(chain_ops, "normed", lambda *a, **kw: calls.append(
        (kw.get("conv") is not None, len(kw.get("chain", ())))) or real(*a, **kw))
    monkeypatch.setattr(chain_ops, "fold_form", lambda x, bn, dw, chain, conv=None: (
        "native" if pair_faster or not chain else "reference"))
    x = torch.randn(4, 3, 8, 8)
    out, ref = fast(_cl(x)), naive(x)
    # every closing BN + ReLU (the stem's included) folds into the next block's grouped conv, with its 1x1 conv
    # where faster; the stride-2 conv that opens the second stage cannot run in front of a chain: it folds alone
    pair = 1 if pair_faster else 0
    assert calls == [(True, pair), (True, pair), (True, 0), (True, pair)]
    _assert_trains_as(out, ref, fast, naive)


def test_the_pair_fold_is_timed_for_real_against_the_grouped_conv_alone_and_cached(fresh_tune: None) -> None:
    if not _native.native_available():
        pytest.skip(f"native kernel {_native.native_status()}")
    gc = sparse_conv(16, 16, 3, groups=8, impl="fast")
    if not _native.rot_prefix_usable(16, gc.weight):
        pytest.skip("the grouped conv kernel that runs in front of a chain is not built for this CPU (no AVX)")
    widen = sparse_conv(16, 32, 1, groups=4, shuffle_groups=8, impl="fast")  # more channels out than in
    seq = fuse_chains(nn.Sequential(_bn(16, True), gc, widen))
    x = _cl(torch.randn(2, 16, 6, 6)).requires_grad_(True)
    out = seq(x)
    assert out.shape == (2, 32, 6, 6)
    out.sum().backward()
    threads = torch.get_num_threads()
    pair = (f"BN+ReLU>GC 16->16 k3 s1 g8 sh1 6x6 float32 t{threads} train cl > CHAIN 16->32 g4 sh8 6x6 float32 "
            f"t{threads} train cl")
    texts = set(tune.choices())
    assert pair in texts  # the pair, timed against what runs without it: the grouped conv's own fold, where faster
    assert f"BN+ReLU>GC 16->16 k3 s1 g8 sh1 6x6 float32 t{threads} train cl" in texts
    assert not any(t.startswith("BN+ReLU>CHAIN") for t in texts)  # the reference ran the modules in order
    chosen = tune.choices()[pair].form
    assert tune.last_forms(seq)["train"].get("BN>GC+PWG fold") == ("native" if chosen == "native" else None)


def test_the_pair_fold_refuses_what_cannot_run_in_front_of_a_chain(native) -> None:
    bn, chain = _bn(16, True), [sparse_conv(16, 16, 1, groups=4, impl="fast")]
    x = _cl(torch.randn(2, 16, 4, 4))
    shuffled = sparse_conv(16, 16, 3, groups=8, shuffle_groups=2, impl="fast")
    with pytest.raises(ValueError, match=r"conv GC 16->16 k3 s1 g8 sh2 cannot run in front of a chain"):
        fold.normed(x, bn, conv=shuffled, chain=chain)
    gc = sparse_conv(16, 16, 3, groups=8, impl="fast")
    with pytest.raises(ValueError, match="the BatchNorm has 8 channels, the input 16"):
        fold.normed(x, _bn(8, True), conv=gc, chain=chain)
    gc.double()
    with pytest.raises(ValueError, match=r"needs a float32 CPU input of 16 channels and a float32 CPU weight"):
        fold.normed(x, bn, conv=gc, chain=chain)
    assert not _native.rot_prefix_usable(16, gc.weight)  # float64
    # the chain kernel itself refuses a grouped prefix it has no kernel for (groups of 3 channels), not as memory
    with pytest.raises(ValueError, match="refused its arguments"):
        _native.chain_forward(_cl(torch.randn(1, 12, 4, 4)), [torch.randn(12, 3, 1, 1)], (4,), (1,),
                              torch.randn(12, 3, 3, 3))
    # a shuffled grouped conv in a block runs its own fold, never the pair
    seq = fuse_chains(nn.Sequential(_bn(16, True), shuffled, chain[0]))
    assert chain_ops._pair_chain(list(seq), 1, {}) == []
    plain = fuse_chains(nn.Sequential(_bn(16, True), gc.float(), chain[0]))
    usable = _native.rot_prefix_usable(16, gc.weight)  # not in a build without AVX
    assert chain_ops._pair_chain(list(plain), 1, {}) == ([chain[0]] if usable else [])
