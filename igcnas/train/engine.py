"""The training engine: SGD training with per-epoch validation, pruning hook, divergence stop and checkpoints.

This module holds :func:`train` (the epoch loop, its argument checks and progress output); the results are in
:mod:`igcnas.train._results`, the run folder and checkpoints in :mod:`igcnas.train._checkpoint`, evaluation in
:mod:`igcnas.train._evaluate` and device handling in :mod:`igcnas.train._device`. Their public names are
re-exported here (and from :mod:`igcnas.train`).

Example:
    >>> import torch
    >>> from igcnas.data import load_data
    >>> from igcnas.train import TrainConfig, train
    >>> data = load_data("digits")
    >>> _ = torch.manual_seed(0)  # the model's initialisation is the caller's to seed
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    >>> result = train(net, data, TrainConfig(epochs=2, device="cpu"), progress=False)
    >>> result.status, result.epochs_trained
    ('completed', 2)
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from igcnas._progress import ProgressBar, format_duration
from igcnas.data import DataBundle, iterate_batches
from igcnas.errors import UserError
from igcnas.store import write_json_if_changed
from igcnas.train._checkpoint import (
    ARCH_FILE,
    CHECKPOINT_FILE,
    METRICS_FILE,
    WEIGHTS_FILE,
    _data_summary,
    _load_checkpoint,
    _RunState,
    _save_checkpoint,
)
from igcnas.train._config import TrainConfig, learning_rate
from igcnas.train._device import _autocast, _place, _torch_settings, resolve_device
from igcnas.train._evaluate import _check_logits, _evaluate, evaluate
from igcnas.train._io import load_weights, save_weights, write_json_atomic
from igcnas.train._results import EpochMetrics, Status, TrainResult

__all__ = [
    "EpochMetrics",
    "TrainResult",
    "Status",
    "train",
    "evaluate",
    "load_weights",
    "resolve_device",
    "ARCH_FILE",
    "WEIGHTS_FILE",
    "METRICS_FILE",
    "CHECKPOINT_FILE",
]

# On CUDA the loss is read back (a device sync) every this many steps; on CPU every step.
_CUDA_SYNC_EVERY = 25


def train(
    model: nn.Module,
    data: DataBundle,
    config: TrainConfig,
    *,
    on_epoch: Callable[[EpochMetrics], bool | None] | None = None,
    checkpoint_dir: Path | str | None = None,
    arch: dict[str, Any] | None = None,
    progress: bool | Literal["force"] = True,
    evaluate_test: bool = False,
    resume: bool = False,
) -> TrainResult:
    """Train ``model`` on ``data.train`` with SGD, validating on ``data.val`` after every epoch.

    - ``on_epoch(metrics)`` is called after each epoch (after the checkpoint is written); returning True stops
      the run with status ``"pruned"``. Exceptions (from it or from training) propagate.
    - A NaN/inf training or validation loss stops the run at once with status ``"diverged"`` and a reason.
    - ``checkpoint_dir``: writes ``arch.json`` (``arch``), ``metrics.json`` (config, per-epoch metrics, result;
      atomically after every epoch), ``checkpoint.pt`` (model/optimizer/RNG/epoch state after every epoch,
      loadable with ``torch.load(weights_only=True)``) and, at the end, ``weights.safetensors`` (not for
      diverged runs). ``resume=True`` continues from ``checkpoint.pt`` when it exists (else starts fresh) and,
      on CPU, ends with the same numbers as an uninterrupted run.
    - ``progress``: a per-epoch bar on stderr when stderr is a terminal (``"force"``: always) and one summary
      line per epoch; ``False`` prints nothing.
    - ``evaluate_test``: also measure the test split at the end (not for diverged runs).
    - Seeding: ``config.seed`` seeds torch and the shuffling/augmentation generators; seed the model's
      initialisation yourself (``torch.manual_seed``) before building it. On CPU deterministic algorithms are
      enabled during the run (restored afterwards), so a run is reproducible on the same machine.
    - The model is left on the training device (in channels_last format on CUDA unless disabled).
    - On CPU, glibc malloc is tuned for the rest of the process so large activations are reused instead of
      re-faulted every step (:func:`igcnas._allocator.tune_cpu_allocator`; ``IGCNAS_MALLOC=system`` opts out).

    Example:
        >>> from igcnas.data import load_data
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        >>> result = train(net, load_data("digits"), TrainConfig(epochs=5, device="cpu"), progress=False)
        >>> result.status, result.epochs_trained, result.val_accuracy > 0.8  # chance is 0.1
        ('completed', 5, True)
    """
    started = time.perf_counter()
    _check_inputs(model, data, config, progress=progress, evaluate_test=evaluate_test)
    device = resolve_device(config.device)
    use_amp = config.amp == "bf16" or (config.amp == "auto" and device.type == "cuda")
    use_cl = config.channels_last == "on" or (config.channels_last == "auto" and device.type == "cuda")
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if resume and ckpt_dir is None:
        raise UserError("train: resume=True needs checkpoint_dir (the directory of the interrupted run)")
    log = _Log(progress)

    with _torch_settings(device, config.num_threads):
        model.to(device)
        if use_cl:
            model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(
            [p for p in model.parameters() if p.requires_grad],
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
        torch.manual_seed(config.seed)
        # One CPU generator drives shuffling and augmentation (iterate_batches hands it to the transform), so
        # the batches are the same on CPU and GPU and a checkpoint only needs its state.
        batch_gen = torch.Generator().manual_seed(config.seed)
        state = _RunState()
        if resume and ckpt_dir is not None and (ckpt_dir / CHECKPOINT_FILE).is_file():
            state = _load_checkpoint(ckpt_dir / CHECKPOINT_FILE, model, optimizer, batch_gen, config, data)
            log.line(f"resumed from {ckpt_dir / CHECKPOINT_FILE} after epoch {state.epoch}/{config.epochs}")
        seconds_before = state.seconds

        train_split, val_split = _place(data.train, device), _place(data.val, device)
        train_tf = data.train_transform() if config.augment else data.eval_transform()
        n_train = len(train_split)
        drop_last = n_train > config.batch_size
        steps_per_epoch = n_train // config.batch_size if drop_last else 1
        if config.max_train_batches is not None:
            steps_per_epoch = min(steps_per_epoch, config.max_train_batches)

        if ckpt_dir is not None:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            write_json_if_changed(ckpt_dir / ARCH_FILE, arch if arch is not None else {})

        def elapsed() -> float:
            return seconds_before + time.perf_counter() - started

        def write_metrics(status: str, result: TrainResult | None, reason: str = "") -> None:
            if ckpt_dir is None:
                return
            payload = {
                "status": status,
                "reason": result.reason if result is not None else reason,
                "config": config.to_dict(),
                "arch": arch,
                "data": _data_summary(data),
                "device": str(device),
                "history": [m.to_dict() for m in state.history],
                "result": result.to_dict() if result is not None else None,
            }
            write_json_atomic(ckpt_dir / METRICS_FILE, payload)

        status: Status = "completed"
        reason = ""
        sync_every = 1 if device.type == "cpu" else _CUDA_SYNC_EVERY
        try:
            write_metrics("running", None)
            while state.epoch < config.epochs and status == "completed":
                epoch = state.epoch + 1
                model.train()
                bar = (
                    ProgressBar(total=steps_per_epoch, label=f"epoch {epoch}/{config.epochs}")
                    if log.bar
                    else None
                )
                t0 = time.perf_counter()
                loss_sum = torch.zeros((), dtype=torch.float64, device=device)
                correct = torch.zeros((), dtype=torch.int64, device=device)
                seen = 0
                lr = learning_rate(config, state.step, steps_per_epoch)
                batches = iterate_batches(
                    train_split,
                    config.batch_size,
                    shuffle=True,
                    generator=batch_gen,
                    transform=train_tf,
                    device=device,
                    drop_last=drop_last,
                )
                try:
                    for index, (images, labels) in enumerate(batches):
                        if index >= steps_per_epoch:
                            break
                        lr = learning_rate(config, state.step, steps_per_epoch)
                        for group in optimizer.param_groups:
                            group["lr"] = lr
                        if use_cl:
                            images = images.contiguous(memory_format=torch.channels_last)
                        with _autocast(device, use_amp):
                            logits = model(images)
                        logits = logits.float()
                        if state.step == 0 or index == 0:
                            _check_logits(logits, labels, data.num_classes)
                        loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
                        batch = int(labels.shape[0])
                        loss_sum += loss.detach().double() * batch
                        correct += (logits.detach().argmax(dim=1) == labels).sum()
                        seen += batch
                        if (index + 1) % sync_every == 0 or index + 1 == steps_per_epoch:
                            running = loss_sum.item() / seen
                            if not math.isfinite(running):
                                status = "diverged"
                                reason = (
                                    f"training loss became {running} at epoch {epoch}, batch {index + 1} "
                                    f"(lr {lr:.4g}); stopped the run. Lower the learning rate "
                                    f"(lr={config.lr:g}) or add warmup_epochs"
                                )
                                break
                            if bar is not None:
                                bar.update(index + 1, images=seen, loss=running)
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        optimizer.step()
                        state.step += 1
                finally:
                    if bar is not None:
                        bar.close()
                if status == "diverged":
                    break
                if seen == 0:
                    raise RuntimeError(f"epoch {epoch}: the training split yielded no batches")
                train_loss = loss_sum.item() / seen
                train_acc = correct.item() / seen
                train_seconds = time.perf_counter() - t0
                if not math.isfinite(train_loss):
                    status, reason = "diverged", f"training loss became {train_loss} in epoch {epoch}"
                    break
                val_loss, val_acc = _evaluate(
                    model,
                    val_split,
                    data,
                    batch_size=config.eval_batch_size,
                    device=device,
                    amp=use_amp,
                    channels_last=use_cl,
                )
                if not math.isfinite(val_loss):
                    status = "diverged"
                    reason = (
                        f"validation loss became {val_loss} after epoch {epoch} (lr {lr:.4g}); stopped the run. "
                        f"Lower the learning rate (lr={config.lr:g}) or add warmup_epochs"
                    )
                    break
                metrics = EpochMetrics(
                    epoch=epoch,
                    train_loss=train_loss,
                    train_accuracy=train_acc,
                    val_loss=val_loss,
                    val_accuracy=val_acc,
                    lr=lr,
                    seconds=time.perf_counter() - t0,
                    images_per_second=seen / max(train_seconds, 1e-9),
                    train_images=seen,
                )
                state.history.append(metrics)
                state.epoch = epoch
                state.seconds = elapsed()
                if ckpt_dir is not None:
                    _save_checkpoint(
                        ckpt_dir / CHECKPOINT_FILE, model, optimizer, batch_gen, state, config, data
                    )
                    write_metrics("running", None)
                remaining = (config.epochs - epoch) * metrics.seconds
                log.line(_summary(metrics, config.epochs, remaining))
                if on_epoch is not None and on_epoch(metrics):
                    status = "pruned"
                    reason = f"stopped by on_epoch after epoch {epoch}/{config.epochs}"
        except BaseException as exc:
            label = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            with contextlib.suppress(Exception):
                write_metrics(label, None, reason=f"{type(exc).__name__}: {exc}")
            raise

        if status == "completed":
            reason = f"completed {state.epoch}/{config.epochs} epochs"
        else:
            log.line(f"{status}: {reason}")
        test_loss: float | None = None
        test_acc: float | None = None
        if evaluate_test and status != "diverged" and data.test is not None:
            test_loss, test_acc = _evaluate(
                model,
                _place(data.test, device),
                data,
                batch_size=config.eval_batch_size,
                device=device,
                amp=use_amp,
                channels_last=use_cl,
            )
            log.line(f"test loss {test_loss:.4f} acc {test_acc:.2%}")
        best = max(state.history, key=lambda m: m.val_accuracy, default=None)
        result = TrainResult(
            status=status,
            epochs_trained=state.epoch,
            history=list(state.history),
            val_accuracy=state.history[-1].val_accuracy if state.history else 0.0,
            best_val_accuracy=best.val_accuracy if best is not None else 0.0,
            test_accuracy=test_acc,
            seconds=elapsed(),
            reason=reason,
            test_loss=test_loss,
            best_epoch=best.epoch if best is not None else 0,
            device=str(device),
        )
        if ckpt_dir is not None:
            if status != "diverged":
                save_weights(model, ckpt_dir / WEIGHTS_FILE)
            write_metrics(status, result)
        return result


def _check_inputs(
    model: nn.Module, data: DataBundle, config: TrainConfig, *, progress: object, evaluate_test: bool
) -> None:
    """Raise ``UserError`` for arguments that cannot work (before any work is done)."""
    if not isinstance(model, nn.Module):
        raise UserError(f"train: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, TrainConfig):
        raise UserError(f"train: config must be a TrainConfig, got {type(config).__name__}")
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError("train: the model has no trainable parameters")
    if len(data.train) == 0:
        raise UserError(f"train: the training split of dataset {data.name!r} is empty")
    if len(data.val) == 0:
        raise UserError(
            f"train: the validation split of dataset {data.name!r} is empty; load it with val_fraction > 0"
        )
    if evaluate_test and data.test is None:
        raise UserError(
            f"train: evaluate_test=True but dataset {data.name!r} has no test split; pass evaluate_test=False"
        )
    if progress not in (True, False, "force"):
        raise UserError(f"train: progress={progress!r} must be True, False or 'force'")


def _summary(m: EpochMetrics, epochs: int, remaining: float) -> str:
    """One human line per epoch."""
    eta = f"  eta {format_duration(remaining)}" if m.epoch < epochs else ""
    return (
        f"epoch {m.epoch}/{epochs}  train loss {m.train_loss:.4f} acc {m.train_accuracy:.2%}  "
        f"val loss {m.val_loss:.4f} acc {m.val_accuracy:.2%}  lr {m.lr:.3g}  {m.seconds:.1f}s  "
        f"{m.images_per_second:,.0f} img/s{eta}"
    )


class _Log:
    """Where progress goes: a bar (TTY or forced) and summary lines on stderr, or nothing."""

    def __init__(self, progress: bool | str) -> None:
        isatty = getattr(sys.stderr, "isatty", lambda: False)
        self.enabled = bool(progress)
        self.bar = progress == "force" or (progress is True and bool(isatty()))

    def line(self, text: str) -> None:
        """Print one line to stderr when progress is on."""
        if self.enabled:
            print(text, file=sys.stderr, flush=True)
