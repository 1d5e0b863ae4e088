"""Training engine: :func:`train` a model on a :class:`~igcnas.data.DataBundle` with a :class:`TrainConfig`.

Example:
    >>> import torch
    >>> from igcnas.data import load_data
    >>> from igcnas.train import TrainConfig, train
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    >>> result = train(net, load_data("digits"), TrainConfig(epochs=1, device="cpu"), progress=False)
    >>> result.status
    'completed'
"""

from __future__ import annotations

from igcnas.train._checkpoint import ARCH_FILE, CHECKPOINT_FILE, METRICS_FILE, WEIGHTS_FILE
from igcnas.train._config import SCHEDULES, TrainConfig, learning_rate
from igcnas.train._device import check_device, resolve_device
from igcnas.train._evaluate import evaluate
from igcnas.train._io import load_weights, save_weights
from igcnas.train._results import EpochMetrics, Status, TrainResult
from igcnas.train.engine import train

__all__ = [
    "TrainConfig",
    "SCHEDULES",
    "learning_rate",
    "EpochMetrics",
    "TrainResult",
    "Status",
    "train",
    "evaluate",
    "load_weights",
    "save_weights",
    "resolve_device",
    "check_device",
    "ARCH_FILE",
    "WEIGHTS_FILE",
    "METRICS_FILE",
    "CHECKPOINT_FILE",
]
