"""Benchmark of budget counting: closed form vs fvcore vs cached, for CIFAR-size candidates."""

from __future__ import annotations

import statistics
import time
import warnings
from typing import Any

from igcnas.arch.fit import layout_spec
from igcnas.arch.spec import ArchSpec

__all__ = ["bench_cost", "candidate_specs"]


def candidate_specs() -> list[ArchSpec]:
    """A handful of CIFAR-size candidates across the four Fog designs."""
    return [
        layout_spec("DW+PW", 32),
        layout_spec("GC+PWG", 32, groups=(8, 4)),
        layout_spec("PW+DW+PW", 64, bottleneck=0.25),
        layout_spec("PWG+DW+PWG", 64, groups=(2, None, 2), bottleneck=0.25),
    ]


def bench_cost(*, repeats: int = 5) -> list[dict[str, Any]]:
    """Median milliseconds per count: closed form (cold), fvcore (cold), and a cached repeat."""
    from igcnas import cost as cost_module

    rows = []
    for spec in candidate_specs():
        closed, fv, cached = [], [], []
        for _ in range(repeats):
            cost_module.clear_cache()
            start = time.perf_counter()
            closed_cost = cost_module.count(spec)
            closed.append(time.perf_counter() - start)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fv_cost = cost_module.fvcore_cost(spec)
            fv.append(time.perf_counter() - start)
            start = time.perf_counter()
            cost_module.count(spec)
            cost_module.fvcore_cost(spec)
            cached.append(time.perf_counter() - start)
        rows.append({
            "bench": "cost",
            "design": spec.design,
            "params": closed_cost.params,
            "flops": closed_cost.flops,
            "equal": closed_cost == fv_cost,
            "closed_form_ms": round(statistics.median(closed) * 1000, 3),
            "fvcore_ms": round(statistics.median(fv) * 1000, 1),
            "cached_ms": round(statistics.median(cached) * 1000, 4),
            "fvcore_over_closed": round(statistics.median(fv) / max(statistics.median(closed), 1e-9), 1),
        })
    return rows
