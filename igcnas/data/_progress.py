"""A dependency-free one-line progress indicator on stderr."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Rewrites one stderr line (``label: done/total (pct%) elapsed``) at most every ``interval`` seconds.

    Disabled instances do nothing, so callers need no ``if progress`` checks.

    Example:
        >>> p = Progress("decode train", total=10, enabled=False)
        >>> p.update(10); p.close()
    """

    def __init__(
        self,
        label: str,
        *,
        total: int,
        enabled: bool,
        stream: TextIO | None = None,
        interval: float = 0.25,
    ) -> None:
        self.label = label
        self.total = max(int(total), 0)
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.done = 0
        self._start = time.perf_counter()
        self._last = 0.0
        self._closed = False
        if enabled:
            self._draw()

    def _draw(self) -> None:
        """Write the current line."""
        elapsed = time.perf_counter() - self._start
        pct = 100.0 * self.done / self.total if self.total else 100.0
        self.stream.write(f"\r{self.label}: {self.done}/{self.total} ({pct:.0f}%) {elapsed:.1f}s")
        self.stream.flush()
        self._last = time.perf_counter()

    def update(self, count: int) -> None:
        """Add ``count`` finished items and redraw if the interval has passed."""
        self.done += count
        if self.enabled and time.perf_counter() - self._last >= self.interval:
            self._draw()

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled and not self._closed:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
        self._closed = True
