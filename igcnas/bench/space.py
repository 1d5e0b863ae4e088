"""Benchmark of the design-space funnel (cold runs, no cache)."""

from __future__ import annotations

import statistics
import time
from typing import Any

from igcnas.space.enumerate import SpaceOptions, _cached_run

__all__ = ["bench_space"]


def bench_space(*, channels: tuple[int, ...] = (32, 64, 128), max_length: int = 6, repeats: int = 5) -> list[dict[str, Any]]:
    """Time the whole funnel (5460 chains at L=6) for several C, median of cold runs."""
    rows = []
    for c in channels:
        options = SpaceOptions(channels=c, max_length=max_length)
        times = []
        for _ in range(repeats):
            _cached_run.cache_clear()
            start = time.perf_counter()
            result = _cached_run(options)
            times.append(time.perf_counter() - start)
        rows.append({
            "bench": "space",
            "channels": c,
            "max_length": max_length,
            "designs": result.funnel[0][2],
            "survivors": len(result.survivors()),
            "median_ms": round(statistics.median(times) * 1000, 1),
            "max_ms": round(max(times) * 1000, 1),
        })
    _cached_run.cache_clear()
    return rows
