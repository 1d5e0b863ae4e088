"""The docstring examples of igcnas.analysis run and stay correct."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

import igcnas.analysis
from igcnas.analysis import pareto, plot, schema


@pytest.mark.parametrize("module", [igcnas.analysis, schema, pareto, plot], ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.attempted > 0
    assert result.failed == 0


def test_public_api_is_exported() -> None:
    for name in igcnas.analysis.__all__:
        assert hasattr(igcnas.analysis, name), name
    assert {"pareto_front", "hypervolume", "front_hypervolume", "filter_budget", "plot_front"} <= set(
        igcnas.analysis.__all__
    )
    assert {"TRIAL_COLUMNS", "empty_trials_frame", "validate_trials_frame"} <= set(igcnas.analysis.__all__)
