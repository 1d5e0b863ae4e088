"""The samplers both backends use: seeded per trial, constraints mirrored for the dashboard, and still found where
Ray searchers pickled before the move name them."""

from __future__ import annotations

import pickle
from typing import Any

import optuna
import pytest
from optuna.storages import InMemoryStorage

from igcnas.search import SearchConfig
from igcnas.search._samplers import make_sampler, mirror_constraints


@pytest.mark.parametrize("name", ["random", "tpe", "nsga2"])
def test_a_trials_random_draws_do_not_depend_on_the_worker_that_samples_it(name: str) -> None:
    def draw(trial: Any) -> tuple[Any, ...]:
        design = trial.suggest_categorical("design", ["GC+PWG", "DW+PW", "PW+DW+PW"])
        return design, trial.suggest_int(f"width.{design}", 8, 512), trial.suggest_float("x", 0.0, 1.0)

    config = SearchConfig(sampler=name, trials=8, objectives=("accuracy",))
    alone = optuna.create_study(sampler=make_sampler(config, 7), direction="maximize")
    expected = []
    for _ in range(4):  # the random start-up trials of TPE and NSGA-II too
        trial = alone.ask()
        expected.append(draw(trial))
        alone.tell(trial, 0.5)
    storage = InMemoryStorage()  # two workers on one storage, each with its own sampler, taking turns unevenly
    workers = [optuna.create_study(study_name="s", storage=storage, sampler=make_sampler(config, 7), direction="maximize",
                                   load_if_exists=True) for _ in range(2)]
    shared = []
    for worker in (0, 0, 1, 0):
        trial = workers[worker].ask()
        shared.append(draw(trial))
        workers[worker].tell(trial, 0.5)
    assert shared == expected
    other = optuna.create_study(sampler=make_sampler(config, 8), direction="maximize").ask()
    assert draw(other) != expected[0]  # the seed still matters
    sampler = make_sampler(config, 7)
    sampler.before_trial(alone, alone.trials[0])
    start_up = getattr(sampler, "_random_sampler", None)
    if start_up is not None:  # the start-up sampler's stream is not the sampler's own one replayed
        assert sampler._rng.rng.rand(4).tolist() != start_up._rng.rng.rand(4).tolist()


def test_the_sampler_classes_keep_their_old_names_for_searchers_pickled_before_they_moved() -> None:
    from igcnas.search import _samplers, optuna_backend

    for name in ("_RandomSampler", "_TPESampler", "_NSGAIISampler"):
        assert getattr(optuna_backend, name) is getattr(_samplers, name)
    for name in ("_RandomSampler", "_TPESampler", "_NSGAIISampler"):  # a pickle's reference by module and name
        old = pickle.loads(f"cigcnas.search.optuna_backend\n{name}\n.".encode())
        assert old is getattr(_samplers, name)


def test_named_constraints_are_mirrored_into_the_list_the_dashboard_reads() -> None:
    study = optuna.create_study(sampler=make_sampler(SearchConfig(sampler="random", trials=4), 0),
                                directions=["maximize", "minimize"])
    trial = study.ask()
    trial.set_constraint("max_params", 3.0)
    trial.set_constraint("max_flops", -1.0)
    study.tell(trial, [0.5, 10.0])  # the sampler's after_trial mirrors them
    frozen = study.trials[0]
    assert frozen.system_attrs["constraints"] == [-1.0, 3.0]  # by name: max_flops before max_params
    assert mirror_constraints(study, frozen) == [-1.0, 3.0]
