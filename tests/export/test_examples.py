"""The docstring examples of the export, trials-folder and pareto modules run and stay correct."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

import igcnas.analysis.trials_dir
import igcnas.cli.pareto
import igcnas.export


@pytest.mark.parametrize("module", [igcnas.export, igcnas.analysis.trials_dir, igcnas.cli.pareto],
                         ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0
