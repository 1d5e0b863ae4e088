"""The ``igcnas`` command line: one sub-command per task, errors on one line with exit status 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from igcnas.cli._common import Parser, check_dataset_options, die, os_error_message, unrecognized_arguments
from igcnas.errors import UserError

__all__ = ["main", "build_parser"]

DESCRIPTION = """\
igcnas: neural-architecture search over sparse-kernel chains (IGCV1/V2/V3, 'Penetrating the Fog').
Run 'igcnas COMMAND --help' for the options of each command."""


def build_parser() -> Parser:
    """The top-level parser with every sub-command registered."""
    from igcnas import __version__
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
    parser.add_argument("--version", action="version", version=f"igcnas {__version__}",
                        help="print the version of igcnas and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in (space, zoo, describe, fit, spaces, search, pareto, retrain, export, evaluate, train, tune, tabular,
                   bench):
        module.register(subparsers)
    return parser


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub-)command ``args`` chose: where its options, and so its mistakes, belong."""
    while True:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        chosen = getattr(args, sub.dest, None) if sub is not None and sub.dest != argparse.SUPPRESS else None
        if sub is None or not isinstance(chosen, str) or chosen not in sub.choices:
            return parser
        parser = sub.choices[chosen]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``igcnas`` console script; returns the exit status.

    A UserError, or an OSError no command handled (an unwritable or wrong-type path), is one line
    ``igcnas: error: ...`` with exit status 2; any other exception is a bug and keeps its traceback.
    """
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        unrecognized_arguments(_command_parser(parser, args), extras)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        check_dataset_options(args)
        return int(args.func(args) or 0)
    except UserError as error:
        die(str(error))
    except KeyboardInterrupt:
        print("igcnas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as error:
        die(os_error_message(error))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
