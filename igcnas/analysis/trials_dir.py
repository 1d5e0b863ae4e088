"""Trials tables from the trial store: a study folder's rows as one validated frame (the one row -> frame step).

The folder layout is the trial store's (:mod:`igcnas.store`); ``igcnas.search.load_study`` adds what only an
Optuna storage knows and builds its frame with :func:`rows_frame` too.

Example:
    >>> import tempfile
    >>> from igcnas.store import StudyStore, TrialRecord
    >>> store = StudyStore(tempfile.mkdtemp(), "demo")
    >>> store.write_record(TrialRecord(trial=0, state="complete", accuracy=0.9, params=1000, flops=5000,
    ...                                epochs=2, max_epochs=2))
    >>> read_trials_dir(store.folder)[["trial", "state", "params"]].to_dict("records")
    [{'trial': 0, 'state': 'complete', 'params': 1000}]
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from igcnas.analysis.schema import empty_trials_frame, validate_trials_frame
from igcnas.errors import UserError
from igcnas.store import ARCH_FILE, STUDY_FILE, TRIAL_FILE, StudyStore, list_study_names

__all__ = [
    "TRIAL_FILE",
    "STUDY_FILE",
    "rows_frame",
    "read_trials_dir",
    "read_study_settings",
    "list_study_dirs",
]


def _resolve_arch_path(value: object, trial_dir: Path) -> str:
    """Absolute path of a trial's arch.json: as recorded if it exists, else the one in the trial folder."""
    text = "" if value is None or (isinstance(value, float) and value != value) else str(value)
    candidates: list[Path] = []
    if text:
        recorded = Path(text).expanduser()
        candidates.append(recorded)
        if not recorded.is_absolute():
            candidates.append(trial_dir / recorded)
            candidates.append(trial_dir.parent.parent / recorded)
    candidates.append(trial_dir / ARCH_FILE)
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate.resolve())
    return text


def rows_frame(rows: Iterable[tuple[Path, dict[str, Any]]], *, study: str) -> pd.DataFrame:
    """One validated trials frame from ``(trial folder, trial.json row)`` pairs, sorted by trial number.

    ``arch_path`` is made absolute: the recorded path when it exists (relative paths are tried from the working
    directory, the trial folder and the folder holding the study), else the trial folder's ``arch.json``.
    ``study`` fills rows without one; ``sampled`` becomes its JSON text.
    """
    records: list[dict[str, Any]] = []
    for trial_dir, row in rows:
        record = dict(row)
        record["arch_path"] = _resolve_arch_path(record.get("arch_path"), trial_dir)
        if not record.get("study"):
            record["study"] = study
        sampled = record.get("sampled")
        record["sampled"] = json.dumps(sampled, sort_keys=True) if isinstance(sampled, dict) else (sampled or "")
        for key in ("accuracy", "test_accuracy", "duration_s"):
            if record.get(key) is None:
                record[key] = math.nan
        records.append(record)
    if not records:
        return empty_trials_frame()
    frame = pd.DataFrame.from_records(records)
    if "reused_from" in frame.columns:
        frame["reused_from"] = pd.to_numeric(frame["reused_from"], errors="coerce").astype("Int64")
    return validate_trials_frame(frame).sort_values("trial", kind="stable").reset_index(drop=True)


def read_trials_dir(study_dir: str | Path) -> pd.DataFrame:
    """Read every ``<study_dir>/*/trial.json`` into one validated trials frame (strict), sorted by trial number.

    Trial folders without a ``trial.json`` (a trial still starting) are skipped. A missing folder or an
    unreadable ``trial.json`` raises :class:`~igcnas.errors.UserError` naming it.

    Example:
        >>> read_trials_dir("/nonexistent/study")
        Traceback (most recent call last):
        ...
        igcnas.errors.UserError: study folder '/nonexistent/study' does not exist (run 'igcnas search' first or fix the path)
    """
    folder = Path(study_dir)
    if not folder.is_dir():
        raise UserError(f"study folder {str(folder)!r} does not exist (run 'igcnas search' first or fix the path)")
    store = StudyStore(folder.parent, folder.name)
    try:
        return rows_frame(((path.parent, row) for path, row in store.row_files(strict=True)), study=folder.name)
    except UserError as error:
        if str(error).startswith(str(folder)):
            raise
        raise UserError(f"{folder}: {error}") from None


def read_study_settings(study_dir: str | Path) -> dict[str, Any]:
    """The search settings in ``<study_dir>/study.json`` as a dict (``{}`` when the file does not exist).

    Example:
        >>> read_study_settings("/nonexistent/study")
        {}
    """
    folder = Path(study_dir)
    return StudyStore(folder.parent, folder.name).settings(strict=True)


def list_study_dirs(trials_dir: str | Path) -> list[str]:
    """Names of the study folders under ``trials_dir`` (those holding a study.json or a trial.json), sorted.

    Example:
        >>> list_study_dirs("/nonexistent/trials")
        []
    """
    return list_study_names(trials_dir)
