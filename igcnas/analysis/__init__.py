"""Post-search analysis: the shared trials-table schema, Pareto fronts, hypervolume and front plots.

Example:
    >>> import pandas as pd
    >>> from igcnas.analysis import pareto_front, validate_trials_frame
    >>> trials = validate_trials_frame(pd.DataFrame({
    ...     "trial": [0, 1, 2], "state": ["complete", "complete", "pruned"],
    ...     "accuracy": [0.91, 0.88, 0.60], "params": [400_000, 150_000, 90_000],
    ...     "flops": [6e7, 2e7, 1e7], "epochs": [30, 30, 5], "max_epochs": [30, 30, 30]}))
    >>> pareto_front(trials)["trial"].tolist()
    [0, 1]
"""

from __future__ import annotations

from igcnas.analysis.pareto import (
    DEFAULT_OBJECTIVES,
    Objective,
    ObjectiveLike,
    candidate_mask,
    default_reference,
    filter_budget,
    front_hypervolume,
    hypervolume,
    nondominated_mask,
    pareto_front,
    parse_objectives,
)
from igcnas.analysis.plot import plot_front
from igcnas.analysis.schema import (
    COLUMN_DTYPES,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    TRIAL_COLUMNS,
    TRIAL_STATES,
    empty_trials_frame,
    validate_trials_frame,
)

__all__ = [
    "COLUMN_DTYPES",
    "DEFAULT_OBJECTIVES",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "TRIAL_COLUMNS",
    "TRIAL_STATES",
    "Objective",
    "ObjectiveLike",
    "candidate_mask",
    "default_reference",
    "empty_trials_frame",
    "filter_budget",
    "front_hypervolume",
    "hypervolume",
    "nondominated_mask",
    "pareto_front",
    "parse_objectives",
    "plot_front",
    "validate_trials_frame",
]
