"""The trial store on a local (or NFS-mounted) folder: ``<trials_dir>/<study>/``.

Layout (the contract between the search and everything that reads its results)::

    <trials_dir>/<study>/study.json              the settings that define the study
    <trials_dir>/<study>/<trial:04d>/trial.json  one row of the trials table (TrialRecord)
    <trials_dir>/<study>/<trial:04d>/arch.json   the trial's ArchSpec
    <trials_dir>/<study>/<trial:04d>/metrics.json, weights.safetensors   trained / completed trials

Readers are lenient by default (a search reads while other workers write: an unreadable trial.json is
skipped) and strict on request (a UserError naming the file).

With ``artifacts=URI`` (``--artifacts``) every file written is also written to that Optuna artifact store
(:mod:`igcnas.store._artifacts`), and :meth:`StudyStore.pull` fills the local folder from it: the folder is then a
working copy, and workers on several machines, each with its own folder, share one set of trial files.

Example:
    >>> import tempfile
    >>> store = StudyStore(tempfile.mkdtemp(), "demo")
    >>> store.write_record(TrialRecord(trial=0, state="infeasible", params=90_000))
    >>> [(r["trial"], r["state"]) for r in store.rows()], list_study_names(store.root)
    ([(0, 'infeasible')], ['demo'])
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from igcnas.errors import UserError
from igcnas.store._artifacts import ArtifactMirror
from igcnas.store._files import (
    ARCH_FILE,
    METRICS_FILE,
    STUDY_FILE,
    TRIAL_FILE,
    WEIGHTS_FILE,
    atomic_write,
    read_json_file,
    trial_folder_name,
    write_json,
    write_json_if_changed,
)
from igcnas.store._record import TrialRecord

__all__ = ["StudyStore", "list_study_names"]


class StudyStore:
    """One study's folder: the only code that names, writes and reads the files in it.

    ``artifacts``: an artifact-store URI (``--artifacts``) that receives a copy of every file written, and from
    which :meth:`pull` fills the folder.
    """

    def __init__(self, root: str | Path, name: str, *, artifacts: str | None = None) -> None:
        self.root = Path(root)
        self.name = name
        self.folder = self.root / name
        self.artifacts = artifacts
        self._mirror: ArtifactMirror | None = None

    def __repr__(self) -> str:
        extra = f", artifacts={self.artifacts!r}" if self.artifacts else ""
        return f"StudyStore({str(self.root)!r}, {self.name!r}{extra})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (str(self.root), self.name, self.artifacts))

    @property
    def mirror(self) -> ArtifactMirror | None:
        """The artifact store's copy of this study (None without ``artifacts``); opened on first use."""
        if self.artifacts and self._mirror is None:
            self._mirror = ArtifactMirror(self.artifacts, self.name)
        return self._mirror

    def _upload(self, number: int | None, name: str, path: Path) -> None:
        """Copy a file just written locally to the artifact store (when there is one)."""
        if self.mirror is not None:
            self.mirror.put(number, name, path.read_bytes())

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
        path = self.folder / STUDY_FILE
        write_json(path, settings)
        self._upload(None, STUDY_FILE, path)

    def write_record(self, record: TrialRecord | dict[str, Any]) -> None:
        """Write a trial's ``trial.json`` (atomically)."""
        row = record.to_dict() if isinstance(record, TrialRecord) else dict(record)
        number = int(row["trial"])
        path = self.trial_dir(number) / TRIAL_FILE
        write_json(path, row)
        self._upload(number, TRIAL_FILE, path)

    def write_arch(self, number: int, arch: dict[str, Any]) -> str:
        """Write a trial's ``arch.json`` unless it already holds exactly ``arch``; returns its path relative to the
        trials folder (``<study>/0007/arch.json``: records name no path of the machine that wrote them)."""
        path = self.trial_dir(number) / ARCH_FILE
        write_json_if_changed(path, arch)
        self._upload(number, ARCH_FILE, path)  # also when unchanged: a folder filled before --artifacts was given
        return str(path.relative_to(self.folder.parent))

    def put_file(self, number: int, name: str, data: bytes) -> None:
        """Write one file of a trial (metrics, weights) from its bytes, atomically."""
        _check_name(name)
        _write_bytes(self.trial_dir(number) / name, data)
        if self.mirror is not None:
            self.mirror.put(number, name, data)

    def publish(self, number: int, name: str) -> None:
        """A file the training engine wrote into :meth:`training_dir` is final: copy it to the artifact store."""
        _check_name(name)
        path = self.trial_dir(number) / name
        if path.is_file():
            self._upload(number, name, path)

    def pull(self, numbers: Iterable[int]) -> int:
        """Fill the folder from the artifact store: study.json when missing, and the files of these trials.

        A trial's trial.json is taken when it differs from the local one, and its other files (arch.json,
        metrics.json, weights) when they are missing locally or its trial.json changed. Returns how many files
        were written; without an artifact store, 0.
        """
        mirror = self.mirror
        if mirror is None:
            return 0
        written = 0
        if not (self.folder / STUDY_FILE).is_file():
            settings = mirror.get(None, STUDY_FILE)
            if settings is not None:
                _write_bytes(self.folder / STUDY_FILE, settings)
                written += 1
        for number in sorted(set(int(n) for n in numbers)):
            remote = mirror.get(number, TRIAL_FILE)
            if remote is None:
                continue
            folder = self.trial_dir(number)
            local = folder / TRIAL_FILE
            changed = not local.is_file() or local.read_bytes() != remote
            if changed:
                _write_bytes(local, remote)
                written += 1
            for name in (ARCH_FILE, METRICS_FILE, WEIGHTS_FILE):
                if (folder / name).is_file() and not changed:
                    continue
                data = mirror.get(number, name)
                if data is not None:
                    _write_bytes(folder / name, data)
                    written += 1
        return written

    # -- reads -------------------------------------------------------------------------------------------
    def settings(self, *, strict: bool = False) -> dict[str, Any]:
        """``study.json`` as a dict: ``{}`` when missing; an unreadable one is ``{}``, or a UserError if strict."""
        path = self.folder / STUDY_FILE
        if not path.is_file():
            return {}
        return _read_object(path, "a JSON object of search settings", strict=strict) or {}

    def row_files(self, *, strict: bool = False, baselines: bool = False) -> Iterator[tuple[Path, dict[str, Any]]]:
        """``(path, row)`` for every ``*/trial.json``, in folder order (lenient unless ``strict``); the rows of
        baselines (``baseline`` set) only with ``baselines``."""
        for path in sorted(self.folder.glob(f"*/{TRIAL_FILE}")):
            row = _read_object(path, "a JSON object (one trials-table row)", strict=strict)
            if row is not None and (baselines or not row.get("baseline")):
                yield path, row

    def rows(self, *, strict: bool = False, baselines: bool = False) -> list[dict[str, Any]]:
        """Every readable trial.json row of the search, by trial number (with the baselines' when asked)."""
        return sorted((row for _, row in self.row_files(strict=strict, baselines=baselines)),
                      key=lambda r: int(r.get("trial", 0)))

    def baseline_rows(self) -> list[dict[str, Any]]:
        """The rows of the study's baselines only."""
        return [row for row in self.rows(baselines=True) if row.get("baseline")]

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


def _write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _rebuild(root: str, name: str, artifacts: str | None) -> StudyStore:
    """Unpickle a StudyStore (its artifact store is reopened where it is used)."""
    return StudyStore(root, name, artifacts=artifacts)


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
