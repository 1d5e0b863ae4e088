from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from igcnas.arch import ArchSpec
from igcnas.cost import count, count_convention, fvcore_cost, layer_costs
from igcnas.errors import UserError
from igcnas.nn.network import build
from igcnas.zoo import (
    FAMILIES,
    ZOO,
    claim_checks,
    get_zoo,
    paper_figures,
    paper_row,
    zoo_names,
)
from igcnas.zoo.compare import chain_paths, stage_plans

GOLDEN_PATH = Path(__file__).with_name("golden_costs.json")
GOLDEN = json.loads(GOLDEN_PATH.read_text())
NAMES = list(ZOO)

# fvcore is re-run live on every entry (0.1-2 s each with one thread, ~12 s in all); the golden file, written by
# `python -m igcnas.zoo --write-golden tests/zoo/golden_costs.json`, holds fvcore's counts and the spec ids, so a
# change to a zoo spec or to the closed form shows up even where fvcore is not run.
def _test_input(spec: ArchSpec) -> tuple[int, int]:
    """Batch size and square side for the CPU forward/backward test.

    Every head is global-pooled, so the nets run at a reduced resolution (costs are counted at the true one):
    CIFAR nets at 16x16 (8x8 above 1 GFLOP), ImageNet nets at 32x32 (their last stage is then 1x1, so batch 2
    keeps BatchNorm's training statistics defined).
    """
    if spec.layout == "imagenet":
        return 2, 32
    return 2, spec.input_shape[1] // (4 if count(spec).flops > 1e9 else 2)


def test_registry_has_the_required_networks():
    required = {
        "RegConv-W16-D20", "IGC-L4M8-D20", "IGC-L24M2-D20", "IGC-L32M26-D20", "IGC-L32M26+Ident-D20",
        "Xception-C35-D20", "IGCV1-C48-D20", "IGCV2-C64-D20", "IGCV2*-C416-D20", "IGCV3-D-CIFAR", "IGCV3-W-CIFAR",
        "IGCV3-D-ImageNet", "IGCV3-W-ImageNet", "MobileNetV1-1.0-ImageNet", "MobileNetV2-ImageNet",
        "Fog-ShuffleNet-w560", "Fog-ResNet-bottleneck-w192", "Fog-ResNeXt-w192", "Fog-GC4+PWG32-w128",
        "Fog-PW+DW+PW-w400", "Fog-PWG100+DW+PWG2-w700",
    }
    assert required <= set(ZOO)
    assert 30 <= len(ZOO) <= 45
    assert {entry.family for entry in ZOO.values()} == set(FAMILIES)
    for name, entry in ZOO.items():
        assert entry.name == name == entry.spec.name
        assert entry.description and entry.counting


def test_get_zoo_is_case_insensitive_and_suggests_close_names():
    assert get_zoo("igcv3-d-cifar") is ZOO["IGCV3-D-CIFAR"]
    assert get_zoo("  MobileNetV2-ImageNet ") is ZOO["MobileNetV2-ImageNet"]
    with pytest.raises(UserError, match="did you mean.*IGC-L24M2-D20") as info:
        get_zoo("IGC-L24M2-D2")
    assert "known:" not in str(info.value)  # the close names, not the whole zoo
    with pytest.raises(UserError, match="known: RegConv-W16-D8"):
        get_zoo("no-such-net-at-all")


def test_zoo_names_filter_by_family():
    assert zoo_names("fog") == [n for n in NAMES if n.startswith("Fog-")]
    assert zoo_names() == NAMES
    with pytest.raises(UserError, match="--family"):
        zoo_names("resnet")


def test_paper_figures_come_from_package_data_and_every_key_resolves():
    rows = paper_figures()
    assert len(rows) == 162
    keys = {row["key"] for row in rows}
    for entry in ZOO.values():
        assert set(entry.paper_keys) <= keys, entry.name
    with pytest.raises(UserError, match="not in paper_figures.json"):
        paper_row("igcv9/none")


@pytest.mark.parametrize("name", NAMES)
def test_spec_round_trips_through_json(name):
    spec = ZOO[name].spec
    again = ArchSpec.from_json(spec.to_json())
    assert again == spec and again.id == spec.id


@pytest.mark.parametrize("name", NAMES)
def test_closed_form_equals_golden_fvcore_counts(name):
    spec = ZOO[name].spec
    cost = count(spec)
    assert GOLDEN[name] == {"params": cost.params, "flops": cost.flops, "spec_id": spec.id}
    rows = layer_costs(spec)
    assert sum(r.params for r in rows) == cost.params and sum(r.flops for r in rows) == cost.flops
    assert count_convention(spec, bn=True, fc=True, stem=True) == cost


def test_golden_file_lists_exactly_the_zoo():
    assert sorted(GOLDEN) == sorted(ZOO)


@pytest.mark.parametrize("name", NAMES)
def test_closed_form_equals_fvcore_live(name):
    spec = ZOO[name].spec
    assert count(spec) == fvcore_cost(spec)


@pytest.mark.parametrize("name", NAMES)
def test_builds_and_trains_one_step(name):
    spec = ZOO[name].spec
    torch.manual_seed(0)
    model = build(spec)
    naive = build(spec, impl="naive")
    assert naive.state_dict().keys() == model.state_dict().keys()
    assert sum(p.numel() for p in model.parameters()) == count(spec).params
    batch, side = _test_input(spec)
    x = torch.randn(batch, spec.input_shape[0], side, side)
    out = model(x)
    assert out.shape == (batch, spec.num_classes)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_naive_build_computes_the_same_function(name):
    spec = ZOO[name].spec
    torch.manual_seed(0)
    model = build(spec).eval()
    naive = build(spec, impl="naive").eval()
    naive.load_state_dict(model.state_dict())
    batch, side = _test_input(spec)
    x = torch.randn(batch, spec.input_shape[0], side, side)
    with torch.no_grad():
        torch.testing.assert_close(model(x), naive(x), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_block_satisfies_the_claimed_condition(name):
    entry = ZOO[name]
    checks = claim_checks(entry)
    assert len(checks) == len(entry.spec.stages)
    assert all(check.holds for check in checks), [c.to_dict() for c in checks if not c.holds]
    for check in checks:
        # the sparse chain reaches the standard convolution's channel field (k, k, C_in) of its input
        assert check.field.channels == check.in_channels if check.dense else check.field.channels < check.in_channels


def test_claims_are_not_vacuous():
    """A broken block fails its claim: IGC without the interleaving shuffle is neither strict nor dense."""
    from dataclasses import replace

    entry = ZOO["IGC-L24M2-D20"]
    unshuffled = replace(entry, spec=replace(entry.spec, block=replace(entry.spec.block, shuffle="none")))
    assert not any(c.holds for c in claim_checks(unshuffled))
    igcv3 = ZOO["IGCV3-D-CIFAR"]
    wrong_groups = replace(igcv3, claims="loose:4")
    assert not any(c.holds for c in claim_checks(wrong_groups))


@pytest.mark.parametrize("name", ["IGC-L24M2-D20", "IGCV2-C64-D20", "IGCV3-D-CIFAR", "Xception-C35-D20",
                                  "IGC-L4M8+Ident-D20", "MobileNetV2-CIFAR", "IGC-L40M2-NoDown"])
def test_merged_path_counts_equal_the_full_connectivity(name):
    from igcnas.space import connectivity, info_field

    for check, plan in zip(claim_checks(ZOO[name]), stage_plans(ZOO[name].spec), strict=True):
        full = connectivity(plan.chain)
        merged = chain_paths(plan.chain)
        group = plan.chain.in_channels // merged.shape[1]
        assert (full == merged.repeat(group, axis=1)).all()
        if ZOO[name].claim_span is None:
            assert check.field == info_field(plan.chain)


def test_test_inputs_reach_the_last_stage():
    for name in NAMES:
        spec = ZOO[name].spec
        batch, side = _test_input(spec)
        stride = math.prod(stage.stride for stage in spec.stages) * spec.stem.stride * (2 if spec.stem.pool else 1)
        assert side % stride == 0 and batch * (side // stride) ** 2 >= 2, name
