"""Benchmark: IGC-L24M2 vs RegConv-W16 (D=20) trained with the same short schedule on real CIFAR-10.

IGCV1 (Table 4) reports IGC-L24M2 ahead of RegConv-W16 at fewer parameters (0.15M vs 0.27M). This benchmark
checks whether that ordering holds at a short CPU-sized schedule, printing test accuracy, params, FLOPs and time.
"""

from __future__ import annotations

import time
from typing import Any

import torch

__all__ = ["bench_train", "TRAIN_BENCH_NETWORKS"]

TRAIN_BENCH_NETWORKS: tuple[str, ...] = ("IGC-L24M2-D20", "RegConv-W16-D20")


def bench_train(
    data_dir: str,
    *,
    epochs: int = 3,
    device: str = "cpu",
    train_subset: int | None = None,
    networks: tuple[str, ...] = TRAIN_BENCH_NETWORKS,
    batch_size: int = 64,
    seed: int = 0,
    threads: int = 1,
) -> list[dict[str, Any]]:
    """Train each network with one cosine schedule on the same data; one row per network.

    ``threads`` defaults to 1: on a shared CPU, OpenMP threads that wait for each other make small networks many
    times slower than one thread.
    """
    from igcnas.cost import count
    from igcnas.data import load_data
    from igcnas.nn.network import build
    from igcnas.train import TrainConfig, train
    from igcnas.zoo import get_zoo

    data = load_data("cifar10", data_dir=data_dir, train_subset=train_subset, seed=seed, progress=True)
    rows = []
    for name in networks:
        spec = get_zoo(name).spec
        torch.manual_seed(seed)
        model = build(spec)
        config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=0.1, schedule="cosine", seed=seed,
                             device=device, num_threads=threads)
        start = time.perf_counter()
        result = train(model, data, config, evaluate_test=True, progress=True)
        cost = count(spec)
        rows.append({
            "network": name,
            "params": cost.params,
            "flops": cost.flops,
            "epochs": result.epochs_trained,
            "val_accuracy": round(result.val_accuracy, 4),
            "test_accuracy": round(result.test_accuracy or 0.0, 4),
            "seconds": round(time.perf_counter() - start, 1),
            "status": result.status,
        })
    return rows
