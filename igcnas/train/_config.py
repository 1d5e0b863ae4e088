"""``TrainConfig``: the hyper-parameters of one training run, validated, with a JSON round trip."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from igcnas.errors import UserError

__all__ = ["TrainConfig", "SCHEDULES", "AMP_MODES", "CHANNELS_LAST_MODES", "learning_rate"]

SCHEDULES = ("cosine", "step", "step30", "constant")
AMP_MODES = ("auto", "bf16", "off")
CHANNELS_LAST_MODES = ("auto", "on", "off")
DEVICE_NAME = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
"""How a device is spelled: auto, cpu, cuda or cuda:N."""
# Milestones (fractions of the run) of the papers' CIFAR step schedule: IGCV1/V2/V3 train 400 epochs and divide
# the learning rate by 10 at epochs 200, 300 and 350.
STEP_MILESTONES = (0.5, 0.75, 0.875)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (SGD with momentum; the defaults follow the IGC papers).

    The papers (IGCV1/V2/V3, "Penetrating the Fog") all use SGD with Nesterov momentum 0.9, weight decay 1e-4 and
    initial learning rate 0.1 (IGCV1-3 CIFAR: batch 64, lr / 10 at 50%, 75% and 87.5% of 400 epochs; Fog and
    IGCV1 ImageNet: batch 256, lr / 10 every 30 epochs).

    Fields:
        epochs: number of passes over the training split (>= 1).
        batch_size: training mini-batch size.
        lr: initial (peak) learning rate, used as given: it is *not* rescaled with ``batch_size``
            (the papers use 0.1 both at batch 64 and at batch 256).
        momentum, nesterov, weight_decay: SGD settings (weight decay applies to every parameter, as in the papers).
        schedule: ``"cosine"`` (per-step cosine decay to 0), ``"step"`` (the papers' CIFAR schedule: lr / 10 at
            50%, 75% and 87.5% of the epochs), ``"step30"`` (the papers' ImageNet schedule: lr / 10 every 30
            epochs) or ``"constant"``.
        warmup_epochs: linear warm-up from ~0 to ``lr`` over the first epochs (per step), before the schedule.
        label_smoothing: cross-entropy label smoothing for the training loss (evaluation uses plain
            cross-entropy).
        seed: seeds torch's global RNG and the shuffling/augmentation generators: same seed, same machine ->
            same numbers on CPU.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        amp: ``"auto"`` (bfloat16 autocast on CUDA only), ``"bf16"`` (always) or ``"off"``.
        channels_last: ``"auto"`` (on CUDA only), ``"on"`` or ``"off"``.
        augment: random pad-and-crop / flip augmentation of the training batches (the dataset's defaults).
        eval_batch_size: batch size for validation/test evaluation.
        max_train_batches: stop each epoch after this many batches (tests, benchmarks); ``None`` = full epochs.
        num_threads: torch CPU threads during training (restored afterwards); ``None`` = leave as is.

    Example:
        >>> cfg = TrainConfig(epochs=30, schedule="step")
        >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    epochs: int
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    channels_last: str = "auto"
    augment: bool = True
    eval_batch_size: int = 512
    max_train_batches: int | None = None
    num_threads: int | None = field(default=None)

    def __post_init__(self) -> None:
        _check_int(self.epochs, "epochs", minimum=1, example="epochs=30")
        _check_int(self.batch_size, "batch_size", minimum=1, example="batch_size=128")
        _check_float(self.lr, "lr", example="lr=0.1")
        if self.lr <= 0:
            raise UserError(f"TrainConfig.lr: {self.lr!r} must be > 0 (e.g. lr=0.1)")
        _check_float(self.momentum, "momentum", example="momentum=0.9")
        if not 0 <= self.momentum < 1:
            raise UserError(f"TrainConfig.momentum: {self.momentum!r} must be in [0, 1) (e.g. momentum=0.9)")
        _check_bool(self.nesterov, "nesterov")
        if self.nesterov and self.momentum == 0:
            raise UserError(
                "TrainConfig.nesterov: True needs momentum > 0; set momentum=0.9 or nesterov=False"
            )
        _check_float(self.weight_decay, "weight_decay", example="weight_decay=1e-4")
        if self.weight_decay < 0:
            raise UserError(f"TrainConfig.weight_decay: {self.weight_decay!r} must be >= 0 (e.g. 1e-4)")
        _check_choice(self.schedule, "schedule", SCHEDULES)
        _check_int(self.warmup_epochs, "warmup_epochs", minimum=0, example="warmup_epochs=5")
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise UserError(
                f"TrainConfig.warmup_epochs: {self.warmup_epochs} must be smaller than epochs={self.epochs}"
            )
        _check_float(self.label_smoothing, "label_smoothing", example="label_smoothing=0.1")
        if not 0 <= self.label_smoothing < 1:
            raise UserError(
                f"TrainConfig.label_smoothing: {self.label_smoothing!r} must be in [0, 1) (e.g. 0.1)"
            )
        _check_int(self.seed, "seed", minimum=0, example="seed=0")
        if self.seed >= 2**63:
            raise UserError(f"TrainConfig.seed: {self.seed} must be < 2**63")
        if not isinstance(self.device, str) or not DEVICE_NAME.match(self.device):
            raise UserError(
                f"TrainConfig.device: {self.device!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
            )
        _check_choice(self.amp, "amp", AMP_MODES)
        _check_choice(self.channels_last, "channels_last", CHANNELS_LAST_MODES)
        _check_bool(self.augment, "augment")
        _check_int(self.eval_batch_size, "eval_batch_size", minimum=1, example="eval_batch_size=512")
        if self.max_train_batches is not None:
            _check_int(self.max_train_batches, "max_train_batches", minimum=1, example="max_train_batches=10")
        if self.num_threads is not None:
            _check_int(self.num_threads, "num_threads", minimum=1, example="num_threads=2")
        # Normalise ints given for float fields so that equality and JSON round trips are exact.
        for name in ("lr", "momentum", "weight_decay", "label_smoothing"):
            object.__setattr__(self, name, float(getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict (e.g. parsed JSON); unknown or missing keys raise ``UserError`` naming them."""
        if not isinstance(data, dict):
            raise UserError(f"TrainConfig: expected a JSON object (dict), got {type(data).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise UserError(
                f"TrainConfig: unknown key(s) {', '.join(repr(k) for k in unknown)}; "
                f"known keys: {', '.join(known)}"
            )
        if "epochs" not in data:
            raise UserError("TrainConfig: missing required key 'epochs' (e.g. {\"epochs\": 30})")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        """Copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate for global optimisation ``step`` (0-based) with ``steps_per_epoch`` steps per epoch.

    Example:
        >>> cfg = TrainConfig(epochs=4, lr=0.1, schedule="step")
        >>> [round(learning_rate(cfg, s, 1), 6) for s in range(4)]
        [0.1, 0.1, 0.01, 0.001]
    """
    steps_per_epoch = max(int(steps_per_epoch), 1)
    warmup_steps = config.warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return config.lr * (step + 1) / warmup_steps
    epoch = step // steps_per_epoch
    if config.schedule == "cosine":
        total = config.epochs * steps_per_epoch - warmup_steps
        progress = min((step - warmup_steps) / max(total, 1), 1.0)
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if config.schedule == "step":
        milestones = [round(f * config.epochs) for f in STEP_MILESTONES]
        return config.lr * 0.1 ** sum(epoch >= m for m in milestones)
    if config.schedule == "step30":
        return config.lr * 0.1 ** (epoch // 30)
    return config.lr


def _check_int(value: object, name: str, *, minimum: int, example: str) -> None:
    """Raise ``UserError`` unless ``value`` is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"TrainConfig.{name}: {value!r} is not an integer (e.g. {example})")
    if value < minimum:
        raise UserError(f"TrainConfig.{name}: {value} must be >= {minimum} (e.g. {example})")


def _check_float(value: object, name: str, *, example: str) -> None:
    """Raise ``UserError`` unless ``value`` is a finite real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"TrainConfig.{name}: {value!r} is not a number (e.g. {example})")
    if not math.isfinite(value):
        raise UserError(f"TrainConfig.{name}: {value!r} must be finite (e.g. {example})")


def _check_bool(value: object, name: str) -> None:
    """Raise ``UserError`` unless ``value`` is a bool."""
    if not isinstance(value, bool):
        raise UserError(f"TrainConfig.{name}: {value!r} must be true or false")


def _check_choice(value: object, name: str, choices: tuple[str, ...]) -> None:
    """Raise ``UserError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise UserError(f"TrainConfig.{name}: {value!r} is not one of {', '.join(repr(c) for c in choices)}")
