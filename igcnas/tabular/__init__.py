"""The tabular benchmark of sparse-kernel networks: architectures trained once on CIFAR-10, with their
training-free scores, so that proxies and search strategies are compared by lookups instead of training.

* :mod:`igcnas.tabular._schema`: the file's columns, its fidelities and its reader.

Example:
    >>> FIDELITIES["low"].epochs, "synflow" in PROXY_COLUMNS
    (4, True)
"""

from __future__ import annotations

from igcnas.tabular._schema import (
    FIDELITIES,
    ID_COLUMNS,
    PROXY_COLUMNS,
    TABLE_FILE,
    Fidelity,
    columns,
    epoch_columns,
    read_table,
)

__all__ = ["FIDELITIES", "ID_COLUMNS", "PROXY_COLUMNS", "TABLE_FILE", "Fidelity", "columns", "epoch_columns",
           "read_table"]
