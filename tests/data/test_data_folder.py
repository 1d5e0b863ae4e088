"""Image folders: layout detection, decoding, the decode cache and unreadable files (igcnas/data/folder.py)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import igcnas.data.folder as folder_mod
from igcnas.data import load_data
from igcnas.data.cache import CACHE_DIRNAME, is_writable_dir
from igcnas.data.folder import decode_images, load_image_folder
from igcnas.errors import UserError


def _forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any decode fail loudly, so a successful load proves a cache hit."""

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("images were decoded although the cache should have been used")

    monkeypatch.setattr(folder_mod, "decode_images", boom)


def test_imagefolder_loads_train_and_test(cifar_small: Path) -> None:
    bundle = load_data(f"imagefolder:{cifar_small}", val_fraction=0.1, seed=0)
    assert bundle.name == f"imagefolder:{cifar_small}"
    assert bundle.source == str(cifar_small)
    assert bundle.input_shape == (3, 32, 32) and bundle.num_classes == 10
    assert bundle.classes == tuple(sorted(p.name for p in (cifar_small / "train").iterdir()))
    assert len(bundle.train) == 180 and len(bundle.val) == 20
    assert bundle.train.class_counts(10) == [18] * 10 and bundle.val.class_counts(10) == [2] * 10
    assert bundle.test is not None and bundle.test.class_counts(10) == [5] * 10
    assert bundle.augment.pad == 4 and bundle.augment.flip
    assert bundle.skipped_files == 0


def test_decoded_pixels_equal_pil(cifar_small: Path) -> None:
    data = load_image_folder(cifar_small)
    first = sorted((cifar_small / "train" / "airplane").glob("*.jpg"))[0]
    with Image.open(first) as image:
        expected = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(data.train.tensors.images[0], expected)
    assert int(data.train.tensors.labels[0]) == 0


def test_process_pool_decoding_matches_serial(cifar_small: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [str(p) for p in sorted((cifar_small / "train").rglob("*.jpg"))]
    serial, used_serial = decode_images(paths, workers=1)
    monkeypatch.setattr(folder_mod, "_MIN_FILES_FOR_POOL", 10)
    pooled, used_pool = decode_images(paths, workers=2)
    assert used_serial == 1 and used_pool == 2
    assert all(np.array_equal(a, b) for a, b in zip(serial, pooled, strict=True))


def test_second_load_hits_the_cache(cifar_small: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_image_folder(cifar_small)
    assert not first.train.cache_hit
    assert first.train.cache_path is not None and first.train.cache_path.parent == cifar_small / CACHE_DIRNAME
    cache_files = sorted(p.name for p in (cifar_small / CACHE_DIRNAME).glob("*.pt"))
    assert [n.split("-")[0] for n in cache_files] == ["test", "train"]
    _forbid_decoding(monkeypatch)
    second = load_image_folder(cifar_small)
    assert second.train.cache_hit and second.test is not None and second.test.cache_hit
    assert torch.equal(second.train.tensors.images, first.train.tensors.images)
    assert torch.equal(second.train.tensors.labels, first.train.tensors.labels)
    # the cache folder is hidden from class discovery
    assert len(load_data(f"imagefolder:{cifar_small}").classes) == 10


def test_touching_or_adding_a_file_invalidates_the_cache(cifar_small: Path) -> None:
    first = load_image_folder(cifar_small)
    victim = sorted((cifar_small / "train" / "cat").glob("*.jpg"))[0]
    stamp = victim.stat()
    os.utime(victim, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 5_000_000_000))
    touched = load_image_folder(cifar_small)
    assert not touched.train.cache_hit and touched.test is not None and touched.test.cache_hit
    assert first.train.cache_path != touched.train.cache_path
    assert first.train.cache_path is not None and not first.train.cache_path.exists()  # stale file removed
    shutil.copyfile(victim, victim.with_name("extra.jpg"))
    added = load_image_folder(cifar_small)
    assert not added.train.cache_hit
    assert len(added.train.tensors) == len(first.train.tensors) + 1
    assert load_image_folder(cifar_small).train.cache_hit


def test_cache_disabled_writes_nothing(cifar_small: Path) -> None:
    data = load_image_folder(cifar_small, use_cache=False)
    assert data.train.cache_path is None and not (cifar_small / CACHE_DIRNAME).exists()


def test_read_only_root_falls_back_to_user_cache(
    cifar_small: Path, _private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cifar_small.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    try:
        assert not is_writable_dir(cifar_small / CACHE_DIRNAME)
        first = load_image_folder(cifar_small)
        assert first.train.cache_path is not None
        assert first.train.cache_path.is_relative_to(_private_cache)
        assert not (cifar_small / CACHE_DIRNAME).exists()
        _forbid_decoding(monkeypatch)
        assert load_image_folder(cifar_small).train.cache_hit
    finally:
        cifar_small.chmod(0o755)


def test_corrupt_file_is_named_or_skipped(cifar_small: Path) -> None:
    bad = cifar_small / "train" / "dog" / "garbage.jpg"
    bad.write_bytes(b"this is not a jpeg" * 10)
    with pytest.raises(UserError) as info:
        load_data(f"imagefolder:{cifar_small}")
    assert str(bad) in str(info.value) and "skip_corrupt" in str(info.value)
    bundle = load_data(f"imagefolder:{cifar_small}", skip_corrupt=True)
    assert bundle.skipped_files == 1 and bundle.skipped_paths == (str(bad),)
    assert len(bundle.train) + len(bundle.val) == 200
    # a cache built while skipping still refuses the file when skipping is off
    with pytest.raises(UserError, match="garbage.jpg"):
        load_data(f"imagefolder:{cifar_small}")
    assert load_data(f"imagefolder:{cifar_small}", skip_corrupt=True).skipped_files == 1


def test_truncated_jpeg_is_unreadable(cifar_small: Path) -> None:
    victim = sorted((cifar_small / "test" / "ship").glob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(UserError, match=victim.name):
        load_data(f"imagefolder:{cifar_small}")
    bundle = load_data(f"imagefolder:{cifar_small}", skip_corrupt=True)
    assert bundle.skipped_files == 1 and bundle.test is not None and len(bundle.test) == 49


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=str(empty)):
        load_data(f"imagefolder:{empty}")
    (empty / "train" / "cat").mkdir(parents=True)
    with pytest.raises(UserError, match="no image files"):
        load_data(f"imagefolder:{empty}")
    missing = tmp_path / "nope"
    with pytest.raises(UserError, match=f"{missing} does not exist"):
        load_data(f"imagefolder:{missing}")


def test_empty_class_folder_is_reported(cifar_small: Path) -> None:
    (cifar_small / "train" / "zebra").mkdir()
    with pytest.raises(UserError, match="zebra"):
        load_data(f"imagefolder:{cifar_small}")


def test_flat_layout_has_no_test_split_and_grayscale_is_one_channel(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(
                tmp_path / cls / f"{i}.png"
            )
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    bundle = load_data(f"imagefolder:{tmp_path}", val_fraction=0.5)
    assert bundle.test is None
    assert bundle.input_shape == (1, 8, 8) and bundle.classes == ("a", "b")
    assert len(bundle.train) == 6 and len(bundle.val) == 6
    assert bundle.augment.pad == 1
    assert (tmp_path / CACHE_DIRNAME).is_dir()


def test_mixed_sizes_are_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "x" / "a.png")
    Image.new("RGB", (9, 8)).save(tmp_path / "x" / "b.png")
    with pytest.raises(UserError, match="b.png is 9x8 pixels"):
        load_data(f"imagefolder:{tmp_path}")


def test_progress_goes_to_stderr(cifar_small: Path, capsys: pytest.CaptureFixture[str]) -> None:
    load_data(f"imagefolder:{cifar_small}", progress=True)
    err = capsys.readouterr().err
    assert "decoding train images [" in err and "200/200" in err and "files/s" in err
