"""The zoo: the papers' reference networks (IGCV1/V2/V3, MobileNet, the Fog paper's designs) as architecture specs.

Every :class:`ZooEntry` holds an :class:`~igcnas.arch.ArchSpec` that ``igcnas.nn.network.build`` turns into a
model, the rows of ``paper_figures.json`` that report that network, the density / complementary condition the
papers claim for its block, and a note on what the papers count. :func:`paper_comparison` puts the papers'
parameter and FLOP figures beside ours; :func:`paper_specs` rebuilds every paper row whose layout we reproduce
(also other depths and widths of the zoo's layouts).

Example:
    >>> from igcnas.zoo import get_zoo
    >>> entry = get_zoo("igc-l24m2-d20")
    >>> entry.name, entry.spec.design, entry.claims
    ('IGC-L24M2-D20', 'GC+PWG', 'strict')
"""

from __future__ import annotations

import difflib
import functools
import json
from importlib import resources
from typing import Any

from igcnas.arch.spec import ArchSpec
from igcnas.errors import UserError
from igcnas.zoo._entries import CLAIMS, FAMILIES, ZooEntry, build_entries, build_reproductions
from igcnas.zoo.compare import (
    KNOWN_DIFFERENCES,
    TOLERANCE,
    ClaimCheck,
    claim_checks,
    compare_row,
    paper_comparison,
)

__all__ = [
    "ZooEntry",
    "ZOO",
    "FAMILIES",
    "CLAIMS",
    "get_zoo",
    "resolve_network",
    "zoo_names",
    "paper_figures",
    "paper_row",
    "paper_specs",
    "paper_comparison",
    "compare_row",
    "claim_checks",
    "ClaimCheck",
    "KNOWN_DIFFERENCES",
    "TOLERANCE",
]

#: name -> entry, in display order
ZOO: dict[str, ZooEntry] = {entry.name: entry for entry in build_entries()}


def zoo_names(family: str | None = None) -> list[str]:
    """Names of the zoo entries (of one family when given, case-insensitive, as the names are), in display
    order."""
    if family is not None:
        given, family = family, family.strip().lower()
        if family not in FAMILIES:
            raise UserError(f"--family: {given!r} is not a zoo family; choose one of {', '.join(FAMILIES)}")
    return [name for name, entry in ZOO.items() if family is None or entry.family == family]


def get_zoo(name: str) -> ZooEntry:
    """The entry called ``name`` (case-insensitive); an unknown name raises UserError suggesting close names.

    Example:
        >>> get_zoo("mobilenetv2-imagenet").spec.input_shape
        (3, 224, 224)
    """
    folded = {key.lower(): key for key in ZOO}
    key = folded.get(str(name).strip().lower())
    if key is not None:
        return ZOO[key]
    close = difflib.get_close_matches(str(name).lower(), list(folded), n=5, cutoff=0.5)
    if close:  # the close names only: the whole zoo is a long line
        raise UserError(f"unknown zoo network {name!r}; did you mean {', '.join(folded[c] for c in close)}? "
                        "(list them all with 'igcnas zoo')")
    raise UserError(f"unknown zoo network {name!r}; known: {', '.join(ZOO)} (list them with 'igcnas zoo')")


def resolve_network(source: str) -> tuple[ArchSpec, ZooEntry | None]:
    """The spec ``source`` names, a zoo network (case-insensitive) or an ``arch.json`` (a file, or an exported
    folder holding one), with its zoo entry (None for an arch.json that is no zoo network). An unknown name raises
    :func:`get_zoo`'s UserError.

    Example:
        >>> spec, entry = resolve_network("igc-l24m2-d20")
        >>> spec.design, entry.name
        ('GC+PWG', 'IGC-L24M2-D20')
    """
    from pathlib import Path

    from igcnas.arch.spec import load_spec

    path = Path(source).expanduser()
    if path.is_dir() or path.is_file() or source.endswith(".json"):
        spec = load_spec(path)
        return spec, next((e for e in ZOO.values() if e.spec.id == spec.id), None)
    entry = get_zoo(source)
    return entry.spec, entry


@functools.lru_cache(maxsize=1)
def _figures() -> dict[str, Any]:
    """The parsed package data file ``paper_figures.json``."""
    text = resources.files("igcnas.zoo").joinpath("paper_figures.json").read_text(encoding="utf-8")
    payload: dict[str, Any] = json.loads(text)
    return payload


def paper_figures() -> list[dict[str, Any]]:
    """Every tabulated network of the four papers (rows of ``paper_figures.json``, as printed, absolute units).

    Example:
        >>> rows = paper_figures()
        >>> rows[0]["key"], rows[0]["params"]
        ('igcv1/RegConv-W16/D8/cifar', 75000)
    """
    return [dict(row) for row in _figures()["rows"]]


@functools.lru_cache(maxsize=1)
def _rows_by_key() -> dict[str, dict[str, Any]]:
    """Paper rows keyed by ``key``."""
    return {row["key"]: row for row in _figures()["rows"]}


def paper_row(key: str) -> dict[str, Any]:
    """One row of ``paper_figures.json`` by key; an unknown key raises UserError."""
    try:
        return dict(_rows_by_key()[key])
    except KeyError:
        raise UserError(f"paper row {key!r} is not in paper_figures.json") from None


@functools.lru_cache(maxsize=1)
def _reproductions() -> dict[str, ArchSpec]:
    """Built reproduction specs (cached)."""
    return {key: make() for key, make in build_reproductions().items()}


def paper_specs() -> dict[str, ArchSpec]:
    """Paper row key -> the spec we compare with it, for every row whose layout the zoo reproduces.

    Block-level rows (IGCV1 Table 1, IGCV2 Tables 2/5) map to the 8-layer net of that block; they are compared
    on the block of its first stage.

    Example:
        >>> paper_specs()["igcv1/IGC-L24M2/D98/cifar"].stages[0].depth
        32
    """
    return dict(_reproductions())
