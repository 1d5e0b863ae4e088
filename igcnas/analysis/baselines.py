"""A study's front against its baselines: the best searched trial and the best baseline under one budget.

Example:
    >>> import pandas as pd
    >>> from igcnas.analysis.schema import validate_trials_frame
    >>> frame = validate_trials_frame(pd.DataFrame({
    ...     "trial": [0, 1, -1], "state": ["complete"] * 3, "accuracy": [0.91, 0.95, 0.93],
    ...     "params": [90_000, 200_000, 150_000], "flops": [1, 1, 1], "epochs": [3] * 3, "max_epochs": [3] * 3,
    ...     "baseline": [None, None, "IGC-L24M2-D20"]}))
    >>> c = compare_with_baselines(frame, max_params=156_000)
    >>> c["found_trial"], c["baseline"], round(c["delta_points"], 2), c["delta_params"]
    (0, 'IGC-L24M2-D20', -2.0, -60000)
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from igcnas.analysis.pareto import candidate_mask, filter_budget

__all__ = ["compare_with_baselines", "baseline_mask"]


def baseline_mask(frame: pd.DataFrame) -> pd.Series:
    """True on the rows of baselines (a non-empty ``baseline`` column)."""
    if "baseline" not in frame.columns:
        return pd.Series(False, index=frame.index)
    names = frame["baseline"]
    return names.notna() & (names.astype(str).str.len() > 0) & (names.astype(str) != "None")


def compare_with_baselines(frame: pd.DataFrame, *, max_params: float | None = None,
                           max_flops: float | None = None) -> dict[str, Any] | None:
    """The most accurate fully trained searched trial and baseline within the budget, and their differences.

    ``delta_points``: found minus baseline validation accuracy, in percentage points; ``delta_params``: found
    minus baseline params. None when the frame has no trained baseline within the budget; the ``found_*`` keys
    are None when no searched trial is.
    """
    usable = frame[candidate_mask(frame)]
    usable = filter_budget(usable, max_params=max_params, max_flops=max_flops)
    usable = usable[usable["accuracy"].notna()]
    is_baseline = baseline_mask(usable)
    baselines, found = usable[is_baseline], usable[~is_baseline]
    if baselines.empty:
        return None
    base = baselines.sort_values(["accuracy", "params"], ascending=[False, True], kind="stable").iloc[0]
    out: dict[str, Any] = {
        "baseline": str(base["baseline"]), "baseline_trial": int(base["trial"]),
        "baseline_accuracy": float(base["accuracy"]), "baseline_params": int(base["params"]),
        "found_trial": None, "found_accuracy": None, "found_params": None, "delta_points": None,
        "delta_params": None,
    }
    if not found.empty:
        best = found.sort_values(["accuracy", "params"], ascending=[False, True], kind="stable").iloc[0]
        out.update(found_trial=int(best["trial"]), found_accuracy=float(best["accuracy"]),
                   found_params=int(best["params"]),
                   delta_points=100.0 * (float(best["accuracy"]) - float(base["accuracy"])),
                   delta_params=int(best["params"]) - int(base["params"]))
    return out
