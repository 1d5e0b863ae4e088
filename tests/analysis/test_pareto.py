"""Tests of Pareto fronts, hypervolume and budget filters, checked against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igcnas.analysis.pareto import (
    Objective,
    candidate_mask,
    default_reference,
    filter_budget,
    front_hypervolume,
    hypervolume,
    nondominated_mask,
    pareto_front,
    parse_objectives,
)
from igcnas.errors import UserError

STATES = ["complete", "pruned", "infeasible", "failed", "running"]
COLUMNS = ["accuracy", "params", "flops", "duration_s"]


# ---------------------------------------------------------------- brute-force references


def brute_nondominated(points: np.ndarray) -> np.ndarray:
    """O(n^2) reference: rows no other row dominates (minimisation)."""
    n = len(points)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        for j in range(n):
            if i != j and np.all(points[j] <= points[i]) and np.any(points[j] < points[i]):
                keep[i] = False
                break
    return keep


def brute_front_labels(
    df: pd.DataFrame, objectives: list[tuple[str, str]], *, feasible_only: bool, complete_only: bool
) -> set[object]:
    """Index labels of the front computed row by row from the definitions."""
    rows = []
    for label, row in df.iterrows():
        if complete_only and (row["state"] != "complete" or not row["epochs"] >= row["max_epochs"]):
            continue
        if feasible_only and row["state"] in ("infeasible", "failed"):
            continue
        vector = [(-1.0 if d == "max" else 1.0) * float(row[c]) for c, d in objectives]
        if not np.all(np.isfinite(vector)):
            continue
        rows.append((label, vector))
    points = np.array([v for _, v in rows], dtype=float).reshape(len(rows), len(objectives))
    keep = brute_nondominated(points)
    return {label for (label, _), k in zip(rows, keep, strict=True) if k}


def grid_hypervolume(points: np.ndarray, reference: np.ndarray) -> int:
    """Count unit cells [c, c+1) of the integer grid below the reference dominated by some point (min)."""
    d = len(reference)
    low = int(min(points.min(), 0)) if len(points) else 0
    total = 0
    for corner in itertools.product(*[range(low, int(r)) for r in reference]):
        c = np.array(corner)
        if len(points) and np.any(np.all(points <= c, axis=1)):
            total += 1
    assert d == len(reference)
    return total


def inclusion_exclusion_hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Exact union volume of the boxes [p, ref) by inclusion-exclusion (minimisation, small n)."""
    total = 0.0
    n = len(points)
    for size in range(1, n + 1):
        for subset in itertools.combinations(range(n), size):
            corner = points[list(subset)].max(axis=0)
            volume = float(np.prod(np.clip(reference - corner, 0.0, None)))
            total += volume if size % 2 else -volume
    return total


def random_trials(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Random trials with coarse values (many ties/duplicates), NaN/inf, mixed states and partial epochs."""
    df = pd.DataFrame(
        {
            "trial": rng.permutation(n),
            "state": rng.choice(STATES, size=n, p=[0.6, 0.15, 0.1, 0.1, 0.05]),
            "accuracy": rng.integers(0, 5, size=n) / 4.0,
            "params": rng.integers(1, 6, size=n).astype(float) * 1000,
            "flops": rng.integers(1, 4, size=n).astype(float),
            "duration_s": rng.integers(0, 3, size=n).astype(float),
            "epochs": rng.choice([10, 30, 30, 30], size=n),
            "max_epochs": 30,
        }
    )
    for column in COLUMNS:
        holes = rng.random(n) < 0.08
        df.loc[holes, column] = rng.choice([np.nan, np.inf, -np.inf], size=int(holes.sum()))
    df.index = rng.permutation(n) + 100  # non-trivial index labels
    return df


# ---------------------------------------------------------------- pareto_front


def test_pareto_front_matches_brute_force_on_random_frames() -> None:
    rng = np.random.default_rng(1234)
    cases = 0
    for case in range(400):
        n = int(rng.integers(0, 40))
        df = random_trials(rng, n)
        d = int(rng.integers(1, 5))
        columns = list(rng.choice(COLUMNS, size=d, replace=False))
        objectives = [(c, str(rng.choice(["max", "min"]))) for c in columns]
        feasible_only, complete_only = bool(case % 2), bool((case // 2) % 2)
        front = pareto_front(df, objectives, feasible_only=feasible_only, complete_only=complete_only)
        expected = brute_front_labels(
            df, objectives, feasible_only=feasible_only, complete_only=complete_only
        )
        assert set(front.index) == expected, (case, objectives)
        assert len(front.index) == len(expected)
        assert list(front.columns) == [*df.columns, "duplicate_of"]
        # Sorted by objective preference, ties by trial; duplicates point at the previous group leader.
        keys = [
            tuple((-1.0 if dr == "max" else 1.0) * float(r[c]) for c, dr in objectives) + (r["trial"],)
            for _, r in front.iterrows()
        ]
        assert keys == sorted(keys)
        leader = None
        previous: tuple[float, ...] | None = None
        for (_, row), key in zip(front.iterrows(), keys, strict=True):
            vector = key[:-1]
            if vector != previous:
                assert pd.isna(row["duplicate_of"])
                leader = row["trial"]
            else:
                assert row["duplicate_of"] == leader
            previous = vector
        cases += 1
    assert cases == 400


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(0, 3)),
        min_size=0,
        max_size=30,
    ),
    st.integers(2, 3),
)
def test_nondominated_mask_matches_brute_force(rows: list[tuple[int, int, int]], d: int) -> None:
    points = np.array(rows, dtype=float).reshape(len(rows), 3)[:, :d]
    assert nondominated_mask(points).tolist() == brute_nondominated(points).tolist()


def test_default_filters_keep_only_complete_fully_trained_feasible_rows() -> None:
    df = pd.DataFrame(
        {
            "trial": [0, 1, 2, 3, 4, 5],
            "state": ["complete", "complete", "pruned", "infeasible", "failed", "complete"],
            "accuracy": [0.80, 0.95, 0.99, 0.99, 0.99, np.nan],
            "params": [100, 50, 10, 10, 10, 1],
            "epochs": [30, 12, 5, 0, 0, 30],
            "max_epochs": [30, 30, 30, 30, 30, 30],
        }
    )
    assert pareto_front(df)["trial"].tolist() == [0]
    assert pareto_front(df, complete_only=False)["trial"].tolist() == [2]
    assert pareto_front(df, complete_only=False, feasible_only=False)["trial"].tolist() == [2, 3, 4]
    assert candidate_mask(df).tolist() == [True, False, False, False, False, True]


def test_exact_ties_are_all_kept_and_flagged() -> None:
    df = pd.DataFrame(
        {"trial": [7, 3, 5, 9], "accuracy": [0.9, 0.9, 0.8, 0.9], "params": [2e5, 2e5, 1e5, 2e5]}
    )
    front = pareto_front(df)
    assert front["trial"].tolist() == [3, 7, 9, 5]
    assert front["duplicate_of"].tolist()[1:3] == [3, 3]
    assert front["duplicate_of"].isna().tolist() == [True, False, False, True]
    assert front.loc[front["duplicate_of"].isna(), "trial"].tolist() == [3, 5]


def test_duplicate_of_uses_index_labels_without_trial_column() -> None:
    df = pd.DataFrame({"accuracy": [0.9, 0.9], "params": [10, 10]}, index=["b", "a"])
    front = pareto_front(df)
    assert front.index.tolist() == ["b", "a"]  # ties keep input order without a trial column
    assert front["duplicate_of"].tolist()[1] == "b"


def test_objective_specs_accept_strings_tuples_and_objects() -> None:
    expected = (Objective("accuracy", "max"), Objective("params", "min"))
    assert parse_objectives(["accuracy:max", "params:min"]) == expected
    assert parse_objectives([("accuracy", "maximize"), ("params", "MIN")]) == expected
    assert parse_objectives(list(expected)) == expected
    assert parse_objectives("accuracy:max") == expected[:1]
    assert parse_objectives(("accuracy", "max")) == expected[:1]


@pytest.mark.parametrize(
    ("objectives", "pattern"),
    [
        (["acc:max"], r"no column named 'acc'; available columns: trial, state, accuracy, params"),
        (["accuracy"], r"'accuracy' has no direction"),
        (["accuracy:up"], r"direction 'up' is not 'max' or 'min'"),
        (["accuracy:max", "accuracy:min"], r"accuracy given more than once"),
        ([], r"none given"),
        (["state:max"], r"column 'state' is not numeric"),
        ([42], r"objective 42 is not understood"),
    ],
)
def test_bad_objectives_raise_user_error(objectives: list[object], pattern: str) -> None:
    df = pd.DataFrame({"trial": [0], "state": ["complete"], "accuracy": [0.5], "params": [10]})
    with pytest.raises(UserError, match=pattern):
        pareto_front(df, objectives)  # type: ignore[arg-type]


def test_pareto_front_works_on_validated_nullable_frames() -> None:
    from igcnas.analysis.schema import validate_trials_frame

    df = validate_trials_frame(
        pd.DataFrame(
            {
                "trial": [0, 1, 2],
                "state": ["complete", "complete", "failed"],
                "accuracy": [0.9, 0.8, None],
                "params": [200, 100, None],
                "flops": [20, 10, None],
                "epochs": [30, 30, None],
                "max_epochs": [30, 30, 30],
            }
        )
    )
    front = pareto_front(df, ["accuracy:max", "flops:min"])
    assert front["trial"].tolist() == [0, 1]
    assert str(front["duplicate_of"].dtype) == "Int64"
    assert pareto_front(df.iloc[:0]).empty


# ---------------------------------------------------------------- hypervolume


def test_hypervolume_known_examples() -> None:
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [4, 4], "min") == pytest.approx(6.0)
    assert hypervolume([[0, 0, 0]], [1, 2, 3], ["min"] * 3) == pytest.approx(6.0)
    assert hypervolume([[1, 0, 0], [0, 1, 0], [0, 0, 1]], [2, 2, 2], "min") == pytest.approx(7.0)
    # accuracy max / params min, reference (0, 300k): 0.8*100k + 0.9*(300k-200k) - overlap already counted
    assert hypervolume([[0.9, 2e5], [0.8, 1e5]], [0.0, 3e5], ["max", "min"]) == pytest.approx(170_000.0)
    assert hypervolume(np.empty((0, 2)), [1, 1], "min") == 0.0
    assert hypervolume([[5, 5]], [4, 4], "min") == 0.0  # worse than the reference: nothing
    assert hypervolume([[4, 1]], [4, 4], "min") == 0.0  # on the reference boundary: zero width
    assert hypervolume([[2.0]], [5.0], "min") == pytest.approx(3.0)


def test_hypervolume_matches_grid_counting_on_integer_points() -> None:
    rng = np.random.default_rng(7)
    for _ in range(250):
        d = int(rng.integers(2, 5))
        n = int(rng.integers(0, 12))
        points = rng.integers(0, 6, size=(n, d)).astype(float)
        reference = rng.integers(3, 7, size=d).astype(float)
        expected = grid_hypervolume(points, reference)
        directions = [str(x) for x in rng.choice(["max", "min"], size=d)]
        signs = np.array([-1.0 if x == "max" else 1.0 for x in directions])
        # Feed raw values: a max objective is the negated minimisation value.
        got = hypervolume(points * signs, reference * signs, directions)
        assert got == pytest.approx(expected), (points, reference, directions)


def test_hypervolume_matches_inclusion_exclusion_on_float_points() -> None:
    rng = np.random.default_rng(11)
    for _ in range(150):
        d = int(rng.integers(2, 6))
        n = int(rng.integers(1, 8))
        points = rng.random((n, d))
        reference = rng.uniform(0.5, 1.2, size=d)
        expected = inclusion_exclusion_hypervolume(points, reference)
        assert hypervolume(points, reference, "min") == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_hypervolume_3d_larger_front_agrees_with_4d_embedding() -> None:
    rng = np.random.default_rng(3)
    points = rng.random((60, 3))
    reference = np.array([1.1, 1.2, 1.3])
    hv3 = hypervolume(points, reference, "min")
    # A constant 4th objective 0 with reference 2 doubles the volume.
    embedded = np.column_stack([points, np.zeros(len(points))])
    assert hypervolume(embedded, np.append(reference, 2.0), "min") == pytest.approx(2 * hv3)
    assert 0 < hv3 < float(np.prod(reference))


@pytest.mark.parametrize(
    ("points", "reference", "directions", "pattern"),
    [
        ([[1, 2]], [3, 3, 3], "min", r"expected shape \(n, 3\)"),
        ([[1, np.nan]], [3, 3], "min", r"must be finite"),
        ([[1, 2]], [3, np.inf], "min", r"NaN or infinite"),
        ([[1, 2]], [3, 3], ["min"], r"1 direction\(s\) for 2 objective"),
        ([[1, 2]], [3, 3], "lower", r"'lower' is not 'max' or 'min'"),
    ],
)
def test_hypervolume_bad_input_raises_user_error(
    points: list[list[float]], reference: list[float], directions: object, pattern: str
) -> None:
    with pytest.raises(UserError, match=pattern):
        hypervolume(points, reference, directions)  # type: ignore[arg-type]


def test_front_hypervolume_default_and_explicit_reference() -> None:
    df = pd.DataFrame(
        {
            "trial": [0, 1, 2, 3],
            "state": ["complete", "complete", "complete", "pruned"],
            "accuracy": [0.9, 0.8, 0.7, 0.99],
            "params": [2e5, 1e5, 3e5, 4e5],
            "epochs": [30, 30, 30, 2],
            "max_epochs": 30,
        }
    )
    # Default reference is the worst over the whole frame (params 4e5, pruned row included), accuracy 0.
    assert default_reference(df) == {"accuracy": 0.0, "params": 4e5}
    assert front_hypervolume(df) == pytest.approx(0.8 * 1e5 + 0.9 * 2e5)
    assert front_hypervolume(df, reference={"accuracy": 0.5, "params": 3e5}) == pytest.approx(
        0.3 * 1e5 + 0.4 * 1e5
    )
    assert front_hypervolume(df, reference=[0.5, 3e5]) == pytest.approx(0.7e5)
    wide = {"accuracy": 0.0, "params": 5e5}
    assert front_hypervolume(df, reference=wide) == pytest.approx(0.8 * 1e5 + 0.9 * 3e5)
    # Letting the pruned trial in adds its (0.99, 4e5) corner.
    assert front_hypervolume(df, ["accuracy:max", "params:min"], wide, complete_only=False) == pytest.approx(
        0.8 * 1e5 + 0.9 * 2e5 + 0.99 * 1e5
    )
    with pytest.raises(UserError, match="no value for params"):
        front_hypervolume(df, reference={"accuracy": 0.5})
    with pytest.raises(UserError, match="got 1 value"):
        front_hypervolume(df, reference=[0.5])


def test_default_reference_needs_finite_values() -> None:
    df = pd.DataFrame({"accuracy": [0.5], "params": [np.nan]})
    with pytest.raises(UserError, match="'params' has no finite value"):
        default_reference(df)


# ---------------------------------------------------------------- filter_budget


def test_filter_budget_inclusive_limits_and_units() -> None:
    df = pd.DataFrame({"params": [100_000, 500_000, 600_000, np.nan], "flops": [1e7, 5e7, 1e6, 1e6]})
    assert filter_budget(df, max_params="0.5M").index.tolist() == [0, 1]
    assert filter_budget(df, max_flops=1e7).index.tolist() == [0, 2, 3]
    assert filter_budget(df, max_params=500_000, max_flops="10M").index.tolist() == [0]
    assert filter_budget(df).index.tolist() == [0, 1, 2, 3]
    with pytest.raises(UserError, match="max_params"):
        filter_budget(df, max_params="lots")
    with pytest.raises(UserError, match="no 'flops' column"):
        filter_budget(df[["params"]], max_flops="1M")
