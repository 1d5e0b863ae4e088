"""Errors raised for user mistakes; the CLI prints them as one line and exits with status 2."""

from __future__ import annotations

__all__ = ["IgcnasError", "UserError"]


class IgcnasError(Exception):
    """Base class of every error igcnas raises on purpose."""


class UserError(IgcnasError, ValueError):
    """A mistake in user input: names what is wrong and how to fix it.

    The CLI catches it, prints ``igcnas: error: <message>`` on one line and exits with status 2.

    Example:
        >>> raise UserError("--channels: '0' is not a positive integer (give C >= 1, e.g. --channels 64)")
        Traceback (most recent call last):
        ...
        igcnas.errors.UserError: --channels: '0' is not a positive integer (give C >= 1, e.g. --channels 64)
    """
