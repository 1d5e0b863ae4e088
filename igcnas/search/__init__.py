"""Budgeted multi-objective architecture search: Optuna embedded (default) or Ray Tune distributed.

Example:
    >>> from igcnas.search import SearchConfig, load_space, run_search, load_study
    >>> config = SearchConfig(trials=4, epochs=2, max_params=50_000)  # doctest: +SKIP
    >>> study = run_search(config)  # doctest: +SKIP
    >>> load_study(study)[["trial", "state", "accuracy", "params"]]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from igcnas.errors import UserError
from igcnas.search.config import (
    BACKENDS,
    OBJECTIVES,
    PRUNERS,
    SAMPLERS,
    SearchConfig,
    redact_url,
)
from igcnas.search.results import list_studies, load_study, study_info
from igcnas.search.search_space import SearchSpace, load_space
from igcnas.store import TrialRecord

__all__ = [
    "BACKENDS",
    "OBJECTIVES",
    "PRUNERS",
    "SAMPLERS",
    "SearchConfig",
    "SearchSpace",
    "TrialRecord",
    "list_studies",
    "load_space",
    "load_study",
    "redact_url",
    "run_search",
    "study_info",
]


def run_search(
    config: SearchConfig,
    *,
    space: SearchSpace | None = None,
    data: Any = None,
    train_fn: Callable[..., Any] | None = None,
) -> str:
    """Run (or resume) a search with ``config``; returns the study name (read it with :func:`load_study`).

    ``space`` defaults to ``load_space(config.space)``; ``data`` (a DataBundle) and ``train_fn`` replace the
    dataset loading and :func:`igcnas.train.train` (tests, notebooks). With ``config.workers`` > 1 (or None:
    one per GPU, else per physical core) the Optuna backend trains that many trials at once, in worker
    processes on the study's storage (:mod:`igcnas.search._workers`).

    Example:
        >>> name = run_search(SearchConfig(trials=3, epochs=2))  # doctest: +SKIP
    """
    space = space or load_space(config.space)
    if config.backend == "ray":
        from igcnas.search.ray_backend import run_ray

        return run_ray(config, space, data=data, train_fn=train_fn)
    from igcnas.search._workers import resolve_workers, run_workers
    from igcnas.search.optuna_backend import run_optuna

    workers = resolve_workers(config)
    if workers == 1:
        return run_optuna(config, space, data=data, train_fn=train_fn)
    if data is not None or train_fn is not None:
        raise UserError(f"workers: {workers} worker processes load the dataset and train themselves; pass "
                        "data/train_fn only with workers=1")
    return run_workers(config, space, workers)
