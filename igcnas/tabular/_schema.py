"""The tabular benchmark's file: its columns, its two fidelities, and the reader that checks them.

One row per architecture, trained once per fidelity on CIFAR-10 (the shared copy):

* identity: ``spec_id``, ``name`` (a zoo name, or ``<space>/<design>/<n>``), ``source`` (a shipped space's name
  or ``zoo``), ``design`` (the kernel chain, e.g. ``GC+PWG``), ``size_bin`` (the params bin it was drawn in, e.g.
  ``20k-50k``; ``zoo`` rows carry the bin their params fall in), ``arch`` (the ArchSpec as compact JSON);
* the training-free scores, one column per proxy of :data:`PROXY_COLUMNS` (the names of :mod:`igcnas.proxies`,
  plus ``vote``, the rank vote over the whole table);
* per fidelity ``f`` of :data:`FIDELITIES` (``low``, ``high``): ``f_fidelity`` (the schedule, in words),
  ``f_val_acc_1`` .. ``f_val_acc_E`` (validation accuracy after each epoch), ``f_val_acc`` (after the last) and
  ``f_seconds`` (training wall time). Columns of a fidelity the row was not trained at are empty.

Example:
    >>> columns()[:3]
    ('spec_id', 'name', 'source')
    >>> epoch_columns("low")
    ('low_val_acc_1', 'low_val_acc_2', 'low_val_acc_3', 'low_val_acc_4')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from igcnas.errors import UserError
from igcnas.proxies._checks import PROXIES

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Fidelity", "FIDELITIES", "PROXY_COLUMNS", "ID_COLUMNS", "TABLE_FILE", "columns", "epoch_columns",
           "read_table"]


@dataclass(frozen=True)
class Fidelity:
    """One training schedule of the table (the rest of the schedule is the search's default)."""

    name: str
    train_subset: int
    epochs: int
    batch_size: int = 64
    lr: float = 0.1
    weight_decay: float = 1e-4
    seed: int = 0

    def describe(self) -> str:
        """The schedule in words (the ``<name>_fidelity`` column)."""
        return (f"{self.train_subset} stratified training images x {self.epochs} epochs, batch {self.batch_size}, "
                f"lr {self.lr} cosine, weight decay {self.weight_decay}, augmentation, seed {self.seed}; "
                "validation on the 5000 held-out training images")


FIDELITIES: dict[str, Fidelity] = {
    "low": Fidelity("low", train_subset=10_000, epochs=4),
    "high": Fidelity("high", train_subset=10_000, epochs=10),
}
"""The table's fidelities: ``low`` for every row, ``high`` for a stratified part of them."""

PROXY_COLUMNS: tuple[str, ...] = (*PROXIES, "vote")
"""One column per training-free score, named as :func:`igcnas.proxies.score` names it (and ``vote``)."""

ID_COLUMNS: tuple[str, ...] = ("spec_id", "name", "source", "design", "size_bin", "arch")

TABLE_FILE = Path(__file__).with_name("cifar10.csv")
"""The committed table (installed with the package)."""


def epoch_columns(fidelity: str, fidelities: Mapping[str, Fidelity] = FIDELITIES) -> tuple[str, ...]:
    """The per-epoch validation accuracy columns of ``fidelity``."""
    f = _fidelity(fidelity, fidelities)
    return tuple(f"{f.name}_val_acc_{e}" for e in range(1, f.epochs + 1))


def columns(fidelities: Mapping[str, Fidelity] = FIDELITIES) -> tuple[str, ...]:
    """Every column of the table, in file order."""
    out: list[str] = [*ID_COLUMNS, *PROXY_COLUMNS]
    for name in fidelities:
        out += [f"{name}_fidelity", *epoch_columns(name, fidelities), f"{name}_val_acc", f"{name}_seconds"]
    return tuple(out)


def read_table(path: str | Path | None = None) -> pd.DataFrame:
    """The table at ``path`` (default :data:`TABLE_FILE`) as a DataFrame, its columns checked.

    The per-epoch columns beyond the first are not required (a table may be built at other fidelities). A
    missing file or column raises :class:`~igcnas.errors.UserError` naming it and the command that makes it.
    """
    import pandas as pd

    where = Path(path) if path is not None else TABLE_FILE
    if not where.is_file():
        raise UserError(f"--table: {where} does not exist; build it with 'igcnas tabular build --data-dir "
                        f"../shared/datasets/cifar10 --out {where}' or name an existing table CSV")
    frame = pd.read_csv(where)
    needed = [*ID_COLUMNS, *PROXY_COLUMNS]
    for name in FIDELITIES:
        needed += [f"{name}_fidelity", f"{name}_val_acc_1", f"{name}_val_acc", f"{name}_seconds"]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise UserError(f"--table: {where} lacks the columns {', '.join(missing)}; it is not an igcnas tabular "
                        "benchmark (rebuild it with 'igcnas tabular build')")
    return frame


def _fidelity(name: str, fidelities: Mapping[str, Fidelity] = FIDELITIES) -> Fidelity:
    """The fidelity called ``name``, or a UserError listing the known ones."""
    if name not in fidelities:
        raise UserError(f"--fidelity: {name!r} is not a fidelity of the table; choose from {', '.join(fidelities)}")
    return fidelities[name]
