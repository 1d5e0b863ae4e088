"""load_data: the dataset registry, digits, torchvision sources and split options (igcnas/data/loaders.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from igcnas.data import DataBundle, describe_datasets, known_datasets, load_data
from igcnas.errors import UserError


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_data("digits", seed=0)


def test_digits_shapes_classes_and_sizes(digits: DataBundle) -> None:
    assert digits.name == "digits"
    assert digits.input_shape == (1, 8, 8)
    assert digits.classes == tuple(str(i) for i in range(10)) and digits.num_classes == 10
    assert digits.test is not None
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    assert len(digits.test) == 359 and len(digits.val) == 144
    for split in (digits.train, digits.val, digits.test):
        assert split.images.dtype == torch.uint8 and split.images.is_contiguous()
        assert split.labels.dtype == torch.int64
        assert split.images.shape[1:] == (1, 8, 8)
    assert int(digits.train.images.max()) == 255 and int(digits.train.images.min()) == 0
    assert digits.skipped_files == 0


def test_digits_augmentation_defaults_no_flip(digits: DataBundle) -> None:
    augment = digits.train_transform()
    assert augment.flip is False and augment.pad == 1
    assert augment.mean == digits.mean and augment.std == digits.std


def test_mean_std_come_from_the_train_split(digits: DataBundle) -> None:
    pixels = digits.train.images.double() / 255
    assert digits.mean[0] == pytest.approx(float(pixels.mean()), abs=1e-9)
    assert digits.std[0] == pytest.approx(float(pixels.std(unbiased=False)), abs=1e-9)


def test_splits_disjoint_and_stratified(digits: DataBundle) -> None:
    # digits images are not unique, so check disjointness on (image bytes, label) multisets via counts
    full = load_data("digits", val_fraction=0.0, seed=0)
    assert len(full.val) == 0 and len(full.train) == len(digits.train) + len(digits.val)
    val_counts = digits.val.class_counts(10)
    train_counts = digits.train.class_counts(10)
    total = [a + b for a, b in zip(val_counts, train_counts, strict=True)]
    assert total == full.train.class_counts(10)
    for v, t in zip(val_counts, total, strict=True):
        assert abs(v - 0.1 * t) <= 1.0
    # the test split is stratified too (20 %)
    assert digits.test is not None
    assert all(abs(c - 0.2 * 180) <= 2 for c in digits.test.class_counts(10))


def test_same_seed_identical_other_seed_differs(digits: DataBundle) -> None:
    again = load_data("digits", seed=0)
    other = load_data("digits", seed=1)
    assert torch.equal(again.val.images, digits.val.images) and torch.equal(
        again.train.labels, digits.train.labels
    )
    assert not torch.equal(other.val.images, digits.val.images)
    # the test split does not depend on the seed
    assert digits.test is not None and other.test is not None
    assert torch.equal(other.test.images, digits.test.images)


def test_train_subset_is_applied_before_validation() -> None:
    bundle = load_data("digits", train_subset=500, val_fraction=0.2, seed=3)
    assert len(bundle.train) == 400 and len(bundle.val) == 100
    counts = [a + b for a, b in zip(bundle.train.class_counts(10), bundle.val.class_counts(10), strict=True)]
    full = load_data("digits", val_fraction=0.0, seed=3).train.class_counts(10)
    for c, f in zip(counts, full, strict=True):
        assert abs(c - 500 * f / sum(full)) < 1.0
    assert len(load_data("digits", train_subset="0.3k", seed=3).train) == 270


def test_bad_options_raise_user_errors() -> None:
    with pytest.raises(UserError, match="val_fraction"):
        load_data("digits", val_fraction=1.0)
    with pytest.raises(UserError, match="val_fraction"):
        load_data("digits", val_fraction="a lot")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="train_subset: 99999 is more than the 1438"):
        load_data("digits", train_subset=99999)
    with pytest.raises(UserError, match="train_subset"):
        load_data("digits", train_subset=0)
    with pytest.raises(UserError, match="seed"):
        load_data("digits", seed="x")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="workers"):
        load_data("digits", workers=0)


def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(UserError) as info:
        load_data("mnist")
    message = str(info.value)
    assert "'mnist'" in message
    for name in ("digits", "cifar10", "cifar100", "svhn", "imagefolder:PATH"):
        assert name in message
    assert known_datasets() == ["digits", "cifar10", "cifar100", "svhn", "imagefolder"]
    assert [usage for usage, _ in describe_datasets()][-1] == "imagefolder:PATH"


def test_name_is_case_insensitive_and_path_only_for_imagefolder() -> None:
    assert load_data("Digits").name == "digits"
    with pytest.raises(UserError, match="takes no ':PATH'"):
        load_data("digits:/tmp")
    with pytest.raises(UserError, match="imagefolder:PATH"):
        load_data("imagefolder")


@pytest.mark.parametrize(
    ("name", "expected_file"),
    [
        ("cifar10", "cifar-10-batches-py/data_batch_1"),
        ("cifar100", "cifar-100-python/train"),
        ("svhn", "train_32x32.mat"),
    ],
)
def test_torchvision_missing_files_name_folder_and_fix(tmp_path: Path, name: str, expected_file: str) -> None:
    with pytest.raises(UserError) as info:
        load_data(name, data_dir=tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path) in message
    assert expected_file in message
    assert "--download" not in message and "download=True" not in message  # no command has --download
    assert "download http" in message or " from http" in message  # where to get the files
    assert "train/<class>/" in message and "--data-dir" in message
    assert list(tmp_path.iterdir()) == []  # nothing was downloaded or created


def test_torchvision_corrupted_files_raise_user_error(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
        "batches.meta",
    ]:
        (folder / name).write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="corrupted"):
        load_data("cifar10", data_dir=tmp_path)


def test_cifar10_name_uses_an_image_folder_layout(cifar_small: Path) -> None:
    bundle = load_data("cifar10", data_dir=cifar_small, val_fraction=0.1, seed=0)
    assert bundle.name == "cifar10"
    assert bundle.input_shape == (3, 32, 32)
    assert bundle.classes[:3] == ("airplane", "automobile", "bird") and bundle.num_classes == 10
    assert len(bundle.train) == 180 and len(bundle.val) == 20
    assert bundle.test is not None and len(bundle.test) == 50
    assert bundle.augment.pad == 4 and bundle.augment.flip is True
    # also found one level down: data_dir/cifar10/train/<class>/
    assert len(load_data("cifar10", data_dir=cifar_small.parent).train) == 180
