"""``python -m igcnas.zoo --write-golden PATH``: count every zoo entry with fvcore and write the golden costs.

Each entry is counted twice, in closed form (:func:`igcnas.cost.count`) and by fvcore on the naive build
(:func:`igcnas.cost.fvcore_cost`); any mismatch aborts without writing. The file maps each name to
``{"params", "flops", "spec_id"}`` and is what ``tests/zoo`` checks the closed form against.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["golden_costs", "main"]


def golden_costs(*, verbose: bool = False) -> dict[str, dict[str, int | str]]:
    """``{name: {params, flops, spec_id}}`` for every zoo entry, closed form checked against fvcore."""
    import torch

    from igcnas.cost import count, fvcore_cost
    from igcnas.zoo import ZOO

    torch.set_num_threads(1)  # many small ops: one thread beats OpenMP spin-waiting on shared cores
    golden: dict[str, dict[str, int | str]] = {}
    for name, entry in ZOO.items():
        start = time.perf_counter()
        closed = count(entry.spec)
        measured = fvcore_cost(entry.spec)
        if closed != measured:
            raise SystemExit(f"{name}: closed form {closed} != fvcore {measured}; golden file not written")
        golden[name] = {"params": closed.params, "flops": closed.flops, "spec_id": entry.spec.id}
        if verbose:
            print(f"{name:32s} {closed.params:>12,} params {closed.flops:>15,} FLOPs "
                  f"({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return golden


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m igcnas.zoo``."""
    parser = argparse.ArgumentParser(prog="python -m igcnas.zoo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write-golden", metavar="PATH", required=True,
                        help="write {name: {params, flops, spec_id}} (checked against fvcore) to PATH")
    parser.add_argument("--quiet", action="store_true", help="do not print one line per entry")
    args = parser.parse_args(argv)
    golden = golden_costs(verbose=not args.quiet)
    path = Path(args.write_golden)
    path.write_text(json.dumps(golden, indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(golden)} entries to {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
