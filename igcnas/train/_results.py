"""What a training run reports: :class:`EpochMetrics` per epoch and the :class:`TrainResult` of ``train``.

Both are frozen dataclasses with a JSON round trip (``to_dict`` / ``from_dict``), as written to ``metrics.json``
and ``checkpoint.pt`` and read back by the search and export code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

__all__ = ["Status", "EpochMetrics", "TrainResult"]

Status = Literal["completed", "pruned", "diverged"]


@dataclass(frozen=True)
class EpochMetrics:
    """Numbers of one finished epoch (accuracies are fractions in [0, 1]; ``epoch`` counts from 1)."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float
    images_per_second: float
    train_images: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochMetrics:
        """Inverse of :meth:`to_dict`."""
        return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`.

    ``status`` is ``"completed"`` (all epochs), ``"pruned"`` (``on_epoch`` asked to stop) or ``"diverged"``
    (a NaN/inf loss stopped the run; the model's weights are then garbage). ``val_accuracy`` is the validation
    accuracy after the last completed epoch (0.0 when none completed), ``best_val_accuracy`` the best over
    epochs (reached at ``best_epoch``). ``reason`` says in words why the run ended.
    """

    status: Status
    epochs_trained: int
    history: list[EpochMetrics]
    val_accuracy: float
    best_val_accuracy: float
    test_accuracy: float | None
    seconds: float
    reason: str
    test_loss: float | None = None
    best_epoch: int = 0
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (history as a list of dicts)."""
        out = asdict(self)
        out["history"] = [m.to_dict() for m in self.history]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainResult:
        """Inverse of :meth:`to_dict`."""
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["history"] = [EpochMetrics.from_dict(m) for m in data.get("history", [])]
        return cls(**values)
