"""The fused BatchNorm(+ReLU) equals nn.BatchNorm2d (+ nn.ReLU): outputs, gradients, running statistics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from igcnas.nn import _native
from igcnas.nn.norm import BatchNormAct2d, batch_norm_act

needs_native = pytest.mark.skipif(not _native.native_available(), reason=f"native kernels {_native.native_status()}")

CL = torch.channels_last


@pytest.fixture
def native_form(monkeypatch: pytest.MonkeyPatch) -> None:
    """The native kernel wherever it applies, whatever this machine measures (the tests of the kernel itself)."""
    monkeypatch.setattr(BatchNormAct2d, "form_for", lambda self, x, **_: "native")


def _pair(channels: int, relu: bool, momentum: float | None = 0.1) -> tuple[BatchNormAct2d, nn.Sequential]:
    fused = BatchNormAct2d(channels, relu=relu, momentum=momentum)
    with torch.no_grad():
        fused.weight.uniform_(0.5, 1.5)
        fused.bias.uniform_(-0.5, 0.5)
    reference = nn.Sequential(nn.BatchNorm2d(channels, momentum=momentum), *([nn.ReLU()] if relu else []))
    reference[0].load_state_dict(fused.state_dict())
    return fused, reference


@needs_native
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("shape", [(4, 8, 5, 7), (1, 3, 2, 2), (3, 48, 9, 9), (2, 17, 3, 1)])
def test_fused_training_step_equals_the_reference(relu: bool, shape: tuple[int, int, int, int],
                                                 native_form: None) -> None:
    torch.manual_seed(0)
    fused, reference = _pair(shape[1], relu)
    for step in range(2):  # the second step starts from updated running statistics
        x = (torch.randn(shape) * 3 + 1).contiguous(memory_format=CL)
        x_fused, x_ref = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        assert fused.uses_native(x_fused)
        y_fused, y_ref = fused(x_fused), reference(x_ref)
        grad = torch.randn_like(y_ref)
        if step == 1:
            grad = grad.contiguous()  # an NCHW output gradient is accepted too
        y_fused.backward(grad)
        y_ref.backward(grad)
        assert y_fused.is_contiguous(memory_format=CL)
        torch.testing.assert_close(y_fused, y_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(x_fused.grad, x_ref.grad, atol=1e-5, rtol=1e-4)
        bn = reference[0]
        torch.testing.assert_close(fused.weight.grad, bn.weight.grad, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(fused.bias.grad, bn.bias.grad, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(fused.running_mean, bn.running_mean)
        torch.testing.assert_close(fused.running_var, bn.running_var)
        assert int(fused.num_batches_tracked) == int(bn.num_batches_tracked) == step + 1


def _assert_step_matches_float64(fused: BatchNormAct2d, reference: nn.Sequential, x: torch.Tensor, *, threads: int,
                                 residual: torch.Tensor | None = None, add_relu: bool = False) -> None:
    """One training step of ``fused`` (with ``residual``: its forward_add) on ``threads`` threads against
    ``reference`` (+ residual, + ReLU) in float64: output, input/residual/weight gradients, running statistics."""
    reference.double()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x_fused, x_ref = x.clone().requires_grad_(True), x.double().requires_grad_(True)
        if residual is None:
            y_fused, y_ref = fused(x_fused), reference(x_ref)
        else:
            assert fused.uses_native(x, residual=residual, add_relu=add_relu)
            r_fused, r_ref = residual.clone().requires_grad_(True), residual.double().requires_grad_(True)
            y_fused = fused.forward_add(x_fused, r_fused, relu=add_relu)
            y_ref = reference(x_ref) + r_ref
            y_ref = torch.relu(y_ref) if add_relu else y_ref
        grad = torch.randn_like(y_fused).contiguous()  # an NCHW output gradient is accepted too
        y_fused.backward(grad)
        y_ref.backward(grad.double())
    finally:
        torch.set_num_threads(before)
    assert y_fused.is_contiguous(memory_format=CL)
    torch.testing.assert_close(y_fused, y_ref.float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x_fused.grad, x_ref.grad.float(), atol=1e-5, rtol=1e-4)
    if residual is not None:
        torch.testing.assert_close(r_fused.grad, r_ref.grad.float(), atol=1e-6, rtol=1e-6)
    bn = reference[0]
    torch.testing.assert_close(fused.weight.grad, bn.weight.grad.float(), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(fused.bias.grad, bn.bias.grad.float(), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(fused.running_mean, bn.running_mean.float())
    torch.testing.assert_close(fused.running_var, bn.running_var.float())


@needs_native
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_many_pixel_blocks_far_from_zero_equal_the_reference(threads: int, native_form: None) -> None:
    # the kernel sums blocks of 32 pixels in float, then in double: 4,080 pixels (a partial last block) split
    # over 1-3 threads, values centred far from 0 (the per-channel shift keeps the variance from cancelling).
    # Checked against the reference in float64: PyTorch's own float32 BatchNorm is off by up to 6e-5 here.
    # No ReLU: with 163,200 outputs some lie within float32 rounding of 0, where the mask may differ.
    torch.manual_seed(2)
    fused, reference = _pair(40, False)
    x = (torch.randn(16, 40, 17, 15) * 2 + 50).contiguous(memory_format=CL)
    _assert_step_matches_float64(fused, reference, x, threads=threads)


@needs_native
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("relu", [False, True])
def test_a_large_bn_streams_its_output_and_input_gradient_and_equals_the_reference(threads: int, relu: bool,
                                                                                  native_form: None) -> None:
    # 72 x 64 x 32 x 32 floats are 18 MiB: the normalising pass and the input-gradient pass write their blocks of
    # 32 pixels through a per-thread buffer with non-temporal stores (AVX-512; plain stores elsewhere), and the
    # backward's sums pass reads x and the gradient row by row (bn_grad_sums_rows; 72 channels: a partial strip)
    torch.manual_seed(4)
    fused, reference = _pair(72, relu)
    x = torch.randn(64, 72, 32, 32)
    if relu:  # |x| >= 1 about a mean near 0 (std 1.9), weights >= 0.5, no bias: every output at least 0.25 from 0,
        x = torch.sign(x) * (1 + x.abs())  # so rounding cannot flip the ReLU's mask
        with torch.no_grad():
            fused.bias.zero_()
            reference[0].bias.zero_()
    else:
        x = x * 2 + 1
    _assert_step_matches_float64(fused, reference, x.contiguous(memory_format=CL), threads=threads)


@needs_native
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("relu", [True, False])
def test_bn_with_a_residual_sum_equals_the_reference(relu: bool, threads: int, native_form: None) -> None:
    # forward_add: relu(bn(x) + r) in the kernel's normalising pass; the gradient reaches x, r, gamma and beta
    torch.manual_seed(3)
    fused, reference = _pair(24, False)
    x = (torch.randn(6, 24, 9, 7) * 3 + 1).contiguous(memory_format=CL)
    r = torch.randn(6, 24, 9, 7).contiguous(memory_format=CL)
    _assert_step_matches_float64(fused, reference, x, threads=threads, residual=r, add_relu=relu)


def test_forward_add_outside_the_native_path_is_bn_add_relu() -> None:
    # eval mode (and NCHW, CUDA, tracing...): the same three ops as the naive build, and a BN with its own ReLU
    # cannot take a residual (its ReLU would come before the sum)
    fused, reference = _pair(5, False)
    fused.eval(), reference.eval()
    x, r = torch.randn(2, 5, 3, 3), torch.randn(2, 5, 3, 3)
    assert not fused.uses_native(x, residual=r, add_relu=True)
    torch.testing.assert_close(fused.forward_add(x, r, relu=True), torch.relu(reference(x) + r))
    with pytest.raises(ValueError, match="relu=False"):
        BatchNormAct2d(5, relu=True).forward_add(x, r, relu=True)


@needs_native
def test_cumulative_average_and_determinism(native_form: None) -> None:
    torch.manual_seed(1)
    fused, reference = _pair(6, True, momentum=None)
    for _ in range(3):
        x = torch.randn(4, 6, 4, 4).contiguous(memory_format=CL)
        fused(x)
        reference(x)
    torch.testing.assert_close(fused.running_var, reference[0].running_var)
    x = torch.randn(8, 6, 5, 5).contiguous(memory_format=CL).requires_grad_(True)
    first = fused(x)
    first.sum().backward()
    grad = x.grad.clone()
    x.grad = None
    second = fused(x)
    second.sum().backward()
    assert torch.equal(first, second) and torch.equal(grad, x.grad)


def test_reference_path_outside_channels_last_float32_training() -> None:
    fused, reference = _pair(4, True)
    x = torch.randn(2, 4, 3, 3)
    assert not fused.uses_native(x)  # NCHW
    torch.testing.assert_close(fused(x), reference(x))
    cl = x.contiguous(memory_format=CL)
    assert not fused.uses_native(cl.double())
    assert not fused.uses_native(cl[:1, :, :1, :1])  # one value per channel: BN's own error applies
    assert not fused.uses_native(cl[:, :1])  # wrong channel count: BN's own error applies
    with pytest.raises(RuntimeError):
        fused(torch.randn(2, 1, 3, 3).contiguous(memory_format=CL))
    fused.eval()
    reference.eval()
    assert not fused.uses_native(cl)
    torch.testing.assert_close(fused(cl), reference(cl))
    fused.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fused.uses_native(cl)
    graph = str(torch.jit.trace(fused.eval(), cl).graph)
    assert "aten::batch_norm" in graph and "aten::relu_" in graph


def test_factory_keeps_the_naive_modules_and_fuses_bn_relu() -> None:
    def kinds(relu: bool, impl: str) -> list[tuple[str, str]]:
        return [(name, type(module).__name__) for name, module in batch_norm_act(8, relu=relu, impl=impl)]

    assert kinds(True, "naive") == [("bn", "BatchNorm2d"), ("relu", "ReLU")]
    assert kinds(True, "auto") == [("bn", "BatchNormAct2d")]
    assert kinds(False, "fast") == [("bn", "BatchNormAct2d")]
    assert kinds(False, "naive") == [("bn", "BatchNorm2d")]
    assert sorted(BatchNormAct2d(8, relu=True).state_dict()) == sorted(nn.BatchNorm2d(8).state_dict())


@needs_native
def test_running_statistics_kept_in_float64_are_updated_too(native_form: None) -> None:
    torch.manual_seed(2)
    fused, reference = _pair(6, True)
    fused.running_mean = fused.running_mean.double()  # buffers of another dtype than the kernel's: torch's lerp
    fused.running_var = fused.running_var.double()
    for _ in range(2):
        x = torch.randn(4, 6, 4, 4).contiguous(memory_format=CL)
        fused(x)
        reference(x)
    assert fused.running_mean.dtype == torch.float64
    torch.testing.assert_close(fused.running_mean, reference[0].running_mean.double())
    torch.testing.assert_close(fused.running_var, reference[0].running_var.double())


@needs_native
def test_the_form_is_decided_once_per_module_and_input_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from igcnas.nn import tune

    decided: list[str] = []
    original = tune.decide
    monkeypatch.setattr(tune, "decide", lambda text, **k: decided.append(text) or original(text, **k))
    module = BatchNormAct2d(8, relu=True)
    for size in (5, 5, 5, 6, 6):
        module(torch.randn(2, 8, size, size).contiguous(memory_format=CL))
    assert [text.split()[2] for text in decided] == ["5x5", "6x6"]
    tune._forget()  # new choices (another regime, a cleared cache): decided again
    module(torch.randn(2, 8, 5, 5).contiguous(memory_format=CL))
    assert len(decided) == 3


@needs_native
@pytest.mark.parametrize("relu", [True, False])
def test_the_training_form_is_measured_once_and_cached(relu: bool, monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    from igcnas.nn import _tune_cache, norm, tune

    monkeypatch.setenv("IGCNAS_TUNE_DIR", str(tmp_path / "tune"))  # a fresh machine's cache
    monkeypatch.setenv("IGCNAS_TUNE", "auto")
    monkeypatch.setattr(tune, "_memory", {})
    _tune_cache._loaded.clear()
    calls: list[list[str]] = []
    fast = {"native": 1.0, "reference": 2.0} if not relu else {"native": 2.0, "reference": 1.0}  # against the prior

    def fake(channels: int, shape: tuple[int, ...], *, relu: bool, eps: float, forms: list[str],
             residual: bool = False) -> dict[str, float]:
        calls.append(forms)
        return {form: fast[form] for form in forms}

    monkeypatch.setattr(norm, "_measure_forms", fake)
    module = BatchNormAct2d(8, relu=relu)
    x = torch.randn(2, 8, 5, 5).contiguous(memory_format=CL)
    assert module.uses_native(x) is (not relu)  # the faster form, not the prior
    assert module.uses_native(x) is (not relu) and len(calls) == 1 and sorted(calls[0]) == ["native", "reference"]
    (text,) = [t for t in tune.choices() if t.startswith("BN")]
    assert text == f"BN{'+ReLU' if relu else ''} 8 5x5 float32 t{torch.get_num_threads()} train cl"
    tune._forget()
    _tune_cache._loaded.clear()
    assert module.uses_native(x) is (not relu) and len(calls) == 1  # read back from the cache file
    tune._forget()
    monkeypatch.setenv("IGCNAS_TUNE", "off")
    assert module.uses_native(x) is relu  # the prior: native for BN + ReLU only
    _tune_cache._loaded.clear()


@pytest.mark.parametrize("add_relu", [True, False])
def test_the_residual_form_is_measured_as_its_own_signature(add_relu: bool, monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    # BN + sum (+ ReLU) is its own signature, its ReLU the block's (add_relu), not the module's; prior native
    from igcnas.nn import _tune_cache, norm, tune

    monkeypatch.setenv("IGCNAS_TUNE_DIR", str(tmp_path / "tune"))
    monkeypatch.setenv("IGCNAS_TUNE", "auto")
    monkeypatch.setattr(tune, "_memory", {})
    _tune_cache._loaded.clear()
    calls: list[tuple[bool, bool]] = []

    def fake(channels: int, shape: tuple[int, ...], *, relu: bool, eps: float, forms: list[str],
             residual: bool = False) -> dict[str, float]:
        calls.append((relu, residual))
        return {"native": 2.0, "reference": 1.0}  # against the prior

    monkeypatch.setattr(norm, "_measure_forms", fake)
    module = BatchNormAct2d(8, relu=False)
    x = torch.randn(2, 8, 5, 5).contiguous(memory_format=CL)
    assert module.form_for(x, residual=True, add_relu=add_relu) == "reference"
    assert calls == [(add_relu, True)]
    (text,) = [t for t in tune.choices() if t.startswith("BN+add")]
    assert text == f"BN+add{'+ReLU' if add_relu else ''} 8 5x5 float32 t{torch.get_num_threads()} train cl"
    tune._forget()
    monkeypatch.setenv("IGCNAS_TUNE", "off")
    assert module.form_for(x, residual=True, add_relu=add_relu) == "native"  # the prior
    _tune_cache._loaded.clear()


@needs_native
def test_the_measurement_times_both_forms_of_a_real_step() -> None:
    from igcnas.nn import norm

    for residual in (False, True):
        seconds = norm._measure_forms(8, (4, 8, 6, 6), relu=True, eps=1e-5, forms=["native", "reference"],
                                      residual=residual)
        assert set(seconds) == {"native", "reference"} and all(v > 0 for v in seconds.values())


@needs_native
def test_a_training_step_under_inference_mode_keeps_the_prior(monkeypatch: pytest.MonkeyPatch) -> None:
    from igcnas.nn import norm

    monkeypatch.setattr(norm, "_measure_forms", lambda *a, **k: pytest.fail("measured under inference mode"))
    module = BatchNormAct2d(8, relu=True)
    with torch.inference_mode():
        x = torch.randn(2, 8, 5, 5).contiguous(memory_format=CL)
        assert module.form_for(x) == "native"
        assert module(x).shape == x.shape
