"""The Ray backend's searcher pickles (Tune ships it inside the Tuner and checkpoints it): no Ray cluster needed.

Optuna 5.1 gave its GA samplers (NSGA-II, igcnas's default for several objectives) a ``threading.Lock``; Ray Tune
then failed every Ray search with "cannot pickle '_thread.lock' object" until igcnas's samplers dropped and
recreated their locks when pickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from igcnas.search import SearchConfig, load_space

REPO = Path(__file__).resolve().parents[2]

pytest.importorskip("ray")


def _searcher(tmp_path: Path, sampler: str, study: str) -> object:
    """The searcher exactly as :func:`igcnas.search.ray_backend.run_ray` builds it (RDB storage, real space)."""
    from igcnas.search._ray_tune import Define, FidelityAwareOptunaSearch, objective_metrics
    from igcnas.search._samplers import make_sampler
    from igcnas.search._storage import open_storage
    from igcnas.search._study import directions
    from igcnas.search.config import default_storage
    from igcnas.search.runner import TrialContext
    from igcnas.store import StudyStore

    config = SearchConfig(space=str(REPO / "search_spaces/igc_cifar.yaml"), backend="ray", trials=8, epochs=2,
                          max_params=30_000, trials_dir=str(tmp_path / "trials"), device="cpu", progress=False,
                          sampler=sampler)
    space = load_space(config.space)
    store = StudyStore(config.trials_dir, study)
    storage = open_storage(default_storage(config.trials_dir), heartbeat=False)
    import optuna

    optuna.create_study(study_name=study, storage=storage, directions=directions(config), load_if_exists=True)
    return FidelityAwareOptunaSearch(
        Define(space, config.fill_budget),
        metric=objective_metrics(config),
        mode=[d for _, d in config.objective_columns()],
        sampler=make_sampler(config, config.seed),
        study_name=study,
        storage=storage,
        max_fidelity=config.epochs,
        ctx=TrialContext(config, space, store),
    )


def _finish(searcher: object, trial_id: str, number: int) -> None:
    searcher.on_trial_complete(trial_id, {"state": "complete", "epoch": 2, "val_acc": 0.1 * (number % 7),  # type: ignore[attr-defined]
                                          "params": float(1_000 + 97 * number)})


def _run(searcher: object, first: int, last: int) -> None:
    for i in range(first, last):
        config = searcher.suggest(f"t{i}")  # type: ignore[attr-defined]
        assert config and config["trial_number"] == i
        _finish(searcher, f"t{i}", i)


def _history(searcher: object) -> list[tuple[str, dict[str, object], object]]:
    """Each trial's state, parameters and NSGA-II generation (None for the other samplers)."""
    study: Any = searcher._ot_study  # type: ignore[attr-defined]
    key = getattr(study.sampler, "_get_generation_key", lambda: None)()
    return [(t.state.name, t.params, t.system_attrs.get(key)) for t in study.get_trials()]


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "random"])
def test_searcher_round_trips_through_pickle_and_keeps_searching(tmp_path: Path, sampler: str) -> None:
    """Pickled after a first NSGA-II generation (population 4) and one trial of the next, the searcher's copy
    (Tune's tuner.pkl) and one restored from its checkpoint (a pickle of its ``__dict__``) go on suggesting and
    telling trials exactly as the searcher itself does (same seeded sampler state, same generations)."""
    import ray.cloudpickle

    reference = _searcher(tmp_path, sampler, "reference")
    _run(reference, 0, 10)
    expected = _history(reference)
    assert all(state == "COMPLETE" for state, _, _ in expected)
    if sampler == "nsga2":  # pickled in the middle of generation 1, with the sampler's generation cache filled
        assert [generation for *_, generation in expected] == [0] * 4 + [1] * 4 + [2] * 2

    searcher = _searcher(tmp_path, sampler, "pickled")
    _run(searcher, 0, 5)
    clone = ray.cloudpickle.loads(ray.cloudpickle.dumps(searcher))  # how Tune ships it
    assert type(clone._ot_study.sampler) is type(searcher._sampler)  # type: ignore[attr-defined]
    assert clone._ot_study.sampler is clone._sampler  # one sampler, as before pickling
    _run(clone, 5, 10)
    assert _history(clone) == expected

    checkpointed = _searcher(tmp_path, sampler, "checkpointed")
    _run(checkpointed, 0, 5)
    checkpointed.save(str(tmp_path / "searcher.pkl"))  # type: ignore[attr-defined]  # pickle.dump(__dict__)
    restored = _searcher(tmp_path, sampler, "checkpointed")  # Tuner.restore: a new searcher, then restore()
    restored.restore(str(tmp_path / "searcher.pkl"))  # type: ignore[attr-defined]
    _run(restored, 5, 10)
    assert _history(restored) == expected


def test_a_sampler_pickled_under_optuna_5_0_goes_on_under_a_newer_optuna() -> None:
    """A Ray experiment checkpointed under Optuna 5.0 and resumed after an upgrade: its NSGA-II sampler's state has
    no generation cache and no lock (Optuna 5.1 added both); the unpickled sampler makes them and samples on."""
    import optuna

    from igcnas.search.optuna_backend import _NSGAIISampler

    sampler = _NSGAIISampler(seed=0, population_size=4)
    state = sampler.__getstate__()
    for key in [k for k in state if k == "_thread_lock" or k.startswith("_cached_")]:
        del state[key]  # what Optuna 5.0's NSGAIISampler pickled
    old = _NSGAIISampler.__new__(_NSGAIISampler)
    old.__setstate__(state)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=old)
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=9)
    key = old._get_generation_key()
    assert [t.system_attrs.get(key) for t in study.get_trials()] == [0] * 4 + [1] * 4 + [2]
