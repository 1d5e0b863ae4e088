"""Plot a study's trials and its Pareto front to PNG, SVG, PDF or a self-contained HTML page.

Matplotlib is used through its object-oriented API (no pyplot, no global backend switch), so plotting works
headless and in threads. HTML output is one file: the figure as inline SVG plus a table of the front.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from igcnas.analysis.pareto import (
    DEFAULT_OBJECTIVES,
    Objective,
    ObjectiveLike,
    pareto_front,
    parse_objectives,
)
from igcnas.errors import UserError
from igcnas.units import format_count

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_front", "SUPPORTED_SUFFIXES"]

SUPPORTED_SUFFIXES: tuple[str, ...] = (".png", ".svg", ".pdf", ".html", ".htm")
"""File types :func:`plot_front` can write, chosen by the path's suffix."""

# Marker style per trial state; unknown states (frames that skipped validation) use "other".
_STATE_STYLE: dict[str, dict[str, Any]] = {
    "complete": {"color": "#5B84B1", "marker": "o", "s": 26, "alpha": 0.55},
    "pruned": {"color": "#E69F00", "marker": "v", "s": 24, "alpha": 0.55},
    "running": {"color": "#009E73", "marker": "s", "s": 22, "alpha": 0.55},
    "infeasible": {"color": "#9B59B6", "marker": "x", "s": 26, "alpha": 0.7},
    "failed": {"color": "#7F7F7F", "marker": "x", "s": 26, "alpha": 0.7},
    "screened": {"color": "#56B4E9", "marker": "+", "s": 22, "alpha": 0.5},
    "other": {"color": "#BBBBBB", "marker": "o", "s": 20, "alpha": 0.5},
}
_FRONT_COLOR = "#C0392B"
_REFERENCE_COLOR = "#222222"

# Axis label and unit per column.
_LABELS: dict[str, tuple[str, str]] = {
    "accuracy": ("Validation accuracy", "%"),
    "test_accuracy": ("Test accuracy", "%"),
    "params": ("Parameters", "count"),
    "flops": ("FLOPs", "multiply-adds per image"),
    "epochs": ("Epochs trained", "epochs"),
    "max_epochs": ("Epoch budget", "epochs"),
    "duration_s": ("Trial duration", "s"),
}
_SHORT_NAMES: dict[str, str] = {
    "accuracy": "validation accuracy",
    "test_accuracy": "test accuracy",
    "params": "parameters",
    "flops": "FLOPs",
}
_LOG_COLUMNS = frozenset({"params", "flops"})
_PERCENT_COLUMNS = frozenset({"accuracy", "test_accuracy"})
_COUNT_COLUMNS = frozenset({"params", "flops", "epochs", "max_epochs"})
_MAX_FRONT_LABELS = 15
_TABLE_COLUMNS = (
    "trial",
    "accuracy",
    "test_accuracy",
    "params",
    "flops",
    "epochs",
    "design",
    "widths",
    "depths",
    "spec_id",
    "arch_path",
    "duplicate_of",
)


def _values(df: pd.DataFrame, column: str) -> np.ndarray:
    """Column as float64 with NaN for missing values."""
    return pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _states(df: pd.DataFrame) -> pd.Series:
    """Lower-cased state per row ('complete' when the frame has no state column)."""
    if "state" not in df.columns:
        return pd.Series("complete", index=df.index)
    states = df["state"].astype(str).str.strip().str.lower()
    return states.where(states.isin(list(_STATE_STYLE)), "other")


def _use_log(column: str, *arrays: np.ndarray) -> bool:
    """Log scale for params/flops when every finite value shown is positive."""
    if column not in _LOG_COLUMNS:
        return False
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays]) if arrays else np.empty(0)
    return bool(finite.size) and bool(np.all(finite > 0))


def _axis_label(column: str, log: bool) -> str:
    """Human axis label with units (log scale noted)."""
    name, unit = _LABELS.get(column, (column.replace("_", " "), ""))
    details = [part for part in (unit, "log scale" if log else "") if part]
    return f"{name} ({', '.join(details)})" if details else name


def _format_axis(ax: Axes, axis: str, column: str, log: bool, values: np.ndarray) -> None:
    """Set scale, label and tick format of one axis."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, PercentFormatter

    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xlabel if axis == "x" else ax.set_ylabel)(_axis_label(column, log))
    if log:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        finite = values[np.isfinite(values) & (values > 0)]
        decades = math.log10(finite.max() / finite.min()) if finite.size else 0.0
        subs = (1.0, 2.0, 5.0) if decades <= 2.5 else (1.0, 3.0) if decades <= 4 else (1.0,)
        target.set_major_locator(LogLocator(base=10.0, subs=subs))
        target.set_major_formatter(FuncFormatter(lambda v, _pos: format_count(v)))
        target.set_minor_formatter(NullFormatter())
    elif column in _PERCENT_COLUMNS:
        finite = values[np.isfinite(values)]
        spread = float(finite.max() - finite.min()) if finite.size else 1.0
        target.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0 if spread >= 0.05 else None))
    elif column in _COUNT_COLUMNS:
        target.set_major_formatter(FuncFormatter(lambda v, _pos: format_count(v)))


def _default_title(df: pd.DataFrame, x: Objective, y: Objective) -> str:
    """Title naming the objectives and, when unique, the study."""
    text = f"Pareto front: {_SHORT_NAMES.get(y.column, y.column)} vs {_SHORT_NAMES.get(x.column, x.column)}"
    if "study" in df.columns:
        studies = sorted({str(s) for s in df["study"].dropna() if str(s)})
        if len(studies) == 1:
            text = f"{studies[0]} — {text}"
    return text


def _check_reference(reference_points: pd.DataFrame, x: Objective, y: Objective) -> pd.DataFrame:
    """Validate the zoo reference table (name + x column required, y optional)."""
    if not isinstance(reference_points, pd.DataFrame):
        raise UserError(
            f"reference_points: expected a DataFrame with columns name, {x.column} and optionally "
            f"{y.column}, got {type(reference_points).__name__}"
        )
    missing = [c for c in ("name", x.column) if c not in reference_points.columns]
    if missing:
        raise UserError(
            f"reference_points: missing column(s) {', '.join(missing)} (have "
            f"{', '.join(map(str, reference_points.columns)) or 'none'}); give name and {x.column} per network, "
            f"{y.column} if known"
        )
    ref = reference_points.copy()
    if y.column not in ref.columns:
        ref[y.column] = np.nan
    ys = _values(ref, y.column)
    if y.column in _PERCENT_COLUMNS and np.any(np.isfinite(ys) & ((ys < 0) | (ys > 1))):
        bad = float(ys[np.isfinite(ys) & ((ys < 0) | (ys > 1))][0])
        raise UserError(
            f"reference_points column {y.column!r}: {bad!r} is outside [0, 1]; give accuracy as a fraction "
            "(divide percentages by 100)"
        )
    return ref


def _draw(
    df: pd.DataFrame,
    front: pd.DataFrame,
    x: Objective,
    y: Objective,
    reference: pd.DataFrame | None,
    title: str,
) -> Figure:
    """Build the figure (trials by state, the front as a step line, reference networks)."""
    from matplotlib.figure import Figure

    xs, ys = _values(df, x.column), _values(df, y.column)
    fx, fy = _values(front, x.column), _values(front, y.column)
    rx = _values(reference, x.column) if reference is not None else np.empty(0)
    ry = _values(reference, y.column) if reference is not None else np.empty(0)
    log_x = _use_log(x.column, xs, rx)
    log_y = _use_log(y.column, ys, ry)
    plottable = np.isfinite(xs) & np.isfinite(ys)
    if log_x:
        plottable &= xs > 0
    if log_y:
        plottable &= ys > 0

    fig = Figure(figsize=(10.0, 5.4), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    states = _states(df).to_numpy()
    for state, style in _STATE_STYLE.items():
        rows = (states == state) & plottable
        total = int(np.sum(states == state))
        if total == 0:
            continue
        shown = int(rows.sum())
        hidden = (states == state) & ~plottable
        lacking = (
            " or ".join(
                column
                for column, values in ((y.column, ys), (x.column, xs))
                if np.any(~np.isfinite(values[hidden]))
            )
            or "a positive value"
        )
        label = f"{state} ({total})"
        if shown == 0:
            label = f"{state} ({total}; no {lacking}, not shown)"
        elif shown < total:
            label = f"{state} ({shown} shown; {total - shown} without {lacking})"
        kwargs = dict(style)
        if kwargs["marker"] != "x":
            kwargs["edgecolors"] = "none"
        ax.scatter(xs[rows], ys[rows], label=label, zorder=2, **kwargs)

    if len(front):
        order = np.argsort(fx, kind="stable")
        ax.step(
            fx[order],
            fy[order],
            where="post" if x.direction == "min" else "pre",
            color=_FRONT_COLOR,
            linewidth=1.8,
            zorder=3,
        )
        ax.scatter(
            fx,
            fy,
            s=52,
            color=_FRONT_COLOR,
            edgecolors="white",
            linewidths=0.9,
            zorder=4,
            label=f"Pareto front ({len(front)})",
        )
        if len(front) <= _MAX_FRONT_LABELS and "trial" in front.columns:
            for px, py, trial in zip(fx, fy, front["trial"].tolist(), strict=True):
                ax.annotate(
                    f"#{trial}",
                    (px, py),
                    xytext=(5, 5),
                    textcoords="offset points",
                    fontsize=7.5,
                    color=_FRONT_COLOR,
                    zorder=5,
                )

    if reference is not None and len(reference):
        names = reference["name"].astype(str).tolist()
        known = np.isfinite(rx) & np.isfinite(ry)
        if known.any():
            ax.scatter(
                rx[known],
                ry[known],
                marker="*",
                s=150,
                color=_REFERENCE_COLOR,
                edgecolors="white",
                linewidths=0.6,
                zorder=6,
                label="reference networks",
            )
        for px, py, name, has_y in zip(rx, ry, names, known, strict=True):
            if not np.isfinite(px):
                continue
            if has_y:
                ax.annotate(
                    name,
                    (px, py),
                    xytext=(7, -3),
                    textcoords="offset points",
                    fontsize=8,
                    color=_REFERENCE_COLOR,
                    bbox={
                        "boxstyle": "round,pad=0.2",
                        "facecolor": "white",
                        "edgecolor": "none",
                        "alpha": 0.8,
                    },
                    zorder=7,
                )
            else:
                ax.axvline(px, color=_REFERENCE_COLOR, linestyle=":", linewidth=1.0, alpha=0.7, zorder=1)
                ax.annotate(
                    name,
                    (px, 0.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(-3, 4),
                    textcoords="offset points",
                    rotation=90,
                    ha="right",
                    va="bottom",
                    fontsize=8,
                    color=_REFERENCE_COLOR,
                    bbox={
                        "boxstyle": "round,pad=0.15",
                        "facecolor": "white",
                        "edgecolor": "none",
                        "alpha": 0.8,
                    },
                    zorder=7,
                )

    _format_axis(ax, "x", x.column, log_x, np.concatenate([xs[plottable], rx]))
    _format_axis(ax, "y", y.column, log_y, np.concatenate([ys[plottable], ry]))
    ax.grid(True, which="major", color="#DDDDDD", linewidth=0.8)
    if log_x or log_y:
        ax.grid(True, which="minor", color="#F0F0F0", linewidth=0.5)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(title, fontsize=12, loc="left")
    if not plottable.any() and not len(front):
        ax.text(
            0.5,
            0.5,
            f"no trial has finite {x.column} and {y.column} yet",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="#777777",
        )
    if ax.get_legend_handles_labels()[0]:
        better = "↑" if y.direction == "max" else "↓"
        side = "←" if x.direction == "min" else "→"
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0.0,
            fontsize=8.5,
            frameon=True,
            framealpha=0.9,
            title=f"{len(df)} trials ({better}{side} is better)",
            title_fontsize=8.5,
        )
    return fig


def _cell(column: str, value: object) -> str:
    """Format one table cell for the HTML report."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if column in _PERCENT_COLUMNS:
        return f"{float(str(value)) * 100:.2f}%"
    if column in ("params", "flops"):
        number = float(str(value))
        return f"{format_count(number)} ({round(number):,})"
    return str(value)


def _has_content(series: pd.Series) -> bool:
    """True when a column has at least one non-missing, non-empty value."""
    return bool((series.notna() & (series.astype(str).str.strip() != "")).any())


def _front_table(front: pd.DataFrame) -> str:
    """HTML table of the front's descriptive columns."""
    columns = [c for c in _TABLE_COLUMNS if c in front.columns and _has_content(front[c])]
    if not columns or not len(front):
        return "<p>No trial is on the front yet.</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = []
    for record in front[columns].to_dict("records"):
        cells = "".join(f"<td>{html.escape(_cell(c, record[c]))}</td>" for c in columns)
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _html_page(svg: str, title: str, front: pd.DataFrame, objectives: Iterable[Objective]) -> str:
    """Self-contained HTML page: inline SVG figure plus the front as a table."""
    start = svg.find("<svg")
    svg = svg[start:] if start >= 0 else svg
    spec = ", ".join(str(o) for o in objectives)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n"
        "<style>body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em;color:#222}"
        "figure{margin:0}svg{max-width:100%;height:auto}"
        "table{border-collapse:collapse;font-size:0.9em;margin-top:1em}"
        "th,td{border-bottom:1px solid #ddd;padding:0.3em 0.8em;text-align:left}"
        "th{background:#f4f4f4}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        f"<figure>\n{svg}\n</figure>\n"
        f"<h2>Pareto front ({len(front)} trials; objectives {html.escape(spec)})</h2>\n"
        f"{_front_table(front)}\n</body>\n</html>\n"
    )


def plot_front(
    df: pd.DataFrame,
    objectives: str | Objective | Iterable[ObjectiveLike] = DEFAULT_OBJECTIVES,
    *,
    path: str | Path,
    reference_points: pd.DataFrame | None = None,
    title: str | None = None,
) -> Path:
    """Plot every trial (coloured by state) with the Pareto front highlighted, and write it to ``path``.

    Two objectives: the first goes on the y axis, the second on x (params/FLOPs on a log axis). The front is
    :func:`~igcnas.analysis.pareto.pareto_front` with its defaults (complete, fully trained trials), drawn as
    the attainment step line. ``reference_points`` (columns ``name``, the x column such as ``params``, and
    optionally the y column such as ``accuracy``) adds known networks as labelled stars, or as labelled
    vertical lines when their y value is missing. The suffix picks the format: ``.png``, ``.svg``, ``.pdf``, or
    ``.html`` (one self-contained page with the figure as inline SVG and a table of the front). Parent
    folders are created. Returns the path written.

    Example:
        >>> import tempfile
        >>> trials = pd.DataFrame({"trial": [0, 1], "state": ["complete", "pruned"],
        ...                        "accuracy": [0.9, 0.7], "params": [2e5, 1e5]})
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     out = plot_front(trials, path=Path(folder) / "front.png")
        ...     out.read_bytes()[:4] == b"\\x89PNG"
        True
    """
    if not isinstance(df, pd.DataFrame):
        raise UserError(f"plot_front: expected a pandas DataFrame of trials, got {type(df).__name__}")
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UserError(
            f"path: {str(target)!r} has suffix {suffix or '(none)'!r}; plots are written as "
            f"{', '.join(SUPPORTED_SUFFIXES)} (e.g. front.png or front.html)"
        )
    parsed = parse_objectives(objectives, columns=df.columns)
    if len(parsed) != 2:
        raise UserError(
            f"objectives: plot_front draws exactly 2 objectives, got {len(parsed)} "
            f"({', '.join(map(str, parsed))}); e.g. ('accuracy:max', 'params:min')"
        )
    y, x = parsed
    reference = _check_reference(reference_points, x, y) if reference_points is not None else None
    front = pareto_front(df, parsed)
    heading = title if title is not None else _default_title(df, x, y)

    import matplotlib

    target.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context({"svg.hashsalt": "igcnas", "svg.fonttype": "path"}):
        fig = _draw(df, front, x, y, reference, heading)
        if suffix in (".html", ".htm"):
            buffer = io.StringIO()
            fig.savefig(buffer, format="svg", metadata={"Date": None})
            target.write_text(_html_page(buffer.getvalue(), heading, front, parsed), encoding="utf-8")
        elif suffix == ".png":
            fig.savefig(target, format="png", dpi=150)
        elif suffix == ".svg":
            fig.savefig(target, format="svg", metadata={"Date": None})
        else:
            fig.savefig(target, format="pdf", metadata={"CreationDate": None})
    return target
