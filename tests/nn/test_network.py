from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from igcnas.arch import ArchSpec, BlockSpec, KernelSpec, StageSpec, StemSpec
from igcnas.arch.fit import layout_spec
from igcnas.cost import count, fvcore_cost
from igcnas.nn import _native
from igcnas.nn.network import build

SPECS = {
    "dw_pw": ArchSpec.simple("DW+PW", widths=(16, 32), depths=(1, 2)),
    "gc_pwg": ArchSpec.simple("GC+PWG", widths=(16, 32), depths=(2, 1), groups=(8, 2)),
    "pwg_dw_pwg": ArchSpec.simple("PWG+DW+PWG", widths=(16, 32), depths=(1, 1), groups=(2, None, 2), bottleneck=6),
    "pw_dw_pw_linear": ArchSpec(
        stem=StemSpec(width=16),
        block=BlockSpec((KernelSpec("PW"), KernelSpec("DW"), KernelSpec("PW")), bottleneck=0.5, relu_after=(0, 1),
                        post_relu=False, shortcut="none"),
        stages=(StageSpec(16, 1), StageSpec(24, 2, stride=2)),
    ),
    "plain_igc_block_bn": ArchSpec(
        stem=StemSpec(width=16),
        block=BlockSpec((KernelSpec("GC", groups=4), KernelSpec("PWG", group_width=4)), bn="block", identity=False),
        stages=(StageSpec(16, 1), StageSpec(32, 1, stride=2)),
        input_shape=(1, 8, 8),
    ),
    "imagenet_head": layout_spec("GC+PWG", 16, layout="imagenet", depths=(1, 1, 1, 1), groups=(4, 4),
                                 input_shape=(3, 64, 64), num_classes=5),
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_builds_runs_and_counts_match_fvcore(name):
    spec = SPECS[name]
    model = build(spec)
    x = torch.randn(2, *spec.input_shape)
    out = model(x)
    assert out.shape == (2, spec.num_classes)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    closed = count(spec)
    assert closed == fvcore_cost(spec)
    assert closed.params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["gc_pwg", "pwg_dw_pwg"])
def test_naive_and_fast_builds_agree(name):
    spec = SPECS[name]
    torch.manual_seed(0)
    naive = build(spec, impl="naive").eval()
    fast = build(spec, impl="auto").eval()
    fast.load_state_dict(naive.state_dict())
    x = torch.randn(3, *spec.input_shape)
    torch.testing.assert_close(fast(x), naive(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_fast_build_trains_as_the_naive_one(name):
    """Training mode, channels_last (the native BN + ReLU path): outputs, gradients and running stats agree."""
    _assert_trains_as_the_naive_build(SPECS[name])


def _assert_trains_as_the_naive_build(spec):
    """One training step of the fast and naive builds: outputs, input and weight gradients, running stats agree."""
    torch.manual_seed(0)
    naive = build(spec, impl="naive").train()
    fast = build(spec, impl="auto").train()
    fast.load_state_dict(naive.state_dict())
    x = torch.randn(4, *spec.input_shape).contiguous(memory_format=torch.channels_last)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    outs = [model(inp) for model, inp in zip((naive, fast), xs, strict=True)]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    weights = torch.randn_like(outs[0])
    for out in outs:
        (out * weights).sum().backward()
    torch.testing.assert_close(xs[1].grad, xs[0].grad, rtol=1e-3, atol=1e-5)
    grads = {name: p.grad for name, p in naive.named_parameters()}
    for key, p in fast.named_parameters():
        torch.testing.assert_close(p.grad, grads[key], rtol=1e-3, atol=1e-4, msg=key)
    for (key, a), (_, b) in zip(naive.state_dict().items(), fast.state_dict().items(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.skipif(not _native.native_available(), reason=f"native kernels {_native.native_status()}")
@pytest.mark.parametrize("name", ["dw_pw", "pw_dw_pw_linear", "imagenet_head"])
def test_a_shortcut_sum_runs_in_the_closing_bn_and_trains_as_the_naive_build(name, monkeypatch):
    """Identity and projection shortcuts, with and without the block's ReLU: the native BN + sum (+ ReLU) op
    (forced here, whatever this machine measures) trains as the naive BN, add and ReLU."""
    from igcnas.nn import norm
    from igcnas.nn.network import Block
    from igcnas.nn.norm import BatchNormAct2d

    monkeypatch.setattr(BatchNormAct2d, "form_for", lambda self, x, **_: "native")
    real = norm._BatchNormAct.apply
    summed: list[bool] = []

    def spy(*args):
        summed.append(len(args) > 5 and args[5] is not None)
        return real(*args)

    monkeypatch.setattr(norm._BatchNormAct, "apply", spy)
    spec = SPECS[name]
    blocks = [m for m in build(spec).modules() if isinstance(m, Block)]
    assert sum(b.add_in_bn for b in blocks) == sum(b.identity or b.shortcut is not None for b in blocks) > 0
    _assert_trains_as_the_naive_build(spec)
    assert sum(summed) == sum(b.add_in_bn for b in blocks)  # every shortcut sum ran in its closing BN


def test_a_replaced_or_hooked_closing_bn_runs_the_plain_block():
    """The sum leaves the closing BN when that module is replaced after the build (as synflow's or SyncBatchNorm's
    conversions do) or hooked (its hooks see its own output), and the block computes the same."""
    from igcnas.nn.network import Block

    spec = SPECS["dw_pw"]
    torch.manual_seed(0)
    model = build(spec).train()
    block = next(m for m in model.modules() if isinstance(m, Block) and m.add_in_bn)
    x = torch.randn(4, block.body[0].in_channels, 6, 6).contiguous(memory_format=torch.channels_last)
    expected = block(x)
    seen: list[torch.Tensor] = []
    handle = block.body[-1].register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        torch.testing.assert_close(block(x), expected, rtol=1e-4, atol=1e-5)
    finally:
        handle.remove()
    assert len(seen) == 1 and seen[0].shape == expected.shape  # the BN's own output, before the sum
    handle = block.body.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        torch.testing.assert_close(block(x), expected, rtol=1e-4, atol=1e-5)
    finally:
        handle.remove()
    assert len(seen) == 2  # a hook on the body sees the body run
    plain = nn.BatchNorm2d(block.body[-1].num_features)
    plain.load_state_dict(block.body[-1].state_dict())
    block.body[-1] = plain
    torch.testing.assert_close(block(x), expected, rtol=1e-4, atol=1e-5)


def test_the_naive_build_still_scripts():
    """Scripting takes the plain block forward (the fused sum is an unused method): a naive network scripts and
    computes as in eager mode."""
    spec = SPECS["dw_pw"]
    model = build(spec, impl="naive").eval()
    x = torch.randn(2, *spec.input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script's deprecation notice
        scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x), model(x))


def test_a_block_without_shortcut_runs_its_relu_in_its_last_bn():
    from igcnas.nn.network import Block
    from igcnas.nn.norm import BatchNormAct2d

    spec = SPECS["plain_igc_block_bn"]
    fast, naive = build(spec), build(spec, impl="naive")
    block = next(m for m in fast.modules() if isinstance(m, Block))
    assert not block.post_relu
    last = list(block.body)[-1]
    assert isinstance(last, BatchNormAct2d) and last.relu
    assert all(m.post_relu for m in naive.modules() if isinstance(m, Block))
    assert isinstance(fast.stem.bn, BatchNormAct2d) and not hasattr(fast.stem, "relu")


def test_build_is_pure():
    spec = SPECS["dw_pw"]
    torch.manual_seed(1)
    a = build(spec)
    torch.manual_seed(1)
    b = build(spec)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_sum_fusion_block_is_parallel_convs_summed():
    from igcnas.arch import plan_block

    spec = ArchSpec(
        stem=StemSpec(width=8),
        block=BlockSpec((KernelSpec("GC", groups=4),), bn="none", identity=False, post_relu=False, fusion=4),
        stages=(StageSpec(8, 1), StageSpec(16, 1, stride=2)),
    )
    assert "fusion" in spec.to_json() and ArchSpec.from_json(spec.to_json()) == spec
    assert "fusion" not in SPECS["dw_pw"].to_json()  # default omitted: older spec ids are unchanged
    plan = plan_block(spec, 1, 8, first=True)
    assert (plan.in_channels, plan.out_channels, plan.chain.widths()) == (8, 16, [32, 64])
    model = build(spec, impl="naive").eval()
    block = model.stages[1][0]
    x = torch.randn(2, 8, 8, 8)
    conv = block.body.conv0
    weights = conv.weight.chunk(4, dim=0)  # partition p: 8 inputs -> 16 outputs
    expected = sum(torch.nn.functional.conv2d(x, w, stride=2, padding=1) for w in weights)
    torch.testing.assert_close(block(x), expected, rtol=1e-4, atol=1e-5)
    assert count(spec) == fvcore_cost(spec)


def test_the_fast_build_runs_in_channels_last_from_its_stem():
    spec = SPECS["gc_pwg"]
    seen: dict[str, bool] = {}
    for impl in ("auto", "naive"):
        model = build(spec, impl=impl)
        model.stem.conv.register_forward_pre_hook(
            lambda module, args, impl=impl: seen.__setitem__(impl, args[0].is_contiguous(
                memory_format=torch.channels_last)))
        model(torch.randn(2, *spec.input_shape))
    assert seen == {"auto": True, "naive": False}
    with warnings.catch_warnings():  # the channel shuffle's shape checks, constant for this input
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(build(spec).eval(), torch.randn(2, *spec.input_shape))
    assert "aten::contiguous" not in str(traced.graph).split("aten::_convolution")[0]  # tracing sees the input as given


@pytest.mark.skipif(not _native.native_available(), reason=f"native kernels {_native.native_status()}")
def test_plain_blocks_run_as_one_list_so_a_closing_bn_folds_into_the_next_blocks_grouped_conv(monkeypatch):
    """IGCV1 blocks without shortcuts: the stem's and each block's closing BN + ReLU fold into the next grouped 3x3
    conv across block and stage boundaries (forced here, whatever this machine measures), and the network trains as
    the naive build; a hooked block runs as a unit (its hook sees it) and nothing folds into or out of it."""
    from igcnas.nn import chain_ops
    from igcnas.nn.network import Block

    spec = ArchSpec(
        stem=StemSpec(width=16),
        block=BlockSpec((KernelSpec("GC", groups=8), KernelSpec("PWG", group_width=8)), bn="block", identity=False),
        stages=(StageSpec(16, 2), StageSpec(32, 2, stride=2)),
        input_shape=(3, 8, 8),
    )
    monkeypatch.setattr(chain_ops, "fold_form", lambda *a: "native")
    real = chain_ops.normed
    folds: list[int] = []
    monkeypatch.setattr(chain_ops, "normed",
                        lambda *a, **kw: folds.append(kw["conv"].spec.stride) or real(*a, **kw))
    _assert_trains_as_the_naive_build(spec)
    assert folds == [1, 1, 2, 1]  # stem's BN and the closing BNs of three blocks, the third into a stride-2 conv
    model = build(spec).train()
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    assert all(b.plain() for b in blocks)
    seen: list[int] = []
    handle = blocks[1].register_forward_hook(lambda *a: seen.append(1))
    folds.clear()
    x = torch.randn(2, 3, 8, 8)
    model(x)
    handle.remove()
    assert seen == [1] and folds == [1, 1]  # the stem's into block 0; block 2's into block 3; none into or out of 1
    # hooks on the stages container or on one stage see them run (the container: the plain forward)
    for hooked_module in (model.stages, model.stages[1]):
        handle = hooked_module.register_forward_hook(lambda *a: seen.append(2))
        model(x)
        handle.remove()
    assert seen == [1, 2, 2]


@pytest.mark.parametrize("impl", ["naive", "auto"])
def test_the_parts_of_a_network_run_in_order_are_the_network(impl):
    """Stem, stages and head (with the classifier) of :func:`network_parts`, each a :class:`NetworkPart` of the
    network's own modules, compose to the network's output and hold exactly its parameters."""
    from igcnas.nn.network import NetworkPart, network_parts

    spec = SPECS["gc_pwg"]
    torch.manual_seed(0)
    model = build(spec, impl=impl).eval()
    names = network_parts(model)
    assert names == ["stem", "stages.0", "stages.1", "head"]
    parts = [NetworkPart(model, name) for name in names]
    x = torch.randn(2, *spec.input_shape)
    y = x
    for part in parts:
        y = part(y)
    torch.testing.assert_close(y, model(x), rtol=1e-5, atol=1e-6)
    owned = {id(p) for part in parts for p in part.parameters()}
    assert owned == {id(p) for p in model.parameters()}
    assert sum(p.numel() for part in parts for p in part.parameters()) == sum(p.numel() for p in model.parameters())
    stem_out = parts[0](x)
    assert stem_out.is_contiguous(memory_format=torch.channels_last) == (impl != "naive")  # as the network's stem
    with pytest.raises(ValueError, match="part 'stages.2' is not one of stem, stages.0, stages.1, head"):
        NetworkPart(model, "stages.2")


@pytest.mark.skipif(not _native.native_available(), reason=f"native kernels {_native.native_status()}")
def test_a_stage_part_runs_its_plain_blocks_in_one_list_as_the_network_does(monkeypatch):
    """Inside a stage part, a plain block's closing BN folds into the next block's grouped conv, as in the whole
    network; nothing folds across the part's own boundaries."""
    from igcnas.nn import chain_ops
    from igcnas.nn.network import NetworkPart

    spec = ArchSpec(
        stem=StemSpec(width=16),
        block=BlockSpec((KernelSpec("GC", groups=8), KernelSpec("PWG", group_width=8)), bn="block", identity=False),
        stages=(StageSpec(16, 3),),
        input_shape=(3, 8, 8),
    )
    monkeypatch.setattr(chain_ops, "fold_form", lambda *a: "native")
    real = chain_ops.normed
    folds: list[int] = []
    monkeypatch.setattr(chain_ops, "normed", lambda *a, **kw: folds.append(1) or real(*a, **kw))
    model = build(spec).train()
    NetworkPart(model, "stages.0")(torch.randn(2, 16, 8, 8).contiguous(memory_format=torch.channels_last))
    assert folds == [1, 1]  # block 0's closing BN into block 1, block 1's into block 2
    folds.clear()
    model(torch.randn(2, 3, 8, 8))
    assert folds == [1, 1, 1]  # and the stem's into block 0
