"""The search spaces shipped inside the package (``igcnas.search_spaces``), found by name or by path.

The repository's top-level ``search_spaces/`` folder is their single source: ``pyproject.toml`` installs it as
the package ``igcnas.search_spaces``, so an installed wheel and an editable checkout read the same files through
:mod:`importlib.resources`.

Example:
    >>> "igc_cifar" in shipped_spaces()
    True
    >>> text, source = read_space_text("igc_cifar")
    >>> source
    'igc_cifar (shipped)'
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import TYPE_CHECKING

from igcnas.errors import UserError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["SHIPPED_PACKAGE", "shipped_spaces", "shipped_space", "read_space_text", "decode_space"]

SHIPPED_PACKAGE = "igcnas.search_spaces"


def shipped_spaces() -> dict[str, Traversable]:
    """Every shipped space by name (the YAML file's stem), sorted."""
    root = importlib.resources.files(SHIPPED_PACKAGE)
    files = [f for f in root.iterdir() if f.is_file() and f.name.endswith(".yaml")]
    return {f.name[: -len(".yaml")]: f for f in sorted(files, key=lambda f: f.name)}


def shipped_space(name: str) -> Traversable | None:
    """The shipped space called ``name`` (``igc_cifar``, ``igc_cifar.yaml`` or ``search_spaces/igc_cifar.yaml``)."""
    path = Path(name)
    if len(path.parts) > 2 or (len(path.parts) == 2 and path.parts[0] != "search_spaces"):
        return None
    if path.suffix not in ("", ".yaml"):
        return None
    return shipped_spaces().get(path.stem if path.suffix else path.name)


def decode_space(data: bytes, *, source: str) -> str:
    """The text of a space file; a binary or non-UTF-8 file is a one-line UserError naming it."""
    if b"\x00" in data:
        raise UserError(f"--space: {source} is a binary file, not a YAML search space (see 'igcnas spaces')")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"--space: {source} is not UTF-8 text (byte {error.start}: {data[error.start]:#04x}); "
                        "save it as UTF-8") from None


def read_space_text(name_or_path: str | Path) -> tuple[str, str]:
    """The YAML text of a space and where it came from: an existing file, else a shipped space of that name.

    An unknown name or a missing file is a one-line UserError listing the shipped spaces.
    """
    target = Path(name_or_path)
    if target.is_file():
        return decode_space(target.read_bytes(), source=str(target)), str(target)
    if target.exists():
        raise UserError(f"--space: {target} is not a file")
    shipped = shipped_space(str(name_or_path))
    if shipped is not None:
        name = shipped.name[: -len(".yaml")]
        return decode_space(shipped.read_bytes(), source=f"{name} (shipped)"), f"{name} (shipped)"
    names = ", ".join(shipped_spaces()) or "none"
    bare_name = len(target.parts) == 1 and not target.suffix
    what = "is neither a file nor a shipped space" if bare_name else "is not a file"
    raise UserError(f"--space: {name_or_path} {what}; shipped spaces: {names} (see 'igcnas spaces')")
