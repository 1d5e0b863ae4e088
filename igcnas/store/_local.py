"""The trial store on a local (or NFS-mounted) folder: ``<trials_dir>/<study>/``.

Layout (the contract between the search and everything that reads its results)::

    <trials_dir>/<study>/study.json              the settings that define the study
    <trials_dir>/<study>/<trial:04d>/trial.json  one row of the trials table (TrialRecord)
    <trials_dir>/<study>/<trial:04d>/arch.json   the trial's ArchSpec
    <trials_dir>/<study>/<trial:04d>/metrics.json, weights.safetensors   trained / completed trials

Readers are lenient by default (a search reads while other workers write: an unreadable trial.json is
skipped) and strict on request (a UserError naming the file).

Example:
    >>> import tempfile
    >>> store = StudyStore(tempfile.mkdtemp(), "demo")
    >>> store.write_record(TrialRecord(trial=0, state="infeasible", params=90_000))
    >>> [(r["trial"], r["state"]) for r in store.rows()], list_study_names(store.root)
    ([(0, 'infeasible')], ['demo'])
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from igcnas.errors import UserError
from igcnas.store._files import (
    ARCH_FILE,
    STUDY_FILE,
    TRIAL_FILE,
    atomic_write,
    read_json_file,
    trial_folder_name,
    write_json,
    write_json_if_changed,
)
from igcnas.store._record import TrialRecord

__all__ = ["StudyStore", "list_study_names"]


class StudyStore:
    """One study's folder: the only code that names, writes and reads the files in it."""

    def __init__(self, root: str | Path, name: str) -> None:
        self.root = Path(root)
        self.name = name
        self.folder = self.root / name

    def __repr__(self) -> str:
        return f"StudyStore({str(self.root)!r}, {self.name!r})"

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (StudyStore, (str(self.root), self.name))

    # -- names -------------------------------------------------------------------------------------------
    def trial_dir(self, number: int) -> Path:
        """``<trials_dir>/<study>/<number:04d>``."""
        return self.folder / trial_folder_name(number)

    def exists(self) -> bool:
        """True when the study folder exists."""
        return self.folder.is_dir()

    def training_dir(self, number: int) -> Path | None:
        """Where the training engine may write this trial's files directly (a local store: the trial folder)."""
        return self.trial_dir(number)

    # -- writes ------------------------------------------------------------------------------------------
    def write_settings(self, settings: dict[str, Any]) -> None:
        """Write ``study.json``."""
        write_json(self.folder / STUDY_FILE, settings)

    def write_record(self, record: TrialRecord | dict[str, Any]) -> None:
        """Write a trial's ``trial.json`` (atomically)."""
        row = record.to_dict() if isinstance(record, TrialRecord) else dict(record)
        write_json(self.trial_dir(int(row["trial"])) / TRIAL_FILE, row)

    def write_arch(self, number: int, arch: dict[str, Any]) -> str:
        """Write a trial's ``arch.json`` unless it already holds exactly ``arch``; returns its path."""
        path = self.trial_dir(number) / ARCH_FILE
        write_json_if_changed(path, arch)
        return str(path)

    def put_file(self, number: int, name: str, data: bytes) -> None:
        """Write one file of a trial (metrics, weights) from its bytes, atomically."""
        _check_name(name)
        atomic_write(self.trial_dir(number) / name, lambda tmp: tmp.write_bytes(data))

    # -- reads -------------------------------------------------------------------------------------------
    def settings(self, *, strict: bool = False) -> dict[str, Any]:
        """``study.json`` as a dict: ``{}`` when missing; an unreadable one is ``{}``, or a UserError if strict."""
        path = self.folder / STUDY_FILE
        if not path.is_file():
            return {}
        return _read_object(path, "a JSON object of search settings", strict=strict) or {}

    def row_files(self, *, strict: bool = False) -> Iterator[tuple[Path, dict[str, Any]]]:
        """``(path, row)`` for every ``*/trial.json``, in folder order (lenient unless ``strict``)."""
        for path in sorted(self.folder.glob(f"*/{TRIAL_FILE}")):
            row = _read_object(path, "a JSON object (one trials-table row)", strict=strict)
            if row is not None:
                yield path, row

    def rows(self, *, strict: bool = False) -> list[dict[str, Any]]:
        """Every readable trial.json row, by trial number."""
        return sorted((row for _, row in self.row_files(strict=strict)), key=lambda r: int(r.get("trial", 0)))

    def record(self, number: int) -> TrialRecord | None:
        """One trial's record, or None when it has no readable trial.json."""
        path = self.trial_dir(number) / TRIAL_FILE
        row = _read_object(path, "a JSON object (one trials-table row)", strict=False) if path.is_file() else None
        return TrialRecord.from_dict(row) if row is not None else None

    def read_file(self, number: int, name: str) -> bytes | None:
        """The bytes of one trial file, or None when it does not exist."""
        _check_name(name)
        path = self.trial_dir(number) / name
        return path.read_bytes() if path.is_file() else None


def list_study_names(root: str | Path) -> list[str]:
    """The study folders under ``root`` (those holding a study.json or a trial.json), sorted."""
    folder = Path(root)
    if not folder.is_dir():
        return []
    return [child.name for child in sorted(folder.iterdir())
            if child.is_dir() and ((child / STUDY_FILE).is_file() or any(child.glob(f"*/{TRIAL_FILE}")))]


def _read_object(path: Path, expected: str, *, strict: bool) -> dict[str, Any] | None:
    """The JSON object in ``path``; an unreadable file or another JSON value is None, or a UserError if strict."""
    try:
        value = read_json_file(path, path.name)
        if not isinstance(value, dict):
            raise UserError(f"{path}: expected {expected}, got {type(value).__name__}")
    except UserError:
        if strict:
            raise
        return None
    return value


def _check_name(name: str) -> None:
    """A trial file is a plain name inside the trial folder (no path separators, no parent references)."""
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"not a trial file name: {name!r}")
