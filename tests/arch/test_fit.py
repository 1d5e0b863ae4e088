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
