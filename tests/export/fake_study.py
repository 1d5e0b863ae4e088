"""A small fake study on disk, in the layout 'igcnas search' writes (trials/<study>/<trial:04d>/...).

Real small specs (8x8 grey inputs, 10 classes: digits-compatible) with real weights; the accuracies are made up so
that the Pareto front is known:

trial  design     widths  params  flops  state     accuracy
0      DW+PW      8-16       834  18720  complete  0.80      front
1      DW+PW      16-32     2298  53824  complete  0.90      front
2      GC+PWG     8-16      1538  38560  complete  0.78      dominated by 0
3      PW+DW+PW   8-16      1290  34208  complete  0.85      front
4      DW+PW      8-16       834  18720  pruned    0.60      (1 of 2 epochs, no weights)
5      DW+PW      8-16        -      -   failed     -        (no weights)
6      DW+PW      16-32     2298  53824  complete  0.90      front, duplicate of 1
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from igcnas.arch.spec import ArchSpec
from igcnas.cost import count
from igcnas.nn.network import build
from igcnas.train import save_weights

__all__ = ["write_fake_study", "write_empty_study", "read_study", "spec_of", "FRONT", "STUDY_SETTINGS", "TRIALS"]

INPUT_SHAPE = (1, 8, 8)
# trial -> (design, widths, state, accuracy, test accuracy, epochs)
TRIALS: dict[int, tuple[str, tuple[int, int], str, float | None, float | None, int]] = {
    0: ("DW+PW", (8, 16), "complete", 0.80, 0.79, 2),
    1: ("DW+PW", (16, 32), "complete", 0.90, 0.88, 2),
    2: ("GC+PWG", (8, 16), "complete", 0.78, 0.77, 2),
    3: ("PW+DW+PW", (8, 16), "complete", 0.85, 0.84, 2),
    4: ("DW+PW", (8, 16), "pruned", 0.60, None, 1),
    5: ("DW+PW", (8, 16), "failed", None, None, 0),
    6: ("DW+PW", (16, 32), "complete", 0.90, 0.87, 2),
}
FRONT = [1, 6, 3, 0]
STUDY_SETTINGS: dict[str, Any] = {
    "dataset": "digits",
    "objectives": ["accuracy:max", "params:min"],
    "max_params": 20000,
    "max_flops": None,
    "epochs": 2,
    "space": "space.yaml",
    "backend": "optuna",
    "seed": 0,
}


def spec_of(trial: int) -> ArchSpec:
    """The spec of a fake trial."""
    design, widths, *_ = TRIALS[trial]
    return ArchSpec.simple(design, widths=widths, depths=(1, 1), input_shape=INPUT_SHAPE)


def write_fake_study(trials_dir: Path, name: str = "demo") -> Path:
    """Write the fake study under ``trials_dir/name`` and return that folder."""
    folder = Path(trials_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "study.json").write_text(json.dumps({"name": name, **STUDY_SETTINGS}, indent=2))
    for trial, (design, widths, state, accuracy, test_accuracy, epochs) in TRIALS.items():
        spec = spec_of(trial)
        trial_dir = folder / f"{trial:04d}"
        arch_path = spec.save(trial_dir)
        cost = count(spec)
        failed = state == "failed"
        row = {
            "trial": trial,
            "state": state,
            "accuracy": accuracy,
            "test_accuracy": test_accuracy,
            "params": None if failed else cost.params,
            "flops": None if failed else cost.flops,
            "epochs": epochs,
            "max_epochs": 2,
            "spec_id": spec.id,
            "design": design,
            "widths": "-".join(map(str, widths)),
            "depths": "1-1",
            "arch_path": str(arch_path),
            "duration_s": 1.5 + trial,
            "backend": "optuna",
            "study": name,
            "reason": "build failed: out of memory" if failed else "",
        }
        (trial_dir / "trial.json").write_text(json.dumps(row, indent=2))
        if state == "complete":
            torch.manual_seed(trial)
            save_weights(build(spec), trial_dir / "weights.safetensors")
            metrics = {"status": "completed", "data": {"name": "digits"},
                       "result": {"val_accuracy": accuracy, "test_accuracy": test_accuracy}}
            (trial_dir / "metrics.json").write_text(json.dumps(metrics))
    return folder


def write_empty_study(trials_dir: Path, name: str = "empty") -> Path:
    """A study whose only trial was pruned (no completed trial)."""
    folder = Path(trials_dir) / name
    trial_dir = folder / "0000"
    spec = spec_of(4)
    spec.save(trial_dir)
    row = {"trial": 0, "state": "pruned", "accuracy": 0.5, "params": count(spec).params,
           "flops": count(spec).flops, "epochs": 1, "max_epochs": 2, "study": name}
    (trial_dir / "trial.json").write_text(json.dumps(row))
    (folder / "study.json").write_text(json.dumps({"name": name, **STUDY_SETTINGS}))
    return folder


def read_study(name: str, trials_dir: Path) -> pd.DataFrame:
    """The study's trials frame (through igcnas.search.load_study when it exists, else the local reader)."""
    from igcnas.search.results import open_study

    return open_study(name, trials_dir=trials_dir).frame

