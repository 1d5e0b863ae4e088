"""Benchmark of ``--workers``: the same search at an equal number of trained trials, one worker vs the default.

Each run is a real ``igcnas search`` process in its own temporary folder and SQLite storage, on the embedded
``digits`` data (or ``--data-dir``), random sampler, no pruning, so every trial trains all its epochs: the runs
differ only in how many trials train at once. The runs alternate (1, default, 1, default, ...) ``repeats`` times
and each row reports the median wall time; the ratio is the default's median over the one-worker median. The
default size is the main job's (``igcnas search``: 20 trials of 6 epochs); at smaller sizes the seconds that do
not split between workers (start-up, closing summary) weigh more.

The sampler seeds each trial's draws by its number, so both runs train the same candidates; the row's ``train_s``
(the trials' summed durations) shows how much slower each trains when the workers share the machine.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["bench_workers"]


def _run(workers: str, folder: Path, *, trials: int, epochs: int, max_params: int, space: str,
         data_dir: str | None, train_subset: int | None) -> tuple[float, float, int]:
    """One search in ``folder``: (wall seconds, summed trial durations, trained trials)."""
    args = ["search", "--workers", workers, "--trials", str(trials), "--epochs", str(epochs), "--sampler", "random",
            "--pruner", "none", "--max-params", str(max_params), "--space", space, "--device", "cpu", "--quiet",
            "--study", "bench-workers", "--prescreen", "0"]  # workers alone, as on digits (auto is 8 on cifar10)
    if data_dir:
        args += ["--dataset", "cifar10", "--data-dir", data_dir]
    if train_subset:
        args += ["--train-subset", str(train_subset)]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "igcnas", *args], cwd=folder, check=True, capture_output=True, text=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - started
    rows = [json.loads(p.read_text()) for p in sorted((folder / "trials" / "bench-workers").glob("*/trial.json"))]
    trained = [r for r in rows if r["state"] in ("complete", "pruned", "failed") and r.get("reused_from") is None]
    return wall, sum(float(r.get("duration_s") or 0.0) for r in trained), len(trained)


def bench_workers(*, trials: int = 20, epochs: int = 6, max_params: int = 50_000, space: str = "igc_cifar",
                  data_dir: str | None = None, train_subset: int | None = None, repeats: int = 1,
                  progress: bool = True) -> list[dict[str, Any]]:
    """Rows ``{workers, wall_s, train_s, trained, ratio}`` for ``--workers 1`` and the default (``auto``)."""
    from igcnas.search._workers import physical_cores

    walls: dict[str, list[float]] = {"1": [], "auto": []}
    work: dict[str, list[float]] = {"1": [], "auto": []}
    counts: dict[str, int] = {}
    for repeat in range(repeats):
        for workers in ("1", "auto"):
            with tempfile.TemporaryDirectory(prefix="igcnas-bench-workers-") as tmp:
                wall, train_s, trained = _run(workers, Path(tmp), trials=trials, epochs=epochs,
                                              max_params=max_params, space=space, data_dir=data_dir,
                                              train_subset=train_subset)
            walls[workers].append(wall)
            work[workers].append(train_s)
            counts[workers] = trained
            if progress:
                print(f"bench workers: repeat {repeat + 1}/{repeats}, --workers {workers}: {wall:.1f} s wall, "
                      f"{trained} trained trials", file=sys.stderr, flush=True)
    base = statistics.median(walls["1"])
    cores = physical_cores()
    return [
        {"workers": "1" if w == "1" else f"auto ({cores} physical cores)", "trials": counts[w], "epochs": epochs,
         "wall_s": round(statistics.median(walls[w]), 2), "train_s": round(statistics.median(work[w]), 2),
         "ratio": round(statistics.median(walls[w]) / base, 3)}
        for w in ("1", "auto")
    ]
