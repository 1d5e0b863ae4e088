"""Pareto fronts, exact hypervolume and budget filters over a trials frame.

Objectives are written ``"column:max"`` / ``"column:min"`` (or given as ``(column, "max")`` tuples);
the default trades validation accuracy against parameter count::

    front = pareto_front(trials)                                 # accuracy:max, params:min
    front = pareto_front(trials, ("accuracy:max", "flops:min"))
    hv = front_hypervolume(trials)                                # reference: accuracy 0, worst params

Ties: rows whose objective vectors are exactly equal do not dominate each other, so all of them are on the
front. :func:`pareto_front` keeps every one of them and fills a ``duplicate_of`` column: ``<NA>`` for the first
row of each group of equal vectors (after sorting, ties broken by ascending ``trial``, then by position in
the input) and that first row's ``trial`` (or index label when there is no ``trial`` column) for the others.
Drop the duplicates with ``front[front["duplicate_of"].isna()]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd

from igcnas.errors import UserError
from igcnas.units import parse_count

__all__ = [
    "DEFAULT_OBJECTIVES",
    "Objective",
    "ObjectiveLike",
    "parse_objectives",
    "candidate_mask",
    "pareto_front",
    "nondominated_mask",
    "hypervolume",
    "default_reference",
    "front_hypervolume",
    "filter_budget",
]

Direction: TypeAlias = Literal["max", "min"]
FloatArray: TypeAlias = npt.NDArray[np.float64]

DEFAULT_OBJECTIVES: tuple[str, str] = ("accuracy:max", "params:min")
"""Validation accuracy (higher is better) against parameter count (lower is better)."""

_DIRECTIONS: dict[str, Direction] = {
    "max": "max",
    "maximize": "max",
    "maximise": "max",
    "min": "min",
    "minimize": "min",
    "minimise": "min",
}
_ZERO_REFERENCE_COLUMNS = frozenset({"accuracy", "test_accuracy"})
_EXCLUDED_WHEN_FEASIBLE = frozenset({"infeasible", "failed", "screened"})


@dataclass(frozen=True)
class Objective:
    """One optimisation objective: a column and whether larger (``max``) or smaller (``min``) is better."""

    column: str
    direction: Direction

    @property
    def sign(self) -> float:
        """Factor turning the objective into one to minimise (``-1`` for max, ``+1`` for min)."""
        return -1.0 if self.direction == "max" else 1.0

    def __str__(self) -> str:
        return f"{self.column}:{self.direction}"


ObjectiveLike: TypeAlias = str | tuple[str, str] | Objective


def _parse_direction(text: object, spec: object) -> Direction:
    """Map 'max'/'min' (and spelled-out forms) to a Direction, or raise UserError."""
    key = str(text).strip().lower()
    if key not in _DIRECTIONS:
        raise UserError(
            f"objective {spec!r}: direction {text!r} is not 'max' or 'min' "
            "(write e.g. 'accuracy:max' or 'params:min')"
        )
    return _DIRECTIONS[key]


def _parse_one(spec: object) -> Objective:
    """Parse one objective given as 'column:dir', (column, dir) or Objective."""
    if isinstance(spec, Objective):
        return spec
    if isinstance(spec, str):
        column, sep, direction = spec.rpartition(":")
        if not sep or not column.strip():
            raise UserError(
                f"objective {spec!r} has no direction; write 'column:max' or 'column:min' "
                "(e.g. 'accuracy:max', 'params:min')"
            )
        return Objective(column.strip(), _parse_direction(direction, spec))
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], str):
        return Objective(spec[0], _parse_direction(spec[1], spec))
    raise UserError(
        f"objective {spec!r} is not understood; give 'column:max' / 'column:min' strings "
        "or (column, 'max'/'min') tuples"
    )


def _is_direction_pair(objectives: object) -> bool:
    """True for a bare ('accuracy', 'max') pair, as opposed to a sequence of two specs."""
    return (
        isinstance(objectives, tuple)
        and len(objectives) == 2
        and all(isinstance(x, str) for x in objectives)
        and ":" not in objectives[0]
        and objectives[1].strip().lower() in _DIRECTIONS
    )


def parse_objectives(
    objectives: str | Objective | Iterable[ObjectiveLike],
    *,
    columns: Iterable[object] | None = None,
) -> tuple[Objective, ...]:
    """Parse objective specs, optionally checking their columns exist in ``columns``.

    Example:
        >>> [str(o) for o in parse_objectives(["accuracy:max", ("flops", "min")])]
        ['accuracy:max', 'flops:min']
    """
    items: list[object]
    if isinstance(objectives, (str, Objective)) or _is_direction_pair(objectives):
        items = [objectives]
    else:
        items = list(objectives)
    parsed = tuple(_parse_one(item) for item in items)
    if not parsed:
        raise UserError("objectives: none given; pass at least one, e.g. ('accuracy:max', 'params:min')")
    names = [o.column for o in parsed]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UserError(f"objectives: column(s) {', '.join(repeated)} given more than once; list each once")
    if columns is not None:
        available = [str(c) for c in columns]
        missing = [o.column for o in parsed if o.column not in available]
        if missing:
            raise UserError(
                f"objectives: no column named {', '.join(map(repr, missing))}; "
                f"available columns: {', '.join(available) or '(none)'}"
            )
    return parsed


def _objective_matrix(df: pd.DataFrame, objectives: Sequence[Objective]) -> FloatArray:
    """Return the objective values as an (n, d) float matrix to minimise (NaN where missing)."""
    columns = []
    for objective in objectives:
        series = df[objective.column]
        if not (pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)):
            raise UserError(
                f"objective {str(objective)!r}: column {objective.column!r} is not numeric "
                f"(dtype {series.dtype}); pick a numeric column such as accuracy, params or flops"
            )
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        columns.append(objective.sign * values)
    if not columns:
        return np.empty((len(df), 0), dtype=np.float64)
    return np.column_stack(columns).astype(np.float64, copy=False)


def candidate_mask(df: pd.DataFrame, *, feasible_only: bool = True, complete_only: bool = True) -> pd.Series:
    """Boolean mask of the rows allowed on a front (before the finite-objective check).

    ``complete_only`` keeps ``state == "complete"`` rows trained to full fidelity (``epochs >= max_epochs``,
    both known); ``feasible_only`` drops ``infeasible``, ``failed`` and ``screened`` rows. Each filter uses its columns
    (``state``, ``epochs``, ``max_epochs``) only where the frame has them, so a plain frame of objective
    values works too.
    """
    mask = pd.Series(True, index=df.index)
    state = df["state"].astype(str).str.strip().str.lower() if "state" in df.columns else None
    if complete_only:
        if state is not None:
            mask &= state == "complete"
        if "epochs" in df.columns and "max_epochs" in df.columns:
            epochs = pd.to_numeric(df["epochs"], errors="coerce").astype("float64")
            max_epochs = pd.to_numeric(df["max_epochs"], errors="coerce").astype("float64")
            mask &= (epochs >= max_epochs).fillna(False).astype(bool)
    if feasible_only and state is not None:
        mask &= ~state.isin(_EXCLUDED_WHEN_FEASIBLE)
    return mask


def nondominated_mask(values: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Mask of the rows of an (n, d) matrix that no other row dominates, all objectives minimised.

    Row ``a`` dominates ``b`` when ``a <= b`` everywhere and ``a < b`` somewhere, so exact duplicates do not
    dominate each other and are all kept. Values must be finite.

    Example:
        >>> nondominated_mask([[1, 2], [2, 1], [2, 2], [1, 2]]).tolist()
        [True, True, False, True]
    """
    points = np.asarray(values, dtype=np.float64)
    if points.ndim != 2:
        raise UserError(f"points: expected a 2-D array (n points x d objectives), got shape {points.shape}")
    n, d = points.shape
    result = np.zeros(n, dtype=bool)
    if n == 0:
        return result
    if d == 0:
        result[:] = True
        return result
    if not np.isfinite(points).all():
        raise UserError("points: every objective value must be finite (drop rows with NaN or inf first)")
    if d == 1:
        return points[:, 0] == points[:, 0].min()
    # A dominating row always sorts lexicographically before the row it dominates.
    order = np.lexsort(points.T[::-1])
    ordered = points[order]
    if d == 2:
        new_group = np.ones(n, dtype=bool)
        new_group[1:] = np.any(ordered[1:] != ordered[:-1], axis=1)
        group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
        best_before = np.empty(n, dtype=np.float64)
        best_before[0] = np.inf
        best_before[1:] = np.minimum.accumulate(ordered[:-1, 1])
        dominated = best_before[group_start] <= ordered[:, 1]
        result[order] = ~dominated
        return result
    front = np.empty_like(ordered)
    size = 0
    keep = np.zeros(n, dtype=bool)
    for i in range(n):
        row = ordered[i]
        if size:
            current = front[:size]
            if np.any(np.all(current <= row, axis=1) & np.any(current < row, axis=1)):
                continue
        # Transitivity: a row dominated by a non-front row is also dominated by some earlier front row.
        front[size] = row
        size += 1
        keep[i] = True
    result[order] = keep
    return result


def pareto_front(
    df: pd.DataFrame,
    objectives: str | Objective | Iterable[ObjectiveLike] = DEFAULT_OBJECTIVES,
    *,
    feasible_only: bool = True,
    complete_only: bool = True,
) -> pd.DataFrame:
    """Return the non-dominated rows of a trials frame, best first.

    Only rows passing :func:`candidate_mask` with finite values in every objective enter (by default:
    complete, fully trained trials). The result keeps the input's columns and index labels, is sorted by the
    first objective's preference, then the next ones, then ascending ``trial``, and gets a ``duplicate_of``
    column flagging exact ties (see the module docstring).

    Example:
        >>> trials = pd.DataFrame({"trial": [0, 1, 2, 3], "state": ["complete"] * 4,
        ...                        "accuracy": [0.90, 0.92, 0.89, 0.92], "params": [1e5, 3e5, 2e5, 3e5]})
        >>> front = pareto_front(trials)
        >>> front["trial"].tolist(), front["duplicate_of"].tolist()
        ([1, 3, 0], [<NA>, 1, <NA>])
    """
    if not isinstance(df, pd.DataFrame):
        raise UserError(f"pareto_front: expected a pandas DataFrame of trials, got {type(df).__name__}")
    parsed = parse_objectives(objectives, columns=df.columns)
    matrix = _objective_matrix(df, parsed)
    allowed = candidate_mask(df, feasible_only=feasible_only, complete_only=complete_only).to_numpy(
        dtype=bool, copy=True
    )
    allowed &= np.isfinite(matrix).all(axis=1)
    positions = np.flatnonzero(allowed)
    sub = matrix[positions]
    on_front = nondominated_mask(sub)
    positions = positions[on_front]
    sub = sub[on_front]

    trial_key = (
        pd.to_numeric(df["trial"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.inf)[positions]
        if "trial" in df.columns
        else np.zeros(len(positions))
    )
    # np.lexsort: the last key is the primary one.
    keys = [positions.astype(np.float64), trial_key, *[sub[:, k] for k in reversed(range(sub.shape[1]))]]
    order = np.lexsort(keys) if len(positions) else np.empty(0, dtype=np.int64)
    positions = positions[order]
    sub = sub[order]

    front = df.iloc[positions].copy()
    labels = front["trial"].tolist() if "trial" in df.columns else list(front.index)
    duplicate_of: list[object] = []
    leader: object = None
    for i in range(len(positions)):
        if i == 0 or np.any(sub[i] != sub[i - 1]):
            leader = labels[i]
            duplicate_of.append(pd.NA)
        else:
            duplicate_of.append(leader)
    integer_labels = all(isinstance(x, (int, np.integer)) for x in labels)
    front["duplicate_of"] = pd.array(duplicate_of, dtype="Int64" if integer_labels else object)
    return front


def _as_directions(directions: str | Sequence[str], d: int) -> list[Direction]:
    """Expand one direction or check a sequence of d directions."""
    if isinstance(directions, str):
        return [_parse_direction(directions, directions)] * d
    parsed = [_parse_direction(x, directions) for x in directions]
    if len(parsed) != d:
        raise UserError(
            f"directions: got {len(parsed)} direction(s) for {d} objective(s); give one 'max'/'min' per objective"
        )
    return parsed


def _hv2d(points: FloatArray, reference: FloatArray) -> float:
    """Exact 2-D hypervolume (minimisation) of points strictly better than the reference."""
    order = np.lexsort((points[:, 1], points[:, 0]))
    xs = points[order, 0]
    ys = points[order, 1]
    best = np.minimum.accumulate(ys)
    # Points that improve on y are the staircase corners, in x order.
    improves = np.ones(len(ys), dtype=bool)
    improves[1:] = ys[1:] < best[:-1]
    cx = xs[improves]
    cy = ys[improves]
    widths = np.append(cx[1:], reference[0]) - cx
    return float(np.sum(widths * (reference[1] - cy)))


def _hv(points: FloatArray, reference: FloatArray) -> float:
    """Exact hypervolume (minimisation) by slicing along the last objective (HSO), 2-D sweep at the base."""
    n, d = points.shape
    if n == 0:
        return 0.0
    if d == 1:
        return float(reference[0] - points[:, 0].min())
    if d == 2:
        return _hv2d(points, reference)
    order = np.argsort(points[:, -1], kind="stable")
    ordered = points[order]
    z = ordered[:, -1]
    bounds = np.append(z[1:], reference[-1])
    total = 0.0
    for i in range(n):
        depth = bounds[i] - z[i]
        if depth <= 0.0:
            continue
        prefix = ordered[: i + 1, :-1]
        prefix = np.unique(prefix[nondominated_mask(prefix)], axis=0)
        total += depth * _hv(prefix, reference[:-1])
    return total


def hypervolume(
    points: npt.ArrayLike,
    reference: npt.ArrayLike,
    directions: str | Sequence[str],
) -> float:
    """Exact hypervolume dominated by ``points`` and bounded by ``reference``, in the objectives' raw units.

    ``points`` is an (n, d) array of raw objective values, ``reference`` the d-vector of the worst values
    that still count, ``directions`` one ``"max"``/``"min"`` per objective (or one for all). Objectives are
    turned into minimisation internally; points not strictly better than the reference in every objective add
    nothing. Exact for any d: a 2-D sweep (n log n), and for d >= 3 slicing along the last objective
    (n^2 log n in 3-D; exponential in d, meant for fronts of at most a few hundred points when d >= 4).

    Example:
        >>> hypervolume([[0.9, 200_000], [0.8, 100_000]], [0.0, 300_000], ["max", "min"])
        170000.0
    """
    ref = np.asarray(reference, dtype=np.float64)
    if ref.ndim != 1 or ref.size == 0:
        raise UserError(f"reference: expected one value per objective, got shape {ref.shape}")
    d = ref.size
    if not np.isfinite(ref).all():
        raise UserError(f"reference: {ref.tolist()} has a NaN or infinite value; give finite worst values")
    pts = np.asarray(points, dtype=np.float64)
    if pts.size == 0:
        pts = pts.reshape(0, d)
    if pts.ndim != 2 or pts.shape[1] != d:
        raise UserError(
            f"points: expected shape (n, {d}) to match the {d}-value reference, got shape {pts.shape}"
        )
    if not np.isfinite(pts).all():
        raise UserError("points: every objective value must be finite (drop rows with NaN or inf first)")
    signs = np.array([-1.0 if x == "max" else 1.0 for x in _as_directions(directions, d)])
    pts = pts * signs
    ref = ref * signs
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    pts = np.unique(pts[nondominated_mask(pts)], axis=0)
    return _hv(pts, ref)


def default_reference(
    df: pd.DataFrame,
    objectives: str | Objective | Iterable[ObjectiveLike] = DEFAULT_OBJECTIVES,
) -> dict[str, float]:
    """Default hypervolume reference: the worst finite value per objective over ``df``; 0 for accuracies.

    Example:
        >>> default_reference(pd.DataFrame({"accuracy": [0.9, 0.8], "params": [1e5, 3e5]}))
        {'accuracy': 0.0, 'params': 300000.0}
    """
    parsed = parse_objectives(objectives, columns=df.columns)
    matrix = _objective_matrix(df, parsed)
    reference: dict[str, float] = {}
    for k, objective in enumerate(parsed):
        if objective.column in _ZERO_REFERENCE_COLUMNS and objective.direction == "max":
            reference[objective.column] = 0.0
            continue
        finite = matrix[:, k][np.isfinite(matrix[:, k])]
        if finite.size == 0:
            raise UserError(
                f"reference: column {objective.column!r} has no finite value to take the worst from; "
                "pass reference= explicitly"
            )
        reference[objective.column] = float(objective.sign * finite.max())
    return reference


def front_hypervolume(
    df: pd.DataFrame,
    objectives: str | Objective | Iterable[ObjectiveLike] = DEFAULT_OBJECTIVES,
    reference: Mapping[str, float] | Sequence[float] | None = None,
    *,
    feasible_only: bool = True,
    complete_only: bool = True,
) -> float:
    """Hypervolume of the Pareto front of ``df`` (raw units) against ``reference``.

    ``reference`` maps column -> worst value (or lists them in objective order); by default it is
    :func:`default_reference` over the whole ``df``. Pass the same explicit reference to compare studies.

    Example:
        >>> trials = pd.DataFrame({"accuracy": [0.9, 0.8, 0.7], "params": [2e5, 1e5, 3e5]})
        >>> front_hypervolume(trials)  # reference (accuracy 0, params 3e5)
        170000.0
    """
    parsed = parse_objectives(objectives, columns=df.columns)
    if reference is None:
        ref_map = default_reference(df, parsed)
        ref_values = [ref_map[o.column] for o in parsed]
    elif isinstance(reference, Mapping):
        missing = [o.column for o in parsed if o.column not in reference]
        if missing:
            raise UserError(
                f"reference: no value for {', '.join(missing)}; give one worst value per objective "
                f"({', '.join(o.column for o in parsed)})"
            )
        ref_values = [float(reference[o.column]) for o in parsed]
    else:
        ref_values = [float(x) for x in reference]
        if len(ref_values) != len(parsed):
            raise UserError(
                f"reference: got {len(ref_values)} value(s) for {len(parsed)} objective(s) "
                f"({', '.join(o.column for o in parsed)})"
            )
    front = pareto_front(df, parsed, feasible_only=feasible_only, complete_only=complete_only)
    points = _objective_matrix(front, parsed) * np.array([o.sign for o in parsed])  # back to raw values
    return hypervolume(points, ref_values, [o.direction for o in parsed])


def _limit(value: str | float | int | None, field: str) -> float | None:
    """Parse an optional budget limit with human units."""
    if value is None:
        return None
    return float(parse_count(value, field=field))


def filter_budget(
    df: pd.DataFrame,
    max_params: str | float | int | None = None,
    max_flops: str | float | int | None = None,
) -> pd.DataFrame:
    """Keep the rows within a parameter and/or FLOP budget (limits inclusive, human units accepted).

    Rows whose count is unknown (``<NA>``/NaN) are dropped when that limit is given.

    Example:
        >>> trials = pd.DataFrame({"params": [100_000, 600_000], "flops": [10**7, 10**8]})
        >>> filter_budget(trials, max_params="0.5M").index.tolist()
        [0]
    """
    mask = pd.Series(True, index=df.index)
    for column, value, field in (("params", max_params, "max_params"), ("flops", max_flops, "max_flops")):
        limit = _limit(value, field)
        if limit is None:
            continue
        if column not in df.columns:
            raise UserError(
                f"{field}: the trials frame has no {column!r} column to filter on "
                f"(columns: {', '.join(map(str, df.columns))})"
            )
        counts = pd.to_numeric(df[column], errors="coerce").astype("float64")
        mask &= (counts <= limit).fillna(False).astype(bool)
    return df.loc[mask].copy()
