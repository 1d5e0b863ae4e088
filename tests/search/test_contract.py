"""The search contract, for the samplers x pruners x backends of the registries.

Whatever the combination, a run trains ``--trials`` trials, leaves no trial running, records pruned trials with
fewer epochs than the schedule, keeps them and infeasible ones off the front, gives every fully trained trial
its weights, and agrees with the Optuna study behind it. The trainer is a fast stand-in with a learning curve
that differs per trial, so pruners have something to cut.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest

from igcnas.analysis import pareto_front
from igcnas.data import DataBundle, load_data
from igcnas.search import BACKENDS, PRUNERS, SAMPLERS, SearchConfig, load_study, run_search
from igcnas.store import fully_trained_mask
from igcnas.testing import replay_curve
from igcnas.train import TrainResult

EPOCHS = 3
BUDGET = 40_000
SMALL_SPACE = Path(__file__).with_name("fixtures") / "small_igc.yaml"
"""The backend contract is about backends: a small space keeps most candidates of the budget feasible."""


def _train(model: Any, data: Any, config: Any, *, on_epoch: Any, checkpoint_dir: Any, arch: Any,
           progress: bool) -> TrainResult:
    """A stand-in trainer: accuracy grows with the parameter count, rising over the epochs."""
    size = sum(p.numel() for p in model.parameters())
    final = 0.4 + 0.5 * min(1.0, size / BUDGET)
    curve = [final * epoch / config.epochs for epoch in range(1, config.epochs + 1)]
    return replay_curve(curve, on_epoch=on_epoch, checkpoint_dir=checkpoint_dir)


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_data("digits", train_subset=200, seed=0)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray instance for the module's Ray runs (run_search leaves an instance it did not start)."""
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield
    finally:
        ray.shutdown()


def _combinations() -> list[Any]:
    """Every sampler x pruner on the Optuna backend; on Ray (about 7 s a run) every pruner, each paired with another
    sampler, so every sampler and every pruner also runs on Ray (the sampler runs on the driver either way)."""
    optuna_runs = [(s, p, "optuna") for s in SAMPLERS for p in PRUNERS]
    ray_runs = [(SAMPLERS[i % len(SAMPLERS)], p, b) for b in BACKENDS if b != "optuna" for i, p in enumerate(PRUNERS)]
    assert {s for s, _, _ in ray_runs} == set(SAMPLERS) or len(PRUNERS) < len(SAMPLERS)
    # the Ray runs share the module's local instance: one pytest-xdist worker runs them (and every other Ray test)
    return optuna_runs + [pytest.param(*run, marks=pytest.mark.xdist_group("ray")) for run in ray_runs]


@pytest.mark.parametrize(("sampler", "pruner", "backend"), _combinations())
def test_every_sampler_pruner_and_backend_keeps_the_contract(sampler: str, pruner: str, backend: str,
                                                             tmp_path: Path, digits: DataBundle,
                                                             request: pytest.FixtureRequest) -> None:
    if backend == "ray":
        request.getfixturevalue("local_ray")
    config = SearchConfig(space=str(SMALL_SPACE), trials=4, epochs=EPOCHS, max_params=BUDGET, sampler=sampler, pruner=pruner,
                          backend=backend, seed=1, device="cpu", progress=False, train_subset=200,
                          trials_dir=str(tmp_path / "trials"))
    name = run_search(config, data=digits, train_fn=_train)
    frame = load_study(name, trials_dir=config.trials_dir)
    assert set(frame.backend) == {backend}
    assert not (frame.state == "running").any(), frame[["trial", "state", "reason"]]
    trained = frame[frame.state.isin(["complete", "pruned", "failed"]) & frame.reused_from.isna()]
    assert len(trained) >= config.trials and not (frame.state == "failed").any(), frame[["trial", "state", "reason"]]
    assert (frame[frame.state == "infeasible"].params > BUDGET).all()
    assert (frame[frame.state != "infeasible"].params <= BUDGET).all()
    assert (frame[frame.state == "pruned"].epochs < EPOCHS).all()
    full = frame[fully_trained_mask(frame) & frame.reused_from.isna()]
    assert len(full) >= 1
    for row in full.itertuples():
        assert (Path(config.trials_dir) / name / f"{row.trial:04d}" / "weights.safetensors").is_file()
    front = pareto_front(frame)
    assert len(front) >= 1 and fully_trained_mask(front).all() and (front.params <= BUDGET).all()

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{Path(config.trials_dir) / 'igcnas.db'}")
    by_number = {t.number: t for t in study.trials}
    assert study.metric_names == ["accuracy", "params"]
    for row in frame.itertuples():
        trial = by_number[int(row.trial)]
        assert trial.state.name == {"pruned": "PRUNED", "infeasible": "COMPLETE", "complete": "COMPLETE"}[row.state]
        if row.state == "infeasible":
            assert trial.constraints["max_params"] > 0 and trial.values[0] == 0.0
        if row.state == "complete":
            assert trial.constraints["max_params"] <= 0
            assert trial.values[0] == pytest.approx(row.accuracy) and trial.values[1] == row.params
    assert not pd.isna(frame.duration_s[frame.state != "infeasible"]).any()
