from __future__ import annotations

import pytest

from igcnas.arch.fit import fit_budget, layout_spec
from igcnas.cli import main
from igcnas.cost import count
from igcnas.errors import UserError


@pytest.mark.parametrize(
    ("design", "kwargs"),
    [("DW+PW", {}), ("GC+PWG", {"groups": (8, 4)}), ("PWG+DW+PWG", {"groups": (2, None, 2)}), ("PW+DW+PW", {})],
)
def test_fit_is_widest_within_budget(design, kwargs):
    fit = fit_budget(design, max_params=300_000, **kwargs)
    assert fit.params <= 300_000
    assert fit.next_params is not None and fit.next_params > 300_000
    assert count(fit.spec).params == fit.params


def test_fit_flops_and_both():
    fit = fit_budget("DW+PW", max_flops=20_000_000)
    assert fit.flops <= 20_000_000 < fit.next_flops
    both = fit_budget("DW+PW", max_flops=20_000_000, max_params=30_000)
    assert both.params <= 30_000 and both.flops <= 20_000_000


def test_fit_budget_too_small_says_how_small_the_smallest_is():
    with pytest.raises(UserError, match="narrowest valid"):
        fit_budget("PWG+DW+PWG", max_params=100, groups=(2, None, 2))


def test_layout_imagenet_follows_fog_table1():
    spec = layout_spec("PW+DW+PW", 64, layout="imagenet")
    assert spec.input_shape == (3, 224, 224) and spec.num_classes == 1000
    assert [s.width for s in spec.stages] == [64, 128, 256, 512]
    assert [s.stride for s in spec.stages] == [1, 2, 2, 2]
    assert spec.stem.stride == 2 and spec.stem.pool


def test_fit_cli(capsys, tmp_path):
    assert main(["fit", "--design", "PWG+DW+PWG", "--max-params", "0.5M", "--groups", "2,-,2",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "PWG+DW+PWG" in out and (tmp_path / "arch.json").exists()


def test_widest_within_is_the_one_scan_of_fit_budget():
    from igcnas.arch.fit import widest_within

    fit = fit_budget("GC+PWG", max_params=200_000, groups=(8, 4))
    best, over = widest_within(lambda w: layout_spec("GC+PWG", w, groups=(8, 4)), 8, max_params=200_000,
                               max_flops=None)
    assert best is not None and over is not None
    assert (best.spec, best.width, best.params, over.width, over.params) == (
        fit.spec, fit.base_width, fit.params, fit.next_width, fit.next_params)
    # invalid widths (None or UserError) are skipped; a first valid width over budget comes back as `over`
    best, over = widest_within(lambda w: None if w < 24 else layout_spec("DW+PW", w), 8, max_params=1_000,
                               max_flops=None)
    assert best is None and over is not None and over.width == 24
    best, over = widest_within(lambda w: layout_spec("DW+PW", w), 8, max_params=None, max_flops=None, max_width=32)
    assert over is None and best is not None and best.width == 32


def test_layout_builders_agree():
    from igcnas.arch import ArchSpec, BlockSpec, KernelSpec
    from igcnas.arch.layout import layout_arch

    block = BlockSpec((KernelSpec("DW"), KernelSpec("PW")))
    assert layout_spec("DW+PW", 16, depths=(1, 2, 1)) == layout_arch(block, base_width=16, depths=(1, 2, 1))
    assert ArchSpec.simple("DW+PW", widths=(16, 32, 64), depths=(1, 2, 1)) == layout_arch(
        block, widths=(16, 32, 64), depths=(1, 2, 1))
    with pytest.raises(UserError, match="'mobile' is not a layout; use one of cifar, imagenet, mobilenet_cifar"):
        layout_arch(block, base_width=16, layout="mobile")


def test_budget_violations_names_the_overshoot():
    from igcnas.arch.fit import budget_violations

    values, reason = budget_violations(1_500, 2_000_000, max_params=1_000, max_flops=1_000_000)
    assert values == {"max_params": 500.0, "max_flops": 1_000_000.0}
    assert reason == "params 1.5k > budget 1k (+500, 50% over); flops 2M > budget 1M (+1M, 100% over)"
    assert budget_violations(900, 10, max_params=1_000, max_flops=None) == ({"max_params": -100.0}, "")


@pytest.mark.parametrize(
    ("design", "options", "message"),
    [
        ("FOO", {}, "unknown kernel kind 'FOO'"),
        ("PWG+DW+PWG", {"groups": (2, None)}, r"groups: 2 values for the 3 kernels of PWG\+DW\+PWG"),
        ("PWG+DW+PWG", {"bottleneck": -1.0}, "block.bottleneck: -1.0 must be a positive number"),
        ("PWG+DW+PWG", {"bottleneck": float("nan")}, "block.bottleneck: nan must be a positive number"),
        ("PWG+DW+PWG", {"bottleneck": float("inf")}, "block.bottleneck: inf must be a positive number"),
        ("PWG+DW+PWG", {"num_classes": 1}, "num_classes: 1 must be an integer >= 2"),
        ("PWG+DW+PWG", {"num_classes": 0}, "num_classes: 0 must be an integer >= 2"),
        ("GC+PWG", {"groups": (8192, 2)}, r"no valid width of GC\+PWG up to base width 4096 .*smaller group counts"),
    ],
)
def test_fit_budget_names_a_spec_mistake_not_the_budget(design, options, message):
    """A mistake no budget can fix is reported as itself, not as 'budget too small'."""
    with pytest.raises(UserError, match=message) as info:
        fit_budget(design, max_params=50_000, **options)
    assert "budget too small" not in str(info.value)


def test_widest_within_raises_the_mistake_when_no_width_is_valid():
    from igcnas.arch.fit import widest_within

    def broken(width: int) -> None:
        raise UserError(f"head.width: {-width} must be an integer >= 1")

    with pytest.raises(UserError, match="head.width: -64 must be an integer >= 1"):  # the last one
        widest_within(broken, 8, max_params=1_000, max_flops=None, max_width=64)
    # widths that raise before a valid one are still only skipped
    best, over = widest_within(lambda w: broken(w) if w < 24 else layout_spec("DW+PW", w), 8, max_params=None,
                               max_flops=None, max_width=32)
    assert best is not None and best.width == 32 and over is None
