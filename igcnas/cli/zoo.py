"""``igcnas zoo``: the papers' reference networks with their params, FLOPs and the papers' figures."""

from __future__ import annotations

import argparse
import json
from typing import Any

from igcnas._table import render_table
from igcnas.cli._common import format_parent
from igcnas.units import format_count

__all__ = ["register", "run", "zoo_rows"]

HELP = """\
List the zoo: the papers' reference networks (IGCV1/V2/V3, MobileNet, the Fog paper's designs) as architecture
specs. params and FLOPs are ours in the budget convention (every trainable parameter incl. BN and the FC bias;
FLOPs = multiply-adds per image at the net's input size). 'paper' columns are the first figure the papers print
for that network; 'diff' compares it with ours counted the paper's way (e.g. no BN, 10-class FC); 'igcnas
describe NAME' shows every paper row and its convention.

Example: igcnas zoo --family igcv3"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``zoo`` command (igcnas.zoo is imported only when it runs)."""
    parser = subparsers.add_parser("zoo", help="list the papers' reference networks", description=HELP,
                                   formatter_class=argparse.RawDescriptionHelpFormatter, parents=[format_parent()])
    parser.add_argument("--family", metavar="FAMILY",
                        help="only this family: igcv1, igcv2, igcv3, mobilenet or fog")
    parser.set_defaults(func=run)


def zoo_rows(family: str | None = None) -> list[dict[str, Any]]:
    """One JSON-safe row per zoo entry: name, family, layout, design, params, flops, the first paper figure."""
    from igcnas.cost import count
    from igcnas.zoo import ZOO, paper_comparison, zoo_names

    rows = []
    for name in zoo_names(family):
        entry = ZOO[name]
        cost = count(entry.spec)
        figures = [r for r in paper_comparison(entry) if r["status"] != "no figure" and r["scope"] == "network"]
        first = figures[0] if figures else None
        rows.append({
            "name": name,
            "family": entry.family,
            "layout": entry.layout,
            "design": entry.spec.design,
            "params": cost.params,
            "flops": cost.flops,
            "paper_key": first["key"] if first else None,
            "paper_params": first["paper_params"] if first else None,
            "paper_flops": first["paper_flops"] if first else None,
            "paper_convention_params": first["params"] if first else None,
            "paper_convention_flops": first["flops"] if first else None,
            "params_diff": first["params_diff"] if first else None,
            "flops_diff": first["flops_diff"] if first else None,
            "status": first["status"] if first else "no figure",
            "claims": entry.claims,
            "spec_id": entry.spec.id,
        })
    return rows


def _pct(value: float | None) -> str | None:
    """Signed percentage or None."""
    return None if value is None else f"{value * 100:+.1f}%"


def run(args: argparse.Namespace) -> int:
    """Execute ``igcnas zoo``."""
    rows = zoo_rows(args.family)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    shown = [{
        "name": r["name"], "family": r["family"], "layout": r["layout"], "design": r["design"],
        "params": format_count(r["params"]), "FLOPs": format_count(r["flops"]),
        "paper params": format_count(r["paper_params"]), "paper FLOPs": format_count(r["paper_flops"]),
        "diff": "/".join(p for p in (_pct(r["params_diff"]), _pct(r["flops_diff"])) if p) or None,
        "status": r["status"], "claims": r["claims"],
    } for r in rows]
    print(render_table(shown, title=f"Zoo ({len(rows)} networks; diff = ours in the paper's convention vs paper, "
                                    "params/FLOPs)"))
    return 0
