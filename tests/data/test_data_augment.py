"""Batched augmentation, normalisation and batch iteration (igcnas/data/augment.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from igcnas.data import BatchAugment, ImageTensors, Normalize, iterate_batches, normalize

MEAN3 = (0.4, 0.5, 0.6)
STD3 = (0.2, 0.25, 0.3)


def _batch(n: int = 16, c: int = 3, h: int = 12, w: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def _find_shift(out: torch.Tensor, src: torch.Tensor, pad: int, *, flipped: bool) -> tuple[int, int] | None:
    """The (dy, dx) in [0, 2*pad] such that ``out`` is that crop of the zero-padded (flipped) ``src``."""
    padded = F.pad(src, (pad, pad, pad, pad))
    if flipped:
        padded = padded.flip(-1)
    h, w = src.shape[-2:]
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            if torch.equal(padded[:, dy : dy + h, dx : dx + w], out):
                return dy, dx
    return None


def test_output_shape_dtype_and_normalisation() -> None:
    x = _batch()
    out = BatchAugment(mean=MEAN3, std=STD3, pad=0, flip=False)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.float32
    expected = (x.double() / 255 - torch.tensor(MEAN3, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        STD3, dtype=torch.float64
    ).view(1, 3, 1, 1)
    assert torch.allclose(out.double(), expected, atol=1e-5)
    assert torch.allclose(normalize(x, MEAN3, STD3).double(), expected, atol=1e-5)
    assert torch.equal(Normalize(mean=MEAN3, std=STD3)(x, None), normalize(x, MEAN3, STD3))


def test_same_generator_state_same_output_other_seed_differs() -> None:
    x = _batch(n=64)
    aug = BatchAugment(mean=MEAN3, std=STD3, pad=4, flip=True)
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    c = aug(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_crop_moves_pixels_and_is_a_zero_padded_shift() -> None:
    x = _batch(n=32, h=9, w=11)
    out = BatchAugment(mean=MEAN3, std=STD3, pad=2, flip=False).geometry(x, torch.Generator().manual_seed(1))
    shifts = [_find_shift(out[i], x[i], 2, flipped=False) for i in range(len(x))]
    assert all(s is not None for s in shifts)
    assert any(s != (2, 2) for s in shifts), "no image was shifted"
    assert len(set(shifts)) > 3
    assert not torch.equal(out, x)


def test_flip_mirrors_about_half_the_images() -> None:
    x = _batch(n=200, h=6, w=7)
    out = BatchAugment(mean=MEAN3, std=STD3, pad=0, flip=True).geometry(x, torch.Generator().manual_seed(2))
    mirrored = [torch.equal(out[i], x[i].flip(-1)) for i in range(len(x))]
    unchanged = [torch.equal(out[i], x[i]) for i in range(len(x))]
    assert all(m or u for m, u in zip(mirrored, unchanged, strict=True))
    assert 60 < sum(mirrored) < 140


def test_crop_and_flip_combined() -> None:
    x = _batch(n=40, h=8, w=8)
    out = BatchAugment(mean=MEAN3, std=STD3, pad=1, flip=True).geometry(x, torch.Generator().manual_seed(3))
    flipped = 0
    for i in range(len(x)):
        plain = _find_shift(out[i], x[i], 1, flipped=False)
        mirror = _find_shift(out[i], x[i], 1, flipped=True)
        assert plain is not None or mirror is not None
        flipped += plain is None
    assert flipped > 0


def test_no_flip_never_mirrors() -> None:
    # asymmetric content: a bright left column only
    x = torch.zeros(50, 1, 8, 8, dtype=torch.uint8)
    x[:, :, :, 0] = 255
    out = BatchAugment(mean=(0.5,), std=(0.5,), pad=1, flip=False).geometry(
        x, torch.Generator().manual_seed(0)
    )
    bright_cols = out.amax(dim=(1, 2)).float().argmax(dim=1)  # column index of the bright stripe
    assert set(bright_cols.tolist()) <= {0, 1}


def test_pad_zero_no_flip_is_identity_geometry() -> None:
    x = _batch()
    assert torch.equal(BatchAugment(mean=MEAN3, std=STD3, pad=0, flip=False).geometry(x), x)


def test_rejects_bad_input() -> None:
    aug = BatchAugment(mean=MEAN3, std=STD3)
    with pytest.raises(ValueError, match="uint8"):
        aug(torch.zeros(2, 3, 4, 4), None)
    with pytest.raises(ValueError, match="channels"):
        aug(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), None)
    with pytest.raises(ValueError, match="pad"):
        BatchAugment(mean=MEAN3, std=STD3, pad=-1)
    with pytest.raises(ValueError, match="std"):
        BatchAugment(mean=MEAN3, std=(0.1, 0.0, 0.1))


def _split(n: int = 10) -> ImageTensors:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return ImageTensors(images, torch.arange(n, dtype=torch.int64))


def test_iterate_batches_shuffled_epoch_covers_every_item_once() -> None:
    split = _split(10)
    batches = list(
        iterate_batches(split, 4, shuffle=True, generator=torch.Generator().manual_seed(0), transform=None)
    )
    assert [len(y) for _, y in batches] == [4, 4, 2]
    labels = torch.cat([y for _, y in batches])
    assert sorted(labels.tolist()) == list(range(10)) and labels.tolist() != list(range(10))
    for x, y in batches:  # images follow their labels
        assert torch.equal(x[:, 0, 0, 0].long(), y)


def test_iterate_batches_deterministic_drop_last_and_ordered() -> None:
    split = _split(10)

    def run(seed: int) -> list[int]:
        g = torch.Generator().manual_seed(seed)
        return torch.cat(
            [y for _, y in iterate_batches(split, 3, shuffle=True, generator=g, transform=None)]
        ).tolist()

    assert run(1) == run(1) and run(1) != run(2)
    kept = list(iterate_batches(split, 4, shuffle=False, generator=None, transform=None, drop_last=True))
    assert [y.tolist() for _, y in kept] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_iterate_batches_applies_transform_with_generator() -> None:
    split = ImageTensors(_batch(n=20, h=8, w=8), torch.zeros(20, dtype=torch.int64))
    aug = BatchAugment(mean=MEAN3, std=STD3, pad=2, flip=True)

    def epoch(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.cat([x for x, _ in iterate_batches(split, 8, shuffle=True, generator=g, transform=aug)])

    first = epoch(0)
    assert first.dtype == torch.float32 and first.shape == (20, 3, 8, 8)
    assert torch.equal(first, epoch(0))
    with pytest.raises(ValueError, match="batch_size"):
        next(iterate_batches(split, 0, shuffle=False, generator=None, transform=None))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_match_cpu() -> None:
    x = _batch(n=32)
    aug = BatchAugment(mean=MEAN3, std=STD3, pad=4, flip=True)
    cpu = aug(x, torch.Generator().manual_seed(9))
    gpu = aug(x.cuda(), torch.Generator().manual_seed(9))
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-6)
    split = ImageTensors(x, torch.arange(32, dtype=torch.int64))
    xb, yb = next(
        iterate_batches(
            split, 8, shuffle=True, generator=torch.Generator().manual_seed(0), transform=aug, device="cuda"
        )
    )
    assert xb.device.type == "cuda" and yb.device.type == "cuda"
