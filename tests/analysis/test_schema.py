"""Tests of the shared trials-frame schema."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from igcnas.analysis.schema import (
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    TRIAL_COLUMNS,
    TRIAL_STATES,
    empty_trials_frame,
    validate_trials_frame,
)
from igcnas.errors import UserError


def _raw(**overrides: object) -> pd.DataFrame:
    """A small raw frame as a backend would build it, before validation."""
    data: dict[str, object] = {
        "trial": [0, 1, 2, 3],
        "state": ["COMPLETE", "pruned", "FAIL", "infeasible"],
        "accuracy": [0.91, 0.55, None, np.nan],
        "params": [250_000.0, 120_000, None, 9_000_000],
        "flops": [4e7, 2e7, None, 1e9],
        "epochs": [30, 3, 0, 0],
        "max_epochs": [30, 30, 30, 30],
        "design": ["PWG+DW+PWG", "GC+PW", None, "DW+PW"],
        "lr": [0.1, 0.05, 0.2, 0.1],
    }
    data.update(overrides)
    return pd.DataFrame(data)


def test_trial_columns_are_the_documented_order() -> None:
    assert TRIAL_COLUMNS == (
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
    assert set(REQUIRED_COLUMNS).isdisjoint(OPTIONAL_COLUMNS)
    assert set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS) == set(TRIAL_COLUMNS)


def test_empty_frame_has_columns_and_dtypes() -> None:
    frame = empty_trials_frame()
    assert list(frame.columns) == list(TRIAL_COLUMNS)
    assert len(frame) == 0
    assert frame["trial"].dtype == np.dtype("int64")
    assert isinstance(frame["state"].dtype, pd.CategoricalDtype)
    assert list(frame["state"].cat.categories) == list(TRIAL_STATES)
    assert frame["accuracy"].dtype == np.dtype("float64")
    assert frame["params"].dtype == pd.Int64Dtype()
    assert pd.api.types.is_string_dtype(frame["design"].dtype)


def test_empty_frame_survives_validation_unchanged() -> None:
    frame = empty_trials_frame()
    pd.testing.assert_frame_equal(validate_trials_frame(frame), frame)


def test_validate_coerces_and_adds_optional_columns() -> None:
    frame = validate_trials_frame(_raw())
    assert list(frame.columns) == [*TRIAL_COLUMNS, "lr"]
    assert frame["state"].tolist() == ["complete", "pruned", "failed", "infeasible"]
    assert frame["params"].dtype == pd.Int64Dtype()
    assert frame["params"].tolist()[:2] == [250_000, 120_000]
    assert frame["params"].isna().tolist() == [False, False, True, False]
    assert frame["flops"].iloc[3] == 1_000_000_000
    assert frame["design"].tolist() == ["PWG+DW+PWG", "GC+PW", "", "DW+PW"]
    assert frame["reason"].tolist() == [""] * 4
    assert frame["test_accuracy"].isna().all()
    assert math.isnan(frame["duration_s"].iloc[0])
    assert frame["lr"].tolist() == [0.1, 0.05, 0.2, 0.1]


def test_validate_is_idempotent_and_does_not_touch_input() -> None:
    raw = _raw()
    before = raw.copy()
    once = validate_trials_frame(raw)
    pd.testing.assert_frame_equal(raw, before)
    pd.testing.assert_frame_equal(validate_trials_frame(once), once)


def test_validate_keeps_index_labels() -> None:
    raw = _raw().set_axis([10, 11, 12, 13])
    assert validate_trials_frame(raw).index.tolist() == [10, 11, 12, 13]


def test_validate_maps_enum_like_states() -> None:
    frame = validate_trials_frame(_raw(state=["TrialState.COMPLETE", "TERMINATED", "error", "Running"]))
    assert frame["state"].tolist() == ["complete", "complete", "failed", "running"]


def test_missing_required_columns_are_named() -> None:
    with pytest.raises(UserError, match=r"missing required column\(s\) flops, max_epochs"):
        validate_trials_frame(_raw().drop(columns=["flops", "max_epochs"]))


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"state": ["complete", "done?", "failed", "pruned"]}, r"unknown state\(s\) 'done\?'"),
        ({"state": ["complete", None, "failed", "pruned"]}, r"'state': a state is missing"),
        ({"accuracy": [91.0, 0.5, None, None]}, r"'accuracy': 91.0 is outside \[0, 1\].*divide by 100"),
        ({"accuracy": [-0.1, 0.5, None, None]}, r"'accuracy': -0.1 is outside"),
        ({"params": [1.5, 2, 3, 4]}, r"'params': 1.5 is not a whole number"),
        ({"epochs": [-1, 2, 3, 4]}, r"'epochs': -1.0 is negative"),
        ({"flops": ["many", 2, 3, 4]}, r"'flops': 'many' is not a number"),
        ({"trial": [0, None, 2, 3]}, r"'trial': a trial number is missing"),
        ({"trial": [0, 1.5, 2, 3]}, r"'trial': 1.5 is not an integer"),
    ],
)
def test_bad_values_raise_user_error(overrides: dict[str, object], pattern: str) -> None:
    with pytest.raises(UserError, match=pattern):
        validate_trials_frame(_raw(**overrides))


def test_non_frame_input_is_a_user_error() -> None:
    with pytest.raises(UserError, match="expected a pandas DataFrame, got list"):
        validate_trials_frame([{"trial": 0}])
