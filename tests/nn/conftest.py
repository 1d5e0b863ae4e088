"""Fixtures shared by the tests of ``igcnas.nn``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def at_most_two_threads() -> Iterator[None]:
    """At most 2 torch threads for a test module (the kernels' speed tables are 2-thread), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def table_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision table's forms (IGCNAS_TUNE=off), for tests of what the table picks or of the kernels it picks
    (tests/nn/test_tune.py covers the forms measured on the machine)."""
    monkeypatch.setenv("IGCNAS_TUNE", "off")
