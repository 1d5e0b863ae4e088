"""Batched, device-agnostic augmentation and normalisation of uint8 image tensors, and batch iteration.

Everything works on whole ``N x C x H x W`` batches (CPU or CUDA): no per-image PIL work in the training
loop. Random numbers come from the ``torch.Generator`` passed in, so a seeded generator gives identical
batches on every run (and the same crops/flips whether the batch lives on the CPU or a GPU when the
generator is a CPU generator).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from igcnas.data.tensors import ImageTensors

__all__ = ["BatchTransform", "BatchAugment", "Normalize", "normalize", "iterate_batches"]

#: A batch transform: ``transform(uint8_batch, generator) -> tensor`` (BatchAugment, Normalize, ...).
BatchTransform = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Validate per-channel mean/std and return them as float tuples."""
    mean_t = tuple(float(m) for m in mean)
    std_t = tuple(float(s) for s in std)
    if not mean_t or len(mean_t) != len(std_t):
        raise ValueError(f"mean and std need one value per channel, got {len(mean_t)} and {len(std_t)}")
    if any(not s > 0 for s in std_t):
        raise ValueError(f"std values must be > 0, got {std_t}")
    return mean_t, std_t


def _check_batch(batch: torch.Tensor, channels: int) -> None:
    """Raise when ``batch`` is not a uint8 N x C x H x W tensor with ``channels`` channels."""
    if batch.dtype != torch.uint8 or batch.dim() != 4:
        raise ValueError(f"expected a uint8 N x C x H x W batch, got {batch.dtype} {tuple(batch.shape)}")
    if batch.shape[1] != channels:
        raise ValueError(f"batch has {batch.shape[1]} channels but mean/std have {channels}")


class _AffineNormalizer:
    """Maps uint8 pixels to ``(x / 255 - mean) / std`` as one multiply-add, caching constants per device."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean = mean
        self.std = std
        self._scale_cpu = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32).view(
            1, -1, 1, 1
        )
        self._shift_cpu = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)], dtype=torch.float32)
        self._shift_cpu = self._shift_cpu.view(1, -1, 1, 1)
        self._per_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) tensors shaped ``1 x C x 1 x 1`` on ``device``."""
        found = self._per_device.get(device)
        if found is None:
            found = (self._scale_cpu.to(device), self._shift_cpu.to(device))
            self._per_device[device] = found
        return found

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        scale, shift = self.constants(batch.device)
        return torch.addcmul(shift, batch.to(torch.float32), scale)


def normalize(uint8_batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Evaluation path: float32 ``(x / 255 - mean) / std`` per channel, on the batch's device.

    Example:
        >>> x = torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)
        >>> [round(v, 5) for v in normalize(x, (0.5,), (0.5,)).flatten().tolist()]
        [1.0, 1.0, 1.0, 1.0]
    """
    mean_t, std_t = _check_stats(mean, std)
    _check_batch(uint8_batch, len(mean_t))
    return _AffineNormalizer(mean_t, std_t)(uint8_batch)


class Normalize:
    """Batch transform doing only normalisation (``transform(batch, generator)`` ignores the generator).

    Example:
        >>> norm = Normalize(mean=(0.5,), std=(0.25,))
        >>> norm(torch.zeros(1, 1, 1, 1, dtype=torch.uint8)).item()
        -2.0
    """

    def __init__(self, *, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = _check_stats(mean, std)
        self._normalizer = _AffineNormalizer(self.mean, self.std)

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_batch(batch, len(self.mean))
        return self._normalizer(batch)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


class BatchAugment:
    """Training augmentation on a uint8 batch: zero-pad ``pad`` + random crop back to H x W, random
    horizontal flip (p = 0.5, when ``flip``), then per-channel normalisation to float32.

    This is the CIFAR recipe of the IGC papers (pad 4, random 32x32 crop, flip), done as one gather over
    the whole batch; it runs on whatever device the batch is on. Offsets and flips are drawn from
    ``generator`` (on the generator's device) so equal generator states give equal outputs.

    Example:
        >>> aug = BatchAugment(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), pad=4, flip=True)
        >>> batch = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
        >>> out = aug(batch, torch.Generator().manual_seed(0))
        >>> out.shape, out.dtype
        (torch.Size([8, 3, 32, 32]), torch.float32)
    """

    def __init__(
        self, *, mean: Sequence[float], std: Sequence[float], pad: int = 4, flip: bool = True
    ) -> None:
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise ValueError(f"pad must be an integer >= 0, got {pad!r}")
        self.mean, self.std = _check_stats(mean, std)
        self.pad = pad
        self.flip = bool(flip)
        self._normalizer = _AffineNormalizer(self.mean, self.std)

    def __repr__(self) -> str:
        return f"BatchAugment(mean={self.mean}, std={self.std}, pad={self.pad}, flip={self.flip})"

    def geometry(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Only the crop/flip part: a uint8 batch of the same shape, pixels moved."""
        _check_batch(batch, len(self.mean))
        n, c, h, w = (int(s) for s in batch.shape)
        if n == 0 or (self.pad == 0 and not self.flip):
            return batch
        rng_device = generator.device if generator is not None else torch.device("cpu")
        span = 2 * self.pad + 1
        dy = torch.randint(0, span, (n,), generator=generator, device=rng_device).to(batch.device)
        dx = torch.randint(0, span, (n,), generator=generator, device=rng_device).to(batch.device)
        if self.flip:
            flipped = (torch.rand(n, generator=generator, device=rng_device) < 0.5).to(batch.device)
        else:
            flipped = torch.zeros(n, dtype=torch.bool, device=batch.device)
        padded = F.pad(batch, (self.pad, self.pad, self.pad, self.pad)) if self.pad else batch
        ar_h = torch.arange(h, device=batch.device)
        ar_w = torch.arange(w, device=batch.device)
        rows = dy[:, None] + ar_h[None, :]  # N x H, rows of the padded image
        cols = torch.where(flipped[:, None], (w - 1) - ar_w[None, :], ar_w[None, :]) + dx[:, None]  # N x W
        pw = w + 2 * self.pad
        # Flat gather index into each padded channel plane: row * padded_width + col.
        flat = (rows[:, :, None] * pw + cols[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
        out = torch.gather(padded.reshape(n, c, -1), 2, flat)
        return out.view(n, c, h, w)

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self._normalizer(self.geometry(batch, generator))


def iterate_batches(
    split: ImageTensors,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None,
    transform: BatchTransform | None,
    device: torch.device | str = "cpu",
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, labels)`` batches of ``split`` on ``device``.

    Images are gathered from the in-memory uint8 tensor, moved to ``device`` and passed through
    ``transform(batch, generator)`` (e.g. :class:`BatchAugment` for training, :class:`Normalize` for
    evaluation); without a transform the uint8 batch is yielded. With ``shuffle`` the order is a
    ``torch.randperm`` drawn from ``generator``. Move the split to the GPU once (``split.to("cuda")``) to
    also do the gathering there.

    Example:
        >>> split = ImageTensors(torch.zeros(10, 1, 8, 8, dtype=torch.uint8), torch.arange(10))
        >>> g = torch.Generator().manual_seed(0)
        >>> [len(y) for _, y in iterate_batches(split, 4, shuffle=True, generator=g, transform=None)]
        [4, 4, 2]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    target = torch.device(device)
    n = len(split)
    source_device = split.images.device
    if shuffle:
        rng_device = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(n, generator=generator, device=rng_device).to(source_device)
    else:
        order = torch.arange(n, device=source_device)
    stop = n - (n % batch_size) if drop_last else n
    non_blocking = target.type == "cuda" and source_device.type == "cpu"
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        images = torch.index_select(split.images, 0, idx)
        labels = torch.index_select(split.labels, 0, idx.to(split.labels.device))
        if non_blocking:
            images = images.pin_memory()
            labels = labels.pin_memory()
        images = images.to(target, non_blocking=non_blocking)
        labels = labels.to(target, non_blocking=non_blocking)
        if transform is not None:
            images = transform(images, generator)
        yield images, labels
