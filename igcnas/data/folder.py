"""Image folders (``root/train/<class>/*``, optional ``root/test/<class>/*``, or flat ``root/<class>/*``):
scanning, parallel PIL decoding into one uint8 tensor, and the on-disk decode cache.

Decoding uses a pool of processes (PIL holds the GIL for most of the work on small images, so threads
do not help: measured on CIFAR-10 JPGs, 2 threads were slower than 1 while 2 processes were ~1.7x faster).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from igcnas._progress import ProgressBar
from igcnas.data.cache import CachedSplit, content_key, read_cache, write_cache
from igcnas.data.tensors import ImageTensors
from igcnas.errors import UserError

__all__ = [
    "IMAGE_EXTENSIONS",
    "FileEntry",
    "FolderLayout",
    "FolderSplit",
    "FolderData",
    "detect_layout",
    "has_split_layout",
    "list_classes",
    "scan_split",
    "default_workers",
    "decode_images",
    "assemble_images",
    "load_split",
    "load_image_folder",
]

#: File name endings read as images (same set as torchvision's ImageFolder).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
_MIN_FILES_FOR_POOL = 1024


@dataclass(frozen=True)
class FileEntry:
    """One image file of a split: path relative to the split folder, class id, size and mtime."""

    rel: str
    label: int
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class FolderLayout:
    """Where the splits of an image folder dataset are: ``train`` (or the flat root) and optional ``test``."""

    root: Path
    train_dir: Path
    test_dir: Path | None
    flat: bool


@dataclass(frozen=True)
class FolderSplit:
    """A decoded split plus what happened while loading it."""

    tensors: ImageTensors
    skipped: tuple[str, ...]
    cache_hit: bool
    cache_path: Path | None


@dataclass(frozen=True)
class FolderData:
    """Both splits of an image folder dataset."""

    layout: FolderLayout
    classes: tuple[str, ...]
    train: FolderSplit
    test: FolderSplit | None


def _visible_dirs(folder: Path) -> list[str]:
    """Sorted names of non-hidden sub-folders (symlinks to folders included)."""
    try:
        with os.scandir(folder) as it:
            return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())
    except OSError:
        return []


def has_split_layout(root: Path) -> bool:
    """Whether ``root/train`` exists and holds at least one class sub-folder."""
    return (root / "train").is_dir() and bool(_visible_dirs(root / "train"))


def detect_layout(root: Path) -> FolderLayout:
    """Find the splits under ``root``: ``train/`` (+ ``test/``) when ``train/`` exists, else flat classes.

    Raises UserError when ``root`` is missing or holds no class folders.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise UserError(
            f"image folder {root} does not exist; give a folder laid out as {root}/train/<class>/*.jpg "
            f"(optionally {root}/test/<class>/*.jpg) or {root}/<class>/*.jpg"
        )
    if not root.is_dir():
        raise UserError(
            f"image folder {root} is a file, not a folder; give the folder that holds the class folders"
        )
    if (root / "train").is_dir():
        test_dir = root / "test"
        return FolderLayout(
            root=root, train_dir=root / "train", test_dir=test_dir if test_dir.is_dir() else None, flat=False
        )
    if not _visible_dirs(root):
        raise UserError(
            f"image folder {root} is empty or has no class folders; expected {root}/train/<class>/*.jpg "
            f"(optionally {root}/test/<class>/*.jpg) or {root}/<class>/*.jpg"
        )
    return FolderLayout(root=root, train_dir=root, test_dir=None, flat=True)


def list_classes(split_dir: Path) -> list[str]:
    """Sorted class folder names of a split folder."""
    return _visible_dirs(split_dir)


def scan_split(split_dir: Path, classes: Sequence[str]) -> list[FileEntry]:
    """All image files under ``split_dir/<class>/`` (recursively), sorted by class then path.

    Files that cannot be stat'ed (e.g. broken symlinks) are listed with size -1 so that decoding
    reports them like any other unreadable file.
    """
    entries: list[FileEntry] = []
    for label, cls in enumerate(classes):
        class_dir = split_dir / cls
        if not class_dir.is_dir():
            continue
        found: list[FileEntry] = []
        for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, split_dir)
                try:
                    st = os.stat(full)
                    found.append(FileEntry(rel, label, int(st.st_size), int(st.st_mtime_ns)))
                except OSError:
                    found.append(FileEntry(rel, label, -1, 0))
        found.sort(key=lambda e: e.rel)
        entries.extend(found)
    return entries


def default_workers() -> int:
    """Decode processes: ``$IGCNAS_DATA_WORKERS`` if set, else the usable CPU count (at most 8)."""
    explicit = os.environ.get("IGCNAS_DATA_WORKERS")
    if explicit:
        try:
            value = int(explicit)
        except ValueError:
            raise UserError(
                f"IGCNAS_DATA_WORKERS: {explicit!r} is not an integer (give e.g. IGCNAS_DATA_WORKERS=2)"
            ) from None
        if value < 1:
            raise UserError(f"IGCNAS_DATA_WORKERS: {value} must be >= 1")
        return value
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def _to_array(image: Image.Image) -> np.ndarray:
    """H x W x C uint8 array: grayscale modes give C=1, everything else RGB (alpha dropped)."""
    if image.mode in _GRAY_MODES:
        converted = image if image.mode == "L" else image.convert("L")
        return np.asarray(converted, dtype=np.uint8)[:, :, None]
    converted = image if image.mode == "RGB" else image.convert("RGB")
    return np.asarray(converted, dtype=np.uint8)


def _decode_one(path: str) -> np.ndarray | str:
    """Decode one file; an error message string instead of raising."""
    try:
        with Image.open(path) as image:
            image.load()
            return _to_array(image)
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        return f"{type(exc).__name__}: {exc}"


def _decode_chunk(paths: list[str]) -> list[np.ndarray | str]:
    """Decode a chunk of files in a worker process."""
    return [_decode_one(p) for p in paths]


def _pool_context() -> multiprocessing.context.BaseContext:
    """Fork on Linux (no re-import of torch in the workers), spawn elsewhere."""
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")  # pragma: no cover - non-Linux


def decode_images(
    paths: Sequence[str],
    *,
    workers: int | None = None,
    progress: bool = False,
    label: str = "decode",
) -> tuple[list[np.ndarray | str], int]:
    """Decode ``paths`` with PIL, in ``workers`` processes for large lists.

    Returns per-file results (an ``H x W x C`` uint8 array, or an error message) and the number of
    processes used.
    """
    n = len(paths)
    workers = default_workers() if workers is None else max(1, int(workers))
    bar = ProgressBar(label=label, total=n, enabled=progress, keep=True, unit="files/s",
                      min_interval=0.2 if sys.stderr.isatty() else 15.0)
    results: list[np.ndarray | str] = [""] * n
    use_pool = workers > 1 and n >= _MIN_FILES_FOR_POOL and not multiprocessing.current_process().daemon
    try:
        if use_pool:
            chunk = int(min(2048, max(64, math.ceil(n / (workers * 8)))))
            starts = list(range(0, n, chunk))
            try:
                with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as pool:
                    futures: dict[Future[list[np.ndarray | str]], int] = {
                        pool.submit(_decode_chunk, list(paths[s : s + chunk])): s for s in starts
                    }
                    for future in as_completed(futures):
                        start = futures[future]
                        part = future.result()
                        results[start : start + len(part)] = part
                        bar.advance(len(part))
                return results, workers
            except (OSError, RuntimeError) as exc:  # no processes possible here: decode in this process
                if progress:
                    sys.stderr.write(
                        f"\n{label}: process pool unavailable ({exc}); decoding in one process\n"
                    )
                bar = ProgressBar(label=label, total=n, enabled=progress, keep=True, unit="files/s",
                      min_interval=0.2 if sys.stderr.isatty() else 15.0)
        for i, path in enumerate(paths):
            results[i] = _decode_one(path)
            if i % 256 == 255:
                bar.advance(256)
        bar.advance(n - bar.done)
        return results, 1
    finally:
        bar.close()


def assemble_images(
    split_dir: Path, entries: list[FileEntry], decoded: list[np.ndarray | str]
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, str]]]:
    """Stack decoded arrays into uint8 N x C x H x W + labels; collect (path, error) of failures.

    Raises UserError when readable images do not all share one size.
    """
    failures: list[tuple[str, str]] = []
    good: list[int] = []
    channels = 1
    first: tuple[int, str] | None = None
    size: tuple[int, int] = (0, 0)
    for i, result in enumerate(decoded):
        if isinstance(result, str):
            failures.append((str(split_dir / entries[i].rel), result))
            continue
        h, w = int(result.shape[0]), int(result.shape[1])
        if first is None:
            first, size = (i, entries[i].rel), (h, w)
        elif (h, w) != size:
            raise UserError(
                f"image {split_dir / entries[i].rel} is {w}x{h} pixels but {split_dir / first[1]} is "
                f"{size[1]}x{size[0]}: all images of a dataset must have one size; resize them "
                f"(e.g. all to {size[1]}x{size[0]}) or move the odd ones out"
            )
        channels = max(channels, int(result.shape[2]))
        good.append(i)
    out = np.empty((len(good), size[0], size[1], channels), dtype=np.uint8)
    for j, i in enumerate(good):
        array = decoded[i]
        assert not isinstance(array, str)
        out[j] = array  # a 1-channel image broadcasts into 3 channels when the dataset mixes modes
    images = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([entries[i].label for i in good], dtype=torch.int64)
    return images, labels, failures


def _corrupt_error(failures: list[tuple[str, str]]) -> UserError:
    """The UserError for unreadable files (names the first few)."""
    shown = "; ".join(f"{path} ({why})" for path, why in failures[:3])
    more = f" and {len(failures) - 3} more" if len(failures) > 3 else ""
    count = f"{len(failures)} image files cannot be read" if len(failures) > 1 else "cannot read image file"
    return UserError(
        f"{count}: {shown}{more}; delete or replace them, or pass skip_corrupt=True (--skip-corrupt) "
        "to skip unreadable files"
    )


def load_split(
    root: Path,
    split_dir: Path,
    split: str,
    classes: Sequence[str],
    *,
    skip_corrupt: bool = False,
    progress: bool = False,
    workers: int | None = None,
    use_cache: bool = True,
    require_images: bool = True,
) -> FolderSplit:
    """Decode (or load from cache) one split folder into uint8 tensors.

    ``split`` names the cache file (``train``, ``test`` or ``all``). Raises UserError for unreadable files
    (unless ``skip_corrupt``), mixed image sizes, and a split without images.
    """
    entries = scan_split(split_dir, classes)
    if not entries:
        raise UserError(
            f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in the class folders of {split_dir}; "
            f"put images in {split_dir}/<class>/"
        )
    key = content_key(((e.rel, e.size, e.mtime_ns) for e in entries), classes=classes, split=split)
    if use_cache:
        cached, cache_path = read_cache(root, split, key)
        if cached is not None and tuple(cached.classes) == tuple(classes):
            if cached.skipped and not skip_corrupt:
                raise _corrupt_error(
                    [(path, "unreadable when the cache was built") for path in cached.skipped]
                )
            return FolderSplit(ImageTensors(cached.images, cached.labels), cached.skipped, True, cache_path)
    paths = [str(split_dir / e.rel) for e in entries]
    decoded, _ = decode_images(paths, workers=workers, progress=progress, label=f"decoding {split} images")
    images, labels, failures = assemble_images(split_dir, entries, decoded)
    del decoded
    if failures and not skip_corrupt:
        raise _corrupt_error(failures)
    if images.shape[0] == 0:
        raise UserError(
            f"none of the {len(entries)} image files in {split_dir} could be read; check the files"
        )
    if require_images:
        counts = torch.bincount(labels, minlength=len(classes)).tolist()
        empty = [cls for cls, count in zip(classes, counts, strict=True) if count == 0]
        if empty:
            raise UserError(
                f"class folder(s) without readable images in {split_dir}: {', '.join(empty)}; "
                "add images or remove those folders"
            )
    skipped = tuple(path for path, _ in failures)
    written = None
    if use_cache:
        written = write_cache(root, split, key, CachedSplit(images, labels, tuple(classes), skipped))
    return FolderSplit(ImageTensors(images, labels), skipped, False, written)


def load_image_folder(
    root: Path,
    *,
    skip_corrupt: bool = False,
    progress: bool = False,
    workers: int | None = None,
    use_cache: bool = True,
) -> FolderData:
    """Load an image folder dataset (train and optional test split), via the decode cache.

    Example (a tiny folder written on the fly: two ``cat`` images and a ``dog``, 4 x 4 RGB, no test split):
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as root:
        ...     for i, name in enumerate(["cat", "cat", "dog"]):
        ...         (Path(root) / "train" / name).mkdir(parents=True, exist_ok=True)
        ...         Image.new("RGB", (4, 4), (100 * i, 0, 0)).save(Path(root) / "train" / name / f"{i}.png")
        ...     data = load_image_folder(Path(root), workers=1, use_cache=False)
        >>> data.classes, data.train.tensors.images.shape, data.train.tensors.labels.tolist(), data.test
        (('cat', 'dog'), torch.Size([3, 3, 4, 4]), [0, 0, 1], None)
        >>> data.train.tensors.images[:, 0, 0, 0].tolist()  # the red channel of each image, as uint8
        [0, 100, 200]

        The real CIFAR-10 image folder (not part of the repository; ``../shared`` beside it):

        >>> data = load_image_folder(Path("../shared/datasets/cifar10"))  # doctest: +SKIP
        >>> data.train.tensors.images.shape  # doctest: +SKIP
        torch.Size([50000, 3, 32, 32])
    """
    layout = detect_layout(root)
    classes = list_classes(layout.train_dir)
    if not classes:
        raise UserError(
            f"{layout.train_dir} has no class folders; put images in {layout.train_dir}/<class>/*.jpg"
        )
    train = load_split(
        layout.root,
        layout.train_dir,
        "all" if layout.flat else "train",
        classes,
        skip_corrupt=skip_corrupt,
        progress=progress,
        workers=workers,
        use_cache=use_cache,
    )
    test = None
    if layout.test_dir is not None:
        unknown = [c for c in list_classes(layout.test_dir) if c not in classes]
        if unknown:
            raise UserError(
                f"class folder(s) {', '.join(unknown)} in {layout.test_dir} have no counterpart in "
                f"{layout.train_dir}; test classes must be a subset of the training classes"
            )
        test = load_split(
            layout.root,
            layout.test_dir,
            "test",
            classes,
            skip_corrupt=skip_corrupt,
            progress=progress,
            workers=workers,
            use_cache=use_cache,
            require_images=False,
        )
        test_c, train_c = test.tensors.shape[0], train.tensors.shape[0]
        if test_c == 1 and train_c == 3 and test.tensors.shape[1:] == train.tensors.shape[1:]:
            # grayscale test images of an RGB dataset: replicate the channel like the decoder does
            rgb = ImageTensors(test.tensors.images.expand(-1, 3, -1, -1).contiguous(), test.tensors.labels)
            test = FolderSplit(rgb, test.skipped, test.cache_hit, test.cache_path)
        if test.tensors.shape != train.tensors.shape:
            raise UserError(
                f"test images in {layout.test_dir} have shape {test.tensors.shape} (C, H, W) but training "
                f"images have {train.tensors.shape}; give both splits one size and color mode"
            )
    return FolderData(layout=layout, classes=tuple(classes), train=train, test=test)
