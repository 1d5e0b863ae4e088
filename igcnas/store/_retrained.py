"""The retrained comparison's files inside a study folder: one run per (architecture, seed), and their summary.

Layout::

    <trials_dir>/<study>/retrained/<label>/seed<k>/run.json   one run's result (RetrainRun), written at its end
    <trials_dir>/<study>/retrained/<label>/seed<k>/...        the engine's arch.json, metrics.json, checkpoint

``label`` is ``trial-0012`` for a searched trial and ``baseline-IGC-L24M2-D20`` for a baseline. A run folder
without run.json is unfinished: ``igcnas retrain`` resumes it from its checkpoint.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> for seed, acc in ((0, 0.90), (1, 0.92)):
    ...     write_run(folder, RetrainRun(name="IGC-L24M2-D20", role="baseline", trial=-2, spec_id="abc",
    ...               params=155962, flops=28755840, epochs=15, seed=seed, test_accuracy=acc))
    >>> row = read_retrained(folder)[0]
    >>> row["seeds"], round(row["test_accuracy_mean"], 3), round(row["test_accuracy_std"], 4)
    ([0, 1], 0.91, 0.0141)
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from igcnas.store._files import read_json_file, write_json

__all__ = ["RetrainRun", "RETRAINED_DIR", "run_folder", "write_run", "read_runs", "read_retrained"]

RETRAINED_DIR = "retrained"
_RUN_FILE = "run.json"


@dataclass(frozen=True)
class RetrainRun:
    """One finished retraining of one architecture with one seed."""

    name: str
    role: str  # "found" | "baseline"
    trial: int
    spec_id: str
    params: int
    flops: int
    epochs: int
    seed: int
    test_accuracy: float
    val_accuracy: float | None = None
    seconds: float | None = None
    schedule: str = ""


def _label(role: str, name: str, trial: int) -> str:
    """The folder of one architecture's runs."""
    return f"baseline-{name}" if role == "baseline" else f"trial-{int(trial):04d}"


def run_folder(study_folder: str | Path, *, role: str, name: str, trial: int, seed: int) -> Path:
    """The folder of one (architecture, seed) run."""
    return Path(study_folder) / RETRAINED_DIR / _label(role, name, trial) / f"seed{int(seed)}"


def write_run(study_folder: str | Path, run: RetrainRun) -> None:
    """Record a finished run (atomically: a run without run.json is unfinished)."""
    folder = run_folder(study_folder, role=run.role, name=run.name, trial=run.trial, seed=run.seed)
    write_json(folder / _RUN_FILE, asdict(run))


def read_runs(study_folder: str | Path) -> list[RetrainRun]:
    """Every finished run of the study, by folder order."""
    root = Path(study_folder) / RETRAINED_DIR
    known = {f.name for f in fields(RetrainRun)}
    runs = []
    for path in sorted(root.glob(f"*/seed*/{_RUN_FILE}")):
        data = read_json_file(path, "a retrained run")
        if isinstance(data, dict):
            runs.append(RetrainRun(**{k: v for k, v in data.items() if k in known}))
    return runs


def read_retrained(study_folder: str | Path) -> list[dict[str, Any]]:
    """One row per retrained architecture: ``{name, role, trial, params, flops, epochs, seeds,
    test_accuracy_mean, test_accuracy_std}`` (std over seeds, 0 for one seed), best mean first."""
    groups: dict[tuple[str, str, int], list[RetrainRun]] = {}
    for run in read_runs(study_folder):
        groups.setdefault((run.role, run.name, run.trial), []).append(run)
    rows = []
    for (role, name, trial), runs in groups.items():
        accuracies = [r.test_accuracy for r in runs]
        rows.append({
            "name": name, "role": role, "trial": trial, "params": runs[0].params, "flops": runs[0].flops,
            "epochs": runs[0].epochs, "seeds": sorted(r.seed for r in runs),
            "test_accuracy_mean": statistics.fmean(accuracies),
            "test_accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        })
    return sorted(rows, key=lambda r: -r["test_accuracy_mean"])
