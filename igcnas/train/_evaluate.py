"""Evaluation of a classifier on one split: mean cross-entropy loss and accuracy (:func:`evaluate`).

:func:`_evaluate` is the loop :func:`~igcnas.train.train` also runs after every epoch (model already on the
device); :func:`_check_logits` rejects outputs that are not ``N x num_classes`` logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from igcnas.data import DataBundle, ImageTensors, iterate_batches
from igcnas.errors import UserError
from igcnas.train._device import _autocast, resolve_device

__all__ = ["evaluate"]


def evaluate(
    model: nn.Module,
    split: ImageTensors,
    data: DataBundle,
    *,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    amp: bool = False,
    channels_last: bool = False,
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy (fraction) of ``model`` on ``split``, normalised with ``data``'s stats.

    The model is moved to ``device`` and its train/eval mode is restored afterwards.

    Example:
        >>> import math
        >>> from igcnas.data import load_data
        >>> data = load_data("digits", seed=0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        >>> _ = nn.init.zeros_(net[1].weight), nn.init.zeros_(net[1].bias)  # equal logits: every guess is 0
        >>> loss, acc = evaluate(net, data.val, data, batch_size=512, device="cpu")
        >>> share_of_zeros = (data.val.labels == 0).sum().item() / len(data.val)
        >>> math.isclose(loss, math.log(10), rel_tol=1e-6), acc == share_of_zeros
        (True, True)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"evaluate: batch_size {batch_size!r} must be a positive integer (e.g. 512)")
    dev = resolve_device(device)
    model.to(dev)
    was_training = model.training
    try:
        return _evaluate(
            model, split, data, batch_size=batch_size, device=dev, amp=amp, channels_last=channels_last
        )
    finally:
        model.train(was_training)


def _evaluate(
    model: nn.Module,
    split: ImageTensors,
    data: DataBundle,
    *,
    batch_size: int,
    device: torch.device,
    amp: bool,
    channels_last: bool,
) -> tuple[float, float]:
    """Loss and accuracy of ``model`` (already on ``device``) over ``split``; leaves the model in eval mode."""
    count = len(split)
    if count == 0:
        raise UserError(f"evaluate: the split of dataset {data.name!r} is empty (use a val_fraction > 0)")
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    transform = data.eval_transform()
    with torch.inference_mode():
        for images, labels in iterate_batches(
            split,
            batch_size,
            shuffle=False,
            generator=None,
            transform=transform,
            device=device,
        ):
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with _autocast(device, amp):
                logits = model(images)
            logits = logits.float()
            _check_logits(logits, labels, data.num_classes)
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
            correct += (logits.argmax(dim=1) == labels).sum()
    return loss_sum.item() / count, correct.item() / count


def _check_logits(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    """Raise ``UserError`` when the model's output does not look like ``N x num_classes`` logits."""
    if logits.dim() != 2 or logits.shape[0] != labels.shape[0] or logits.shape[1] != num_classes:
        raise UserError(
            f"train: the model outputs shape {tuple(logits.shape)} for a batch of {labels.shape[0]} images; "
            f"expected ({labels.shape[0]}, {num_classes}) logits (build it with num_classes={num_classes})"
        )
