"""The ``igcnas`` command line: one sub-command per task, errors on one line with exit status 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from igcnas.cli._common import Parser, die
from igcnas.errors import UserError

__all__ = ["main", "build_parser"]

DESCRIPTION = """\
igcnas: neural-architecture search over sparse-kernel chains (IGCV1/V2/V3, 'Penetrating the Fog').
Run 'igcnas COMMAND --help' for the options of each command."""


def build_parser() -> Parser:
    """The top-level parser with every sub-command registered."""
    from igcnas.cli import (
        bench,
        describe,
        evaluate,
        export,
        fit,
        pareto,
        retrain,
        search,
        space,
        spaces,
        tabular,
        train,
        tune,
        zoo,
    )

    parser = Parser(prog="igcnas", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in (space, zoo, describe, fit, spaces, search, pareto, retrain, export, evaluate, train, tune, tabular,
                   bench):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``igcnas`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as error:
        die(str(error))
    except KeyboardInterrupt:
        print("igcnas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
