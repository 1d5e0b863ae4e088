"""Sparse-kernel conv operators: fast forms equal the naive reference (values and gradients), export, counting."""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from igcnas.errors import UserError
from igcnas.nn import ops
from igcnas.nn.ops import (
    AUTO_MIN_PIXELS,
    ChannelShuffle,
    ConvPlan,
    ConvSpec,
    FastSparseConv2d,
    SparseConv2d,
    channel_shuffle,
    dense_weight,
    merged_weight,
    select_plan,
    sparse_conv,
)

torch.set_num_threads(min(2, torch.get_num_threads()))


@dataclass(frozen=True)
class Case:
    """One sparse conv configuration under test."""

    name: str
    cin: int
    cout: int
    k: int
    groups: int = 1
    shuffle: int | None = None
    stride: int = 1
    size: int = 7

    def build(self, impl: ops.Impl) -> SparseConv2d:
        return sparse_conv(
            self.cin,
            self.cout,
            self.k,
            stride=self.stride,
            groups=self.groups,
            shuffle_groups=self.shuffle,
            impl=impl,
        )


CASES = [
    # GC k=3, several group counts, with/without the interleave, stride 1/2
    Case("GC-g2", 16, 16, 3, groups=2),
    Case("GC-g4-shuf2-s2", 32, 32, 3, groups=4, shuffle=2, stride=2),
    Case("GC-g24-L24M2", 48, 48, 3, groups=24),
    Case("GC-g24-shuf2", 48, 48, 3, groups=24, shuffle=2),
    Case("GC-g8-expand-s2", 16, 32, 3, groups=8, shuffle=4, stride=2),
    Case("GC-g2-narrow-shuf4", 8, 8, 3, groups=2, shuffle=4),
    # DW k=3 (groups = channels)
    Case("DW", 24, 24, 3, groups=24),
    Case("DW-shuf3-s2", 24, 24, 3, groups=24, shuffle=3, stride=2, size=8),
    Case("DW-k5", 12, 12, 5, groups=12, shuffle=4),
    # PW (groups = 1)
    Case("PW", 24, 40, 1),
    Case("PW-shuf4-s2", 24, 40, 1, shuffle=4, stride=2),
    # PWG: dense path (few extra MACs) and grouped path
    Case("PWG2-shuf24", 48, 48, 1, groups=2, shuffle=24),
    Case("PWG2-expand-32-192", 32, 192, 1, groups=2, size=5),
    Case("PWG2-reduce-192-32-shuf2", 192, 32, 1, groups=2, shuffle=2, size=5),
    Case("PWG4-shuf12-s2", 48, 48, 1, groups=4, shuffle=12, stride=2),
    Case("PWG8-shuf8", 64, 64, 1, groups=8, shuffle=8),
    Case("PWG2-96-grouped", 96, 96, 1, groups=2, size=5),
    Case("PWG13-K8-shuf13", 104, 104, 1, groups=13, shuffle=13, size=5),
    # regular dense kxk conv behind a shuffle
    Case("CONV-shuf4-s2", 16, 24, 3, shuffle=4, stride=2, size=9),
]


def _close(actual: torch.Tensor, expected: torch.Tensor, *, rtol: float = 1e-5) -> None:
    """allclose with an absolute tolerance relative to the reference's scale."""
    expected = expected.detach()
    scale = float(expected.abs().max()) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * max(scale, 1e-6))


def _forward_backward(
    module: SparseConv2d, x: torch.Tensor, grad_out: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Output, input gradient and weight gradient for a fixed output gradient."""
    x = x.detach().clone().requires_grad_(True)
    out = module(x)
    if grad_out is None:
        grad_out = torch.randn_like(out)
    grad_x, grad_w = torch.autograd.grad(out, (x, module.weight), grad_out)
    return out, grad_x, grad_w, grad_out


def _pair(case: Case, impl: ops.Impl) -> tuple[SparseConv2d, SparseConv2d]:
    """A naive reference and an ``impl`` module with the same weights."""
    torch.manual_seed(0)
    naive = case.build("naive")
    other = case.build(impl)
    other.load_state_dict(naive.state_dict())
    return naive, other


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("impl", ["fast", "auto"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fast_matches_naive_values_and_gradients(
    case: Case, impl: ops.Impl, batch: int, channels_last: bool
) -> None:
    naive, fast = _pair(case, impl)
    x = torch.randn(batch, case.cin, case.size, case.size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ref, ref_gx, ref_gw, grad_out = _forward_backward(naive, x)
    out, gx, gw, _ = _forward_backward(fast, x, grad_out)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    _close(out, ref)
    _close(gx, ref_gx)
    _close(gw, ref_gw)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_plan_is_correct_on_any_device(case: Case) -> None:
    """All forms (incl. the CUDA plan's) give the reference result; run here on CPU tensors."""
    naive, fast = _pair(case, "fast")
    assert isinstance(fast, FastSparseConv2d)
    x = torch.randn(2, case.cin, case.size, case.size)
    ref, ref_gx, ref_gw, grad_out = _forward_backward(naive, x)
    merges = [s for s in range(1, case.groups + 1) if case.groups % s == 0]
    plans = [ConvPlan(form, cl, "test") for form in ("reference", "dense") for cl in (False, True)]
    plans += [
        ConvPlan("grouped", cl, "test", merge=s) for s in merges[:3] + merges[-1:] for cl in (False, True)
    ]
    plans.append(select_plan(fast.spec, "cuda", "fast"))
    for plan in plans:
        xx = x.detach().clone().requires_grad_(True)
        out = fast.run_plan(xx, plan)
        gx, gw = torch.autograd.grad(out, (xx, fast.weight), grad_out)
        _close(out, ref)
        _close(gx, ref_gx)
        _close(gw, ref_gw)


def test_channel_shuffle_is_the_igc_interleave() -> None:
    n, c, groups = 2, 12, 3
    x = torch.randn(n, c, 4, 5)
    y = channel_shuffle(x, groups)
    per = c // groups
    for m in range(per):
        for lane in range(groups):
            assert torch.equal(y[:, m * groups + lane], x[:, lane * per + m])
    assert torch.equal(y, x.view(n, groups, per, 4, 5).transpose(1, 2).reshape(n, c, 4, 5))


@settings(max_examples=40, deadline=None)
@given(
    per=st.integers(1, 6),
    groups=st.integers(1, 6),
    channels_last=st.booleans(),
)
def test_channel_shuffle_permutes_and_keeps_layout(per: int, groups: int, channels_last: bool) -> None:
    c = per * groups
    x = torch.arange(2 * c * 3 * 2, dtype=torch.float32).view(2, c, 3, 2)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = channel_shuffle(x, groups)
    expected = x.contiguous().view(2, groups, per, 3, 2).transpose(1, 2).reshape(2, c, 3, 2)
    assert torch.equal(y, expected)
    # shuffling by `per` undoes shuffling by `groups`
    assert torch.equal(channel_shuffle(y, per), x)
    if channels_last and 1 < groups < c:
        assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(ChannelShuffle(groups)(x), y)


@pytest.mark.parametrize("groups", [0, 5, -2, 2.0])
def test_channel_shuffle_rejects_bad_groups(groups: object) -> None:
    with pytest.raises(UserError, match="groups="):
        channel_shuffle(torch.zeros(1, 12, 2, 2), groups)  # type: ignore[arg-type]


def test_channel_shuffle_rejects_non_4d() -> None:
    with pytest.raises(UserError, match="4-D"):
        channel_shuffle(torch.zeros(12, 2, 2), 3)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"in_channels": 48, "out_channels": 48, "kernel_size": 3, "groups": 5}, "groups=5"),
        ({"in_channels": 48, "out_channels": 50, "kernel_size": 1, "groups": 4}, "groups=4"),
        ({"in_channels": 48, "out_channels": 48, "kernel_size": 2}, "kernel_size=2"),
        ({"in_channels": 48, "out_channels": 48, "kernel_size": 1, "shuffle_groups": 5}, "shuffle_groups=5"),
        ({"in_channels": 48, "out_channels": 48, "kernel_size": 1, "shuffle_groups": 0}, "shuffle_groups=0"),
        ({"in_channels": 0, "out_channels": 48, "kernel_size": 1}, "in_channels=0"),
        ({"in_channels": 8, "out_channels": 8, "kernel_size": 1, "stride": 0}, "stride=0"),
        ({"in_channels": 8, "out_channels": 8, "kernel_size": 1, "impl": "turbo"}, "impl='turbo'"),
    ],
)
def test_sparse_conv_rejects_bad_arguments(kwargs: dict, field: str) -> None:
    with pytest.raises(UserError, match=field.replace("(", r"\(")):
        sparse_conv(**kwargs)


def test_fast_rejects_unbatched_input() -> None:
    with pytest.raises(UserError, match="4-D"):
        sparse_conv(8, 8, 1, groups=2)(torch.randn(8, 4, 4))


@pytest.mark.parametrize("case", CASES[::3], ids=[c.name for c in CASES[::3]])
def test_state_dicts_and_parameter_counts_are_interchangeable(case: Case) -> None:
    modules = {impl: case.build(impl) for impl in ("naive", "fast", "auto")}
    expected_shape = (case.cout, case.cin // case.groups, case.k, case.k)
    for module in modules.values():
        assert isinstance(module, nn.Conv2d) and isinstance(module, SparseConv2d)
        assert list(module.state_dict()) == ["weight"]
        assert tuple(module.weight.shape) == expected_shape
        assert (
            sum(p.numel() for p in module.parameters()) == case.cout * (case.cin // case.groups) * case.k**2
        )
    torch.manual_seed(1)
    x = torch.randn(2, case.cin, case.size, case.size)
    for src in modules.values():
        for dst in modules.values():
            dst.load_state_dict(src.state_dict())
            _close(dst(x), src(x))
    assert type(modules["naive"]) is SparseConv2d
    assert isinstance(
        modules["naive"].shuffle, ChannelShuffle if case.shuffle not in (None, 1) else nn.Identity
    )


def test_plans_follow_the_decision_table() -> None:
    cpu = {
        ConvSpec(48, 48, 1, groups=2, shuffle_groups=24): ("dense", 1),
        ConvSpec(64, 64, 1, groups=8): ("dense", 1),  # 3584 extra MACs/pixel
        ConvSpec(96, 96, 1, groups=2): ("grouped", 1),  # 4608 > DENSE_EXTRA_MACS
        ConvSpec(96, 96, 1, groups=2, shuffle_groups=2): ("dense", 1),  # <= DENSE_EXTRA_MACS_SHUFFLED
        ConvSpec(416, 416, 1, groups=52, shuffle_groups=52): ("grouped", 1),
        ConvSpec(24, 40, 1, shuffle_groups=4): ("dense", 1),
        ConvSpec(16, 32, 3): ("dense", 1),
        ConvSpec(48, 48, 3, groups=24, shuffle_groups=2): ("grouped", 4),  # 2-wide groups merged 4 at a time
        ConvSpec(16, 32, 3, groups=8): ("grouped", 2),  # 2 -> 4 wide: merged 2 at a time
        ConvSpec(16, 16, 3, groups=2): ("grouped", 1),  # already MERGE_WIDTH wide
        ConvSpec(8, 8, 3, groups=2, shuffle_groups=4): ("dense", 1),  # merging all groups = dense
        ConvSpec(48, 48, 3, groups=48): ("grouped", 1),  # DW
    }
    for spec, (form, merge) in cpu.items():
        for impl in ("fast", "auto"):
            plan = select_plan(spec, "cpu", impl, native=False)  # native rows: tests/nn/test_native.py
            assert (plan.form, plan.merge, plan.channels_last) == (form, merge, True), (spec, plan)
        assert select_plan(spec, "cpu", "naive").form == "reference"
    # auto on an NCHW input keeps the reference where converting to channels_last does not pay
    dw, gc = ConvSpec(48, 48, 3, groups=48), ConvSpec(48, 48, 3, groups=24)
    pwg = ConvSpec(48, 48, 1, groups=2, shuffle_groups=24)
    nchw = {"channels_last_input": False}
    assert select_plan(dw, "cpu", "auto", **nchw, grad=True, pixels=4096).form == "grouped"
    assert select_plan(dw, "cpu", "auto", **nchw, grad=False, pixels=4096).form == "reference"
    assert select_plan(dw, "cpu", "auto", **nchw, grad=True, pixels=AUTO_MIN_PIXELS - 1).form == "reference"
    assert select_plan(dw, "cpu", "fast", **nchw, grad=False, pixels=1).form == "grouped"
    assert select_plan(gc, "cpu", "auto", **nchw, grad=False, pixels=1, native=False).form == "grouped"
    assert select_plan(pwg, "cpu", "auto", **nchw, grad=False, pixels=4096, native=False).form == "dense"
    assert select_plan(dw, "cpu", "auto", channels_last_input=True, grad=False, pixels=1).form == "grouped"
    assert select_plan(ConvSpec(24, 40, 1, shuffle_groups=4), "cuda").form == "dense"
    assert select_plan(ConvSpec(48, 48, 1, groups=2, shuffle_groups=24), "cuda").form == "reference"
    assert not select_plan(ConvSpec(48, 48, 3, groups=48), "cuda").channels_last
    with pytest.raises(UserError, match="impl="):
        select_plan(ConvSpec(8, 8, 1), "cpu", "quick")  # type: ignore[arg-type]


def test_spec_kinds_and_macs() -> None:
    assert ConvSpec(8, 8, 1).kind == "PW"
    assert ConvSpec(8, 8, 1, groups=2).kind == "PWG"
    assert ConvSpec(8, 8, 3, groups=8).kind == "DW"
    assert ConvSpec(8, 8, 3, groups=4).kind == "GC"
    assert ConvSpec(8, 8, 3).kind == "CONV"
    assert not ConvSpec(8, 8, 1, shuffle_groups=8).has_shuffle
    assert ConvSpec(48, 48, 3, groups=24).macs(32, 32) == 48 * 2 * 9 * 32 * 32
    assert ConvSpec(48, 48, 3, stride=2, groups=24).macs(32, 32) == 48 * 2 * 9 * 16 * 16


def test_merged_weight_runs_the_same_conv_with_fewer_groups() -> None:
    torch.manual_seed(4)
    weight = torch.randn(24, 2, 3, 3)
    x = torch.randn(2, 24, 6, 6)
    expected = nn.functional.conv2d(x, weight, padding=1, groups=12)
    for merge in (1, 2, 3, 4, 6, 12):
        merged = merged_weight(weight, 12, merge)
        assert merged.shape == (24, 2 * merge, 3, 3)
        _close(nn.functional.conv2d(x, merged, padding=1, groups=12 // merge), expected)


def test_dense_weight_equals_shuffle_then_grouped_conv() -> None:
    torch.manual_seed(2)
    weight = torch.randn(12, 3, 3, 3)
    x = torch.randn(2, 12, 6, 6)
    for shuffle in (1, 2, 3, 4, 6):
        expected = nn.functional.conv2d(channel_shuffle(x, shuffle), weight, padding=1, groups=4)
        dense = dense_weight(weight, 4, shuffle)
        assert dense.shape == (12, 12, 3, 3)
        assert int((dense != 0).sum()) == int((weight != 0).sum())
        _close(nn.functional.conv2d(x, dense, padding=1), expected)


def _fvcore_flops(module: nn.Module, x: torch.Tensor) -> int:
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(module.eval(), x)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        return int(analysis.total())


@pytest.mark.parametrize(
    "case",
    [
        c
        for c in CASES
        if c.name
        in {"GC-g24-shuf2", "DW-shuf3-s2", "PW-shuf4-s2", "PWG2-shuf24", "PWG8-shuf8", "CONV-shuf4-s2"}
    ],
    ids=lambda c: c.name,
)
def test_fvcore_counts_fast_exactly_like_naive(case: Case) -> None:
    naive, fast = _pair(case, "fast")
    x = torch.randn(2, case.cin, case.size, case.size)
    expected = 2 * naive.spec.macs(case.size, case.size)
    assert _fvcore_flops(naive, x) == expected
    assert _fvcore_flops(fast, x) == expected
    assert _fvcore_flops(case.build("auto"), x) == expected


@pytest.mark.parametrize("impl", ["naive", "fast"])
def test_torchscript_script_and_trace(impl: ops.Impl) -> None:
    case = Case("PWG2-shuf24", 48, 48, 1, groups=2, shuffle=24)
    naive, module = _pair(case, impl)
    x = torch.randn(2, 48, 5, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(module)
        traced = torch.jit.trace(module, x)
    expected = naive(x)
    _close(scripted(x), expected)
    _close(traced(x), expected)
    _close(scripted(torch.ones(1, 48, 3, 3)), naive(torch.ones(1, 48, 3, 3)))


@pytest.mark.parametrize("impl", ["naive", "fast"])
def test_onnx_export_matches_onnxruntime(impl: ops.Impl) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(3)
    model = nn.Sequential(
        sparse_conv(16, 16, 3, groups=8, shuffle_groups=2, impl=impl),
        sparse_conv(16, 32, 1, groups=2, shuffle_groups=8, impl=impl),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        sparse_conv(32, 32, 3, groups=32, stride=2, impl=impl),
    ).eval()
    x = torch.randn(2, 16, 8, 8)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buffer, opset_version=17, dynamo=False, input_names=["x"])  # type: ignore[arg-type]
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (result,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        _close(torch.from_numpy(result), model(x), rtol=1e-4)


def test_bf16_autocast_stays_close() -> None:
    case = Case("PWG2-shuf24", 48, 48, 1, groups=2, shuffle=24)
    naive, fast = _pair(case, "fast")
    x = torch.randn(2, 48, 6, 6).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref, out = naive(x), fast(x)
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(
        out.float(), ref.float(), rtol=2e-2, atol=2e-2 * float(ref.detach().abs().max())
    )


def test_fast_output_is_channels_last_on_cpu() -> None:
    module = sparse_conv(48, 48, 3, groups=24, shuffle_groups=2, impl="fast")
    out = module(torch.randn(2, 48, 6, 6))
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_auto_keeps_nchw_for_inference_and_converts_for_training(table_forms: None) -> None:
    fast = sparse_conv(48, 48, 3, groups=48, impl="fast")
    auto = sparse_conv(48, 48, 3, groups=48, impl="auto")
    auto.load_state_dict(fast.state_dict())
    x = torch.randn(2, 48, 32, 32)  # 2048 pixels >= AUTO_MIN_PIXELS
    with torch.no_grad():
        out_fast, out_auto = fast(x), auto(x)
    assert out_fast.is_contiguous(memory_format=torch.channels_last) and not out_fast.is_contiguous()
    assert out_auto.is_contiguous()  # reference form, no conversion
    _close(out_auto, out_fast)
    trained = auto(x.clone().requires_grad_(True))
    assert trained.is_contiguous(memory_format=torch.channels_last) and not trained.is_contiguous()


def test_torch_export_sees_the_reference_graph() -> None:
    module = sparse_conv(48, 48, 1, groups=2, shuffle_groups=24, impl="fast")
    x = torch.randn(2, 48, 4, 4)
    exported = torch.export.export(module, (x,))
    targets = [str(node.target) for node in exported.graph.nodes if node.op == "call_function"]
    assert sum("conv" in t for t in targets) == 1 and not any("channel_shuffle" in t for t in targets)
    _close(exported.module()(x), module(x))
