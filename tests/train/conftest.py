"""Shared fixtures of the training-engine tests: the digits bundle and tiny ad-hoc networks."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

from igcnas.data import DataBundle, load_data


def _tiny_cnn(in_channels: int = 1, num_classes: int = 10, width: int = 16) -> nn.Module:
    """Two 3x3 conv + BN + ReLU layers, global pooling and a linear classifier."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (two threads on a busy 2-core machine were ~20x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits() -> DataBundle:
    """The built-in 8x8 digits dataset (no download)."""
    return load_data("digits", seed=0)


@pytest.fixture
def make_cnn() -> Callable[..., nn.Module]:
    """Factory for a freshly initialised tiny CNN: ``make_cnn(seed=0, in_channels=1, num_classes=10, width=16)``."""

    def make(*, seed: int = 0, in_channels: int = 1, num_classes: int = 10, width: int = 16) -> nn.Module:
        torch.manual_seed(seed)
        return _tiny_cnn(in_channels, num_classes, width)

    return make
