"""Which architectures the tabular benchmark trains: a plan stratified by design and size, plus the zoo.

For every size bin of :data:`SIZE_BINS` the plan takes ``per_bin`` architectures, spread evenly over the
(space, design) pairs of :data:`TABLE_SPACES` (the pairs rotate between bins so that every pair gets about the
same count overall). Each one is drawn uniformly from its space's choices with that design fixed, redrawn until
its closed-form params fall in the bin and its FLOPs are at most :data:`MAX_FLOPS` (the cap keeps a row's
training time within minutes on a CPU). Then come the zoo's CIFAR networks within the largest bin and the FLOP
cap. The plan is a pure function of its arguments: the same seed always gives the same spec ids.

Example:
    >>> plan = plan_table(per_bin=2, seed=0, zoo=False)
    >>> [(e.size_bin, e.source) for e in plan][:2]
    [('20k-50k', 'igc_cifar'), ('20k-50k', 'igc_cifar')]
    >>> all(lo <= e.params < hi for e in plan for name, lo, hi in SIZE_BINS if name == e.size_bin)
    True
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from igcnas.arch.spec import ArchSpec
from igcnas.errors import UserError

__all__ = ["SIZE_BINS", "TABLE_SPACES", "MAX_FLOPS", "PlannedRow", "plan_table", "size_bin", "frozen_plan"]

SIZE_BINS: tuple[tuple[str, int, int], ...] = (
    ("20k-50k", 20_000, 50_000),
    ("50k-120k", 50_000, 120_000),
    ("120k-250k", 120_000, 250_000),
    ("250k-600k", 250_000, 600_000),
)
"""(label, lowest params, params bound) of each stratum; a row's params are in [lowest, bound)."""

TABLE_SPACES: tuple[str, ...] = ("igc_cifar", "igcv3_mobile", "fog_designs")
"""The shipped spaces the table samples from (every design of each)."""

MAX_FLOPS = 100_000_000
"""FLOP cap of a sampled row (multiply-adds, as :func:`igcnas.cost.count` counts them)."""

_ATTEMPTS = 5000
_INPUT_SHAPE = (3, 32, 32)
_CLASSES = 10


@dataclass(frozen=True)
class PlannedRow:
    """One architecture of the table, before training."""

    name: str
    source: str  # a space's name, or "zoo"
    design: str
    size_bin: str
    spec: ArchSpec
    params: int
    flops: int

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the plan file's rows)."""
        return {"name": self.name, "source": self.source, "design": self.design, "size_bin": self.size_bin,
                "params": self.params, "flops": self.flops, "spec_id": self.spec.id, "arch": self.spec.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlannedRow:
        """Inverse of :meth:`to_dict`; the spec id is checked (a plan file edited by hand fails loudly)."""
        spec = ArchSpec.from_dict(data["arch"])
        if spec.id != data.get("spec_id"):
            raise UserError(f"tabular plan: row {data.get('name')!r} has spec id {data.get('spec_id')!r} but its "
                            f"arch gives {spec.id!r}; delete the plan file to plan again")
        return cls(str(data["name"]), str(data["source"]), str(data["design"]), str(data["size_bin"]), spec,
                   int(data["params"]), int(data["flops"]))


class _RandomTrial:
    """A define-by-run trial that draws every choice uniformly, with the design fixed."""

    def __init__(self, rng: random.Random, design: str) -> None:
        self.rng = rng
        self.design = design

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        if name == "design":
            return self.design
        return self.rng.choice(list(choices))

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        return self.rng.uniform(low, high)


def size_bin(params: int) -> str | None:
    """The label of the bin ``params`` falls in, or None outside every bin."""
    for label, low, bound in SIZE_BINS:
        if low <= params < bound:
            return label
    return None


def plan_table(*, per_bin: int = 16, seed: int = 0, spaces: Sequence[str] = TABLE_SPACES,
               zoo: bool = True) -> list[PlannedRow]:
    """The table's architectures: ``per_bin`` sampled ones per size bin, then (with ``zoo``) the zoo's CIFAR ones.

    Raises :class:`~igcnas.errors.UserError` when a (space, design) pair has no architecture in a bin after
    many draws, naming both.
    """
    from igcnas.cost import count
    from igcnas.search.search_space import load_space

    if isinstance(per_bin, bool) or not isinstance(per_bin, int) or per_bin < 1:
        raise UserError(f"--per-bin: {per_bin!r} must be an integer >= 1")
    loaded = [load_space(name) for name in spaces]
    pairs = [(space, design) for space in loaded for design in space.designs]
    rows: list[PlannedRow] = []
    seen: set[str] = set()
    for b, (label, low, bound) in enumerate(SIZE_BINS):
        for k in range(per_bin):
            space, design = pairs[(b * per_bin + k) % len(pairs)]
            rng = random.Random(zlib.crc32(f"{seed}/{label}/{space.name}/{design}/{k}".encode()))
            for _ in range(_ATTEMPTS):
                params = space.define(_RandomTrial(rng, design))
                try:
                    spec, _ = space.to_spec(params, input_shape=_INPUT_SHAPE, num_classes=_CLASSES)
                except UserError:  # a combination that fits no base width
                    continue
                cost = count(spec)
                if low <= cost.params < bound and cost.flops <= MAX_FLOPS and spec.id not in seen:
                    break
            else:
                raise UserError(f"tabular plan: no {design} architecture of space {space.name} has {label} params "
                                f"and <= {MAX_FLOPS:,} FLOPs after {_ATTEMPTS} draws; drop the pair or widen the bin")
            seen.add(spec.id)
            rows.append(PlannedRow(f"{space.name}/{design}/{label}/{k}", space.name, design, label, spec,
                                   int(cost.params), int(cost.flops)))
    if zoo:
        from igcnas.search._baselines import resolve_baselines

        for baseline in resolve_baselines("auto", layout="cifar", input_shape=_INPUT_SHAPE, num_classes=_CLASSES,
                                          max_params=SIZE_BINS[-1][2] - 1, max_flops=MAX_FLOPS):
            stratum = size_bin(baseline.params)
            if baseline.over or stratum is None or baseline.spec.id in seen:
                continue
            seen.add(baseline.spec.id)
            rows.append(PlannedRow(baseline.name, "zoo", baseline.spec.design, stratum, baseline.spec,
                                   int(baseline.params), int(baseline.flops)))
    return rows


def frozen_plan(root: Any) -> list[PlannedRow]:
    """The plan of the table folder ``root``: read from its plan file, or made by :func:`plan_table` and frozen
    there at the first call."""
    from igcnas.store import read_plan, write_plan

    stored = read_plan(root)
    if stored is not None:
        return [PlannedRow.from_dict(row) for row in stored]
    rows = plan_table()
    write_plan(root, [row.to_dict() for row in rows])
    return rows
