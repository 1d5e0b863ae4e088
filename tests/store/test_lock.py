"""The file locks: the blocking FileLock is released only by the block that took it, and excludes other processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from igcnas.store import FileLock

_PROBE = """
import fcntl, sys
with open(sys.argv[1], "a+b") as handle:
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("busy")
    else:
        print("free")
"""


def _probe(path: Path) -> str:
    """Whether another process can take the flock on ``path`` now."""
    return subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_a_nested_with_leaves_the_outer_hold_in_place(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "turn.lock")
    with lock:
        with lock:
            assert lock.held
        assert lock.held
        assert _probe(tmp_path / "turn.lock") == "busy"
    assert not lock.held
    assert _probe(tmp_path / "turn.lock") == "free"


def test_a_with_inside_an_explicit_acquire_does_not_release_it(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "turn.lock")
    lock.acquire()
    with lock:
        pass
    assert lock.held
    lock.release()
    assert not lock.held
    assert _probe(tmp_path / "turn.lock") == "free"


def test_without_a_path_the_lock_is_a_no_op(tmp_path: Path) -> None:
    lock = FileLock(None)
    with lock:
        assert not lock.held
    lock.release()
