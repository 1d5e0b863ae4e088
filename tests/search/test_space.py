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
            assert spec.stages[0].width in space.base_widths


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
    from igcnas.arch.spec import plan_block

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
        ({"layout": "mobile"}, ["space.yaml", "'layout'", "'mobile'", "cifar, imagenet"]),
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
