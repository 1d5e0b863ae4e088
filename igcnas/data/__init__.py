"""igcnas data pipeline: datasets decoded once into in-memory uint8 tensors, batched augmentation.

Example:
    >>> import torch
    >>> from igcnas.data import load_data, iterate_batches
    >>> bundle = load_data("digits", seed=0)
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = next(iterate_batches(bundle.train, 64, shuffle=True, generator=g,
    ...                             transform=bundle.train_transform()))
    >>> x.shape, x.dtype
    (torch.Size([64, 1, 8, 8]), torch.float32)
"""

from __future__ import annotations

from igcnas.data.augment import BatchAugment, BatchTransform, Normalize, iterate_batches, normalize
from igcnas.data.bench import bench_data, format_bench
from igcnas.data.cache import user_cache_dir
from igcnas.data.loaders import default_data_dir, describe_datasets, known_datasets, load_data
from igcnas.data.splits import channel_stats, stratified_split, stratified_subset
from igcnas.data.tensors import AugmentConfig, DataBundle, ImageTensors

__all__ = [
    "AugmentConfig",
    "BatchAugment",
    "BatchTransform",
    "DataBundle",
    "ImageTensors",
    "Normalize",
    "bench_data",
    "channel_stats",
    "default_data_dir",
    "describe_datasets",
    "format_bench",
    "iterate_batches",
    "known_datasets",
    "load_data",
    "normalize",
    "stratified_split",
    "stratified_subset",
    "user_cache_dir",
]
