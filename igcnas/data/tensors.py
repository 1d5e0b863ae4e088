"""In-memory dataset containers: uint8 image tensors, the split bundle and per-dataset augmentation defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from igcnas.data.augment import BatchAugment, Normalize

__all__ = ["ImageTensors", "AugmentConfig", "DataBundle"]


@dataclass(frozen=True)
class ImageTensors:
    """A split held in memory: ``images`` uint8 ``N x C x H x W`` (contiguous) and ``labels`` int64 ``N``.

    Example:
        >>> split = ImageTensors(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]))
        >>> len(split), split.shape
        (2, (1, 8, 8))
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"ImageTensors.images must be a uint8 N x C x H x W tensor, got {self.images.dtype} "
                f"with shape {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(
                f"ImageTensors.labels must be an int64 vector, got {self.labels.dtype} "
                f"with shape {tuple(self.labels.shape)}"
            )
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(f"ImageTensors: {self.images.shape[0]} images but {self.labels.shape[0]} labels")
        if not self.images.is_contiguous():
            object.__setattr__(self, "images", self.images.contiguous())

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """The per-image shape ``(C, H, W)``."""
        _, c, h, w = self.images.shape
        return (int(c), int(h), int(w))

    @property
    def device(self) -> torch.device:
        """The device the images live on."""
        return self.images.device

    def to(self, device: torch.device | str) -> ImageTensors:
        """A copy on ``device`` (itself when already there); moving once lets batching index on the GPU."""
        device = torch.device(device)
        if self.images.device == device and self.labels.device == device:
            return self
        return ImageTensors(self.images.to(device), self.labels.to(device))

    def select(self, indices: torch.Tensor) -> ImageTensors:
        """The images at ``indices`` (int64 vector), in that order."""
        indices = indices.to(self.images.device)
        return ImageTensors(
            torch.index_select(self.images, 0, indices).contiguous(),
            torch.index_select(self.labels, 0, indices.to(self.labels.device)),
        )

    def class_counts(self, num_classes: int) -> list[int]:
        """How many images each class has (index = class id)."""
        return [int(c) for c in torch.bincount(self.labels.cpu(), minlength=num_classes).tolist()]


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation defaults of a dataset: random crop with zero ``pad`` and horizontal ``flip``.

    Digits use ``pad=1, flip=False`` (a flipped digit is another glyph), CIFAR ``pad=4, flip=True``,
    SVHN ``pad=4, flip=False`` (house numbers are not mirror symmetric).
    """

    pad: int = 4
    flip: bool = True


@dataclass(frozen=True)
class DataBundle:
    """Everything a training run needs from a dataset.

    ``train`` and ``val`` are carved from the official training data (val is stratified and seeded);
    ``test`` is the official test split (``None`` when the source has none) and is for final reports only.
    ``mean``/``std`` are per channel on the [0, 1] scale, computed on ``train``.

    Example:
        >>> from igcnas.data import load_data
        >>> bundle = load_data("digits", seed=0)
        >>> bundle.input_shape, bundle.num_classes
        ((1, 8, 8), 10)
        >>> augment = bundle.train_transform()
        >>> augment.pad, augment.flip, augment.mean == bundle.mean
        (1, False, True)
    """

    name: str
    train: ImageTensors
    val: ImageTensors
    test: ImageTensors | None
    classes: tuple[str, ...]
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    skipped_files: int = 0
    skipped_paths: tuple[str, ...] = ()
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    source: str = ""

    def train_transform(self) -> BatchAugment:
        """The dataset's default training augmentation (:class:`~igcnas.data.augment.BatchAugment`)."""
        from igcnas.data.augment import BatchAugment

        return BatchAugment(mean=self.mean, std=self.std, pad=self.augment.pad, flip=self.augment.flip)

    def eval_transform(self) -> Normalize:
        """The evaluation transform: normalisation only (:class:`~igcnas.data.augment.Normalize`)."""
        from igcnas.data.augment import Normalize

        return Normalize(mean=self.mean, std=self.std)
