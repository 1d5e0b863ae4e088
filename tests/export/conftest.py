"""Fixtures of the export tests: a fake study on disk (see fake_study.py) and a private data cache."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch


def load_fake_study() -> ModuleType:
    """Import tests/export/fake_study.py by path (tests run with --import-mode=importlib)."""
    name = "igcnas_tests_fake_study"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("fake_study.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(autouse=True)
def _quiet_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Private user cache (never ~/.cache) and one torch thread (tiny models)."""
    monkeypatch.setenv("IGCNAS_CACHE_DIR", str(tmp_path_factory.mktemp("user-cache")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def fake() -> ModuleType:
    """The fake_study helper module."""
    return load_fake_study()


@pytest.fixture(scope="session")
def trials_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trials folder holding the fake study 'demo' and the study 'empty' (no completed trial)."""
    fake = load_fake_study()
    root = tmp_path_factory.mktemp("trials")
    fake.write_fake_study(root, "demo")
    fake.write_empty_study(root, "empty")
    return root


@pytest.fixture(scope="session")
def exported(trials_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The best trial of 'demo' exported once (read-only for the tests sharing it)."""
    from igcnas.export import export_trial

    out = tmp_path_factory.mktemp("exported") / "best"
    export_trial("demo", out, trials_dir=trials_dir)
    return out
