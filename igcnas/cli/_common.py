"""Shared CLI plumbing: an argument parser whose errors are one line, and typed option converters."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from igcnas.errors import UserError
from igcnas.units import parse_count

__all__ = ["Parser", "positive_int", "count", "fraction", "die"]


def die(message: str, *, status: int = 2) -> NoReturn:
    """Print ``igcnas: error: ...`` on one line and exit."""
    print(f"igcnas: error: {message}", file=sys.stderr)
    raise SystemExit(status)


class Parser(argparse.ArgumentParser):
    """ArgumentParser that reports mistakes on one line (with a pointer to --help) and exits with status 2."""

    def error(self, message: str) -> NoReturn:
        die(f"{self.prog}: {message} (see '{self.prog} --help')")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer (give a number >= 1)")
    return value


def count(text: str) -> int:
    """argparse type: a positive count with human units (0.5M, 300M, 1.2G)."""
    try:
        return parse_count(text)
    except UserError as error:
        raise argparse.ArgumentTypeError(str(error).split(": ", 1)[-1]) from None


def fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number between 0 and 1") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be strictly between 0 and 1")
    return value
