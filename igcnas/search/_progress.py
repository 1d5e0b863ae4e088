"""Progress of a search on stderr: one line per trial event, with the study's tallies and best values."""

from __future__ import annotations

import sys
import time
from typing import Any

from igcnas.search.config import SearchConfig
from igcnas.store import TrialRecord, fully_trained

__all__ = ["Progress", "tally", "format_seconds"]


def format_seconds(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``."""
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """One line on stderr per trial event: states so far, best value per objective, elapsed time."""

    def __init__(self, config: SearchConfig, study: str, *, label: str = "") -> None:
        self.config = config
        self.study = study
        self.started = time.perf_counter()
        self.enabled = config.progress
        self.label = f"{label} " if label else ""

    def line(self, text: str) -> None:
        """Print one progress line (marked with the worker's label, e.g. ``w2/4``, when there are several)."""
        if self.enabled:
            print(f"[{format_seconds(time.perf_counter() - self.started):>7}] {self.label}{text}", file=sys.stderr,
                  flush=True)

    def warn(self, text: str) -> None:
        """Print a warning line on stderr, even with --quiet (it says the run did not do what was asked)."""
        print(f"[{format_seconds(time.perf_counter() - self.started):>7}] {self.label}warning: {text}", file=sys.stderr,
              flush=True)

    def trial(self, record: TrialRecord, counts: dict[str, int], best: dict[str, float]) -> None:
        """Report a finished trial with the study-wide tallies."""
        from igcnas.units import format_count

        acc = f"acc {record.accuracy:.3f}" if record.accuracy is not None else "acc -"
        what = f"#{record.trial:04d} {record.state:<10} {acc}  params {format_count(record.params)}  " \
               f"flops {format_count(record.flops)}  {record.epochs or 0}/{record.max_epochs} ep"
        if record.reason and record.state != "complete":
            what += f"  ({record.reason})"
        elif record.reused_from is not None:
            what += f"  (duplicate of #{record.reused_from:04d})"
        shown = ("complete", "running", "pruned", "infeasible", "failed") + (("screened",) if counts.get("screened") else ())
        tally = " ".join(f"{k} {counts.get(k, 0)}" for k in shown)
        bests = ", ".join(
            f"{col} {format_count(v) if col != 'accuracy' else f'{v:.3f}'}" for col, v in best.items()
        ) or "-"
        self.line(f"{what} | {tally} | best {bests}")


def tally(records: list[dict[str, Any]], objectives: list[tuple[str, str]], max_epochs: int) -> tuple[dict[str, int], dict[str, float]]:
    """State counts and the best full-fidelity value per objective over trial rows."""
    counts: dict[str, int] = {}
    best: dict[str, float] = {}
    for row in records:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
        if not fully_trained({**row, "max_epochs": max_epochs}):
            continue
        for column, direction in objectives:
            value = row.get(column)
            if value is None:
                continue
            if column not in best or (value > best[column] if direction == "max" else value < best[column]):
                best[column] = float(value)
    return counts, best
