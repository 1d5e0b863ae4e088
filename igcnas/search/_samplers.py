"""The Optuna samplers and pruners both backends use (one place, so a study is sampled alike on both).

* :func:`make_sampler`: random, TPE or NSGA-II, each seeded per trial number (:func:`trial_seeds`: the worker
  that samples trial ``n`` does not matter) and each copying a trial's named constraints into the list
  optuna-dashboard reads (:func:`mirror_constraints`), so over-budget trials show as infeasible there.
* :func:`make_pruner`: the successive-halving or Hyperband pruner of the fidelity side study.

The sampler classes keep their names under :mod:`igcnas.search.optuna_backend` too: a Ray searcher pickled
before they moved here names them there.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from optuna.samplers import BaseSampler, NSGAIISampler, RandomSampler, TPESampler

from igcnas.search._fidelity import ETA
from igcnas.search.config import SearchConfig

__all__ = ["make_pruner", "make_sampler", "mirror_constraints", "trial_seeds"]

_NAMED_CONSTRAINT = "constraints:"
"""Prefix of the trial system attrs ``Trial.set_constraint(name, value)`` writes in Optuna 5."""
_CONSTRAINT_LIST = "constraints"
"""Trial system attr with the constraint values as one list: what Optuna's deprecated ``constraints_func`` writes
and the only one optuna-dashboard 0.21 reads (its trial's ``constraints``; a trial is feasible there when every
value is <= 0, so an empty list shows an over-budget COMPLETE trial as a feasible one)."""


def mirror_constraints(study: Any, trial: Any) -> list[float]:
    """Copy a running trial's named constraints into the ``constraints`` list; returns that list.

    The values are ordered by constraint name (``max_flops`` before ``max_params``). Optuna's samplers read both
    forms (``FrozenTrial.constraints`` merges them), so a mirrored trial counts each violation twice in their
    penalty sums; that scales every mirrored trial alike and changes no feasibility decision.
    """
    attrs = trial.system_attrs
    named = {key[len(_NAMED_CONSTRAINT):]: float(value) for key, value in attrs.items()
             if key.startswith(_NAMED_CONSTRAINT)}
    values = [named[key] for key in sorted(named)]
    if values and attrs.get(_CONSTRAINT_LIST) != values:
        study._storage.set_trial_system_attr(trial._trial_id, _CONSTRAINT_LIST, values)
    return values


class _MirrorConstraints(BaseSampler):
    """Sampler mixin: :func:`mirror_constraints` on every trial right before it is finished (``after_trial``).

    Both backends tell their trials through this sampler (the Optuna backend's ``study.optimize``, the Ray
    backend's OptunaSearch), wherever they set the constraints, so optuna-dashboard sees them on both.
    """

    def after_trial(self, study: Any, trial: Any, state: Any, values: Sequence[float] | None) -> None:
        mirror_constraints(study, trial)
        super().after_trial(study, trial, state, values)

    # The Ray backend's searcher is pickled (Tune sends it around and checkpoints it), and with it its study and
    # sampler. Optuna 5.1's GA samplers (NSGA-II) hold a ``threading.Lock`` (``_thread_lock``, guarding their
    # generation cache), which cannot be pickled: every lock attribute travels as a placeholder and is made anew.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key, value in state.items():
            if isinstance(value, _LOCK_TYPES):
                state[key] = _LockPlaceholder(isinstance(value, _RLOCK_TYPE))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = {key: value.make() if isinstance(value, _LockPlaceholder) else value for key, value in state.items()}
        if callable(getattr(type(self), "_sync_generation_cache", None)):  # Optuna >= 5.1 GA samplers
            # rebuilt from the study on first use; a sampler pickled under Optuna 5.0 (a Ray experiment resumed
            # after an upgrade) had no cache and no lock at all
            state.update(_cached_study_id=None, _cached_generation=0, _cached_generation_numbers=[],
                         _cached_unfinished_numbers=[], _cached_unseen_trial_start=0)
            state.setdefault("_thread_lock", threading.Lock())
        self.__dict__.update(state)


_RLOCK_TYPE = type(threading.RLock())
_LOCK_TYPES = (type(threading.Lock()), _RLOCK_TYPE)


class _LockPlaceholder:
    """What a sampler's lock pickles as (:class:`_MirrorConstraints`)."""

    def __init__(self, reentrant: bool) -> None:
        self.reentrant = reentrant

    def make(self) -> Any:
        return threading.RLock() if self.reentrant else threading.Lock()


def trial_seeds(seed: int, number: int) -> tuple[int, int]:
    """The two seeds of trial ``number``'s draws in a study sampled with ``seed`` (independent of the worker):
    one for the sampler's own generator, one for its start-up random sampler's.

    Two, not one: NSGA-II draws its crossover decision from the first and the parameters it leaves out from the
    second, so the same seed in both would tie each value to that decision.

    Example:
        >>> a, b = trial_seeds(0, 5)
        >>> (a, b) == trial_seeds(0, 5), a != b, (a, b) != trial_seeds(0, 6)
        (True, True, True)
    """
    own, start_up = np.random.SeedSequence([seed, number]).generate_state(2)
    return int(own), int(start_up)


class _SeedPerTrial(BaseSampler):
    """Sampler mixin: the random draws of trial ``n`` are seeded by (seed, ``n``), not by what came before.

    So the worker that happens to sample trial ``n`` does not matter: a random search trains the same
    candidates with ``--workers 1`` as with ``--workers 4``, and so do TPE's and NSGA-II's random start-up trials.
    (Their later, model-based trials still depend on which trials had finished.) Each Optuna sampler keeps its
    draws in a ``LazyRandomState`` (``_rng``, and ``_random_sampler._rng`` for its start-up draws), each reseeded
    here with its own seed (:func:`trial_seeds`), in place since NSGA-II's operators hold a reference to it.
    """

    def __init__(self, *args: Any, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, seed=seed, **kwargs)  # type: ignore[call-arg]
        self._igcnas_seed = seed

    def before_trial(self, study: Any, trial: Any) -> None:
        base = getattr(self, "_igcnas_seed", None)  # None: unseeded, or pickled before this mixin existed
        if base is not None:
            owners = (self, getattr(self, "_random_sampler", None))
            for owner, seed in zip(owners, trial_seeds(base, trial.number), strict=True):
                state = getattr(owner, "_rng", None)
                if state is not None:
                    state.rng.seed(seed)
        super().before_trial(study, trial)


class _RandomSampler(_MirrorConstraints, _SeedPerTrial, RandomSampler):
    """RandomSampler seeded per trial, whose trials' constraints optuna-dashboard shows."""


class _TPESampler(_MirrorConstraints, _SeedPerTrial, TPESampler):
    """TPESampler seeded per trial, whose trials' constraints optuna-dashboard shows."""


class _NSGAIISampler(_MirrorConstraints, _SeedPerTrial, NSGAIISampler):
    """NSGAIISampler seeded per trial, whose trials' constraints optuna-dashboard shows."""


def make_sampler(config: SearchConfig, seed: int) -> Any:
    """The Optuna sampler of ``config`` (seeded per trial from ``seed``); it mirrors constraints for the dashboard."""
    name = config.sampler_name()
    if name == "random":
        return _RandomSampler(seed=seed)
    if name == "tpe":
        return _TPESampler(seed=seed, multivariate=True, constant_liar=True,
                           n_startup_trials=max(4, min(10, config.trials // 2)))
    return _NSGAIISampler(seed=seed, population_size=max(4, min(20, config.trials // 2)))


def make_pruner(config: SearchConfig) -> Any:
    """The Optuna pruner of the fidelity side study (None for --pruner none or pareto)."""
    import optuna

    if config.pruner == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=ETA)
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.epochs, reduction_factor=ETA)
    return None  # none, or pareto (our own rung bookkeeping in the main study's user_attrs)
