"""Reading a study back (igcnas.search.results): which storage answers, and the errors when it cannot."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import optuna
import pytest

from igcnas.errors import UserError
from igcnas.search._storage import open_storage
from igcnas.search.results import list_studies, load_study


def _fake_study_module() -> ModuleType:
    """tests/export/fake_study.py, imported by path (tests run with --import-mode=importlib)."""
    name = "igcnas_tests_fake_study"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "export" / "fake_study.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_a_named_storage_without_the_study_is_an_error_not_the_folders_rows(tmp_path: Path) -> None:
    _fake_study_module().write_fake_study(tmp_path / "trials", "demo")
    url = f"sqlite:///{tmp_path / 'other.db'}"
    optuna.create_study(study_name="another", storage=open_storage(url))
    assert len(load_study("demo", trials_dir=tmp_path / "trials")) > 0  # no --storage: the folder answers
    with pytest.raises(UserError, match="study 'demo' is neither a folder of --trials-dir nor in sqlite:///"):
        load_study("demo", storage=url, trials_dir=tmp_path / "trials")


def test_studies_with_a_storage_still_lists_the_folders_own_studies(tmp_path: Path) -> None:
    _fake_study_module().write_fake_study(tmp_path / "trials", "demo")
    url = f"sqlite:///{tmp_path / 'other.db'}"
    optuna.create_study(study_name="another", storage=open_storage(url))
    assert "demo" in {row["study"] for row in list_studies(trials_dir=tmp_path / "trials", storage=url)}
