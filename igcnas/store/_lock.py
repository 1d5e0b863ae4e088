"""File locks (``flock``): a non-blocking one on a run folder, and a blocking one that processes take in turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["RunLock", "FileLock"]


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


class FileLock:
    """An exclusive, blocking ``flock`` on ``path``, released at most once per acquire (``path`` None: a no-op).

    The kernel drops it when the process ends, however it ends, so a killed holder never blocks the others. A
    ``with`` block releases only what it took: one nested in a region already holding the lock leaves it held.

    Example:
        >>> import tempfile
        >>> lock = FileLock(Path(tempfile.mkdtemp()) / "turn.lock")
        >>> with lock:
        ...     with lock:
        ...         pass
        ...     lock.held
        True
        >>> lock.held
        False
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        self._handle: Any = None
        self._took: list[bool] = []

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._handle is not None

    def acquire(self) -> None:
        """Wait for the lock (nothing when already held or when there is no path)."""
        if self.path is None or self._handle is not None:
            return
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a+b")  # noqa: SIM115 - held across calls, closed by release()
        fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX)

    def release(self) -> None:
        """Give the lock back (nothing when not held)."""
        if self._handle is None:
            return
        import fcntl

        fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None

    def __enter__(self) -> FileLock:
        took = not self.held
        self.acquire()
        self._took.append(took)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._took.pop():
            self.release()
