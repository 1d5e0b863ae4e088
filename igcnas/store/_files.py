"""File names of a study folder, and the one atomic writer and JSON reader/writer igcnas uses.

Every JSON file igcnas writes (trial.json, study.json, metrics.json, arch.json, manifests) goes through
:func:`write_json`: NaN and infinities become ``null``, numpy and pandas scalars become Python numbers, and the
file is replaced atomically (a temporary file in the same folder, fsync, ``os.replace``), so a reader or a crash
never sees half a file.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "x.json"
    >>> write_json(path, {"a": float("nan"), "b": [1, 2.5]})
    >>> read_json_file(path, "x.json")
    {'a': None, 'b': [1, 2.5]}
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from igcnas.errors import UserError

__all__ = [
    "STUDY_FILE",
    "TRIAL_FILE",
    "ARCH_FILE",
    "METRICS_FILE",
    "WEIGHTS_FILE",
    "CHECKPOINT_FILE",
    "TRIAL_FILES",
    "trial_folder_name",
    "atomic_write",
    "write_json",
    "write_json_if_changed",
    "json_safe",
    "read_json_file",
]

STUDY_FILE = "study.json"
"""``<study>/study.json``: the settings that define the study (checked on resume)."""
TRIAL_FILE = "trial.json"
"""``<study>/<trial>/trial.json``: one row of the trials table (:class:`~igcnas.store.TrialRecord`)."""
ARCH_FILE = "arch.json"
"""``<study>/<trial>/arch.json``: the trial's :class:`~igcnas.arch.ArchSpec`."""
METRICS_FILE = "metrics.json"
"""``<study>/<trial>/metrics.json``: the training engine's per-epoch history (trained trials)."""
WEIGHTS_FILE = "weights.safetensors"
"""``<study>/<trial>/weights.safetensors``: the trained weights (completed trials)."""
CHECKPOINT_FILE = "checkpoint.pt"
"""The training engine's resume checkpoint: kept while a run trains, never part of a finished trial."""
TRIAL_FILES: tuple[str, ...] = (TRIAL_FILE, ARCH_FILE, METRICS_FILE, WEIGHTS_FILE)
"""Every file a finished trial can have."""


def trial_folder_name(number: int) -> str:
    """The folder of trial ``number`` inside its study folder: ``0007``; a baseline's negative number -3 is
    ``baseline-003``."""
    number = int(number)
    return f"{number:04d}" if number >= 0 else f"baseline-{-number:03d}"


def atomic_write(path: str | Path, writer: Callable[[Path], object]) -> None:
    """Call ``writer(tmp_path)`` on a temporary file beside ``path``, then replace ``path`` with it atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def json_safe(value: Any) -> Any:
    """A JSON-safe copy: NaN/inf/NA to None, numpy and pandas scalars to Python, paths to strings, recursively."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or type(value).__name__ == "NAType":  # pandas.NA, without importing pandas
        return None
    if hasattr(value, "item") and type(value).__module__ == "numpy":
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically and flushed to disk (:func:`json_safe` applied first)."""
    text = json.dumps(json_safe(payload), indent=2, allow_nan=False) + "\n"

    def _write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    atomic_write(path, _write)


def write_json_if_changed(path: str | Path, payload: Any) -> bool:
    """:func:`write_json` unless the file already holds exactly ``payload``; True when it wrote."""
    path = Path(path)
    try:
        if path.is_file() and json.loads(path.read_text(encoding="utf-8")) == json_safe(payload):
            return False
    except ValueError:  # unreadable: rewrite it
        pass
    write_json(path, payload)
    return True


def read_json_file(path: str | Path, what: str) -> Any:
    """Parse a JSON file; a one-line UserError naming the file when it cannot be read or is not JSON (UTF-8)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:  # JSONDecodeError, or bytes that are not UTF-8
        raise UserError(
            f"{path}: {what} is not valid JSON ({error}); repair or delete it (the search rewrites it)"
        ) from None
    except OSError as error:
        raise UserError(f"{path}: cannot read {what} ({error.strerror})") from None
