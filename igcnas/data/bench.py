"""``igcnas bench data``: images/s of the igcnas data pipeline vs torchvision ImageFolder + DataLoader."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from igcnas.data.augment import BatchAugment, iterate_batches
from igcnas.data.cache import CachedSplit, load_cached_split, save_cached_split
from igcnas.data.folder import (
    assemble_images,
    decode_images,
    default_workers,
    detect_layout,
    list_classes,
    scan_split,
)
from igcnas.data.splits import channel_stats, stratified_subset
from igcnas.errors import UserError

__all__ = ["bench_data", "format_bench"]


def _row(pipeline: str, stage: str, images: int, seconds: float) -> dict[str, Any]:
    """One result row."""
    return {
        "pipeline": pipeline,
        "stage": stage,
        "images": images,
        "seconds": seconds,
        "images_per_s": images / seconds if seconds > 0 else float("inf"),
    }


def bench_data(
    root: Path | str,
    *,
    limit: int | None = None,
    batch_size: int = 256,
    workers: int | None = None,
    loader_workers: int = 2,
    pad: int = 4,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Time the igcnas pipeline against torchvision on the training images of image folder ``root``.

    Stages (each row: ``pipeline``, ``stage``, ``images``, ``seconds``, ``images_per_s``, ``ratio``):

    * ``igcnas`` / ``cold decode``: scan + PIL decode in ``workers`` processes + cache file write
      (into a temporary folder, so an existing cache never makes it look faster);
    * ``igcnas`` / ``warm load``: reading that cache file back (``torch.load(weights_only=True)``);
    * ``igcnas`` / ``epoch``: one shuffled epoch of :func:`iterate_batches` with :class:`BatchAugment`
      (pad-``pad`` random crop, flip, normalise) on the in-memory uint8 tensor, with the current torch
      thread count and, when that is more than one, again with one thread (on a busy machine torch's
      intra-op threads can make these small memory-bound ops many times slower);
    * ``torchvision`` / ``epoch``: one epoch of ``ImageFolder`` + ``DataLoader(num_workers=loader_workers)``
      with RandomCrop(padding=pad), RandomHorizontalFlip, ToTensor, Normalize over the same images
      (worker start-up included, as with non-persistent workers every epoch).

    ``ratio`` is each row's images/s divided by the torchvision epoch's. ``limit`` takes a stratified
    subset of that many images for every stage.

    Example (not run as a doctest: it needs the real CIFAR-10 image folder, ``../shared`` beside the repository):
        >>> rows = bench_data("../shared/datasets/cifar10", limit=2000)  # doctest: +SKIP
        >>> print(format_bench(rows))  # doctest: +SKIP
    """
    from torch.utils.data import DataLoader, Dataset, Subset
    from torchvision import datasets, transforms

    root = Path(root).expanduser()
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UserError(f"limit: {limit!r} must be a positive number of images (e.g. --limit 5000)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size: {batch_size!r} must be a positive integer (e.g. 256)")
    workers = default_workers() if workers is None else workers

    start = time.perf_counter()
    layout = detect_layout(root)
    split_dir = layout.train_dir
    classes = list_classes(split_dir)
    entries = scan_split(split_dir, classes)
    if not entries:
        raise UserError(
            f"no image files in the class folders of {split_dir}; put images in {split_dir}/<class>/"
        )
    if limit is not None and limit < len(entries):
        labels_all = torch.tensor([e.label for e in entries], dtype=torch.int64)
        chosen = stratified_subset(labels_all, limit, seed=seed).tolist()
        entries = [entries[i] for i in chosen]
    paths = [str(split_dir / e.rel) for e in entries]
    n = len(paths)

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="igcnas-bench-") as tmp:
        cache_file = Path(tmp) / "train-bench.pt"
        decoded, used = decode_images(paths, workers=workers)
        images, labels, failures = assemble_images(split_dir, entries, decoded)
        del decoded
        save_cached_split(
            cache_file, CachedSplit(images, labels, tuple(classes), tuple(p for p, _ in failures))
        )
        rows.append(
            _row("igcnas", f"cold decode ({used} processes) + cache write", n, time.perf_counter() - start)
        )

        del images, labels
        start = time.perf_counter()
        loaded = load_cached_split(cache_file)
        rows.append(_row("igcnas", "warm load (cache read)", n, time.perf_counter() - start))
    if loaded is None:  # pragma: no cover - the file was just written
        raise RuntimeError("benchmark cache file could not be read back")
    from igcnas.data.tensors import ImageTensors

    split = ImageTensors(loaded.images, loaded.labels)
    mean, std = channel_stats(split.images)
    augment = BatchAugment(mean=mean, std=std, pad=pad, flip=True)
    threads = torch.get_num_threads()
    for count in [threads, 1] if threads > 1 else [threads]:
        torch.set_num_threads(count)
        try:
            generator = torch.Generator().manual_seed(seed)
            start = time.perf_counter()
            seen = 0
            for x, _ in iterate_batches(
                split, batch_size, shuffle=True, generator=generator, transform=augment
            ):
                seen += int(x.shape[0])
            elapsed = time.perf_counter() - start
        finally:
            torch.set_num_threads(threads)
        stage = f"epoch (batched augment, batch {batch_size}, {count} torch thread{'s' if count > 1 else ''})"
        rows.append(_row("igcnas", stage, seen, elapsed))

    _, h, w = split.shape
    transform = transforms.Compose(
        [
            transforms.RandomCrop((h, w), padding=pad),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    folder = datasets.ImageFolder(str(split_dir), transform=transform)
    index = {path: i for i, (path, _) in enumerate(folder.samples)}
    unreadable = {p for p, _ in failures}
    wanted = [index[p] for p in paths if p in index and p not in unreadable]
    dataset: Dataset[Any] = folder if len(wanted) == len(folder) else Subset(folder, wanted)
    loader: DataLoader[Any] = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=loader_workers,
        generator=torch.Generator().manual_seed(seed),
    )
    start = time.perf_counter()
    seen_tv = 0
    for x, _ in loader:
        seen_tv += int(x.shape[0])
    rows.append(
        _row(
            "torchvision",
            f"epoch (ImageFolder + DataLoader, {loader_workers} workers)",
            seen_tv,
            time.perf_counter() - start,
        )
    )
    reference = rows[-1]["images_per_s"]
    for row in rows:
        row["ratio"] = row["images_per_s"] / reference if reference > 0 else float("nan")
    return rows


def format_bench(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of :func:`bench_data` rows."""
    header = f"{'pipeline':<12} {'stage':<58} {'images':>8} {'seconds':>9} {'images/s':>10} {'vs tv':>7}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['pipeline']:<12} {r['stage']:<58} {r['images']:>8d} {r['seconds']:>9.2f} "
            f"{r['images_per_s']:>10.0f} {r.get('ratio', float('nan')):>6.1f}x"
        )
    return "\n".join(lines)
