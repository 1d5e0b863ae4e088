"""Fixtures of the data-pipeline tests: a small stratified copy of the shared CIFAR-10 image folder."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

TRAIN_PER_CLASS = 20
TEST_PER_CLASS = 5


@pytest.fixture(autouse=True)
def _private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Point the user cache at a temporary folder so tests never write to ~/.cache."""
    folder = tmp_path_factory.mktemp("user-cache")
    monkeypatch.setenv("IGCNAS_CACHE_DIR", str(folder))
    monkeypatch.delenv("IGCNAS_DATA_WORKERS", raising=False)
    yield folder


@pytest.fixture(scope="session")
def cifar_template(tmp_path_factory: pytest.TempPathFactory, shared_cifar10: Path) -> Path:
    """A read-once copy of 20 train / 5 test JPGs per CIFAR-10 class (the first files of each class)."""
    root = tmp_path_factory.mktemp("cifar-template") / "cifar10"
    for split, count in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        for class_dir in sorted((shared_cifar10 / split).iterdir()):
            target = root / split / class_dir.name
            target.mkdir(parents=True)
            for src in sorted(class_dir.glob("*.jpg"))[:count]:
                shutil.copyfile(src, target / src.name)
    return root


@pytest.fixture
def cifar_small(cifar_template: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the small CIFAR-10 folder (tests may corrupt or touch files)."""
    root = tmp_path / "cifar10"
    shutil.copytree(cifar_template, root)
    return root
