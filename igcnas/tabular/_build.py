"""Building the tabular benchmark: score every planned architecture, train it at each fidelity, write the CSV.

Resumable and shareable: every (row, fidelity) training is a run folder of :mod:`igcnas.store._tabular`, locked
by the process training it (other processes take the next run) and resumed from its checkpoint after a crash;
the CSV is rewritten after every finished run, so it always holds every row trained so far at the low fidelity.

Example:
    >>> from igcnas.tabular._sample import plan_table
    >>> high_rows(plan_table(per_bin=4, seed=0, zoo=False), every=4)  # doctest: +SKIP
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from igcnas.errors import UserError
from igcnas.tabular._sample import SIZE_BINS, PlannedRow, frozen_plan
from igcnas.tabular._schema import FIDELITIES, PROXY_COLUMNS, Fidelity, columns, epoch_columns

__all__ = ["build_table", "gather_table", "high_rows", "table_state"]



def high_rows(plan: Sequence[PlannedRow], *, every: int = 4) -> list[PlannedRow]:
    """The rows also trained at the high fidelity: every ``every``-th sampled row of each bin (by its index)."""
    return [row for row in plan if row.source != "zoo" and int(row.name.rsplit("/", 1)[1]) % every == 0]


def gather_table(plan: Sequence[PlannedRow], root: str | Path,
                 fidelities: Mapping[str, Fidelity] = FIDELITIES) -> Any:
    """The table's DataFrame from the recorded runs: one row per planned architecture trained at the first
    fidelity and scored, in plan order, ``vote`` computed over those rows."""
    import json

    import pandas as pd

    from igcnas.proxies import vote
    from igcnas.store import read_proxy_scores, read_tabular_run

    names = tuple(fidelities)
    records: list[dict[str, Any]] = []
    for row in plan:
        scores = read_proxy_scores(root, row.spec.id)
        first = read_tabular_run(root, row.spec.id, names[0])
        if scores is None or first is None:
            continue
        record: dict[str, Any] = {"spec_id": row.spec.id, "name": row.name, "source": row.source,
                                  "design": row.design, "size_bin": row.size_bin,
                                  "arch": json.dumps(row.spec.to_dict(), separators=(",", ":"), sort_keys=True)}
        record.update({name: scores.get(name, float("nan")) for name in PROXY_COLUMNS if name != "vote"})
        for name in names:
            run = read_tabular_run(root, row.spec.id, name)
            cols = epoch_columns(name, fidelities)
            curve = list(run.val_accuracy) if run is not None else []
            record[f"{name}_fidelity"] = fidelities[name].describe() if run is not None else ""
            record.update({c: (curve[i] if i < len(curve) else float("nan")) for i, c in enumerate(cols)})
            record[f"{name}_val_acc"] = curve[-1] if curve else float("nan")
            record[f"{name}_seconds"] = run.seconds if run is not None else float("nan")
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    if records:
        frame["vote"] = vote(frame[["synflow", "jacob_cov", "snip"]].to_dict("records"))
    return frame.reindex(columns=list(columns(fidelities)))


def build_table(*, data_dir: str | None, dataset: str = "cifar10", table: str = "cifar10",
                trials_dir: str | Path = "trials", out: str | Path | None = None,
                plan: Sequence[PlannedRow] | None = None, fidelities: Mapping[str, Fidelity] = FIDELITIES,
                high_every: int = 4, device: str = "auto", num_threads: int = 1, progress: bool = True) -> Path:
    """Score and train every planned row that is not done yet, then write the table's CSV; returns its path.

    ``plan`` defaults to the table folder's frozen plan (:func:`~igcnas.tabular._sample.frozen_plan`); the first fidelity trains every row, the
    others the rows of :func:`high_rows`. ``out`` defaults to ``<table folder>/<table>.csv`` beside the runs (the
    packaged :data:`TABLE_FILE` is replaced only when ``out`` names it). Several processes may build one table at
    once (each run is locked by the process training it).
    """
    import torch

    from igcnas.data import load_data
    from igcnas.nn.network import build
    from igcnas.proxies import PROXY_BATCH, proxy_batch, score
    from igcnas.store import (
        RunLock,
        TabularRun,
        atomic_write,
        read_proxy_scores,
        read_tabular_run,
        tabular_folder,
        tabular_run_folder,
        write_proxy_scores,
        write_tabular_run,
    )
    from igcnas.train import TrainConfig, check_device, train

    check_device(device)  # before anything is scored, trained or written
    if isinstance(high_every, bool) or not isinstance(high_every, int) or high_every < 1:
        raise UserError(f"--high-every: {high_every!r} must be an integer >= 1")
    names = tuple(fidelities)
    if not names:
        raise UserError("fidelities: give at least one fidelity")
    root = tabular_folder(trials_dir, table)
    rows = list(plan) if plan is not None else frozen_plan(root)
    target = Path(out) if out is not None else root / f"{table}.csv"
    high = {row.spec.id for row in high_rows(rows, every=high_every)}
    runs = [(row, name) for name in names for row in rows
            if (name == names[0] or row.spec.id in high) and read_tabular_run(root, row.spec.id, name) is None]
    unscored = [row for row in rows if read_proxy_scores(root, row.spec.id) is None]
    _say(progress, f"tabular {table}: {len(rows)} architectures, {len(high)} also at the {names[-1]} fidelity; "
                   f"{len(runs)} trainings and {len(unscored)} scorings to go")
    loaded: dict[tuple[int, int], Any] = {}

    def data_of(f: Fidelity) -> Any:
        key = (f.train_subset, f.seed)
        if key not in loaded:
            loaded[key] = load_data(dataset, data_dir=data_dir, train_subset=f.train_subset, seed=f.seed)
        return loaded[key]

    if unscored:
        data = data_of(fidelities[names[0]])
        images, labels = proxy_batch(data, size=PROXY_BATCH, seed=0)
        threads = torch.get_num_threads()
        torch.set_num_threads(num_threads)  # as the trainings: --workers processes share the cores
        scored = 0
        try:
            for row in unscored:
                with RunLock(root / row.spec.id) as mine:  # another worker scoring this row: take the next
                    if not mine or read_proxy_scores(root, row.spec.id) is not None:
                        continue
                    write_proxy_scores(root, row.spec.id, score(row.spec, images, labels, seed=0))
                    scored += 1
                if scored % 10 == 0:
                    _say(progress, f"tabular {table}: scored {scored} architectures")
        finally:
            torch.set_num_threads(threads)
        _say(progress, f"tabular {table}: {scored} architectures scored by this process")

    def write_csv() -> None:
        frame = gather_table(rows, root, fidelities)
        atomic_write(target, lambda tmp: frame.to_csv(tmp, index=False))

    started = time.perf_counter()
    for index, (row, name) in enumerate(runs, 1):
        f = fidelities[name]
        folder = tabular_run_folder(root, row.spec.id, name)
        with RunLock(folder) as mine:
            if not mine or read_tabular_run(root, row.spec.id, name) is not None:
                continue
            resuming = (folder / "checkpoint.pt").is_file()
            _say(progress, f"[{index}/{len(runs)}] {row.name} ({row.params:,} params), {name} fidelity"
                           + (" (resuming)" if resuming else ""))
            config = TrainConfig(epochs=f.epochs, batch_size=f.batch_size, lr=f.lr, weight_decay=f.weight_decay,
                                 seed=f.seed, device=device, num_threads=num_threads)
            torch.manual_seed(f.seed)
            result = train(build(row.spec), data_of(f), config, checkpoint_dir=folder, arch=row.spec.to_dict(),
                           progress=progress, resume=True)
            if result.status != "completed":
                raise UserError(f"tabular {row.name} ({name}): {result.status} ({result.reason}); its folder "
                                f"{folder} keeps the metrics")
            write_tabular_run(root, TabularRun(spec_id=row.spec.id, fidelity=name,
                                               val_accuracy=[float(m.val_accuracy) for m in result.history],
                                               seconds=float(result.seconds), schedule=f.describe()))
            (folder / "checkpoint.pt").unlink(missing_ok=True)
            write_csv()
            elapsed = time.perf_counter() - started
            _say(progress, f"[{index}/{len(runs)}] val acc {result.val_accuracy:.4f}; {elapsed / 60:.1f} min so far")
    write_csv()
    return target


def table_state(*, trials_dir: str | Path = "trials", table: str = "cifar10", high_every: int = 4,
                fidelities: Mapping[str, Fidelity] = FIDELITIES) -> list[dict[str, Any]]:
    """Per size bin: rows planned, scored, and trained at each fidelity (planned/done); nothing is trained."""
    from igcnas.store import read_proxy_scores, read_tabular_run, tabular_folder

    root = tabular_folder(trials_dir, table)
    rows = frozen_plan(root)
    high = {row.spec.id for row in high_rows(rows, every=high_every)}
    names = tuple(fidelities)
    out = []
    for label in [b[0] for b in SIZE_BINS]:
        members = [row for row in rows if row.size_bin == label]
        state: dict[str, Any] = {"size_bin": label, "planned": len(members),
                                 "scored": sum(read_proxy_scores(root, r.spec.id) is not None for r in members)}
        for name in names:
            wanted = [r for r in members if name == names[0] or r.spec.id in high]
            done = sum(read_tabular_run(root, r.spec.id, name) is not None for r in wanted)
            state[name] = f"{done}/{len(wanted)}"
        out.append(state)
    return out


def _say(progress: bool, line: str) -> None:
    """One progress line on stderr."""
    if progress:
        print(line, file=sys.stderr, flush=True)
