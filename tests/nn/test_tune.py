"""Forms chosen by measurement: candidates compute the same conv, choices are cached per machine, modes obeyed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from igcnas.errors import UserError
from igcnas.nn import _tune_cache, tune
from igcnas.nn.ops import FastSparseConv2d, SparseConv2d
from igcnas.nn.plan import ConvPlan, ConvSpec, native_kernels_usable, select_plan

SPECS = [
    ConvSpec(48, 48, 1, groups=2, shuffle_groups=24),  # IGC-L24M2 secondary
    ConvSpec(48, 48, 3, groups=24),  # IGC-L24M2 primary
    ConvSpec(32, 64, 3, stride=2, groups=4),
    ConvSpec(32, 32, 3, groups=32),  # DW (native: dw_conv.c)
    ConvSpec(32, 32, 3, stride=2, groups=32, shuffle_groups=4),  # DW after a shuffle, stride 2 (native: expanding)
    ConvSpec(16, 32, 1),  # PW
]


def test_the_native_kernel_is_a_candidate_for_every_depthwise_conv() -> None:
    for spec in (ConvSpec(32, 32, 3, groups=32), ConvSpec(32, 32, 5, stride=2, groups=32, shuffle_groups=4)):
        assert "native" in {tune.label(p) for p in tune.candidate_plans(spec, native=True)}
        assert "native" not in {tune.label(p) for p in tune.candidate_plans(spec, native=False)}


@pytest.fixture(autouse=True)
def _fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("IGCNAS_TUNE_DIR", str(tmp_path / "tune"))
    monkeypatch.setenv("IGCNAS_TUNE", "auto")
    tune._forget()
    _tune_cache._loaded.clear()
    yield
    tune._forget()
    _tune_cache._loaded.clear()


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.kind}-{s.in_channels}-{s.groups}")
def test_every_candidate_computes_the_reference_conv_and_its_gradients(spec: ConvSpec) -> None:
    torch.manual_seed(0)
    naive = SparseConv2d(spec)
    fast = FastSparseConv2d(spec)
    fast.load_state_dict(naive.state_dict())
    x = torch.randn(2, spec.in_channels, 9, 9).contiguous(memory_format=torch.channels_last)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref = naive(x1)
    ref.square().sum().backward()
    plans = tune.candidate_plans(spec, native=native_kernels_usable())
    assert plans[0].form == "reference" and len({tune.label(p) for p in plans}) == len(plans)
    for plan in plans:
        fast.weight.grad = None
        x2.grad = None
        out = fast.run_plan(x2, plan)
        out.square().sum().backward()
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4, msg=tune.label(plan))
        torch.testing.assert_close(fast.weight.grad, naive.weight.grad, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-3, atol=1e-3)


def test_the_first_use_measures_then_the_cache_answers(tmp_path: Path) -> None:
    spec = SPECS[0]
    conv = FastSparseConv2d(spec)
    x = torch.randn(4, 48, 8, 8).contiguous(memory_format=torch.channels_last)
    conv(x).sum().backward()
    (text, plan), = tune.choices().items()
    assert text == f"PWG 48->48 k1 s1 g2 sh24 8x8 float32 t{torch.get_num_threads()} train cl"
    assert plan.reason.startswith("measured here")
    (path,) = (tmp_path / "tune").glob("forms-*.json")
    data = json.loads(path.read_text())
    entry = data["choices"][text]
    assert entry["form"] == plan.form and set(entry["ms"]) >= {"reference", tune.label(plan)}
    assert data["fingerprint"]["threads"] == torch.get_num_threads() and data["fingerprint"]["torch"]
    # a new process (memory forgotten) reads the file instead of measuring
    tune._forget()
    _tune_cache._loaded.clear()
    calls: list[object] = []
    original = tune.measure
    tune.measure = lambda *a, **k: calls.append(a) or original(*a, **k)  # type: ignore[assignment]
    try:
        conv(x).sum().backward()
    finally:
        tune.measure = original  # type: ignore[assignment]
    assert calls == [] and tune.choices()[text].reason.endswith("cached)")
    assert tune.label(tune.choices()[text]) == tune.label(plan)  # a native PWG's kernel included


@pytest.mark.parametrize("kernel", ["tiles", "direct"])
def test_a_cached_native_pwg_keeps_its_kernel(kernel: str) -> None:
    plan = ConvPlan("native", True, "measured", kernel=kernel)  # type: ignore[arg-type]
    _tune_cache.store("TEST pwg kernel", plan, {"native": 1e-3}, threads=1, name=tune.label(plan))
    _tune_cache._loaded.clear()
    cached = _tune_cache.lookup("TEST pwg kernel", threads=1)
    assert cached is not None and (cached.form, cached.kernel) == ("native", kernel)
    assert tune.label(cached) == ("native/direct" if kernel == "direct" else "native")


def test_both_native_pwg_kernels_are_candidates_and_only_for_a_pwg() -> None:
    pwg = {tune.label(p) for p in tune.candidate_plans(SPECS[0], native=True)}
    assert {"native", "native/direct"} <= pwg
    assert "native/direct" not in {tune.label(p) for p in tune.candidate_plans(SPECS[1], native=True)}
    assert "native/direct" not in {tune.label(p) for p in tune.candidate_plans(SPECS[0], native=False)}


def test_another_thread_count_is_another_machine(tmp_path: Path) -> None:
    assert _tune_cache.cache_file(threads=1) != _tune_cache.cache_file(threads=2)
    assert _tune_cache.fingerprint(threads=1)["cpu_signature"] == _tune_cache.fingerprint(threads=2)["cpu_signature"]


def test_a_library_isa_cap_is_another_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    _tune_cache._fingerprint.cache_clear()
    before = _tune_cache.cache_file(threads=1)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN's convs (the reference form) run AVX2 code only
    _tune_cache._fingerprint.cache_clear()
    try:
        assert _tune_cache.fingerprint(threads=1)["library_isa"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"
        assert _tune_cache.cache_file(threads=1) != before
    finally:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
        _tune_cache._fingerprint.cache_clear()
    assert _tune_cache.cache_file(threads=1) == before


def test_choices_under_the_system_malloc_are_not_the_tuned_mallocs(monkeypatch: pytest.MonkeyPatch) -> None:
    from igcnas import _allocator

    spec = SPECS[0]
    x = torch.randn(2, 48, 8, 8).contiguous(memory_format=torch.channels_last)
    prior = select_plan(spec, "cpu", "auto")
    seen: list[str] = []

    def fake(spec: ConvSpec, shape: tuple[int, ...], plans: list, **k: object) -> dict[str, float]:
        seen.append(_tune_cache.malloc_regime())  # a page-faulting regime: the reference looks fastest
        return {tune.label(p): (0.5 if tune.label(p) == "reference" else 1.0) if seen[-1] == "system" else
                (2.0 if tune.label(p) == "reference" else 1.0) for p in plans}

    monkeypatch.setattr(tune, "measure", fake)
    monkeypatch.setattr(_allocator, "_status", "disabled by IGCNAS_MALLOC=system")
    system_file = _tune_cache.cache_file(threads=1)
    assert tune.tuned_plan(spec, x, grad=True, prior=prior).form == "reference"
    monkeypatch.setattr(_allocator, "_status", "tuned")  # the process tunes malloc: its choices are remeasured
    assert _tune_cache.cache_file(threads=1) != system_file
    assert _tune_cache.fingerprint(threads=1)["malloc"] == "tuned"
    assert tune.tuned_plan(spec, x, grad=True, prior=prior).form != "reference"
    assert seen == ["system", "tuned"]
    assert tune.tuned_plan(spec, x, grad=True, prior=prior).form != "reference" and len(seen) == 2


def test_off_keeps_the_table_and_cache_never_measures(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = SPECS[1]
    x = torch.randn(2, 48, 8, 8).contiguous(memory_format=torch.channels_last)
    prior = select_plan(spec, "cpu", "auto")
    for mode in ("off", "cache"):
        monkeypatch.setenv("IGCNAS_TUNE", mode)
        assert tune.tuned_plan(spec, x, grad=True, prior=prior) is prior
    assert tune.choices() == {}
    monkeypatch.setenv("IGCNAS_TUNE", "fastest")
    with pytest.raises(UserError, match=r"^IGCNAS_TUNE='fastest' is not one of auto, cache, off"):
        tune.tuned_plan(spec, x, grad=True, prior=prior)


def test_the_table_is_kept_unless_another_form_is_clearly_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = SPECS[0]
    x = torch.randn(2, 48, 8, 8).contiguous(memory_format=torch.channels_last)
    prior = select_plan(spec, "cpu", "auto")
    timings = {"reference": 1.0, "grouped": 0.99, "dense": 0.995, "native": 0.99}
    timings[tune.label(prior)] = 1.0
    monkeypatch.setattr(tune, "measure", lambda spec, shape, plans, **k: {tune.label(p): timings.get(
        tune.label(p), 1.0) for p in plans})
    assert tune.label(tune.tuned_plan(spec, x, grad=True, prior=prior)) == tune.label(prior)  # within the margin
    tune._forget()
    _tune_cache._loaded.clear()
    monkeypatch.setenv("IGCNAS_TUNE_DIR", str(Path(_tune_cache.cache_file(threads=1)).parent.parent / "other"))
    timings["reference"] = 0.5
    assert tune.tuned_plan(spec, x, grad=True, prior=prior).form == "reference"


def test_inference_and_training_are_measured_apart() -> None:
    conv = FastSparseConv2d(SPECS[2])
    x = torch.randn(2, 32, 8, 8).contiguous(memory_format=torch.channels_last)
    conv(x)
    with torch.no_grad():
        conv(x)
    modes = sorted(text.split()[-2] for text in tune.choices())
    assert modes == ["infer", "train"]


def test_a_module_memoises_its_plan_until_the_input_or_the_settings_change(monkeypatch: pytest.MonkeyPatch) -> None:
    conv = FastSparseConv2d(SPECS[0])
    x = torch.randn(2, 48, 8, 8).contiguous(memory_format=torch.channels_last)
    first = conv.plan_for(x)
    calls: list[object] = []
    original = tune.tuned_plan
    monkeypatch.setattr(tune, "tuned_plan", lambda *a, **k: calls.append(a) or original(*a, **k))
    assert conv.plan_for(x) is first and calls == []  # memoised: no signature built again
    conv.plan_for(torch.randn(2, 48, 6, 6).contiguous(memory_format=torch.channels_last))
    conv.plan_for(x.contiguous())  # another memory format
    with torch.no_grad():
        conv.plan_for(x)  # inference: another plan
    assert len(calls) == 3
    monkeypatch.setenv("IGCNAS_TUNE", "off")
    assert conv.plan_for(x) == select_plan(SPECS[0], "cpu", "auto", channels_last_input=True, grad=True,
                                           pixels=2 * 8 * 8)
    monkeypatch.setenv("IGCNAS_TUNE", "auto")
    conv.plan_for(x)
    tune._forget()  # the choices forgotten: the memo with them
    conv.plan_for(x)
    assert len(calls) == 5


def test_a_table_plan_in_cache_mode_is_not_memoised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IGCNAS_TUNE", "cache")  # an empty cache: the table's plan, until a choice is cached
    conv = FastSparseConv2d(SPECS[0])
    x = torch.randn(2, 48, 8, 8).contiguous(memory_format=torch.channels_last)
    calls: list[object] = []
    original = tune.tuned_plan
    monkeypatch.setattr(tune, "tuned_plan", lambda *a, **k: calls.append(a) or original(*a, **k))
    conv.plan_for(x)
    conv.plan_for(x)
    assert len(calls) == 2


@pytest.mark.parametrize(("rounds", "form", "calls"), [
    # a clear win is taken from one timing of every candidate
    ([{"reference": 1.0, "native": 0.5, "dense": 2.0}], "native", [3]),
    # a near win that does not hold when the two are timed again alone: the prior stays
    ([{"reference": 1.0, "native": 0.9, "dense": 2.0}, {"reference": 1.0, "native": 1.2},
      {"reference": 1.0, "native": 1.1}], "reference", [3, 2, 2]),
    # a near win that holds
    ([{"reference": 1.0, "native": 0.9, "dense": 2.0}, {"reference": 1.0, "native": 0.92},
      {"reference": 1.0, "native": 0.95}], "native", [3, 2, 2]),
    # the prior fastest, or tied with the fastest: kept without timing again
    ([{"reference": 1.0, "native": 1.0, "dense": 2.0}], "reference", [3]),
])
def test_a_near_win_over_the_prior_is_timed_again_before_it_is_taken(rounds: list[dict[str, float]], form: str,
                                                                   calls: list[int]) -> None:
    from igcnas.nn.plan import ConvPlan

    prior = ConvPlan("reference", True, "table")
    plans = [ConvPlan("native", True, "n"), ConvPlan("dense", True, "d")]
    asked: list[int] = []

    def seconds(forms: list[ConvPlan]) -> dict[str, float]:
        asked.append(len(forms))
        return {tune.label(p): rounds[len(asked) - 1][tune.label(p)] for p in forms}

    labels = {tune.label(p) for p in [prior, *plans]}
    assert {name for name in rounds[0]} == labels, "the test's timings name every candidate"
    chosen = tune.decide("TEST near win", threads=1, prior=prior, plans=lambda: list(plans), seconds=seconds)
    assert chosen.form == form and asked == calls
    cached = _tune_cache.lookup("TEST near win", threads=1)
    assert cached is not None and cached.form == form
