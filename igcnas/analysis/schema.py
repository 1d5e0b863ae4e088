"""The one trials-table schema shared by every study, whichever backend (Optuna or Ray Tune) ran it.

Every search backend turns its trials into a :class:`pandas.DataFrame` with the columns of
:data:`TRIAL_COLUMNS` (in that order) and passes it through :func:`validate_trials_frame`, so the analysis
code (Pareto fronts, hypervolume, plots, reports) never has to know where a study came from.

Column meanings and dtypes:

============== ============ ==============================================================================
column         dtype        meaning
============== ============ ==============================================================================
trial          int64        trial number inside its study (required, never missing)
state          category     one of :data:`TRIAL_STATES` (required)
accuracy       float64      validation accuracy in ``[0, 1]`` at the last trained epoch; NaN if none (required)
test_accuracy  float64      test accuracy in ``[0, 1]``; NaN when not measured
params         Int64        parameter count; ``<NA>`` when unknown, e.g. a failed build (required)
flops          Int64        FLOPs of one forward pass at the study's input size; ``<NA>`` if unknown (required)
epochs         Int64        epochs actually trained (the fidelity reached); ``<NA>`` if unknown (required)
max_epochs     Int64        epochs a fully trained trial gets in this study (required)
spec_id        str          stable id of the architecture spec (hash), ``""`` if unknown
design         str          chain of sparse kernels, e.g. ``"PWG+DW+PWG"``
widths         str          stage widths joined by ``-``, e.g. ``"64-128-256"``
depths         str          blocks per stage joined by ``-``, e.g. ``"2-2-2"``
arch_path      str          path of the trial's ``arch.json``, ``""`` if none was written
duration_s     float64      wall-clock seconds the trial took; NaN if unknown
backend        str          ``"optuna"``, ``"ray"``, ...
study          str          study name
reason         str          why a trial failed or is infeasible; ``""`` otherwise
============== ============ ==============================================================================

The integer columns use pandas' nullable ``Int64`` dtype so that failed or infeasible trials can leave them
unknown (``<NA>``) without turning them into floats. Columns outside the schema (e.g. searched
hyper-parameters) are kept, after the schema columns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from igcnas.errors import UserError

__all__ = [
    "TRIAL_COLUMNS",
    "TRIAL_STATES",
    "REQUIRED_COLUMNS",
    "OPTIONAL_COLUMNS",
    "COLUMN_DTYPES",
    "empty_trials_frame",
    "validate_trials_frame",
]

TRIAL_COLUMNS: tuple[str, ...] = (
    "trial",
    "state",
    "accuracy",
    "test_accuracy",
    "params",
    "flops",
    "epochs",
    "max_epochs",
    "spec_id",
    "design",
    "widths",
    "depths",
    "arch_path",
    "duration_s",
    "backend",
    "study",
    "reason",
)
"""Schema columns, in order."""

TRIAL_STATES: tuple[str, ...] = ("complete", "pruned", "infeasible", "failed", "running", "screened")
"""Allowed values of the ``state`` column (the categories of its dtype, in this order)."""

REQUIRED_COLUMNS: tuple[str, ...] = ("trial", "state", "accuracy", "params", "flops", "epochs", "max_epochs")
"""Columns a frame must have; :func:`validate_trials_frame` raises :class:`UserError` naming any missing."""

_FLOAT_COLUMNS: tuple[str, ...] = ("accuracy", "test_accuracy", "duration_s")
_COUNT_COLUMNS: tuple[str, ...] = ("params", "flops", "epochs", "max_epochs")
_STR_COLUMNS: tuple[str, ...] = (
    "spec_id",
    "design",
    "widths",
    "depths",
    "arch_path",
    "backend",
    "study",
    "reason",
)
_FRACTION_COLUMNS: tuple[str, ...] = ("accuracy", "test_accuracy")

OPTIONAL_COLUMNS: dict[str, Any] = {
    "test_accuracy": math.nan,
    "spec_id": "",
    "design": "",
    "widths": "",
    "depths": "",
    "arch_path": "",
    "duration_s": math.nan,
    "backend": "",
    "study": "",
    "reason": "",
}
"""Columns :func:`validate_trials_frame` adds when absent, with their fill value."""

_STATE_DTYPE = pd.CategoricalDtype(categories=list(TRIAL_STATES), ordered=False)

COLUMN_DTYPES: dict[str, Any] = {
    "trial": np.dtype("int64"),
    "state": _STATE_DTYPE,
    **{name: np.dtype("float64") for name in _FLOAT_COLUMNS},
    **{name: pd.Int64Dtype() for name in _COUNT_COLUMNS},
    **{name: str for name in _STR_COLUMNS},
}
"""Target dtype per column (``str`` columns become pandas' default string dtype)."""

# Names other tools use for the same states (Optuna's FAIL, Ray's ERROR/TERMINATED, ...).
_STATE_ALIASES: Mapping[str, str] = {
    "completed": "complete",
    "terminated": "complete",
    "success": "complete",
    "fail": "failed",
    "error": "failed",
    "errored": "failed",
    "prune": "pruned",
    "stopped": "pruned",
    "early_stopped": "pruned",
    "pending": "running",
    "waiting": "running",
}

assert set(COLUMN_DTYPES) == set(TRIAL_COLUMNS)
assert set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS) == set(TRIAL_COLUMNS)


def empty_trials_frame() -> pd.DataFrame:
    """Return a trials frame with no rows, the schema's columns in order and their dtypes.

    Example:
        >>> frame = empty_trials_frame()
        >>> list(frame.columns) == list(TRIAL_COLUMNS), len(frame)
        (True, 0)
    """
    columns: dict[str, pd.Series] = {}
    for name in TRIAL_COLUMNS:
        dtype = COLUMN_DTYPES[name]
        if dtype is str:
            columns[name] = pd.Series([], dtype=object).astype(str)
        else:
            columns[name] = pd.Series([], dtype=dtype)
    return pd.DataFrame(columns)


def validate_trials_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Check a trials frame against the schema and return a copy with coerced dtypes and ordered columns.

    Missing optional columns are added with their fill value (see :data:`OPTIONAL_COLUMNS`); missing
    required columns, unknown states, accuracies outside ``[0, 1]``, negative or fractional counts raise
    :class:`~igcnas.errors.UserError` naming the column, the bad value and the fix. State names are
    case-insensitive and common aliases from other tools (``FAIL``, ``ERROR``, ``TERMINATED``) are mapped.

    Example:
        >>> raw = pd.DataFrame({"trial": [0, 1], "state": ["COMPLETE", "fail"], "accuracy": [0.91, None],
        ...                     "params": [250_000, None], "flops": [40_000_000, None],
        ...                     "epochs": [30, 0], "max_epochs": [30, 30]})
        >>> frame = validate_trials_frame(raw)
        >>> list(frame["state"]), frame["params"].dtype.name, frame["design"].tolist()
        (['complete', 'failed'], 'Int64', ['', ''])
    """
    if not isinstance(df, pd.DataFrame):
        raise UserError(
            f"trials frame: expected a pandas DataFrame, got {type(df).__name__} "
            "(build one with pandas.DataFrame(records))"
        )
    missing = [name for name in REQUIRED_COLUMNS if name not in df.columns]
    if missing:
        raise UserError(
            f"trials frame: missing required column(s) {', '.join(missing)}; "
            f"a trials frame needs {', '.join(REQUIRED_COLUMNS)} "
            f"(it has {', '.join(map(str, df.columns)) or 'no columns'})"
        )
    out = df.copy()
    for name, fill in OPTIONAL_COLUMNS.items():
        if name not in out.columns:
            out[name] = fill

    out["trial"] = _coerce_trial(out["trial"])
    out["state"] = _coerce_state(out["state"])
    for name in _FLOAT_COLUMNS:
        out[name] = _coerce_float(out[name], name)
    for name in _FRACTION_COLUMNS:
        _check_fraction(out[name], name)
    for name in _COUNT_COLUMNS:
        out[name] = _coerce_count(out[name], name)
    for name in _STR_COLUMNS:
        out[name] = _coerce_str(out[name])

    extra = [name for name in out.columns if name not in TRIAL_COLUMNS]
    return out.loc[:, [*TRIAL_COLUMNS, *extra]]


def _numeric(series: pd.Series, name: str, what: str) -> pd.Series:
    """Convert a column to float64, raising UserError on a value that is not a number."""
    try:
        return pd.to_numeric(series, errors="raise").astype("float64")
    except (ValueError, TypeError):
        converted = pd.to_numeric(series, errors="coerce")
        bad = series[converted.isna() & series.notna()]
        example = bad.iloc[0] if len(bad) else series.iloc[0]
        raise UserError(f"trials frame column {name!r}: {example!r} is not a number (give {what})") from None


def _coerce_trial(series: pd.Series) -> pd.Series:
    """Coerce the trial column to int64 (no missing values allowed)."""
    values = _numeric(series, "trial", "an integer trial number")
    if values.isna().any():
        raise UserError(
            "trials frame column 'trial': a trial number is missing (every row needs one, e.g. 0, 1, 2)"
        )
    _check_integral(values, "trial", "an integer trial number")
    return values.astype("int64")


def _coerce_state(series: pd.Series) -> pd.Series:
    """Coerce the state column to the schema's categorical dtype (case-insensitive, aliases mapped)."""
    if series.isna().any():
        raise UserError(
            f"trials frame column 'state': a state is missing (give one of {', '.join(TRIAL_STATES)})"
        )
    text = series.astype(str).str.strip().str.lower()
    if len(text):
        # Accept enum reprs such as "TrialState.COMPLETE".
        text = text.str.rsplit(".", n=1).str[-1]
    text = text.map(lambda value: _STATE_ALIASES.get(value, value))
    unknown = sorted(set(text) - set(TRIAL_STATES))
    if unknown:
        raise UserError(
            f"trials frame column 'state': unknown state(s) {', '.join(map(repr, unknown))}; "
            f"use one of {', '.join(TRIAL_STATES)}"
        )
    return pd.Series(pd.Categorical(text, dtype=_STATE_DTYPE), index=series.index)


def _coerce_float(series: pd.Series, name: str) -> pd.Series:
    """Coerce a column to float64 (missing values become NaN)."""
    return _numeric(series, name, "a number or leave it empty")


def _check_fraction(series: pd.Series, name: str) -> None:
    """Reject accuracies outside [0, 1] (the usual mistake is percentages)."""
    finite = series[np.isfinite(series.to_numpy(dtype=float))]
    outside = finite[(finite < 0.0) | (finite > 1.0)]
    if len(outside):
        value = float(outside.iloc[0])
        hint = " — it looks like a percentage; divide by 100" if 1.0 < value <= 100.0 else ""
        raise UserError(
            f"trials frame column {name!r}: {value!r} is outside [0, 1]{hint} (accuracy is a fraction, e.g. 0.93)"
        )


def _check_integral(values: pd.Series, name: str, what: str) -> None:
    """Raise UserError if a float column holds a non-integral or infinite value."""
    known = values.dropna()
    arr = known.to_numpy(dtype=float)
    bad = ~np.isfinite(arr) | (arr != np.round(arr))
    if bad.any():
        raise UserError(f"trials frame column {name!r}: {float(arr[bad][0])!r} is not {what}")


def _coerce_count(series: pd.Series, name: str) -> pd.Series:
    """Coerce a count column to nullable Int64 (non-negative integers or <NA>)."""
    values = _numeric(series, name, "a non-negative integer or leave it empty")
    _check_integral(values, name, "a whole number (counts are integers)")
    negative = values[values < 0]
    if len(negative):
        raise UserError(
            f"trials frame column {name!r}: {float(negative.iloc[0])!r} is negative (counts are >= 0)"
        )
    return values.round().astype(pd.Int64Dtype())


def _coerce_str(series: pd.Series) -> pd.Series:
    """Coerce a text column to strings, missing values becoming ''."""
    filled = series.astype(object).where(series.notna(), "")
    return filled.map(str).astype(str)
