"""A tiny dependency-free progress bar (stderr, carriage-return redraws) for epochs, decoding and searches."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar", "format_duration"]


def format_duration(seconds: float) -> str:
    """Format seconds as ``M:SS`` or ``H:MM:SS`` (``?`` when unknown)."""
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """One-line progress bar for one epoch: ``epoch 3/10 [#####-----] 120/235 1532 img/s ETA 0:07 loss 1.234``.

    Redraws at most every ``min_interval`` seconds; ``close()`` erases the line so a summary line can follow.

    Example:
        >>> import io
        >>> stream = io.StringIO()
        >>> bar = ProgressBar(total=4, label="epoch 1/1", stream=stream, min_interval=0.0)
        >>> bar.update(2, images=256, loss=1.5)
        >>> print(stream.getvalue().lstrip("\\r"))  # doctest: +ELLIPSIS
        epoch 1/1 [############------------] 2/4 ... img/s ETA ... loss 1.5000
        >>> bar.close()  # erases the line: carriage return, as many blanks as the bar had, carriage return
        >>> _, line, blank, end = stream.getvalue().split("\\r")
        >>> blank == " " * len(line), end
        (True, '')
    """

    def __init__(
        self,
        *,
        total: int,
        label: str,
        stream: TextIO | None = None,
        width: int = 24,
        min_interval: float = 0.2,
        enabled: bool = True,
        keep: bool = False,
        unit: str = "img/s",
    ) -> None:
        self.total = max(int(total), 0)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.min_interval = min_interval
        self.start = time.perf_counter()
        self._last_draw = float("-inf")
        self._last_len = 0
        self.done = 0
        self.images = 0
        self.loss: float | None = None
        self.enabled = enabled
        self.keep = keep
        self.unit = unit

    def advance(self, count: int) -> None:
        """Add ``count`` finished items (each counts as one image for the rate)."""
        self.update(self.done + count, images=self.images + count)

    def update(self, done: int, *, images: int, loss: float | None = None, force: bool = False) -> None:
        """Record ``done`` finished batches and ``images`` seen so far; redraw if enough time passed."""
        self.done, self.images = done, images
        if loss is not None:
            self.loss = loss
        now = time.perf_counter()
        if self.enabled and (force or now - self._last_draw >= self.min_interval):
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        """Write the bar line (overwriting the previous one)."""
        elapsed = max(now - self.start, 1e-9)
        frac = min(self.done / self.total, 1.0) if self.total else 1.0
        filled = int(round(frac * self.width))
        rate = self.images / elapsed
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        loss = f" loss {self.loss:.4f}" if self.loss is not None else ""
        line = (
            f"{self.label} [{'#' * filled}{'-' * (self.width - filled)}] {self.done}/{self.total} "
            f"{rate:,.0f} {self.unit} ETA {format_duration(eta)}{loss}"
        )
        pad = " " * max(self._last_len - len(line), 0)
        self.stream.write("\r" + line + pad)
        self.stream.flush()
        self._last_len = len(line)

    def close(self) -> None:
        """Erase the bar line, or with ``keep`` draw the final state and end the line."""
        if self.enabled and self.keep:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
            self._last_len = 0
        elif self._last_len:
            self.stream.write("\r" + " " * self._last_len + "\r")
            self.stream.flush()
            self._last_len = 0
