"""Fixtures shared by the tests of ``igcnas.nn``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture
def native(table_forms: None) -> None:
    """Skip (with the reason) where the native kernels cannot be built; the decision table's forms otherwise."""
    from igcnas.nn import _native

    if not _native.native_available():
        pytest.skip(f"native kernel {_native.native_status()}")


@pytest.fixture
def fresh_tune(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tuning on, with a fresh machine's empty cache and no choice in memory; both forgotten afterwards."""
    from igcnas.nn import _tune_cache, tune

    monkeypatch.setenv("IGCNAS_TUNE_DIR", str(tmp_path / "tune"))
    monkeypatch.setenv("IGCNAS_TUNE", "auto")
    monkeypatch.setattr(tune, "_memory", {})
    _tune_cache._loaded.clear()
    yield
    tune._forget()
    _tune_cache._loaded.clear()
