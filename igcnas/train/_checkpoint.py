"""The run folder of :func:`~igcnas.train.train`: its file names, ``checkpoint.pt`` and ``metrics.json`` helpers.

``checkpoint.pt`` holds the model/optimizer/RNG state and the :class:`_RunState` bookkeeping after every epoch
(:func:`_save_checkpoint`, atomic; plain tensors and containers, loadable with ``weights_only=True``);
:func:`_load_checkpoint` restores it for ``resume=True`` after checking that the config and the data match.
:func:`_data_summary` identifies the data (stored in both files). The file names are the trial store's
(:mod:`igcnas.store`): a trial folder of a search is a run folder of the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from igcnas.data import DataBundle
from igcnas.errors import UserError
from igcnas.store import ARCH_FILE, CHECKPOINT_FILE, METRICS_FILE, WEIGHTS_FILE, atomic_write
from igcnas.train._config import TrainConfig
from igcnas.train._io import state_dict_for_saving
from igcnas.train._results import EpochMetrics

__all__ = ["ARCH_FILE", "WEIGHTS_FILE", "METRICS_FILE", "CHECKPOINT_FILE"]

_CHECKPOINT_FORMAT = 1
# Config fields that may differ between an interrupted run and its resumption (they do not change the numbers).
_RESUME_MAY_DIFFER = frozenset({"device", "num_threads", "eval_batch_size"})


@dataclass
class _RunState:
    """Mutable bookkeeping of a run (what ``checkpoint.pt`` stores besides model/optimizer state)."""

    epoch: int = 0
    step: int = 0
    seconds: float = 0.0
    history: list[EpochMetrics] = field(default_factory=list)


def _data_summary(data: DataBundle) -> dict[str, Any]:
    """What identifies the data a run was trained on (stored in checkpoints and metrics)."""
    return {
        "name": data.name,
        "train_size": len(data.train),
        "val_size": len(data.val),
        "test_size": len(data.test) if data.test is not None else None,
        "num_classes": data.num_classes,
        "input_shape": list(data.input_shape),
    }


def _save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch_gen: torch.Generator,
    state: _RunState,
    config: TrainConfig,
    data: DataBundle,
) -> None:
    """Write ``checkpoint.pt`` (tensors and plain containers only) atomically."""
    payload = {
        "format": _CHECKPOINT_FORMAT,
        "epoch": state.epoch,
        "step": state.step,
        "seconds": state.seconds,
        "history": [m.to_dict() for m in state.history],
        "config": config.to_dict(),
        "data": _data_summary(data),
        "model": state_dict_for_saving(model),
        "optimizer": optimizer.state_dict(),
        "batch_rng": batch_gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch_gen: torch.Generator,
    config: TrainConfig,
    data: DataBundle,
) -> _RunState:
    """Restore model/optimizer/RNG state from ``checkpoint.pt``; the run's config and data must match."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise UserError(f"resume: {str(path)!r} is not a readable training checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != _CHECKPOINT_FORMAT:
        raise UserError(
            f"resume: {str(path)!r} is not an igcnas training checkpoint (format {_CHECKPOINT_FORMAT})"
        )
    saved = payload["config"]
    now = config.to_dict()
    differ = sorted(k for k in now if k not in _RESUME_MAY_DIFFER and saved.get(k) != now[k])
    if differ:
        details = ", ".join(f"{k}: saved {saved.get(k)!r} vs now {now[k]!r}" for k in differ)
        raise UserError(
            f"resume: the config differs from the checkpoint's ({details}); resume with the same config or "
            "start a fresh run (resume=False)"
        )
    if payload["data"] != _data_summary(data):
        raise UserError(
            f"resume: the data differs from the checkpoint's (saved {payload['data']}, now {_data_summary(data)}); "
            "load the same dataset with the same val_fraction/train_subset/seed"
        )
    model.load_state_dict(payload["model"], strict=True)
    optimizer.load_state_dict(payload["optimizer"])
    batch_gen.set_state(payload["batch_rng"])
    torch.set_rng_state(payload["torch_rng"])
    if payload["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    return _RunState(
        epoch=int(payload["epoch"]),
        step=int(payload["step"]),
        seconds=float(payload["seconds"]),
        history=[EpochMetrics.from_dict(m) for m in payload["history"]],
    )
