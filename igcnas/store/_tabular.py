"""The tabular benchmark's runs under the trials folder, before they are gathered into the table's CSV.

Layout::

    <trials_dir>/tabular-<table>/plan.json                       the planned rows, frozen at the first build
    <trials_dir>/tabular-<table>/<spec_id>/proxies.json          the row's training-free scores
    <trials_dir>/tabular-<table>/<spec_id>/<fidelity>/run.json   one finished training (TabularRun)
    <trials_dir>/tabular-<table>/<spec_id>/<fidelity>/...        the engine's arch.json, metrics.json, checkpoint

A fidelity folder without run.json is unfinished: ``igcnas tabular build`` resumes it from its checkpoint.

Example:
    >>> import tempfile
    >>> root = tabular_folder(tempfile.mkdtemp(), "cifar10")
    >>> write_tabular_run(root, TabularRun(spec_id="abc", fidelity="low", val_accuracy=[0.3, 0.5], seconds=12.0))
    >>> read_tabular_run(root, "abc", "low").val_accuracy, read_tabular_run(root, "abc", "high")
    ([0.3, 0.5], None)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from igcnas.store._files import read_json_file, write_json

__all__ = ["TabularRun", "write_plan", "read_plan", "tabular_folder", "tabular_run_folder", "write_tabular_run", "read_tabular_run",
           "write_proxy_scores", "read_proxy_scores"]

_RUN_FILE = "run.json"
_PROXIES_FILE = "proxies.json"
_PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class TabularRun:
    """One finished training of a table row at one fidelity: validation accuracy after every epoch."""

    spec_id: str
    fidelity: str
    val_accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0
    schedule: str = ""


def tabular_folder(trials_dir: str | Path, table: str) -> Path:
    """The folder of one table's runs."""
    return Path(trials_dir) / f"tabular-{table}"


def tabular_run_folder(root: str | Path, spec_id: str, fidelity: str) -> Path:
    """The folder of one (row, fidelity) training."""
    return Path(root) / spec_id / fidelity


def write_tabular_run(root: str | Path, run: TabularRun) -> None:
    """Record a finished training (atomically: a folder without run.json is unfinished)."""
    write_json(tabular_run_folder(root, run.spec_id, run.fidelity) / _RUN_FILE, asdict(run))


def read_tabular_run(root: str | Path, spec_id: str, fidelity: str) -> TabularRun | None:
    """The finished training of a row at a fidelity, or None."""
    path = tabular_run_folder(root, spec_id, fidelity) / _RUN_FILE
    if not path.is_file():
        return None
    data = read_json_file(path, "a tabular benchmark run")
    known = {f.name for f in fields(TabularRun)}
    return TabularRun(**{k: v for k, v in data.items() if k in known}) if isinstance(data, dict) else None


def write_proxy_scores(root: str | Path, spec_id: str, scores: dict[str, float]) -> None:
    """Record a row's training-free scores (non-finite values as null)."""
    write_json(Path(root) / spec_id / _PROXIES_FILE, scores)


def read_proxy_scores(root: str | Path, spec_id: str) -> dict[str, float] | None:
    """A row's recorded scores (null read back as NaN), or None when not scored yet."""
    path = Path(root) / spec_id / _PROXIES_FILE
    if not path.is_file():
        return None
    data = read_json_file(path, "a tabular benchmark's proxy scores")
    if not isinstance(data, dict):
        return None
    return {str(k): float("nan") if v is None else float(v) for k, v in data.items()}


def write_plan(root: str | Path, rows: list[dict[str, Any]]) -> None:
    """Freeze the table's planned rows (so that later changes of the spaces do not orphan trained runs)."""
    write_json(Path(root) / _PLAN_FILE, {"rows": rows})


def read_plan(root: str | Path) -> list[dict[str, Any]] | None:
    """The frozen planned rows, or None before the first build."""
    path = Path(root) / _PLAN_FILE
    if not path.is_file():
        return None
    data = read_json_file(path, "a tabular benchmark's plan")
    rows = data.get("rows") if isinstance(data, dict) else None
    return list(rows) if isinstance(rows, list) else None
