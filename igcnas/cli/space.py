"""``igcnas space``: the design-space funnel and its survivors."""

from __future__ import annotations

import argparse
import json

from igcnas._table import render_table
from igcnas.cli._common import format_parent, positive_int
from igcnas.space import RULES, SpaceOptions, SpaceResult, prune_design_space, standard_field

__all__ = ["register", "run", "PAPER_EXAMPLES"]

# Designs the Fog paper discusses; the table output always explains them.
PAPER_EXAMPLES = (
    "DW+PW", "GC+PWG", "PW+DW+PW", "PWG+DW+PWG",
    "DW", "PW", "GC+DW", "DW+DW", "PW+PW", "PW+PWG", "PWG+PWG", "GC+PWG+GC+PWG",
)

HELP = """\
Enumerate every chain of 1..L sparse kernels (GC, DW, PW, PWG: 4 + 16 + ... + 4^L type sequences) and prune it
without training, by the Fog paper's three rules in order:
  repeat      the regex (.+?)\\1+ finds a repeated pattern (see --repeat-match);
  field       no admissible group numbers (divisors of C) give the standard convolution's information field (k,k,C);
  redundancy  a kernel does not grow the field, the field is complete before the chain ends, or a sub-chain
              already reaches it (bottleneck chains PW..PW/PWG..PWG keep their width projections: see --no-bottleneck).
Prints the funnel, the survivors (information field, a witness group assignment with its permutations, the
parameter formula, and designs equal up to order) and why the paper's example designs were removed."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``space`` command."""
    parser = subparsers.add_parser(
        "space", help="enumerate and prune the sparse-kernel design space", description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter, parents=[format_parent()],
    )
    parser.add_argument("--channels", "-C", type=positive_int, default=64, metavar="C",
                        help="channel count C of the standard convolution being replaced (default: 64)")
    parser.add_argument("--max-length", "-L", type=positive_int, default=6, metavar="L",
                        help="longest chain enumerated, 1..8 (default: 6, as in the paper)")
    parser.add_argument("--kernel-size", type=positive_int, default=3, metavar="K",
                        help="spatial size k of GC/DW and of the standard convolution (odd, default: 3)")
    parser.add_argument("--repeat-match", choices=("any", "whole"), default="any",
                        help="'any': remove chains containing an adjacent repeat anywhere (default); "
                             "'whole': only chains that are one pattern repeated (ABAB, AAA)")
    parser.add_argument("--no-bottleneck", action="store_true",
                        help="disable the bottleneck exception (then PW+DW+PW is removed as redundant)")
    parser.add_argument("--explain", action="append", default=[], metavar="DESIGN",
                        help="also explain this design, e.g. --explain GC+PWG+PW (repeatable)")
    parser.add_argument("--all", action="store_true", help="list every design with its verdict (long)")
    parser.set_defaults(func=run)


MAX_CHANNELS = 4096
"""The widest C ``igcnas space`` takes: its rules compare C x C path-count matrices, whose time and memory grow as
C squared."""


def run(args: argparse.Namespace) -> int:
    """Execute ``igcnas space``."""
    if not 2 <= args.channels <= MAX_CHANNELS:
        from igcnas.cli._common import die

        die(f"--channels: {args.channels} is {'too small' if args.channels < 2 else 'too large'}; give C from 2 to "
            f"{MAX_CHANNELS} (the funnel checks C x C connectivity matrices; the papers use up to a few hundred, "
            "e.g. --channels 64)")
    options = SpaceOptions(
        channels=args.channels,
        max_length=args.max_length,
        kernel_size=args.kernel_size,
        repeat_match=args.repeat_match,
        bottleneck=not args.no_bottleneck,
    )
    result = prune_design_space(options)
    explain = [result.verdict(d) for d in args.explain]  # validate names before printing anything
    if args.format == "json":
        payload = result.to_dict()
        payload["explained"] = [v.to_dict() for v in explain]
        print(json.dumps(payload, indent=2))
        return 0
    print(format_result(result, explain=[v.name for v in explain], show_all=args.all))
    return 0


def format_result(result: SpaceResult, *, explain: list[str], show_all: bool) -> str:
    """The human-readable report."""
    options = result.options
    target = standard_field(options.channels, options.kernel_size)
    out = [
        f"Sparse-kernel design space: C={options.channels}, chains of 1..{options.max_length} kernels, "
        f"k={options.kernel_size}, standard field {target}, repeat-match={options.repeat_match}, "
        f"bottleneck exception {'on' if options.bottleneck else 'off'} ({result.seconds * 1000:.0f} ms)",
        "",
        render_table(
            [{"stage": s if s not in RULES else f"rule: {s}", "removed": r, "remaining": n} for s, r, n in result.funnel],
            title="Funnel",
        ),
        "",
    ]
    order = result.same_up_to_order()
    rows = []
    for v in result.survivors():
        rows.append({
            "design": v.name,
            "info_field": str(v.field),
            "witness (groups, permutations)": v.witness.describe() if v.witness else "-",
            "params": v.formula,
            "same up to order": ", ".join(n for n in order[v.order_key] if n != v.name) or "-",
        })
    out.append(render_table(rows, title=f"Survivors ({len(rows)})"))
    out.append("")
    names = list(dict.fromkeys([*PAPER_EXAMPLES, *explain]))
    if show_all:
        names = [v.name for v in result.verdicts]
    shown = []
    for name in names:
        try:
            v = result.verdict(name)
        except Exception:
            continue  # longer than --max-length
        shown.append({"design": v.name, "verdict": v.removed_by or "survives", "why": v.reason})
    out.append(render_table(shown, title="Verdicts of the paper's examples" if not show_all else "All designs"))
    return "\n".join(out)
