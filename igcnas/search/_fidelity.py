"""Multi-fidelity pruning shared by both backends: the rungs and Pareto-aware successive halving.

Example:
    >>> rung_epochs(10)
    (1, 3, 9)
    >>> pareto_promote([("a", (-0.9, 100.0)), ("b", (-0.8, 50.0))], ("c", (-0.5, 200.0)))
    False
"""

from __future__ import annotations

from typing import Any

__all__ = ["ETA", "rung_epochs", "pareto_promote"]

ETA = 3
"""Reduction factor of every pruner (keep the top third at each rung)."""


def rung_epochs(max_epochs: int, *, eta: int = ETA) -> tuple[int, ...]:
    """Rung milestones 1, eta, eta^2, ... strictly below ``max_epochs`` (the last epoch is never a rung)."""
    out, rung = [], 1
    while rung < max_epochs:
        out.append(rung)
        rung *= eta
    return tuple(out)


def pareto_promote(pool: list[tuple[Any, tuple[float, ...]]], me: tuple[Any, tuple[float, ...]], *,
                   eta: int = ETA) -> bool:
    """Pareto-aware successive halving: keep ``me`` when it is in the top 1/eta of its rung.

    Entries are ``(id, values)`` with every value to be *minimised* (pass ``-accuracy``). They are ranked by how
    many other entries dominate them, so a small, slightly less accurate network survives next to a big accurate
    one (ranking on accuracy alone collapses the front onto the largest models). Ties are kept; the first eta-1
    arrivals at a rung keep only the best, as Optuna's successive halving does.
    """
    entries = [e for e in pool if e[0] != me[0]] + [me]

    def dominated(point: tuple[Any, tuple[float, ...]]) -> int:
        return sum(
            other[0] != point[0]
            and all(a <= b for a, b in zip(other[1], point[1], strict=True))
            and any(a < b for a, b in zip(other[1], point[1], strict=True))
            for other in entries
        )

    keep = max(len(entries) // eta, 1)
    ranks = sorted(dominated(e) for e in entries)
    return dominated(me) <= ranks[keep - 1]
