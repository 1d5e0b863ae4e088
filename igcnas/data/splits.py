"""Stratified, seeded index splits and per-channel statistics of uint8 image tensors."""

from __future__ import annotations

import hashlib
import math

import torch

__all__ = ["derive_seed", "allocate_per_class", "stratified_subset", "stratified_split", "channel_stats"]


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for one ``purpose`` (e.g. ``"val"``), independent of the other purposes' streams."""
    digest = hashlib.sha256(f"igcnas:{int(seed)}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def allocate_per_class(counts: list[int], total: int) -> list[int]:
    """Split ``total`` over classes proportionally to ``counts`` (largest remainder; sums to ``total``).

    Example:
        >>> allocate_per_class([50, 30, 20], 10)
        [5, 3, 2]
    """
    n = sum(counts)
    if not 0 <= total <= n:
        raise ValueError(f"cannot take {total} of {n} items")
    if n == 0:
        return [0 for _ in counts]
    quotas = [c * total / n for c in counts]
    taken = [min(c, math.floor(q)) for c, q in zip(counts, quotas, strict=True)]
    remainder = total - sum(taken)
    # Hand out the rest by largest fractional part (ties: larger class, then lower class id).
    order = sorted(range(len(counts)), key=lambda i: (-(quotas[i] - taken[i]), -counts[i], i))
    while remainder > 0:
        progressed = False
        for i in order:
            if remainder == 0:
                break
            if taken[i] < counts[i]:
                taken[i] += 1
                remainder -= 1
                progressed = True
        if not progressed:  # pragma: no cover - impossible because total <= n
            raise AssertionError("allocation did not converge")
    return taken


def _per_class_take(labels: torch.Tensor, total: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (taken, rest), both sorted, taking ``total`` items stratified by ``labels``."""
    labels = labels.cpu()
    n = int(labels.shape[0])
    if n == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty
    num_classes = int(labels.max()) + 1
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    quota = allocate_per_class([int(c) for c in counts], total)
    generator = torch.Generator().manual_seed(seed)
    taken: list[torch.Tensor] = []
    rest: list[torch.Tensor] = []
    for cls in range(num_classes):
        members = torch.nonzero(labels == cls, as_tuple=False).flatten()
        if members.numel() == 0:
            continue
        shuffled = members[torch.randperm(members.numel(), generator=generator)]
        taken.append(shuffled[: quota[cls]])
        rest.append(shuffled[quota[cls] :])
    return torch.sort(torch.cat(taken)).values, torch.sort(torch.cat(rest)).values


def stratified_subset(labels: torch.Tensor, size: int, *, seed: int) -> torch.Tensor:
    """Sorted indices of a stratified random subset of ``size`` items (class proportions preserved).

    Example:
        >>> labels = torch.tensor([0] * 80 + [1] * 20)
        >>> idx = stratified_subset(labels, 10, seed=0)
        >>> torch.bincount(labels[idx]).tolist()
        [8, 2]
    """
    taken, _ = _per_class_take(labels, size, derive_seed(seed, "subset"))
    return taken


def stratified_split(
    labels: torch.Tensor, fraction: float, *, seed: int, purpose: str = "val"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted indices ``(keep, held_out)`` with ``round(N * fraction)`` held out, stratified and seeded.

    ``purpose`` selects an independent random stream (``"val"`` for validation carving).

    Example:
        >>> labels = torch.tensor([0] * 50 + [1] * 50)
        >>> keep, held = stratified_split(labels, 0.1, seed=0)
        >>> len(keep), len(held), torch.bincount(labels[held]).tolist()
        (90, 10, [5, 5])
    """
    n = int(labels.shape[0])
    held_count = int(round(n * float(fraction)))
    held, keep = _per_class_take(labels, held_count, derive_seed(seed, purpose))
    return keep, held


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 ``N x C x H x W`` images on the [0, 1] scale.

    Computed exactly from a 256-bin histogram per channel (much faster than float sums on the CPU).
    A channel with zero spread gets std 1.0 so that normalising never divides by zero.

    Example:
        >>> x = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)
        >>> channel_stats(x)
        ((0.5,), (0.5,))
    """
    if images.dim() != 4 or images.shape[0] == 0 or images.dtype != torch.uint8:
        raise ValueError(
            f"channel_stats needs a non-empty uint8 N x C x H x W tensor, got {tuple(images.shape)}"
        )
    values = torch.arange(256, dtype=torch.float64)
    means: list[float] = []
    stds: list[float] = []
    for c in range(int(images.shape[1])):
        hist = torch.bincount(images[:, c].reshape(-1), minlength=256).to(device="cpu", dtype=torch.float64)
        count = float(hist.sum())
        mean = float((hist * values).sum()) / count
        var = max(float((hist * (values - mean).square()).sum()) / count, 0.0)
        means.append(mean / 255.0)
        std = var**0.5 / 255.0
        stds.append(std if std > 1e-8 else 1.0)
    return tuple(means), tuple(stds)
