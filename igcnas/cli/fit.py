"""``igcnas fit``: the widest network of a design under a parameter/FLOP budget."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from igcnas._table import render_table
from igcnas.cli._common import count, format_parent, integer, real
from igcnas.errors import UserError
from igcnas.units import format_count

if TYPE_CHECKING:
    from igcnas.arch.spec import ArchSpec

__all__ = ["register", "run"]

HELP = """\
Widen a block design on a standard layout until the next width would exceed the budget (the papers compare
designs at equal budget this way). Prints the widest network's widths, params and FLOPs (multiply-adds), the
next width that did not fit, and writes its arch.json with --out (an existing one only with --force).

Example: igcnas fit --design PWG+DW+PWG --max-params 0.5M --groups 2,-,2"""


def _int_list(text: str) -> tuple[int | None, ...]:
    """Parse ``2,-,2`` (``-`` for a kernel without groups)."""
    values: list[int | None] = []
    for part in text.split(","):
        part = part.strip()
        if part in ("-", "", "none"):
            values.append(None)
            continue
        try:
            number = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: {part!r} is not an integer or '-'") from None
        if number < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: {number} must be positive")
        values.append(number)
    return tuple(values)


def _design(text: str) -> str:
    """Check a block design such as ``PWG+DW+PWG`` (the text is kept: it labels the result)."""
    from igcnas.space.chain import parse_design

    try:
        parse_design(text)
    except UserError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("design: ")) from None
    return text


def _bottleneck(text: str) -> float:
    """Parse a bottleneck ratio: a finite number > 0."""
    return real(text, minimum=0.0, inclusive=False, example="0.25, or 6 for IGCV3")


def _num_classes(text: str) -> int:
    """Parse a class count: an integer >= 2."""
    return integer(text, minimum=2, what="a class count", example="10")


def _depths(text: str) -> tuple[int, ...]:
    """Parse ``3,3,3``."""
    values = _int_list(text)
    if any(v is None for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every depth must be a positive integer")
    return tuple(v for v in values if v is not None)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``fit`` command."""
    parser = subparsers.add_parser("fit", help="widest network of a design within a budget", description=HELP,
                                   formatter_class=argparse.RawDescriptionHelpFormatter, parents=[format_parent()])
    parser.add_argument("--design", required=True, type=_design, help="block design, kernels joined by '+', e.g. PWG+DW+PWG")
    parser.add_argument("--max-params", type=count, help="parameter budget, e.g. 0.5M")
    parser.add_argument("--max-flops", type=count, help="FLOP budget (multiply-adds per image), e.g. 40M")
    parser.add_argument("--layout", choices=("cifar", "imagenet"), default="cifar",
                        help="cifar: 3 stages at 32x32; imagenet: the Fog paper's 4-stage 224x224 layout")
    parser.add_argument("--depths", type=_depths, help="blocks per stage, e.g. 3,3,3 (default: 3,3,3 / 2,2,2,2)")
    parser.add_argument("--groups", type=_int_list,
                        help="group count per kernel, '-' for kernels without groups, e.g. 2,-,2 (default 2)")
    parser.add_argument("--bottleneck", type=_bottleneck,
                        help="inner width / output width for bottleneck chains (default 0.25, Fog; 6 for IGCV3)")
    parser.add_argument("--num-classes", type=_num_classes, help="classes, 2 or more (default 10 / 1000)")
    parser.add_argument("--out", metavar="DIR|FILE.json",
                        help="write the result's arch.json into this folder (made if missing), or to this file when "
                             "the name ends in .json")
    parser.add_argument("--force", action="store_true",
                        help="replace an arch.json already at --out (without it, an existing one is refused)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``igcnas fit``."""
    from igcnas.arch.fit import fit_budget
    from igcnas.cli._common import die

    if args.max_params is None and args.max_flops is None:
        die("fit: give a budget with --max-params and/or --max-flops (e.g. --max-params 0.5M)")
    _check_groups(args.design, args.groups)
    template: dict[str, Any] = {
        key: getattr(args, key)
        for key in ("depths", "groups", "bottleneck", "num_classes")
        if getattr(args, key) is not None
    }
    result = fit_budget(args.design, max_params=args.max_params, max_flops=args.max_flops, layout=args.layout,
                        **template)
    spec = result.spec.with_name(f"{args.design}-fit")
    written = _save(spec, args.out, force=args.force) if args.out else None
    row = {
        "design": args.design,
        "layout": args.layout,
        "widths": "-".join(str(s.width) for s in spec.stages),
        "depths": "-".join(str(s.depth) for s in spec.stages),
        "params": result.params,
        "flops": result.flops,
        "next_widths": "-".join(str(result.next_width * 2**i) for i in range(len(spec.stages)))
        if result.next_width else None,
        "next_params": result.next_params,
        "next_flops": result.next_flops,
        "spec_id": spec.id,
    }
    if args.format == "json":
        print(json.dumps({**row, "arch": spec.to_dict()}, indent=2))
        return 0
    shown = dict(row)
    for key in ("params", "flops", "next_params", "next_flops"):
        shown[key] = format_count(row[key]) if row[key] is not None else None
    print(render_table([shown]))
    if written is not None:
        print(f"wrote {written}")
    return 0


def _check_groups(design: str, groups: tuple[int | None, ...] | None) -> None:
    """``--groups`` gives one value per kernel of ``--design``."""
    from igcnas.space.chain import parse_design
    from igcnas.space.kernels import KERNEL_KINDS

    kinds = parse_design(design)
    if groups is not None and len(groups) != len(kinds):
        text = ",".join("-" if g is None else str(g) for g in groups)
        example = ",".join("2" if KERNEL_KINDS[kind].grouping == "grouped" else "-" for kind in kinds)
        raise UserError(
            f"--groups: {text!r} has {len(groups)} values for the {len(kinds)} kernels of {design} "
            f"(give one per kernel, '-' for a kernel without groups, e.g. --groups {example})"
        )


def _save(spec: ArchSpec, out: str, *, force: bool = False) -> Path:
    """Write ``spec`` to ``--out`` (a folder, or a file named ``*.json``) and return the file written; an existing
    arch.json there is refused unless ``force``."""
    from igcnas.store import ARCH_FILE

    target = Path(out).expanduser()
    is_file = target.suffix.lower() == ".json"
    if not is_file and target.exists() and not target.is_dir():
        raise UserError(f"--out: {out!r} is a file, not a folder (give a folder, or a file name ending in .json)")
    # the file itself is given to ArchSpec.save, which would take a folder name with a dot (best.v2) for a file
    path = target if is_file else target / ARCH_FILE
    if path.exists() and not force:
        raise UserError(f"--out: {str(path)!r} already exists; give --force to replace it, or another --out")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return spec.save(path)
    except OSError as error:
        raise UserError(f"--out: cannot write {out!r} ({error.strerror or error})") from None
