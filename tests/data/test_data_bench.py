"""bench_data rows on a small image folder (igcnas/data/bench.py); no timing assertions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from igcnas.data import bench_data, format_bench
from igcnas.data.cache import CACHE_DIRNAME
from igcnas.errors import UserError


@pytest.fixture
def _restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("_restore_threads")
def test_bench_rows_cover_both_pipelines(cifar_small: Path) -> None:
    torch.set_num_threads(2)
    rows = bench_data(cifar_small, limit=100, batch_size=32, loader_workers=1)
    assert [(r["pipeline"], r["stage"].split()[0]) for r in rows] == [
        ("igcnas", "cold"),
        ("igcnas", "warm"),
        ("igcnas", "epoch"),
        ("igcnas", "epoch"),
        ("torchvision", "epoch"),
    ]
    assert "2 torch threads" in rows[2]["stage"] and "1 torch thread)" in rows[3]["stage"]
    assert torch.get_num_threads() == 2  # restored after the one-thread epoch
    for row in rows:
        assert row["images"] == 100
        assert row["seconds"] > 0 and row["images_per_s"] > 0
        assert set(row) == {"pipeline", "stage", "images", "seconds", "images_per_s", "ratio"}
    assert rows[-1]["ratio"] == pytest.approx(1.0)
    assert rows[2]["ratio"] == pytest.approx(rows[2]["images_per_s"] / rows[4]["images_per_s"])
    assert not (cifar_small / CACHE_DIRNAME).exists()  # the bench never touches the real cache
    table = format_bench(rows)
    assert "torchvision" in table and "images/s" in table


def test_bench_rejects_bad_limit(cifar_small: Path) -> None:
    with pytest.raises(UserError, match="limit"):
        bench_data(cifar_small, limit=0)
