"""``igcnas spaces``: the search spaces shipped with igcnas, each with its layout, designs and description."""

from __future__ import annotations

import argparse
import json
from typing import Any

from igcnas._table import render_table
from igcnas.cli._common import format_parent

__all__ = ["register", "run", "space_rows"]

HELP = """\
List the search spaces shipped inside igcnas. Pass one to 'igcnas search --space NAME' by name, or copy its YAML
('igcnas spaces --show NAME > my_space.yaml'), edit it and pass the file's path instead.

Examples:
  igcnas spaces
  igcnas spaces --show fog_designs
  igcnas search --space igcv3_mobile --max-params 0.3M"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``spaces`` command."""
    parser = subparsers.add_parser("spaces", help="list the shipped search spaces", description=HELP,
                                   formatter_class=argparse.RawDescriptionHelpFormatter, parents=[format_parent()])
    parser.add_argument("--show", metavar="NAME", help="print the YAML of this shipped space instead of the list")
    parser.set_defaults(func=run)


def space_rows() -> list[dict[str, Any]]:
    """One row per shipped space: name, layout, designs, base widths, depths (or depth multipliers) and its
    one-line description."""
    from igcnas.search._shipped import shipped_spaces
    from igcnas.search.search_space import SearchSpace

    rows = []
    for name in shipped_spaces():
        space = SearchSpace.load(name)
        rows.append({"name": name, "layout": space.layout, "designs": list(space.designs),
                     "base_widths": list(space.base_widths),
                     "depths": list(space.depths), "depth_multipliers": list(space.depth_multipliers),
                     "description": space.description})
    return rows


def _depth_range(row: dict[str, Any]) -> str:
    """``1-32`` (blocks per stage), or ``x0.25-x2.5`` (multipliers of the layout's row depths)."""
    if row["depths"]:
        return f"{min(row['depths'])}-{max(row['depths'])}"
    return f"x{min(row['depth_multipliers']):g}-x{max(row['depth_multipliers']):g}"


def run(args: argparse.Namespace) -> int:
    """Execute ``igcnas spaces``."""
    if args.show:
        from igcnas.errors import UserError
        from igcnas.search._shipped import read_space_text, shipped_space, shipped_spaces

        if shipped_space(args.show) is None:
            raise UserError(f"--show: no shipped space '{args.show}'; shipped spaces: {', '.join(shipped_spaces())}")
        print(read_space_text(args.show)[0], end="")
        return 0
    rows = space_rows()
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    shown = [{"name": r["name"], "layout": r["layout"], "designs": ", ".join(r["designs"]),
              "base widths": f"{min(r['base_widths'])}-{max(r['base_widths'])}",
              "blocks/stage": _depth_range(r), "description": r["description"]}
             for r in rows]
    print(render_table(shown, title=f"Shipped search spaces ({len(rows)}; use one with 'igcnas search --space NAME')"))
    return 0
