"""Dataset registry and :func:`load_data`: one call from a dataset name to train/val/test uint8 tensors.

Order of operations in :func:`load_data` (all seeded by ``seed``, all stratified by class):

1. load the source's official training split (and its test split, if any);
2. ``train_subset``: keep a stratified random subset of that many training images;
3. ``val_fraction``: carve the validation split out of what step 2 left (so ``train_subset=5000,
   val_fraction=0.1`` gives 4500 train + 500 val images);
4. per-channel mean/std from the final training split.

The test split is never touched by steps 2-4; it is meant for final reports only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from igcnas.data.folder import has_split_layout, load_image_folder
from igcnas.data.splits import channel_stats, stratified_split, stratified_subset
from igcnas.data.tensors import AugmentConfig, DataBundle, ImageTensors
from igcnas.errors import UserError
from igcnas.units import parse_count

__all__ = [
    "DIGITS_TEST_FRACTION",
    "DatasetSource",
    "RawDataset",
    "default_data_dir",
    "known_datasets",
    "describe_datasets",
    "load_data",
]

#: Share of the scikit-learn digits carved off as their fixed test split (seed-independent).
DIGITS_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class _Request:
    """What a source loader gets from :func:`load_data`."""

    name: str
    arg: str | None
    data_dir: Path | None
    download: bool
    skip_corrupt: bool
    progress: bool
    workers: int | None
    use_cache: bool


@dataclass(frozen=True)
class RawDataset:
    """A source's official splits before subsetting/validation carving."""

    name: str
    train: ImageTensors
    test: ImageTensors | None
    classes: tuple[str, ...]
    augment: AugmentConfig
    skipped: tuple[str, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class DatasetSource:
    """One registry entry: ``usage`` as typed by users, a one-line summary, and the loader."""

    usage: str
    summary: str
    load: Callable[[_Request], RawDataset]
    takes_path: bool = False


def default_data_dir() -> Path:
    """Where torchvision datasets live when ``data_dir`` is not given: ``$IGCNAS_DATA_DIR`` or ``./data``."""
    return Path(os.environ.get("IGCNAS_DATA_DIR") or "data").expanduser()


def _from_folder(req: _Request, root: Path, *, name: str, augment: AugmentConfig | None) -> RawDataset:
    """A RawDataset from an image folder (``augment=None``: pad = H/8, flip on)."""
    data = load_image_folder(
        root,
        skip_corrupt=req.skip_corrupt,
        progress=req.progress,
        workers=req.workers,
        use_cache=req.use_cache,
    )
    skipped = data.train.skipped + (data.test.skipped if data.test is not None else ())
    if augment is None:
        height = data.train.tensors.shape[1]
        augment = AugmentConfig(pad=max(1, round(height / 8)), flip=True)
    return RawDataset(
        name=name,
        train=data.train.tensors,
        test=data.test.tensors if data.test is not None else None,
        classes=data.classes,
        augment=augment,
        skipped=skipped,
        source=str(Path(os.path.abspath(data.layout.root))),
    )


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits as ``(images (N, 8, 8) float64 in 0..16, targets int64)``, as ``load_digits`` gives them.

    Read straight from the CSV scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``), without importing
    ``sklearn.datasets`` (about a second in every fresh process, e.g. each search worker); ``load_digits`` when
    that file is not where it used to be.
    """
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    path = next((Path(f) / "datasets" / "data" / "digits.csv.gz" for f in folders
                 if (Path(f) / "datasets" / "data" / "digits.csv.gz").is_file()), None)
    if path is None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        return np.asarray(digits.images, dtype=np.float64), np.asarray(digits.target, dtype=np.int64)
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8).astype(np.float64), table[:, -1].astype(np.int64)


def _load_digits(req: _Request) -> RawDataset:
    """scikit-learn's embedded 8x8 digits: 0..16 scaled to 0..255, fixed stratified 20% test split."""
    raw_images, target = digits_arrays()
    scaled = np.rint(raw_images * (255.0 / 16.0)).clip(0, 255)
    images = torch.from_numpy(scaled.astype(np.uint8)[:, None, :, :]).contiguous()
    labels = torch.from_numpy(target)
    everything = ImageTensors(images, labels)
    # The test split must not move with the user's seed: reports stay comparable across runs.
    keep, held = stratified_split(labels, DIGITS_TEST_FRACTION, seed=0, purpose="digits-test")
    return RawDataset(
        name="digits",
        train=everything.select(keep),
        test=everything.select(held),
        classes=tuple(str(t) for t in range(10)),
        augment=AugmentConfig(pad=1, flip=False),
        source="sklearn.datasets.load_digits",
    )


_TORCHVISION_AUGMENT = {
    "cifar10": AugmentConfig(pad=4, flip=True),
    "cifar100": AugmentConfig(pad=4, flip=True),
    "svhn": AugmentConfig(pad=4, flip=False),
}


def _torchvision_class(name: str) -> Any:
    """The torchvision dataset class of ``name``."""
    from torchvision import datasets

    return {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100, "svhn": datasets.SVHN}[name]


def _required_files(name: str) -> list[str]:
    """Files (relative to ``data_dir``) torchvision needs for both splits of ``name``."""
    cls = _torchvision_class(name)
    if name == "svhn":
        return [cls.split_list["train"][1], cls.split_list["test"][1]]
    names = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return [f"{cls.base_folder}/{f}" for f in names]


def _where_to_get(name: str, root: Path) -> str:
    """Where the files of torchvision dataset ``name`` come from and where they must go under ``root``."""
    cls = _torchvision_class(name)
    if name == "svhn":
        urls = [cls.split_list[split][0] for split in ("train", "test")]
        site = urls[0].rsplit("/", 1)[0] + "/"
        return f"download {' and '.join(u.rsplit('/', 1)[1] for u in urls)} from {site} into {root}"
    return f"download {cls.url} and unpack it in {root} (it makes {cls.base_folder}/)"


def _torchvision_splits(name: str, root: Path, download: bool) -> tuple[Any, Any]:
    """Instantiate torchvision's train and test datasets."""
    cls = _torchvision_class(name)
    if name == "svhn":
        return cls(str(root), split="train", download=download), cls(
            str(root), split="test", download=download
        )
    return cls(str(root), train=True, download=download), cls(str(root), train=False, download=download)


def _load_torchvision(req: _Request) -> RawDataset:
    """CIFAR-10/100 or SVHN via torchvision (or an ImageFolder copy found in ``data_dir``)."""
    name = req.name
    root = (req.data_dir if req.data_dir is not None else default_data_dir()).expanduser()
    augment = _TORCHVISION_AUGMENT[name]
    for candidate in (root, root / name):
        if has_split_layout(candidate):
            return _from_folder(req, candidate, name=name, augment=augment)
    required = _required_files(name)
    missing = [f for f in required if not (root / f).is_file()]
    if missing and not req.download:
        listed = missing[0] + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        raise UserError(
            f"{name}: dataset files missing in {root} ({listed}); {_where_to_get(name, root)}, or put an image "
            "folder copy there (train/<class>/ images, optionally test/<class>/), or point --data-dir at the folder "
            "that holds them"
        )
    try:
        if req.download:
            root.mkdir(parents=True, exist_ok=True)
        train_ds, test_ds = _torchvision_splits(name, root, req.download)
    except UserError:
        raise
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted" (md5 mismatch)
        raise UserError(
            f"{name}: the dataset files in {root} are incomplete or corrupted ({exc}); delete them and "
            f"{_where_to_get(name, root)} again"
        ) from exc
    except Exception as exc:  # network errors, permission problems, ...
        action = "downloading into" if req.download else "reading"
        raise UserError(
            f"{name}: {action} {root} failed ({type(exc).__name__}: {exc}); check the network and that "
            f"{root} is writable, or put the files ({', '.join(required)}) there yourself"
        ) from exc
    train = _tensors_from_torchvision(name, train_ds)
    test = _tensors_from_torchvision(name, test_ds)
    classes = tuple(str(i) for i in range(10)) if name == "svhn" else tuple(train_ds.classes)
    return RawDataset(
        name=name,
        train=train,
        test=test,
        classes=classes,
        augment=augment,
        source=str(Path(os.path.abspath(root))),
    )


def _tensors_from_torchvision(name: str, dataset: Any) -> ImageTensors:
    """uint8 N x C x H x W tensors from a torchvision CIFAR/SVHN object (no per-image work)."""
    data = np.asarray(dataset.data)
    if name == "svhn":  # already N x C x H x W
        images = torch.from_numpy(np.ascontiguousarray(data))
        labels = torch.from_numpy(np.asarray(dataset.labels, dtype=np.int64))
    else:  # N x H x W x C
        images = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
        labels = torch.tensor(list(dataset.targets), dtype=torch.int64)
    return ImageTensors(images.to(torch.uint8), labels)


def _load_imagefolder(req: _Request) -> RawDataset:
    """A user's image folder: ``imagefolder:PATH`` (or bare ``imagefolder`` with ``data_dir``)."""
    if req.arg:
        root = Path(req.arg).expanduser()
    elif req.data_dir is not None:
        root = Path(req.data_dir).expanduser()
    else:
        raise UserError(
            "dataset 'imagefolder' needs a folder: write imagefolder:PATH (e.g. imagefolder:./my_images) "
            "or give data_dir (--data-dir)"
        )
    return _from_folder(req, root, name=f"imagefolder:{root}", augment=None)


_REGISTRY: dict[str, DatasetSource] = {
    "digits": DatasetSource(
        "digits", "scikit-learn 8x8 handwritten digits (1x8x8, 10 classes, embedded)", _load_digits
    ),
    "cifar10": DatasetSource(
        "cifar10", "CIFAR-10 (3x32x32, 10 classes) via torchvision or an image folder", _load_torchvision
    ),
    "cifar100": DatasetSource(
        "cifar100", "CIFAR-100 (3x32x32, 100 classes) via torchvision or an image folder", _load_torchvision
    ),
    "svhn": DatasetSource(
        "svhn", "SVHN (3x32x32, 10 classes) via torchvision or an image folder", _load_torchvision
    ),
    "imagefolder": DatasetSource(
        "imagefolder:PATH",
        "your images: PATH/train/<class>/* (+ PATH/test/<class>/*) or PATH/<class>/*",
        _load_imagefolder,
        takes_path=True,
    ),
}


def known_datasets() -> list[str]:
    """Registry names accepted by :func:`load_data` (``imagefolder`` is written ``imagefolder:PATH``).

    Example:
        >>> known_datasets()
        ['digits', 'cifar10', 'cifar100', 'svhn', 'imagefolder']
    """
    return list(_REGISTRY)


def describe_datasets() -> list[tuple[str, str]]:
    """``(usage, summary)`` of every dataset, for help texts."""
    return [(s.usage, s.summary) for s in _REGISTRY.values()]


def _resolve(dataset: object) -> tuple[str, DatasetSource, str | None]:
    """Registry entry and path argument of a dataset spec like ``cifar10`` or ``imagefolder:PATH``."""
    listing = ", ".join(s.usage for s in _REGISTRY.values())
    if not isinstance(dataset, str) or not dataset.strip():
        raise UserError(f"dataset: {dataset!r} is not a dataset name; known datasets: {listing}")
    head, sep, arg = dataset.strip().partition(":")
    key = head.strip().lower()
    source = _REGISTRY.get(key)
    if source is None:
        raise UserError(f"dataset: unknown dataset {dataset!r}; known datasets: {listing}")
    if sep and not source.takes_path:
        raise UserError(
            f"dataset: {key!r} takes no ':PATH' part (got {dataset!r}); use data_dir (--data-dir)"
        )
    return key, source, (arg if sep else None)


def _check_options(
    val_fraction: object, train_subset: object, seed: object, workers: object
) -> tuple[float, int | None, int]:
    """Validate the split options; UserError naming the field otherwise."""
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)):
        raise UserError(
            f"val_fraction: {val_fraction!r} is not a number; give a fraction in [0, 1), e.g. 0.1"
        )
    fraction = float(val_fraction)
    if not 0.0 <= fraction < 1.0:
        raise UserError(
            f"val_fraction: {val_fraction!r} must be >= 0 and < 1 (e.g. 0.1 holds out 10% of the training set)"
        )
    subset: int | None = None
    if train_subset is not None:
        if isinstance(train_subset, (str, int, float)):
            subset = parse_count(train_subset, field="train_subset")
        else:
            raise UserError(f"train_subset: {train_subset!r} is not a count (e.g. 5000 or 5k)")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(f"seed: {seed!r} is not an integer (e.g. seed=0)")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise UserError(f"workers: {workers!r} must be a positive number of decode processes (e.g. 2)")
    return fraction, subset, seed


def load_data(
    dataset: str = "digits",
    *,
    data_dir: str | Path | None = None,
    val_fraction: float = 0.1,
    train_subset: int | str | None = None,
    seed: int = 0,
    download: bool = False,
    skip_corrupt: bool = False,
    progress: bool = False,
    workers: int | None = None,
    cache: bool = True,
) -> DataBundle:
    """Load ``dataset`` into uint8 tensors: stratified seeded train/val split plus the official test split.

    ``dataset`` is one of :func:`known_datasets` (``imagefolder:PATH`` for your own images).
    ``data_dir`` holds torchvision datasets (default ``$IGCNAS_DATA_DIR`` or ``./data``); a folder with
    a ``train/<class>/`` image layout there is used directly. ``train_subset`` (a count, ``"5k"`` works)
    is applied to the training set before ``val_fraction`` is carved out of it. Image folders are
    decoded once by ``workers`` processes and cached (``cache=False`` skips the cache). Unreadable images
    raise UserError unless ``skip_corrupt``; the number skipped is ``bundle.skipped_files``.

    Example:
        >>> bundle = load_data("digits", val_fraction=0.1, seed=0)
        >>> len(bundle.train), len(bundle.val), len(bundle.test)
        (1294, 144, 359)
        >>> bundle.train.images.dtype, bundle.input_shape
        (torch.uint8, (1, 8, 8))
    """
    key, source, arg = _resolve(dataset)
    fraction, subset, seed = _check_options(val_fraction, train_subset, seed, workers)
    request = _Request(
        name=key,
        arg=arg,
        data_dir=Path(data_dir).expanduser() if data_dir is not None else None,
        download=bool(download),
        skip_corrupt=bool(skip_corrupt),
        progress=bool(progress),
        workers=workers,
        use_cache=bool(cache),
    )
    raw = source.load(request)
    train = raw.train
    if subset is not None:
        if subset > len(train):
            raise UserError(
                f"train_subset: {subset} is more than the {len(train)} training images of {raw.name}; "
                f"give at most {len(train)} or leave it out"
            )
        train = train.select(stratified_subset(train.labels, subset, seed=seed))
    keep, held = stratified_split(train.labels, fraction, seed=seed)
    if keep.numel() == 0:
        raise UserError(
            f"val_fraction: {fraction} leaves no training images out of {len(train)}; use a smaller fraction "
            "or a larger train_subset"
        )
    val = train.select(held)
    train = train.select(keep)
    mean, std = channel_stats(train.images)
    return DataBundle(
        name=raw.name,
        train=train,
        val=val,
        test=raw.test,
        classes=raw.classes,
        num_classes=len(raw.classes),
        input_shape=train.shape,
        mean=mean,
        std=std,
        skipped_files=len(raw.skipped),
        skipped_paths=raw.skipped,
        augment=raw.augment,
        source=raw.source,
    )
