"""How well each training-free proxy ranks the tabular benchmark's architectures by trained accuracy.

For every proxy of :data:`igcnas.tabular.PROXY_COLUMNS` (higher = predicted better), the Spearman and Kendall
(tau-b) correlations with ``<target>_val_acc``, with a 95% percentile bootstrap interval of Spearman (rows
resampled with a :class:`numpy.random.Generator` seeded by ``seed``); the same per ``size_bin`` (bins of at
least 4 rows); and the agreement of the two fidelities (``low_val_acc`` vs ``high_val_acc``).

Conventions: rows whose target accuracy is empty (NaN) are left out. A proxy value of ``-inf`` or NaN (a score
that failed or diverged) ranks lowest: both count as the smallest value, tied with each other. A constant
column has no defined correlation: it is reported as ``None`` (``null`` in JSON). Spearman is the Pearson
correlation of average ranks and Kendall is tau-b (ties corrected), computed with numpy and pandas.

Example:
    >>> import pandas as pd
    >>> from igcnas.tabular import PROXY_COLUMNS
    >>> acc = [0.1, 0.4, 0.2, 0.3, 0.5]
    >>> frame = pd.DataFrame({c: acc for c in PROXY_COLUMNS})
    >>> frame["low_val_acc"], frame["high_val_acc"], frame["size_bin"] = acc, acc, "0-20k"
    >>> report = bench_proxies(table=frame, bootstrap=20)
    >>> report["n"], report["rows"][0]["proxy"], report["rows"][0]["spearman"], report["rows"][0]["ci_low"]
    (5, 'params', 1.0, 1.0)
    >>> report["fidelity"]["kendall"]
    1.0
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from igcnas._table import render_table
from igcnas.errors import UserError
from igcnas.tabular import FIDELITIES, PROXY_COLUMNS, TABLE_FILE, read_table

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["bench_proxies", "kendall_tau_b", "render", "spearman"]

MIN_ROWS = 3
"""Fewer usable rows than this make no correlation worth reporting."""

MIN_BIN_ROWS = 4
"""A size bin is reported only with at least this many rows."""


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) of ``values``; NaN and -inf are the smallest, tied with each other."""
    import pandas as pd

    clean = np.where(np.isnan(values), -np.inf, values.astype(float))
    return pd.Series(clean).rank(method="average").to_numpy(dtype=float)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant."""
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if denom == 0.0:
        return math.nan
    return max(-1.0, min(1.0, float(dx @ dy) / denom))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (Pearson of average ranks); NaN when either side is constant.

    Example:
        >>> spearman(np.array([1.0, 2.0, 3.0]), np.array([30.0, 20.0, 10.0]))
        -1.0
    """
    return _pearson(_ranks(np.asarray(x, dtype=float)), _ranks(np.asarray(y, dtype=float)))


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b (ties corrected); NaN when either side is constant.

    Example:
        >>> kendall_tau_b(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0]))
        0.6666666666666666
    """
    rx, ry = _ranks(np.asarray(x, dtype=float)), _ranks(np.asarray(y, dtype=float))
    sx = np.sign(rx[:, None] - rx[None, :])
    sy = np.sign(ry[:, None] - ry[None, :])
    upper = np.triu_indices(len(rx), k=1)
    sx, sy = sx[upper], sy[upper]
    concordance = float((sx * sy).sum())
    pairs_x, pairs_y = float(np.count_nonzero(sx)), float(np.count_nonzero(sy))
    if pairs_x == 0.0 or pairs_y == 0.0:
        return math.nan
    return max(-1.0, min(1.0, concordance / math.sqrt(pairs_x * pairs_y)))


def _json_float(value: float) -> float | None:
    """``value`` as a JSON-safe float (None for NaN)."""
    return None if value is None or math.isnan(value) else float(value)


def _correlate(x: np.ndarray, y: np.ndarray, *, rng: np.random.Generator, bootstrap: int) -> dict[str, Any]:
    """Spearman, Kendall and the bootstrap CI of Spearman of ``x`` against ``y``."""
    n = len(x)
    out: dict[str, Any] = {"spearman": None, "kendall": None, "ci_low": None, "ci_high": None, "n": n}
    if n < MIN_ROWS:
        return out
    out["spearman"] = _json_float(spearman(x, y))
    out["kendall"] = _json_float(kendall_tau_b(x, y))
    if bootstrap > 0 and out["spearman"] is not None:
        draws = np.array([spearman(x[idx], y[idx]) for idx in rng.integers(0, n, size=(bootstrap, n))])
        draws = draws[~np.isnan(draws)]
        if len(draws):
            low, high = np.percentile(draws, [2.5, 97.5])
            out["ci_low"], out["ci_high"] = float(low), float(high)
    return out


def bench_proxies(*, table: str | Path | pd.DataFrame | None = None, target: str = "low", bootstrap: int = 1000,
                  seed: int = 0, bins: bool = True) -> dict[str, Any]:
    """Rank correlation of every proxy with the trained accuracy of the tabular benchmark (JSON-safe dict).

    ``table`` is a table CSV (default :data:`igcnas.tabular.TABLE_FILE`) or a DataFrame with its columns;
    ``target`` the fidelity whose ``<target>_val_acc`` is the accuracy. Returns ``{"table", "target", "n",
    "rows", "bins", "fidelity"}`` (see the module docstring). Raises :class:`UserError` for an unknown target
    or fewer than 3 rows with a target accuracy.
    """
    import pandas as pd

    if target not in FIDELITIES:
        raise UserError(f"--target: {target!r} is not a fidelity of the table; choose from {', '.join(FIDELITIES)}")
    if isinstance(table, pd.DataFrame):
        frame, name = table, "<frame>"
    else:
        frame = read_table(table)
        name = str(Path(table) if table is not None else TABLE_FILE)
    column = f"{target}_val_acc"
    if column not in frame.columns:
        raise UserError(f"--table: {name} lacks the column {column}")
    usable = frame[frame[column].notna()]
    if len(usable) < MIN_ROWS:
        raise UserError(f"--table: {name} has {len(usable)} rows with a {column} value (of {len(frame)} rows); "
                        f"need at least {MIN_ROWS}")
    rng = np.random.default_rng(seed)
    accuracy = usable[column].to_numpy(dtype=float)
    rows = [{"proxy": proxy, **_correlate(usable[proxy].to_numpy(dtype=float), accuracy, rng=rng,
                                          bootstrap=bootstrap)}
            for proxy in PROXY_COLUMNS]
    bin_rows: list[dict[str, Any]] = []
    if bins and "size_bin" in usable.columns:
        for size_bin in sorted(usable["size_bin"].dropna().astype(str).unique()):
            part = usable[usable["size_bin"].astype(str) == size_bin]
            if len(part) < MIN_BIN_ROWS:
                continue
            part_acc = part[column].to_numpy(dtype=float)
            bin_rows += [{"size_bin": size_bin, "proxy": proxy,
                          **_correlate(part[proxy].to_numpy(dtype=float), part_acc, rng=rng, bootstrap=bootstrap)}
                         for proxy in PROXY_COLUMNS]
    fidelity: dict[str, Any] = {"spearman": None, "kendall": None, "ci_low": None, "ci_high": None, "n": 0}
    if {"low_val_acc", "high_val_acc"} <= set(frame.columns):
        both = frame[frame["low_val_acc"].notna() & frame["high_val_acc"].notna()]
        fidelity = _correlate(both["low_val_acc"].to_numpy(dtype=float), both["high_val_acc"].to_numpy(dtype=float),
                              rng=rng, bootstrap=bootstrap)
    return {"table": name, "target": column, "n": len(usable), "rows": rows, "bins": bin_rows,
            "fidelity": fidelity}


def render(report: dict[str, Any]) -> str:
    """The human tables of a :func:`bench_proxies` report: overall, per size bin, then the fidelity line."""
    parts = [f"proxies vs {report['target']} on {report['table']} ({report['n']} rows):",
             render_table(report["rows"])]
    if report["bins"]:
        parts += ["", "per size bin:", render_table(report["bins"])]
    f = report["fidelity"]

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    parts += ["", f"fidelity low_val_acc vs high_val_acc: spearman {fmt(f['spearman'])} "
              f"[{fmt(f['ci_low'])}, {fmt(f['ci_high'])}], kendall {fmt(f['kendall'])}, n {f['n']}"]
    return "\n".join(parts)
