"""An exclusive, non-blocking lock on a run folder: several processes share a list of runs, one run each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["RunLock"]


class RunLock:
    """An exclusive, non-blocking lock on ``folder/.lock``; ``with`` gives True when this process holds it.

    The lock is released when the process ends, however it ends (kill -9 included), so a rerun can take it.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> with RunLock(folder) as mine, RunLock(folder) as theirs:
        ...     mine, theirs
        (True, False)
    """

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / ".lock"
        self.handle: Any = None

    def __enter__(self) -> bool:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a")  # noqa: SIM115 - held for the whole run
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            self.handle = None
            return False
        return True

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()  # closing releases the lock
            self.handle = None
