"""Read a study folder written by ``igcnas search`` into the trials-table schema, and list study folders.

Storage layout (the contract between the search engine and everything that reads its results)::

    trials/<study>/study.json              search settings (dataset, objectives, budgets, epochs, seed, ...)
    trials/<study>/<trial:04d>/trial.json  one row of the schema (keys = TRIAL_COLUMNS)
    trials/<study>/<trial:04d>/arch.json   the trial's ArchSpec
    trials/<study>/<trial:04d>/metrics.json, weights.safetensors (completed trials)

Example:
    >>> import tempfile, json
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp()) / "demo"
    >>> (folder / "0000").mkdir(parents=True)
    >>> _ = (folder / "0000" / "trial.json").write_text(json.dumps({"trial": 0, "state": "complete",
    ...     "accuracy": 0.9, "params": 1000, "flops": 5000, "epochs": 2, "max_epochs": 2}))
    >>> read_trials_dir(folder)[["trial", "state", "params"]].to_dict("records")
    [{'trial': 0, 'state': 'complete', 'params': 1000}]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from igcnas.analysis.schema import empty_trials_frame, validate_trials_frame
from igcnas.errors import UserError

__all__ = [
    "TRIAL_FILE",
    "STUDY_FILE",
    "StudyTrials",
    "read_trials_dir",
    "read_study_settings",
    "list_study_dirs",
    "open_study",
]

TRIAL_FILE = "trial.json"
"""Name of the per-trial row file inside ``trials/<study>/<trial:04d>/``."""

STUDY_FILE = "study.json"
"""Name of the search-settings file inside ``trials/<study>/``."""


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
    candidates.append(trial_dir / "arch.json")
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate.resolve())
    return text


def read_trials_dir(study_dir: str | Path) -> pd.DataFrame:
    """Read every ``<study_dir>/*/trial.json`` into one validated trials frame, sorted by trial number.

    Trial folders without a ``trial.json`` (a trial still starting) are skipped. ``arch_path`` is made absolute:
    the recorded path when it exists (relative paths are tried from the working directory, the trial folder and
    the folder holding the study), else the trial folder's ``arch.json``. ``study`` defaults to the folder name.
    A missing folder or an unreadable ``trial.json`` raises :class:`~igcnas.errors.UserError`.

    Example:
        >>> frame = read_trials_dir("trials/my-study")  # doctest: +SKIP
        >>> frame.loc[frame["state"] == "complete", ["trial", "accuracy", "params"]]  # doctest: +SKIP
    """
    folder = Path(study_dir)
    if not folder.is_dir():
        raise UserError(f"study folder {str(folder)!r} does not exist (run 'igcnas search' first or fix the path)")
    from igcnas.search._common import iter_trial_files

    records: list[dict[str, Any]] = []
    for trial_file, row in iter_trial_files(folder, strict=True):
        record = dict(row)
        record["arch_path"] = _resolve_arch_path(record.get("arch_path"), trial_file.parent)
        if not record.get("study"):
            record["study"] = folder.name
        records.append(record)
    if not records:
        return empty_trials_frame()
    try:
        frame = validate_trials_frame(pd.DataFrame.from_records(records))
    except UserError as error:
        raise UserError(f"{folder}: {error}") from None
    return frame.sort_values("trial", kind="stable").reset_index(drop=True)


def read_study_settings(study_dir: str | Path) -> dict[str, Any]:
    """The search settings in ``<study_dir>/study.json`` as a dict (``{}`` when the file does not exist).

    Example:
        >>> read_study_settings("/nonexistent/study")
        {}
    """
    path = Path(study_dir) / STUDY_FILE
    if not path.is_file():
        return {}
    from igcnas.search._common import read_json_file

    settings = read_json_file(path, STUDY_FILE)
    if not isinstance(settings, dict):
        raise UserError(f"{path}: expected a JSON object of search settings, got {type(settings).__name__}")
    return settings


def list_study_dirs(trials_dir: str | Path) -> list[str]:
    """Names of the study folders under ``trials_dir`` (those holding a study.json or a trial.json), sorted.

    Example:
        >>> list_study_dirs("/nonexistent/trials")
        []
    """
    root = Path(trials_dir)
    if not root.is_dir():
        return []
    names = []
    for child in sorted(root.iterdir()):
        if child.is_dir() and ((child / STUDY_FILE).is_file() or any(child.glob(f"*/{TRIAL_FILE}"))):
            names.append(child.name)
    return names


@dataclass(frozen=True)
class StudyTrials:
    """A study's trials frame, its folder under the trials directory and its search settings."""

    name: str
    frame: pd.DataFrame = field(repr=False)
    folder: Path
    settings: dict[str, Any] = field(default_factory=dict)


def _unknown_study(name: str, trials_dir: Path) -> UserError:
    """The error for a study name that is not under ``trials_dir``, listing the known ones."""
    known = list_study_dirs(trials_dir)
    listing = f"known studies: {', '.join(known)}" if known else f"no study found under {str(trials_dir)!r}"
    return UserError(
        f"--study: no study {name!r} in {str(trials_dir)!r} ({listing}); "
        "check the name, pass --trials-dir, or run 'igcnas search --study NAME' first"
    )


def open_study(name: str, *, storage: str | None = None, trials_dir: str | Path = "trials") -> StudyTrials:
    """Load a study's trials through ``igcnas.search.load_study``, with its folder and settings.

    Without a storage URL the study folder ``<trials_dir>/<name>`` must exist (else a UserError lists the known
    studies).

    Example:
        >>> study = open_study("e2e", trials_dir="trials")  # doctest: +SKIP
        >>> study.frame["state"].value_counts()  # doctest: +SKIP
    """
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"--study: {name!r} is not a study name (e.g. --study cifar-search)")
    root = Path(trials_dir)
    folder = root / name
    if storage is None and not folder.is_dir():
        raise _unknown_study(name, root)
    from igcnas.search import load_study

    frame = validate_trials_frame(load_study(name, storage=storage, trials_dir=str(root)))
    return StudyTrials(name=name, frame=frame, folder=folder, settings=read_study_settings(folder))
