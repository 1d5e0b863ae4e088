"""Search-space YAML validation, sampling and spec ids."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from igcnas.errors import UserError
from igcnas.search.search_space import SearchSpace, load_space
from igcnas.space.chain import loose_complementary, strict_complementary

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "search_spaces").glob("*.yaml"))
SHAPE = (1, 8, 8)

optuna.logging.set_verbosity(optuna.logging.ERROR)

BASE = {
    "name": "tiny",
    "designs": ["GC+PWG", "DW+PW"],
    "base_widths": [8, 16],
    "depths": [1],
    "groups": [2, 4],
    "groups_rule": "free",
}


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _sample(space: SearchSpace, n: int, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.define(study.ask()) for _ in range(n)]


def test_shipped_spaces_load_and_build() -> None:
    assert {p.name for p in SHIPPED} >= {"igc_cifar.yaml", "fog_designs.yaml", "igcv3_mobile.yaml"}
    fog = SearchSpace.load(REPO / "search_spaces/fog_designs.yaml")
    assert set(fog.designs) == {"DW+PW", "GC+PWG", "PW+DW+PW", "PWG+DW+PWG"}
    for path in SHIPPED:
        space = SearchSpace.load(path)
        for params in _sample(space, 15):
            spec, _ = space.to_spec(params, input_shape=SHAPE, num_classes=10)
            assert spec.design == params["design"] and spec.input_shape == SHAPE
            assert spec.stem.width in space.base_widths  # the base width is the stem's on every layout


def test_same_params_give_the_same_spec_id() -> None:
    space = load_space("igc_cifar")  # a bare name looks in search_spaces/
    again = SearchSpace.load(REPO / "search_spaces/igc_cifar.yaml")
    ids = set()
    for params in _sample(space, 30, seed=1):
        a, _ = space.to_spec(dict(params), input_shape=SHAPE, num_classes=10)
        b, _ = again.to_spec(dict(reversed(list(params.items()))), input_shape=SHAPE, num_classes=10)
        assert a.id == b.id and a == b
        ids.add(a.id)
    assert len(ids) > 5  # and different params do give different networks


def test_complementary_rule_only_keeps_complementary_group_numbers() -> None:
    space = SearchSpace.load(REPO / "search_spaces/igc_cifar.yaml")
    from igcnas.arch.plan import plan_block

    checked = 0
    for params in _sample(space, 40, seed=2):
        spec, _ = space.to_spec(params, input_shape=SHAPE, num_classes=10)
        groups = [k.groups for k in spec.block.kernels if k.groups is not None]
        for s, stage in enumerate(spec.stages):
            chain = plan_block(spec, s, stage.width, first=False).chain
            assert strict_complementary(chain) or loose_complementary(chain, groups[0] if groups else 1)
            checked += 1
    assert checked


def test_define_works_through_rays_trial_captor() -> None:
    from ray.tune.search.optuna.optuna_search import _OptunaTrialSuggestCaptor

    space = SearchSpace.load(REPO / "search_spaces/igcv3_mobile.yaml")
    captor = _OptunaTrialSuggestCaptor(optuna.create_study().ask())
    params = space.define(captor)
    assert params == captor.captured_values
    _, overrides = space.to_spec(params, input_shape=SHAPE, num_classes=10)
    assert set(overrides) == {"lr", "weight_decay", "batch_size"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"colour": "red"}, ["space.yaml", "colour", "allowed keys", "designs"]),
        ({"layout": "mobile"}, ["space.yaml", "'layout'", "'mobile'", "cifar, imagenet, mobilenet_cifar, mobilenet"]),
        ({"layout": "mobilenet_cifar", "stages": 3, "relu": "all"}, ["'stages'", "mobilenet_cifar", "7 rows", "leave"]),
        ({"layout": "mobilenet_cifar", "relu": ["none", "all"]}, ["'relu'", "none", "linear", "spatial, first or all"]),
        ({"layout": "mobilenet_cifar", "relu": "all", "base_widths": [8, 30, 6]},
         ["'base_widths'", "6, 30 are not multiples of 4", "mobilenet_cifar", "MobileNetV2: 32"]),
        ({"designs": ["GC+GC"]}, ["space.yaml", "'designs'", "GC+GC", "'repeat'", "allowed values", "GC+PWG"]),
        ({"designs": ["PWG+DW"]}, ["'designs'", "'field'"]),
        ({"designs": ["CONV"]}, ["'designs'", "allowed values"]),
        ({"groups": [3]}, ["space.yaml", "'groups'", "3", "divide no base width", "allowed here"]),
        ({"bn": ["sometimes"]}, ["'bn'", "each, block, none"]),
        ({"relu": "everywhere"}, ["'relu'", "none, all, first, spatial"]),
        ({"identity": ["yes"]}, ["'identity'", "true, false"]),
        ({"depths": [0]}, ["'depths'", "integers >= 1"]),
        ({"groups_rule": "loose"}, ["'groups_rule'", "complementary, free"]),
        ({"train": {"lr": {"low": 0.2, "high": 0.1}}}, ["'train.lr'", "low <= high"]),
        ({"train": {"momentum": [0.9]}}, ["'train'", "momentum", "lr, weight_decay, batch_size"]),
    ],
)
def test_schema_errors_name_file_key_and_allowed_values(tmp_path: Path, change: dict, expected: list[str]) -> None:
    path = _write(tmp_path, {**BASE, **change})
    with pytest.raises(UserError) as info:
        SearchSpace.load(path)
    message = str(info.value)
    for text in expected:
        assert text in message, (text, message)


def test_missing_key_and_missing_file(tmp_path: Path) -> None:
    data = dict(BASE)
    del data["designs"]
    with pytest.raises(UserError, match=r"space\.yaml: missing key 'designs'"):
        SearchSpace.load(_write(tmp_path, data))
    with pytest.raises(UserError, match=r"--space: .*nope\.yaml is not a file"):
        SearchSpace.load(tmp_path / "nope.yaml")


def test_a_key_given_twice_and_broken_yaml_name_the_line(tmp_path: Path) -> None:
    twice = tmp_path / "twice.yaml"
    twice.write_text("name: a\nlayout: cifar\nlayout: imagenet\n")
    with pytest.raises(UserError, match=r"twice\.yaml: not valid YAML at line 3, column 1 \(key 'layout' is given "
                                        r"twice; keep one\)"):
        SearchSpace.load(twice)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: a\ndesigns: [GC+PWG,\n")
    with pytest.raises(UserError, match=r"broken\.yaml: not valid YAML at line 3, column 1 \("):
        SearchSpace.load(broken)


def test_complementary_without_any_valid_group_number(tmp_path: Path) -> None:
    # GC+PWG needs g | every width; g = 32 divides neither base width 8 nor 16 (the first stage's width)
    path = _write(tmp_path, {**BASE, "designs": ["GC+PWG"], "groups": [32], "groups_rule": "complementary"})
    with pytest.raises(UserError, match="complementary condition"):
        SearchSpace.load(path)


def test_smallest_spec_is_the_cheapest_sample() -> None:
    from igcnas.cost import count

    space = SearchSpace.load(REPO / "search_spaces/igc_cifar.yaml")
    _, smallest = space.smallest_spec(input_shape=SHAPE, num_classes=10)
    for params in _sample(space, 30, seed=3):
        spec, _ = space.to_spec(params, input_shape=SHAPE, num_classes=10)
        assert count(spec).params >= smallest


def test_fill_budget_widens_the_base_width_to_the_budget() -> None:
    from igcnas.cost import count

    space = load_space("igc_cifar")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=4))
    for _ in range(5):
        params = space.define(study.ask(), fill_budget=True)
        assert "base_width" not in params
        quantum = space.width_quantum(params)
        spec, overrides, note = space.fill_budget(params, input_shape=SHAPE, num_classes=10, max_params=20_000,
                                                  max_flops=None)
        width = spec.stem.width
        assert note == f"budget filling: base width {width}" and width % quantum == 0
        assert count(spec).params <= 20_000
        wider, _ = space.to_spec(params, input_shape=SHAPE, num_classes=10, base_width=width + quantum)
        assert count(wider).params > 20_000
        assert overrides == space.to_spec(params, input_shape=SHAPE, num_classes=10, base_width=width)[1]
        spec, _, note = space.fill_budget(params, input_shape=SHAPE, num_classes=10, max_params=10, max_flops=None)
        assert note == f"budget filling: even base width {quantum} is over budget" and spec.stem.width == quantum


def test_a_group_number_takes_only_the_base_widths_it_divides(tmp_path: Path) -> None:
    # g = 16 fits base width 16 (stages 16-32-64) but not 8: it is allowed, and sampled with base width 16 only
    import optuna

    path = _write(tmp_path, {**BASE, "designs": ["GC+PWG"], "groups": [2, 16], "groups_rule": "complementary"})
    space = SearchSpace.load(path)
    (plan,) = space.plans
    assert plan.choices == (2, 16)
    assert plan.widths_for((2,), 1.0) == (8, 16) and plan.widths_for((16,), 1.0) == (16,)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        params = space.define(trial)
        study.tell(trial, 0.0)
        g = params["groups.GC+PWG"]
        name = "base_width" if g == 2 else "base_width.GC+PWG.g16"
        assert set(trial.params) == set(params) and params[name] in plan.widths_for((g,), 1.0)
        seen.add((g, params[name]))
        space.to_spec(params, input_shape=SHAPE, num_classes=10)  # every sample builds
    assert seen == {(2, 8), (2, 16), (16, 16)}


# -- MobileNetV2 layouts ----------------------------------------------------------------------------------------
MBV2_DEPTHS = (1, 2, 3, 4, 3, 3, 1)
IGCV3_D_DEPTHS = (1, 4, 6, 8, 6, 6, 1)


@pytest.mark.parametrize(("layout", "suffix"), [("mobilenet_cifar", "CIFAR"), ("mobilenet", "ImageNet")])
def test_the_mobilenet_layouts_build_the_zoos_mobilenetv2_and_igcv3_at_base_width_32(layout: str, suffix: str) -> None:
    from igcnas.arch.layout import LAYOUT_DEFAULTS, layout_arch
    from igcnas.arch.spec import BlockSpec, KernelSpec
    from igcnas.cost import count
    from igcnas.nn.network import build
    from igcnas.zoo import ZOO

    mbv2 = BlockSpec((KernelSpec("PW"), KernelSpec("DW"), KernelSpec("PW")), bottleneck=6.0, relu_after=(0, 1))
    igcv3 = BlockSpec((KernelSpec("PWG", groups=2), KernelSpec("DW"), KernelSpec("PWG", groups=2)), bottleneck=6.0,
                      relu_after=(1,))
    spec = layout_arch(mbv2, base_width=32, depths=MBV2_DEPTHS, layout=layout)
    assert spec.id == ZOO[f"MobileNetV2-{suffix}"].spec.id
    assert layout_arch(mbv2, base_width=32, layout=layout).id == spec.id  # MobileNetV2's depths are the defaults
    igcv3_d = layout_arch(igcv3, base_width=32, depths=IGCV3_D_DEPTHS, layout=layout)
    assert igcv3_d.id == ZOO[f"IGCV3-D-{suffix}"].spec.id
    assert (spec.input_shape, spec.num_classes) == LAYOUT_DEFAULTS[layout][1:]
    half = layout_arch(mbv2, base_width=16, layout=layout)  # every width scales with the base width
    assert [s.width for s in half.stages] == [8, 12, 16, 32, 48, 80, 160] and half.head.width == 640
    assert sum(p.numel() for p in build(half).parameters()) == count(half).params


def test_the_mobilenet_layouts_say_which_base_widths_and_depths_they_take() -> None:
    from igcnas.arch.layout import layout_arch
    from igcnas.arch.spec import BlockSpec, KernelSpec

    block = BlockSpec((KernelSpec("DW"), KernelSpec("PW")))
    with pytest.raises(UserError, match=r"^base_width: 30 is not a multiple of 4, .*mobilenet_cifar.*use a multiple of 4"):
        layout_arch(block, base_width=30, layout="mobilenet_cifar")
    with pytest.raises(UserError, match=r"^depths: 3 values for the 7 rows of layout mobilenet; give one per row"):
        layout_arch(block, base_width=32, depths=(1, 1, 1), layout="mobilenet")
    with pytest.raises(UserError, match=r"^layout: 'mobile' is not a layout; use one of cifar, imagenet, mobilenet"):
        layout_arch(block, base_width=32, layout="mobile")
    spec = layout_arch(block, base_width=8, layout="mobilenet_cifar")  # a design without expansion: every row alike
    assert {s.block for s in spec.stages} == {None} and not spec.block.post_relu and spec.block.shortcut == "none"


MOBILENET_SPACES = [p for p in SHIPPED if yaml.safe_load(p.read_text()).get("layout", "").startswith("mobilenet")]


def test_a_shipped_space_is_on_a_mobilenet_layout() -> None:
    assert [p.stem for p in MOBILENET_SPACES] == ["igcv3_mobile"]


@pytest.mark.parametrize("path", MOBILENET_SPACES, ids=lambda p: p.stem)
def test_sampled_configurations_of_a_mobilenet_space_build_and_count(path: Path) -> None:
    import torch

    from igcnas.cost import count
    from igcnas.nn.network import build

    space = SearchSpace.load(path)
    assert space.stages == 7
    counts = []
    for index, params in enumerate(_sample(space, 12, seed=5)):
        space.check_params(params)
        spec, _ = space.to_spec(params, input_shape=(3, 32, 32), num_classes=10)
        assert len(spec.stages) == 7 and spec.head.width == 40 * spec.stem.width
        counts.append(count(spec).params)
        if index < 2:  # two of them as modules: the closed-form count is the module's, and it runs
            model = build(spec)
            assert sum(p.numel() for p in model.parameters()) == counts[-1]
            model.eval()
            with torch.no_grad():
                assert tuple(model(torch.zeros(1, 3, 32, 32)).shape) == (1, 10)
    assert len(set(counts)) > 6
    _, smallest = space.smallest_spec(input_shape=(3, 32, 32), num_classes=10)
    assert smallest <= min(counts) and smallest < 20_000 and max(counts) > 1_000_000  # the range stays ~20k .. 3M


def test_budget_filling_on_a_mobilenet_space_keeps_every_width_whole_and_grouped() -> None:
    from igcnas.cost import count

    space = load_space("igcv3_mobile")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=6))
    filled = 0
    for _ in range(6):
        params = space.define(study.ask(), fill_budget=True)
        quantum = space.width_quantum(params)
        spec, _, note = space.fill_budget(params, input_shape=(3, 32, 32), num_classes=10, max_params=1_000_000,
                                          max_flops=None)
        assert quantum % 4 == 0 and spec.stem.width % quantum == 0
        if count(spec).params > 1_000_000:  # deep rows: even the narrowest is over budget
            assert note == f"budget filling: even base width {quantum} is over budget"
            continue
        assert note == f"budget filling: base width {spec.stem.width}"
        wider, _ = space.to_spec(params, input_shape=(3, 32, 32), num_classes=10, base_width=spec.stem.width + quantum)
        assert count(wider).params > 1_000_000
        filled += 1
    assert filled


def test_auto_baselines_of_a_mobilenet_cifar_space_are_the_cifar_networks() -> None:
    from igcnas.search._baselines import resolve_baselines

    def names(layout: str) -> list[str]:
        return [b.name for b in resolve_baselines("auto", layout=layout, input_shape=(3, 32, 32), num_classes=10,
                                                  max_params=3_000_000, max_flops=None)]

    assert names("mobilenet_cifar") == names("cifar") and "MobileNetV2-CIFAR" in names("mobilenet_cifar")


@pytest.mark.parametrize("name", ["igc_cifar", "igcv3_mobile", "fog_designs"])
def test_every_shipped_space_has_candidates_near_any_budget_from_20k_to_3m(name: str) -> None:
    from igcnas.cost import count

    space = load_space(name)
    for budget in (20_000, 150_000, 1_000_000, 3_000_000):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
        best = 0
        for _ in range(30):  # what a search samples: budget filling fits the base width to the budget
            params = space.define(study.ask(), fill_budget=True)
            spec, _, _ = space.fill_budget(params, input_shape=(3, 32, 32), num_classes=10, max_params=budget,
                                           max_flops=None)
            params_count = count(spec).params
            if params_count <= budget:
                best = max(best, params_count)
        assert best >= 0.8 * budget, (name, budget, best)


def test_a_depth_multiplier_scales_the_mobilenet_rows() -> None:
    space = load_space("igcv3_mobile")
    assert space.depth_multipliers and not space.depths
    base = {"design": "PW+DW+PW", "bottleneck": 6, "base_width": 32, "bn": "each", "relu": "all", "identity": True,
            "lr": 0.1, "weight_decay": 4e-5, "batch_size": 128}
    depths = {m: tuple(s.depth for s in space.to_spec({**base, "depth_multiplier": m}, input_shape=(3, 32, 32),
                                                       num_classes=10)[0].stages) for m in (0.25, 1, 2)}
    assert depths == {0.25: (1,) * 7, 1: (1, 2, 3, 4, 3, 3, 1), 2: (1, 4, 6, 8, 6, 6, 1)}
    with pytest.raises(UserError, match="depth_multiplier = 3 is not allowed"):
        space.check_params({**base, "depth_multiplier": 3})


@pytest.mark.parametrize(("extra", "message"), [
    ({"layout": "mobilenet_cifar", "depths": [1], "depth_multipliers": [1]}, "'depths' and 'depth_multipliers' exclude"),
    ({"depth_multipliers": [1, 2]}, "'depth_multipliers' is for the mobilenet layouts"),
    ({"layout": "mobilenet_cifar", "depth_multipliers": [0]}, "'depth_multipliers': 0 is not allowed"),
    ({"layout": "mobilenet_cifar", "depth_multipliers": [0.25, 0.3]}, "0.25 and 0.3 give the same row depths"),
    ({"layout": "mobilenet_cifar", "depths": None}, "missing key 'depths' .*'depth_multipliers'"),
])
def test_bad_depth_multipliers_name_the_key(extra: dict, message: str) -> None:
    data = {"name": "x", "designs": ["DW+PW"], "base_widths": [8], "relu": "all", "depths": [1], **extra}
    data = {key: value for key, value in data.items() if value is not None}  # depths None: no depth key
    if "depth_multipliers" in extra and "depths" not in extra:
        del data["depths"]
    with pytest.raises(UserError, match=message):
        SearchSpace.from_dict(data)
