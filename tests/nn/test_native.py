"""Native grouped 1x1 and kxk kernels (igcnas.nn._native): equal the naive reference, fall back cleanly, planned narrowly."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from igcnas.nn import _native, _native_build
from igcnas.nn.ops import (
    NATIVE_GC_MAX_GROUP_WEIGHTS,
    NATIVE_MAX_GROUP_WEIGHTS,
    ConvSpec,
    FastSparseConv2d,
    channel_shuffle,
    select_plan,
    sparse_conv,
)

pytestmark = pytest.mark.usefixtures("at_most_two_threads")


@pytest.fixture
def native() -> None:
    """Skip (with the reason) where the kernel cannot be built."""
    if not _native.native_available():
        pytest.skip(f"native kernel {_native.native_status()}")


@pytest.fixture
def fresh_native() -> Iterator[None]:
    """Forget the loaded kernel before and after the test (the test changes the environment)."""
    _native._reset()
    yield
    _native._reset()


def _cl(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


# (in, out, groups, shuffle_groups, (N, H, W))
SHAPES = [
    (416, 416, 52, 52, (2, 9, 9)),  # IGCV2*-C416 branch conv, P = 162 (not a multiple of the tiles)
    (416, 416, 52, None, (1, 4, 4)),  # batch 1, no shuffle
    (48, 48, 2, 24, (1, 7, 7)),  # IGC-L24M2 secondary
    (32, 192, 2, None, (2, 5, 5)),  # Cout != Cin, Ig = 16 != Og = 96
    (192, 32, 2, 2, (2, 3, 3)),  # Ig = 96 != Og = 16, shuffle 2
    (12, 18, 3, 4, (1, 3, 3)),  # channel counts that are not multiples of 16 (scalar tile paths)
    (24, 40, 4, 6, (3, 8, 8)),  # P = 192: whole tiles only
    (64, 64, 8, 8, (2, 16, 16)),  # several tiles per thread
    (40, 80, 10, 10, (1, 1, 1)),  # a single pixel
]


def _pair(cin: int, cout: int, groups: int, shuffle: int | None) -> tuple[torch.nn.Module, FastSparseConv2d]:
    naive = sparse_conv(cin, cout, 1, groups=groups, shuffle_groups=shuffle, impl="naive")
    fast = sparse_conv(cin, cout, 1, groups=groups, shuffle_groups=shuffle, impl="fast")
    fast.load_state_dict(naive.state_dict())
    assert isinstance(fast, FastSparseConv2d)
    return naive, fast


@pytest.mark.usefixtures("native")
@pytest.mark.parametrize(("cin", "cout", "groups", "shuffle", "size"), SHAPES)
@pytest.mark.parametrize("nchw_grad", [False, True], ids=["cl-grad", "nchw-grad"])
def test_native_matches_naive_values_and_gradients(
    cin: int, cout: int, groups: int, shuffle: int | None, size: tuple[int, int, int], nchw_grad: bool
) -> None:
    naive, fast = _pair(cin, cout, groups, shuffle)
    assert fast.plan("cpu").form == "native"
    n, h, w = size
    x = _cl(torch.randn(n, cin, h, w))
    grad = torch.randn(n, cout, h, w)  # NCHW-contiguous: the Function has to make it channels_last
    grad = grad if nchw_grad else _cl(grad)
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref, out = naive(xr), fast(xf)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    ref.backward(grad)
    out.backward(grad)
    assert xf.grad is not None and xr.grad is not None and xf.grad.shape == x.shape
    torch.testing.assert_close(xf.grad, xr.grad, rtol=1e-5, atol=1e-5)
    assert fast.weight.grad is not None and naive.weight.grad is not None
    torch.testing.assert_close(fast.weight.grad, naive.weight.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.usefixtures("native")
def test_group_pointwise_direct_nchw_input_and_partial_gradients() -> None:
    x = torch.randn(2, 16, 5, 5)  # NCHW input: converted inside
    w = torch.randn(24, 2, 1, 1)
    ref_out = torch.nn.functional.conv2d(channel_shuffle(x, 4), w, groups=8)
    torch.testing.assert_close(_native.group_pointwise(x, w, 8, 4), ref_out, rtol=1e-5, atol=1e-5)
    # only the weight needs a gradient (first layer): no input gradient is made
    wg = w.clone().requires_grad_()
    _native.group_pointwise(x, wg, 8, 4).sum().backward()
    ref_w = w.clone().requires_grad_()
    torch.nn.functional.conv2d(channel_shuffle(x, 4), ref_w, groups=8).sum().backward()
    assert wg.grad is not None and ref_w.grad is not None
    torch.testing.assert_close(wg.grad, ref_w.grad, rtol=1e-4, atol=1e-4)
    # only the input needs a gradient (frozen weight)
    xg = x.clone().requires_grad_()
    _native.group_pointwise(xg, w, 8, 4).sum().backward()
    xr = x.clone().requires_grad_()
    torch.nn.functional.conv2d(channel_shuffle(xr, 4), w, groups=8).sum().backward()
    assert xg.grad is not None and xr.grad is not None
    torch.testing.assert_close(xg.grad, xr.grad, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="float32"):
        _native.group_pointwise(x.double(), w.double(), 8, 4)


def test_shuffle_permutation_is_channel_shuffle() -> None:
    x = torch.arange(24.0).view(1, 24, 1, 1)
    for groups in (1, 2, 3, 4, 6, 8, 12, 24):
        perm = _native.shuffle_permutation(24, groups)
        assert channel_shuffle(x, groups).flatten().tolist() == [float(p) for p in perm]


@pytest.mark.usefixtures("native")
def test_plan_picks_native_only_for_narrow_stride1_cpu_pwg() -> None:
    native = {
        ConvSpec(416, 416, 1, groups=52, shuffle_groups=52),
        ConvSpec(416, 416, 1, groups=52),
        ConvSpec(48, 48, 1, groups=2, shuffle_groups=24),
        ConvSpec(32, 192, 1, groups=2),
        ConvSpec(128, 128, 1, groups=2, shuffle_groups=2),  # 64 x 64 = NATIVE_MAX_GROUP_WEIGHTS
    }
    other = {
        ConvSpec(256, 256, 1, groups=2): "grouped",  # 128 x 128 weights per group: oneDNN wins
        ConvSpec(48, 48, 1, groups=4, shuffle_groups=12, stride=2): "dense",  # stride 2
        ConvSpec(64, 64, 1, shuffle_groups=4): "dense",  # PW, groups = 1
        ConvSpec(48, 48, 3, groups=48): "grouped",  # DW
    }
    for spec in native:
        assert (spec.in_channels // spec.groups) * (
            spec.out_channels // spec.groups
        ) <= NATIVE_MAX_GROUP_WEIGHTS
        for impl in ("fast", "auto"):
            plan = select_plan(spec, "cpu", impl)
            assert (plan.form, plan.channels_last) == ("native", True), (spec, plan)
            assert select_plan(spec, "cpu", impl, native=False).form in ("dense", "grouped")
        assert select_plan(spec, "cpu", "naive").form == "reference"
        assert select_plan(spec, "cuda", "fast").form == "reference"
    for spec, form in other.items():
        assert select_plan(spec, "cpu", "fast").form == form, spec
    # auto, NCHW inference: converting pays only where the kernel also saves the shuffle copy
    nchw = {"channels_last_input": False, "grad": False, "pixels": 4096}
    assert (
        select_plan(ConvSpec(416, 416, 1, groups=52, shuffle_groups=52), "cpu", "auto", **nchw).form
        == "native"
    )
    assert select_plan(ConvSpec(416, 416, 1, groups=52), "cpu", "auto", **nchw).form == "reference"


@pytest.mark.usefixtures("native")
def test_native_plan_falls_back_under_autocast_and_other_dtypes() -> None:
    naive, fast = _pair(48, 48, 2, 24)
    x = _cl(torch.randn(2, 48, 6, 6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref, out = naive(x), fast(x)
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(
        out.float(), ref.float(), rtol=2e-2, atol=2e-2 * float(ref.detach().abs().max())
    )
    naive.double()
    fast.double()
    torch.testing.assert_close(fast(x.double()), naive(x.double()))


@pytest.mark.usefixtures("fresh_native")
def test_disabled_by_environment_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IGCNAS_NATIVE", "0")
    assert not _native.native_available()
    assert "IGCNAS_NATIVE=0" in _native.native_status()
    spec = ConvSpec(416, 416, 1, groups=52, shuffle_groups=52)
    assert select_plan(spec, "cpu", "fast").form == "grouped"
    naive, fast = _pair(64, 64, 8, 8)
    assert fast.plan("cpu").form == "dense"
    x = _cl(torch.randn(2, 64, 5, 5))
    torch.testing.assert_close(fast(x), naive(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="IGCNAS_NATIVE=0"):
        _native.group_pointwise(x, fast.weight, 8, 8)


@pytest.mark.usefixtures("fresh_native")
@pytest.mark.parametrize("compiler", ["/nonexistent/cc", "false"])
def test_missing_or_failing_compiler_is_not_an_error(
    compiler: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("IGCNAS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", compiler)
    monkeypatch.delenv("IGCNAS_NATIVE", raising=False)
    assert not _native.native_available()
    assert _native.native_status().startswith("unavailable: ")
    _, fast = _pair(48, 48, 2, 24)
    assert fast.plan("cpu").form == "dense"


@pytest.mark.usefixtures("fresh_native")
def test_a_bad_native_march_is_the_reason_the_kernels_are_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IGCNAS_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("IGCNAS_NATIVE", raising=False)
    monkeypatch.setenv("IGCNAS_NATIVE_MARCH", "haswell")
    assert "-march=haswell" in _native_build._flags() and "-march=native" not in _native_build._flags()
    monkeypatch.setenv("IGCNAS_NATIVE_MARCH", "native -O0")
    assert not _native.native_available()
    assert "IGCNAS_NATIVE_MARCH='native -O0' is not a -march value" in _native.native_status()


_X86_64_V3 = {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


@pytest.mark.usefixtures("native")
@pytest.mark.skipif(not _cpu_flags() >= _X86_64_V3, reason="needs a CPU that runs x86-64-v3 (AVX2) code")
def test_the_avx2_build_computes_what_torch_does(tmp_path: Path) -> None:
    # IGCNAS_NATIVE_MARCH=x86-64-v3 builds the code an AVX2-only CPU (the EPYC) runs, with 8-float vectors; on an
    # AVX-512 machine this is the only test of that code. A subprocess: the library is loaded once per process.
    code = """
import torch, torch.nn.functional as F
from igcnas.nn import _native
from igcnas.nn.ops import channel_shuffle
assert _native.native_available(), _native.native_status()
torch.manual_seed(0)
x = torch.randn(2, 48, 9, 11).contiguous(memory_format=torch.channels_last).requires_grad_()
pw = torch.randn(48, 24, 1, 1)
cases = [
    (lambda t, w: _native.group_conv(t, w, 48), lambda t, w: F.conv2d(t, w, None, 1, 1, 1, 48), (48, 1, 3, 3)),
    (lambda t, w: _native.group_conv(t, w, 24, 2), lambda t, w: F.conv2d(channel_shuffle(t, 2), w, None, 1, 1, 1, 24),
     (48, 2, 3, 3)),
    (lambda t, w: _native.group_pointwise(t, w, 4, 12), lambda t, w: F.conv2d(channel_shuffle(t, 12), w, None, 1, 0, 1, 4),
     (48, 12, 1, 1)),
    # group_rot.c: groups of 2 (in-lane permutes) and of 8 (a permute by index vector)
    (lambda t, w: _native.group_conv(t, w, 24), lambda t, w: F.conv2d(t, w, None, 1, 1, 1, 24), (48, 2, 3, 3)),
    (lambda t, w: _native.group_conv(t, w, 6), lambda t, w: F.conv2d(t, w, None, 1, 1, 1, 6), (48, 8, 3, 3)),
    # the expansion by window permutes (stride 2, 2 channels in and 4 out) and by gathers (a shuffle by 8)
    (lambda t, w: _native.group_conv(t, w, 24, 1, 2), lambda t, w: F.conv2d(t, w, None, 2, 1, 1, 24), (96, 2, 3, 3)),
    (lambda t, w: _native.group_conv(t, w, 12, 8), lambda t, w: F.conv2d(channel_shuffle(t, 8), w, None, 1, 1, 1, 12),
     (48, 4, 3, 3)),
    # group_rot.c computing the grouped conv in front of a fused 1x1 conv, per span of pixels (IGCV1's pair)
    (lambda t, w: _native._PointwiseChain.apply(t, (2,), (24,), w, pw),
     lambda t, w: F.conv2d(channel_shuffle(F.conv2d(t, w, None, 1, 1, 1, 24), 24), pw, groups=2), (48, 2, 3, 3)),
]
for fast, ref, shape in cases:
    w = torch.randn(shape, requires_grad=True)
    out, expected = fast(x, w), ref(x, w)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    grad = torch.randn(expected.shape)
    for a, b in zip(torch.autograd.grad(out, (x, w), grad), torch.autograd.grad(expected, (x, w), grad)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
print("ok", _native.native_status())
"""
    env = {**os.environ, "IGCNAS_CACHE_DIR": str(tmp_path), "IGCNAS_NATIVE_MARCH": "x86-64-v3"}
    env.pop("IGCNAS_NATIVE", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.startswith("ok available"), out.stdout + out.stderr[-3000:]


@pytest.mark.usefixtures("native", "fresh_native")
def test_build_goes_to_the_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IGCNAS_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("IGCNAS_NATIVE", raising=False)
    assert _native.native_available()
    built = list((tmp_path / "native").iterdir())
    assert len(built) == 1 and built[0].name.startswith("igcnas_native-") and built[0].suffix == ".so", built


@pytest.mark.usefixtures("native", "fresh_native")
def test_an_unwritable_cache_builds_in_a_private_temporary_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("IGCNAS_CACHE_DIR", str(blocker))  # <file>/native cannot be created
    monkeypatch.delenv("IGCNAS_NATIVE", raising=False)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    assert _native.native_available(), _native.native_status()
    built = list((temporary / f"igcnas-native-{os.getuid()}").glob("igcnas_native-*.so"))
    assert len(built) == 1, built


@pytest.mark.usefixtures("native", "fresh_native")
def test_a_library_planted_in_the_temporary_folder_is_never_loaded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    temporary = tmp_path / "tmp"
    shared = temporary / f"igcnas-native-{os.getuid()}"
    shared.mkdir(parents=True)
    shared.chmod(0o777)  # writable by anyone: another user could have planted a library here
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    monkeypatch.delenv("IGCNAS_NATIVE", raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("IGCNAS_CACHE_DIR", str(cache))
    assert _native.native_available()  # a writable user cache: built there, the temporary folder is not read
    built = list((cache / "native").glob("igcnas_native-*.so"))
    assert len(built) == 1
    planted = shared / built[0].name
    planted.write_bytes(b"not a library")
    _native._reset()
    monkeypatch.setenv("IGCNAS_CACHE_DIR", str(tmp_path / "cache2"))
    assert _native.native_available()  # an empty writable cache: built there, the planted file is not loaded
    assert [p.name for p in (tmp_path / "cache2" / "native").glob("*.so")] == [planted.name]
    _native._reset()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("IGCNAS_CACHE_DIR", str(blocker))  # the user cache cannot be written
    assert not _native.native_available()  # the fallback folder is refused, the planted file never loaded
    assert "not a private folder" in _native.native_status()


@pytest.mark.usefixtures("native")
def test_an_explicit_native_plan_runs_anywhere() -> None:
    """run_plan with a native plan on an input the kernel does not take uses the table's torch form."""
    naive, fast = _pair(48, 48, 4, 12)
    plan = select_plan(fast.spec, "cpu", "fast")
    assert plan.form == "native"
    x = torch.randn(2, 48, 5, 5, dtype=torch.float64)
    naive.double()
    fast.double()
    torch.testing.assert_close(fast.run_plan(x, plan), naive(x))
    strided = sparse_conv(48, 48, 1, groups=4, shuffle_groups=12, stride=2, impl="fast")
    assert isinstance(strided, FastSparseConv2d)
    ref = sparse_conv(48, 48, 1, groups=4, shuffle_groups=12, stride=2, impl="naive")
    ref.load_state_dict(strided.state_dict())
    xf = torch.randn(2, 48, 6, 6)
    torch.testing.assert_close(strided.run_plan(xf, plan), ref(xf), rtol=1e-5, atol=1e-5)


# GC: (in, out, groups, shuffle_groups, stride, k, (N, H, W))
GC_SHAPES = [
    (48, 48, 24, None, 1, 3, (2, 7, 5)),  # IGC-L24M2 primary, 2 channels per group, odd sizes
    (48, 48, 24, 2, 1, 3, (1, 8, 8)),  # with the permute-back shuffle, batch 1
    (48, 96, 24, None, 2, 3, (2, 9, 7)),  # stride-2 first block of a stage (2 -> 4 channels per group)
    (48, 96, 24, 2, 2, 3, (1, 8, 8)),  # stride 2 with a shuffle, even size
    (64, 64, 16, 4, 1, 3, (2, 6, 11)),  # 4 channels per group, shuffle 4
    (32, 32, 8, None, 2, 3, (1, 5, 5)),  # 4 per group, stride 2, odd size
    (20, 30, 10, 5, 1, 5, (2, 7, 5)),  # k = 5, channel counts that are not whole vectors, Og != Ig
    (24, 24, 12, 2, 2, 5, (1, 9, 6)),  # k = 5, stride 2
    (40, 40, 20, 1, 1, 3, (1, 1, 1)),  # a single pixel
    (96, 96, 48, 8, 1, 3, (1, 3, 17)),  # a shuffle whose lanes need a gather; row longer than two blocks
    # depthwise, stride 1, no shuffle: dw_conv.c (rows read in place); the others go through the general path
    (64, 64, 64, None, 1, 3, (2, 9, 21)),  # two interior blocks of 8 pixels, a remainder, both edges
    (35, 35, 35, None, 1, 5, (2, 6, 7)),  # k = 5, 35 channels: two 16-channel strips and 3 scalar channels
    (16, 16, 16, None, 1, 7, (1, 3, 4)),  # k = 7, larger than the image: every pixel is an edge pixel
    (32, 32, 32, 2, 1, 3, (1, 5, 5)),  # depthwise after a shuffle: the general path
    (32, 32, 32, None, 2, 3, (2, 7, 7)),  # depthwise with stride 2: the general path
]


def _gc_pair(
    cin: int, cout: int, groups: int, shuffle: int | None, stride: int, k: int
) -> tuple[torch.nn.Module, FastSparseConv2d]:
    naive = sparse_conv(cin, cout, k, stride=stride, groups=groups, shuffle_groups=shuffle, impl="naive")
    fast = sparse_conv(cin, cout, k, stride=stride, groups=groups, shuffle_groups=shuffle, impl="fast")
    fast.load_state_dict(naive.state_dict())
    assert isinstance(fast, FastSparseConv2d)
    return naive, fast


@pytest.mark.usefixtures("native")
@pytest.mark.parametrize(("cin", "cout", "groups", "shuffle", "stride", "k", "size"), GC_SHAPES)
@pytest.mark.parametrize("nchw_grad", [False, True], ids=["cl-grad", "nchw-grad"])
def test_native_gc_matches_naive_values_and_gradients(
    cin: int,
    cout: int,
    groups: int,
    shuffle: int | None,
    stride: int,
    k: int,
    size: tuple[int, int, int],
    nchw_grad: bool,
) -> None:
    naive, fast = _gc_pair(cin, cout, groups, shuffle, stride, k)
    plan = fast.plan("cpu")
    n, h, w = size
    x = _cl(torch.randn(n, cin, h, w))
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref = naive(xr)
    out = (
        fast.run_plan(xf, plan)
        if plan.form == "native"
        else _native.group_conv(xf, fast.weight, groups, shuffle or 1, stride)
    )
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn(ref.shape)  # NCHW-contiguous: the Function has to make it channels_last
    grad = grad if nchw_grad else _cl(grad)
    ref.backward(grad)
    out.backward(grad)
    assert xf.grad is not None and xr.grad is not None and xf.grad.shape == x.shape
    torch.testing.assert_close(xf.grad, xr.grad, rtol=1e-5, atol=1e-5)
    assert fast.weight.grad is not None and naive.weight.grad is not None
    torch.testing.assert_close(fast.weight.grad, naive.weight.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.usefixtures("native")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("channels", [64, 72])
def test_a_large_depthwise_conv_streams_its_outputs_and_equals_onednn(channels: int, threads: int) -> None:
    # 64 x 64 x 32 x 32 floats are 16 MiB: the forward output and the input gradient take the non-temporal stores,
    # in place with 64 channels, through a row buffer with 72 (rows of 288 bytes are not line-aligned; the last 8
    # channels are a masked strip with AVX-512)
    torch.set_num_threads(threads)
    x = _cl(torch.randn(64, channels, 32, 32)).requires_grad_()
    w = torch.randn(channels, 1, 3, 3, requires_grad=True)
    grad = _cl(torch.randn(64, channels, 32, 32))
    out = _native.group_conv(x, w, channels)
    ref = torch.nn.functional.conv2d(x, w, None, 1, 1, 1, channels)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    dx, dw = torch.autograd.grad(out, (x, w), grad)
    dx_ref, dw_ref = torch.autograd.grad(ref, (x, w), grad)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dw, dw_ref, rtol=1e-4, atol=1e-2)  # sums of 65,536 products
    again = torch.autograd.grad(_native.group_conv(x, w, channels), (x, w), grad)
    assert torch.equal(again[0], dx) and torch.equal(again[1], dw)  # deterministic for a thread count


@pytest.mark.usefixtures("native")
def test_short_lived_threads_stream_through_their_own_buffers_which_are_freed_on_exit() -> None:
    # each OS thread that runs a kernel gets its own scratch buffer (a pthread key); it is freed when the thread
    # exits, and a new thread gets a new one: the results stay the same and nothing is freed twice
    import threading

    x = _cl(torch.randn(64, 72, 32, 32))
    w = torch.randn(72, 1, 3, 3)
    want = _native.chain_forward(x, [], (), (), w)
    got: list[torch.Tensor] = []
    for _ in range(3):
        worker = threading.Thread(target=lambda: got.append(_native.chain_forward(x, [], (), (), w)))
        worker.start()
        worker.join()
    assert len(got) == 3 and all(torch.equal(g, want) for g in got)


@pytest.mark.usefixtures("native")
def test_chain_backward_refuses_batchnorm_sums_no_kernel_would_fill() -> None:
    x = _cl(torch.randn(2, 16, 4, 4))
    sums = torch.empty(32, dtype=torch.float64)
    coef = torch.randn(5, 16)
    with pytest.raises(ValueError, match="bn_sums needs"):  # no conv at all to take them
        _native.chain_backward(x, x, [], (), (), None, need_input=True, affine=coef, bn_sums=sums)
    with pytest.raises(ValueError, match="bn_sums needs"):  # no BatchNorm read through the chain
        _native.chain_backward(x, x, [torch.randn(16, 4, 1, 1)], (4,), (1,), need_input=True, need_w=[False],
                               bn_sums=sums)


@pytest.mark.usefixtures("native")
@pytest.mark.parametrize("threads", [1, 2])
def test_a_large_chain_off_the_vector_width_streams_through_a_buffer_and_equals_the_reference(threads: int) -> None:
    # 72 channels (a masked last block of every tile's transpose) x 64 x 32 x 32 are 18 MiB: the chain's output and
    # its input gradient are streamed through the per-thread tile buffer
    torch.set_num_threads(threads)
    x = _cl(torch.randn(64, 72, 32, 32))
    ws = [torch.randn(72, 8, 1, 1) * 0.3 for _ in range(2)]
    out = _native.chain_forward(x, ws, (9, 9), (1, 3))
    xd = x.double()
    ref = torch.nn.functional.conv2d(channel_shuffle(torch.nn.functional.conv2d(xd, ws[0].double(), groups=9), 3),
                                     ws[1].double(), groups=9)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last)
    grad = _cl(torch.randn(64, 72, 32, 32))
    dx, _, (dw0, dw1) = _native.chain_backward(x, grad, ws, (9, 9), (1, 3), need_input=True, need_w=[True, True])
    xr = xd.clone().requires_grad_()
    wr = [w.double().requires_grad_() for w in ws]
    yr = torch.nn.functional.conv2d(channel_shuffle(torch.nn.functional.conv2d(xr, wr[0], groups=9), 3), wr[1],
                                    groups=9)
    want = torch.autograd.grad(yr, (xr, *wr), grad.double())
    assert dx is not None and dw0 is not None and dw1 is not None
    torch.testing.assert_close(dx.double(), want[0], rtol=1e-5, atol=1e-5)
    for got, ref_w in zip((dw0, dw1), want[1:], strict=True):
        torch.testing.assert_close(got.double(), ref_w, rtol=1e-4, atol=1e-2)  # sums of 65,536 products


@pytest.mark.usefixtures("native")
@pytest.mark.parametrize("threads", [1, 2])
def test_the_direct_pointwise_kernel_streams_a_large_output_off_the_vector_width_and_equals_the_reference(
        threads: int) -> None:
    # 12 -> 36 channels (a partial last vector of every output block, rows not line-aligned) x 32 x 64 x 64 pixels
    # are 18 MiB of output: streamed out a block of rows at a time through the per-thread buffer
    torch.set_num_threads(threads)
    x = _cl(torch.randn(32, 12, 64, 64))
    w = torch.randn(36, 4, 1, 1)
    xr, wr = x.double().requires_grad_(), w.double().requires_grad_()
    ref = torch.nn.functional.conv2d(channel_shuffle(xr, 4), wr, groups=3)
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    out = _native.group_pointwise(xg, wg, 3, 4, kernel="direct")
    assert out.is_contiguous(memory_format=torch.channels_last) and out.numel() * 4 >= 16 << 20
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    grad = _cl(torch.randn_like(out))
    out.backward(grad)
    ref.backward(grad.double())
    assert xg.grad is not None and wg.grad is not None and xr.grad is not None and wr.grad is not None
    torch.testing.assert_close(xg.grad.double(), xr.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(wg.grad.double(), wr.grad, rtol=1e-4, atol=1e-2)  # sums of 131,072 products
    with pytest.raises(ValueError, match="kernel='dense' is not 'tiles' or 'direct'"):
        _native.group_pointwise(x, w, 3, 4, kernel="dense")  # type: ignore[arg-type]


@pytest.mark.usefixtures("native")
@pytest.mark.parametrize(("channels", "shuffle", "groups"), [(48, 24, 2), (96, 24, 4), (192, 24, 8), (64, 8, 4),
                                                             (128, 16, 2), (48, 16, 2), (40, 8, 5)])
def test_the_direct_kernel_input_gradient_through_an_igc_shuffle_equals_the_reference(
        channels: int, shuffle: int, groups: int) -> None:
    # shuffles of 8, 16 or 24 groups of 2, 4 or 8 channels go from slot order to channel order by vector shuffles
    # (48 in 16 groups of 3 and 40 in 8 groups of 5 channel by channel); 7 x 9 pixels leave a partial block
    x = _cl(torch.randn(7, channels, 3, 3))
    w = torch.randn(channels, channels // groups, 1, 1)
    xr, wr = x.double().requires_grad_(), w.double().requires_grad_()
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    grad = _cl(torch.randn(7, channels, 3, 3))
    _native.group_pointwise(xg, wg, groups, shuffle, kernel="direct").backward(grad)
    torch.nn.functional.conv2d(channel_shuffle(xr, shuffle), wr, groups=groups).backward(grad.double())
    assert xg.grad is not None and xr.grad is not None and wg.grad is not None and wr.grad is not None
    torch.testing.assert_close(xg.grad.double(), xr.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(wg.grad.double(), wr.grad, rtol=1e-5, atol=1e-4)


@pytest.mark.usefixtures("native")
def test_group_conv_partial_gradients_are_deterministic_and_checked() -> None:
    x = torch.randn(3, 16, 9, 9)  # NCHW input: converted inside
    w = torch.randn(16, 2, 3, 3)
    ref = torch.nn.functional.conv2d(channel_shuffle(x, 2), w, None, 1, 1, 1, 8)
    torch.testing.assert_close(_native.group_conv(x, w, 8, 2), ref, rtol=1e-5, atol=1e-5)
    grads = []
    for _ in range(2):  # only the weight needs a gradient; a fixed thread count sums in a fixed order
        wg = w.clone().requires_grad_()
        _native.group_conv(x, wg, 8, 2).square().sum().backward()
        grads.append(wg.grad)
    assert grads[0] is not None and grads[1] is not None
    assert torch.equal(grads[0], grads[1])
    xg = x.clone().requires_grad_()  # only the input needs a gradient (frozen weight)
    _native.group_conv(xg, w, 8, 2).sum().backward()
    xr = x.clone().requires_grad_()
    torch.nn.functional.conv2d(channel_shuffle(xr, 2), w, None, 1, 1, 1, 8).sum().backward()
    assert xg.grad is not None and xr.grad is not None
    torch.testing.assert_close(xg.grad, xr.grad, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="odd square"):
        _native.group_conv(x, torch.randn(16, 2, 2, 2), 8)
    with pytest.raises(ValueError, match="does not fit"):
        _native.group_conv(x, torch.randn(16, 4, 3, 3), 8)


@pytest.mark.usefixtures("native")
def test_plan_picks_native_for_narrow_cpu_gc() -> None:
    native = [
        ConvSpec(48, 48, 3, groups=24),  # IGC-L24M2 primary (2 x 2)
        ConvSpec(48, 48, 3, groups=24, shuffle_groups=2),
        ConvSpec(48, 96, 3, stride=2, groups=24),  # 2 x 4
        ConvSpec(96, 96, 3, groups=24),  # 4 x 4 = NATIVE_GC_MAX_GROUP_WEIGHTS
        ConvSpec(20, 20, 5, groups=10),  # k = 5
    ]
    other = [
        ConvSpec(96, 192, 3, stride=2, groups=24),  # 4 x 8
        ConvSpec(192, 192, 3, groups=24),  # 8 x 8
        ConvSpec(64, 64, 3, groups=8),
        ConvSpec(96, 96, 3, groups=96),  # DW stays with oneDNN
    ]
    for spec in native:
        assert (spec.in_channels // spec.groups) * (
            spec.out_channels // spec.groups
        ) <= NATIVE_GC_MAX_GROUP_WEIGHTS
        for impl in ("fast", "auto"):
            assert select_plan(spec, "cpu", impl).form == "native", spec
            assert select_plan(spec, "cpu", impl, native=False).form in ("grouped", "dense")
            nchw = select_plan(spec, "cpu", impl, channels_last_input=False, grad=False, pixels=1)
            assert (nchw.form, nchw.channels_last) == ("native", True)
        assert select_plan(spec, "cpu", "naive").form == "reference"
        assert select_plan(spec, "cuda", "fast").form == "reference"
    for spec in other:
        assert select_plan(spec, "cpu", "fast").form == "grouped", spec


@pytest.mark.usefixtures("native")
def test_native_gc_falls_back_for_other_dtypes_and_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    naive, fast = _gc_pair(48, 48, 24, 2, 1, 3)
    x = _cl(torch.randn(2, 48, 6, 6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref, out = naive(x), fast(x)
    assert out.dtype == ref.dtype == torch.bfloat16
    naive.double()
    fast.double()
    plan = select_plan(fast.spec, "cpu", "fast")
    assert plan.form == "native"
    torch.testing.assert_close(fast.run_plan(x.double(), plan), naive(x.double()))
    monkeypatch.setattr(_native, "native_available", lambda: False)
    assert select_plan(fast.spec, "cpu", "fast").form == "grouped"
    naive.float()
    fast.float()
    torch.testing.assert_close(fast.run_plan(x, plan), naive(x), rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("native")
def test_group_conv_backward_with_a_non_contiguous_weight() -> None:
    # the backward used to pass the address of a temporary contiguous copy of the weight that was freed before
    # the kernel read it (garbage input gradients, a use-after-free under AddressSanitizer)
    x = _cl(torch.randn(2, 15, 6, 5))
    base = torch.randn(5, 9, 3, 3)
    for stride in (1, 2):
        w = base.transpose(0, 1).requires_grad_()  # (9, 5, 3, 3), not contiguous
        assert not w.is_contiguous()
        xf, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
        wr = w.detach().clone().requires_grad_()
        out = _native.group_conv(xf, w, 3, 3, stride)
        ref = torch.nn.functional.conv2d(channel_shuffle(xr, 3), wr, None, stride, 1, 1, 3)
        grad = torch.randn(ref.shape)
        out.backward(grad)
        ref.backward(grad)
        assert xf.grad is not None and xr.grad is not None and w.grad is not None and wr.grad is not None
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(xf.grad, xr.grad, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(w.grad, wr.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.usefixtures("native")
@pytest.mark.parametrize("size", [(2, 0, 7), (2, 7, 0), (0, 5, 5), (2, 0, 0)])
def test_group_conv_empty_input_has_an_empty_output(size: tuple[int, int, int]) -> None:
    # H or W = 0 with stride > 1: the kernel computed one output row/column ((0 - 1) / s + 1 in C) and wrote
    # past the empty output tensor
    n, h, w = size
    for k, stride in ((1, 2), (3, 2), (3, 3), (5, 1)):
        x = _cl(torch.randn(n, 4, h, w)).requires_grad_()
        weight = torch.randn(6, 2, k, k, requires_grad=True)
        out = _native.group_conv(x, weight, 2, 2, stride)
        assert out.shape == (n, 6, (h - 1) // stride + 1 if h else 0, (w - 1) // stride + 1 if w else 0)
        out.sum().backward()
        assert x.grad is not None and weight.grad is not None and x.grad.shape == x.shape
        assert torch.equal(weight.grad, torch.zeros_like(weight))


@pytest.mark.usefixtures("native")
@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")  # _device_plan is pure
def test_torch_compile_traces_the_torch_forms_without_graph_breaks() -> None:
    from igcnas.arch import ArchSpec
    from igcnas.nn.network import build

    model = build(ArchSpec.simple("GC+PWG+PWG", widths=(16, 32), depths=(1, 1), groups=(8, 4, 4))).train()
    x = torch.randn(2, 3, 16, 16)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert _native.native_available()  # eager forwards still use the kernels


def _agreements_by_matmul(output: torch.Tensor) -> torch.Tensor:
    """The reference count: 0/1 codes (> 0) in float64, agreements = both active + both inactive."""
    codes = (output.reshape(output.shape[0], -1) > 0).double()
    return codes @ codes.T + (1 - codes) @ (1 - codes).T


@pytest.mark.usefixtures("native")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "shape, layout",
    [
        ((8, 3, 5, 7), "nchw"),  # 105 units: one full word and a partial one
        ((8, 16, 32, 32), "channels_last"),  # 16,384 units: whole words, several chunks of the pair loop
        ((5, 40), "nchw"),  # fewer units than a word
        ((1, 70), "nchw"),  # one image: only the diagonal
        ((6, 4, 9, 9), "strided"),  # not contiguous in any layout: copied first
    ],
)
def test_code_agreements_count_exactly_what_the_matmul_of_the_codes_counts(
    shape: tuple[int, ...], layout: str, threads: int
) -> None:
    generator = torch.Generator().manual_seed(sum(shape))
    output = torch.randn(*shape, generator=generator).relu_()  # ReLU outputs: exact zeros are inactive
    if layout == "channels_last":
        output = output.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        output = output.transpose(2, 3)
    total = torch.full((shape[0], shape[0]), 5.0, dtype=torch.float64)  # accumulated into, not overwritten
    torch.set_num_threads(threads)
    _native.code_agreements(output, total)
    torch.testing.assert_close(total, _agreements_by_matmul(output) + 5.0, rtol=0, atol=0)


@pytest.mark.usefixtures("native")
def test_code_agreements_rejects_what_it_cannot_count() -> None:
    with pytest.raises(ValueError, match="float32 CPU batch"):
        _native.code_agreements(torch.ones(2, 3, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"contiguous \(2, 2\) float64"):
        _native.code_agreements(torch.ones(2, 3), torch.zeros(3, 3, dtype=torch.float64))


def _expects_group_rot() -> bool:
    """Whether this machine's build has group_rot.c's kernels: AVX2 (all of M = 2, 4, 8) with the native -march."""
    march = os.environ.get("IGCNAS_NATIVE_MARCH", "native")
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return march == "native" and " avx2" in flags


# channels, groups (M = channels / groups in and out), input (N, H, W): tails on 8- and 16-lane vectors
ROT_CASES = [(12, 6, (2, 5, 7)), (20, 5, (1, 6, 9)), (36, 9, (2, 4, 6)), (40, 5, (2, 7, 5)), (56, 7, (1, 3, 12)),
             (48, 24, (2, 1, 1))]


@pytest.mark.parametrize(("channels", "groups", "shape"), ROT_CASES)
def test_grouped_3x3_convs_read_in_place_equal_the_float64_conv(native, channels, groups, shape) -> None:
    """The square narrow groups group_rot.c takes (2, 4 or 8 channels in and out, stride 1, no shuffle), without a
    BatchNorm: forward, input and weight gradients against float64, deterministic."""
    import ctypes

    lib = _native.library()
    assert lib is not None
    i64 = ctypes.c_int64
    handles = lib.rot_handles(None, i64(channels), i64(channels), i64(groups), i64(3), i64(1))
    if _expects_group_rot():
        assert handles == 1  # the kernel under test runs here
    torch.manual_seed(0)
    n, h, w = shape
    x = torch.randn(n, channels, h, w).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    weight = torch.randn(channels, channels // groups, 3, 3, requires_grad=True)
    y = _native.group_conv(x, weight, groups)
    dy = torch.randn(y.shape)
    y.backward(dy)
    x64, w64 = x.detach().double().requires_grad_(True), weight.detach().double().requires_grad_(True)
    ref = torch.nn.functional.conv2d(x64, w64, padding=1, groups=groups)
    ref.backward(dy.double())
    for got, want in [(y, ref), (x.grad, x64.grad), (weight.grad, w64.grad)]:
        assert got is not None and want is not None
        torch.testing.assert_close(got.detach().double(), want, rtol=1e-4, atol=1e-4 * max(1.0, float(want.abs().max())))
    again = _native.group_conv(x.detach(), weight.detach(), groups)
    assert torch.equal(again, y.detach())
