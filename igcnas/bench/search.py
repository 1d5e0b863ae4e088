"""Benchmark of the search itself: samplers at an equal trial count, pruning at an equal compute budget, overhead.

Runs, each in its own temporary study and SQLite storage, on one dataset loaded once:

- ``random``, ``tpe``, ``nsga2``: the three samplers, no pruning, ``trials`` trained trials of ``epochs`` epochs;
- ``nsga2+<pruner>`` (default ``pareto``): NSGA-II with pruning, given exactly the epochs the ``nsga2`` run
  trained (equal compute): it keeps sampling until that many epochs are spent, so it trains more (partly
  pruned) trials. The last trial is cut short (recorded ``pruned``) when it would overshoot the budget; if the
  sampler finds nothing new to train within its attempts, the run stops short (its ``epochs`` shows it). The
  search resumes its study in chunks of ``remaining epochs // epochs`` trials until the budget is spent; the
  samplers' start-up sizes depend on the chunk's trial count once ``trials`` exceeds 9 (NSGA-II population,
  TPE start-up trials: ``max(4, trials // 2)``), so keep ``trials <= 9`` for an exact like-for-like.

All three samplers start from the same seed and begin with random start-up trials (4 at ``trials <= 9``), so
their first trials coincide; they differ from then on.

Each row reports the hypervolume of the full-fidelity Pareto front (validation accuracy up, params down) against
one fixed reference point shared by every run, ``(accuracy 0, params max_params)``, divided by ``max_params``
(so 1.0 would be a 100 %-accurate network with no parameters), the seconds spent training (the train function,
minus the search's per-epoch callbacks: trial.json writes and pruning decisions) and in total (the whole search
call), and the per-trial overhead outside training (sampling, counting, building, bookkeeping, storage) as a
share of trial time: ``1 - train_s / total_s``.
"""

from __future__ import annotations

import importlib
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["bench_search", "SEARCH_BENCH_SAMPLERS", "TimedTrain"]

SEARCH_BENCH_SAMPLERS: tuple[str, ...] = ("random", "tpe", "nsga2")
"""Samplers compared at an equal trial count (no pruning)."""


class TimedTrain:
    """A ``train_fn`` for :func:`igcnas.search.run_search` that times training and counts epochs.

    ``train_s`` is the time inside :func:`igcnas.train.train` minus the time in the search's ``on_epoch``
    callback (``hook_s``, bookkeeping). With ``budget`` set, a trial is stopped (status ``pruned``) as soon as
    ``budget`` epochs have been trained in total.
    """

    def __init__(self, *, budget: int | None = None,
                 train_fn: Callable[..., Any] | None = None) -> None:
        self.budget = budget
        self.train_fn = train_fn
        self.train_s = 0.0
        self.hook_s = 0.0
        self.epochs = 0
        self.calls = 0

    def __call__(self, model: Any, data: Any, config: Any, *,
                 on_epoch: Callable[[Any], bool | None] | None = None, **kwargs: Any) -> Any:
        """Train like :func:`igcnas.train.train`, timing it."""
        from igcnas.train import train

        train_fn = self.train_fn or train

        def hook(metrics: Any) -> bool | None:
            self.epochs += 1
            started = time.perf_counter()
            stop = on_epoch(metrics) if on_epoch is not None else None
            self.hook_s += time.perf_counter() - started
            if self.budget is not None and self.epochs >= self.budget and int(metrics.epoch) < config.epochs:
                return True
            return stop

        self.calls += 1
        started = time.perf_counter()
        try:
            return train_fn(model, data, config, on_epoch=hook, **kwargs)
        finally:
            self.train_s += time.perf_counter() - started

    @property
    def net_train_s(self) -> float:
        """Seconds of training proper (callbacks excluded)."""
        return max(self.train_s - self.hook_s, 0.0)


def bench_search(
    *,
    data_dir: str | None = None,
    dataset: str = "cifar10",
    train_subset: int | None = 2000,
    trials: int = 8,
    epochs: int = 3,
    seed: int = 0,
    space: str = "igc_cifar",
    max_params: int = 50_000,
    pruners: tuple[str, ...] = ("pareto",),
    samplers: tuple[str, ...] = SEARCH_BENCH_SAMPLERS,
    trials_dir: str | None = None,
    num_threads: int = 1,
    progress: bool = False,
    train_fn: Callable[..., Any] | None = None,
) -> list[dict[str, Any]]:
    """Compare samplers (equal trials) and pruning (equal epochs); one row per run (see the module docstring).

    ``trials_dir`` is where the temporary studies go (a fresh temporary folder, removed afterwards, by default;
    with a folder given, each run gets a ``tempfile.mkdtemp`` folder inside it that is kept). Torch uses
    ``num_threads`` threads. ``train_fn`` replaces :func:`igcnas.train.train` (same signature), e.g. with a
    scripted learning curve that makes the pruning decisions independent of float rounding.

    Example (not run as a doctest: four searches, about 12 s; ``tests/bench`` runs this call):
        >>> rows = bench_search(dataset="digits", train_subset=None, trials=3, epochs=2)  # doctest: +SKIP
        >>> [row["run"] for row in rows]  # doctest: +SKIP
        ['random', 'tpe', 'nsga2', 'nsga2+pareto']
    """
    from igcnas.data import load_data
    from igcnas.errors import UserError
    from igcnas.search import SearchConfig, load_space

    for name, value in (("trials", trials), ("epochs", epochs), ("max_params", max_params)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"bench search: {name} {value!r} must be a positive integer")
    torch.set_num_threads(num_threads)
    # The first training imports torch._dynamo (via use_deterministic_algorithms, ~3 s): do it before any
    # timing, so the first run is not charged for it.
    importlib.import_module("torch._dynamo")
    search_space = load_space(space)
    data = load_data(dataset, data_dir=data_dir, train_subset=train_subset, seed=seed, progress=progress)
    base = SearchConfig(space=space, dataset=dataset, data_dir=data_dir, train_subset=train_subset, trials=trials,
                        epochs=epochs, max_params=max_params, objectives=("acc", "params"), seed=seed,
                        num_threads=num_threads, progress=progress,
                        prescreen=0)  # samplers and pruners compared alone; the tabular part measures prescreening
    with tempfile.TemporaryDirectory(prefix="igcnas-bench-search-") as scratch:
        root = Path(trials_dir or scratch)
        root.mkdir(parents=True, exist_ok=True)

        def run(name: str, config: SearchConfig, *, budget: int | None = None) -> dict[str, Any]:
            folder = tempfile.mkdtemp(prefix=f"{name.replace('+', '-')}-", dir=root)
            config = config.replace(trials_dir=folder, study=f"bench-{name.replace('+', '-')}")
            return _run_one(name, config, search_space, data, budget=budget, max_params=max_params,
                            train_fn=train_fn)

        rows = []
        for sampler in samplers:
            rows.append(run(sampler, base.replace(sampler=sampler, pruner="none")))
        reference = next((r for r in rows if r["sampler"] == "nsga2"), None)
        budget = int(reference["epochs"]) if reference else trials * epochs
        for pruner in pruners:
            rows.append(run(f"nsga2+{pruner}", base.replace(sampler="nsga2", pruner=pruner), budget=budget))
    return rows


def _run_one(name: str, config: Any, space: Any, data: Any, *, budget: int | None, max_params: int,
             train_fn: Callable[..., Any] | None) -> dict[str, Any]:
    """One search (several resumed calls when it runs to an epoch ``budget``); returns its row."""
    from igcnas.analysis import front_hypervolume
    from igcnas.errors import UserError
    from igcnas.search import load_study, run_search

    timer = TimedTrain(budget=budget, train_fn=train_fn)
    total_s = setup_s = 0.0
    study = ""

    def call(trials: int) -> str:
        nonlocal total_s, setup_s
        seen = _trial_starts(config)
        wall, started = time.time(), time.perf_counter()
        name = run_search(config.replace(trials=trials), space=space, data=data, train_fn=timer)
        total_s += time.perf_counter() - started
        starts = _trial_starts(config)[len(seen):]
        setup_s += max(min(starts) - wall, 0.0) if starts else 0.0
        return name

    if budget is None:
        study = call(config.trials)
    else:
        # Equal compute: keep adding trials until the budget is spent. Chunks of remaining // epochs trials
        # cannot overshoot it; the final single trial is cut short by the timer when it would.
        for _ in range(10 * budget):
            remaining = budget - timer.epochs
            if remaining <= 0:
                break
            before = timer.epochs
            try:
                study = call(max(remaining // config.epochs, 1))
            except UserError:
                if not study:
                    raise
                break  # the sampler found nothing new to train within --max-attempts: the row shows the shortfall
            if timer.epochs == before:
                break
    frame = load_study(study, trials_dir=config.trials_dir)
    hv = front_hypervolume(frame, ("accuracy:max", "params:min"), {"accuracy": 0.0, "params": float(max_params)})
    states = frame["state"].astype(str).value_counts().to_dict() if len(frame) else {}
    full = frame[(frame["state"] == "complete") & (frame["epochs"] >= config.epochs)] if len(frame) else frame
    train_s = timer.net_train_s
    trial_s = max(total_s - setup_s, 0.0)
    return {
        "run": name,
        "sampler": config.sampler_name(),
        "pruner": config.pruner,
        "trials": timer.calls,
        "complete": int(states.get("complete", 0)),
        "pruned": int(states.get("pruned", 0)),
        "infeasible": int(states.get("infeasible", 0)),
        "epochs": timer.epochs,
        "best_acc": round(float(full["accuracy"].max()), 4) if len(full) else math.nan,
        "hypervolume": round(hv / max_params, 4),
        "train_s": round(train_s, 1),
        "total_s": round(total_s, 1),
        "setup_s": round(setup_s, 1),
        "overhead_s_per_trial": round((trial_s - train_s) / max(timer.calls, 1), 3),
        "overhead_share": _share(trial_s - train_s, trial_s),
        "overhead_share_with_setup": _share(total_s - train_s, total_s),
    }


def _share(part: float, whole: float) -> float:
    """``part / whole`` clipped to [0, 1] (0 for an empty whole)."""
    return round(min(max(part / whole, 0.0), 1.0), 4) if whole > 0 else 0.0


def _trial_starts(config: Any) -> list[float]:
    """Start times (epoch seconds) of the study's trials in its storage, by trial number ([] before it exists)."""
    import optuna

    from igcnas.search.config import default_storage

    storage = config.storage or default_storage(config.trials_dir)
    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).is_file():
        return []  # not created yet (reading would create it, and spare the search its setup)
    try:
        study = optuna.load_study(study_name=config.study, storage=storage)
    except KeyError:
        return []
    return [t.datetime_start.timestamp() for t in study.get_trials(deepcopy=False) if t.datetime_start]
