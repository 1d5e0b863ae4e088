"""The retrained comparison: the top of a study's front and its baselines, trained again from scratch.

Every architecture gets the same longer schedule (``epochs`` on the full training split, the study's batch size,
learning rate and weight decay) once per seed, and is measured on the test split at the end. The searched trials
are chosen by validation accuracy (never test accuracy): the ``top`` most accurate fully trained trials within
the study's budget. Runs live in the study folder (:mod:`igcnas.store._retrained`); a rerun skips finished runs
and resumes an unfinished one from its checkpoint.

Example:
    >>> rows = retrain("cifar10-156k", top=1, seeds=2, epochs=15,
    ...                data_dir="../shared/datasets/cifar10")  # doctest: +SKIP
    >>> [(r["name"], r["role"], round(r["test_accuracy_mean"], 4)) for r in rows]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from igcnas.errors import UserError

if TYPE_CHECKING:
    from igcnas.search.results import StudyTrials

__all__ = ["retrain", "retrain_candidates", "Candidate"]


@dataclass(frozen=True)
class Candidate:
    """One architecture of the comparison."""

    name: str
    role: str  # "found" | "baseline"
    trial: int
    arch_path: str
    params: int
    flops: int
    val_accuracy: float


def retrain_candidates(study: str, *, top: int, baselines: str = "all", storage: str | None = None,
                       trials_dir: str | Path = "trials", artifacts: str | None = None) -> list[Candidate]:
    """The ``top`` searched trials by validation accuracy within the study's budget, then its trained baselines
    (``all``, ``none`` or a comma-separated list of their names)."""
    from igcnas.search.results import open_study

    opened = open_study(study, storage=storage, trials_dir=trials_dir, artifacts=artifacts, baselines=True)
    return _candidates(opened, top=top, baselines=baselines)


def _candidates(opened: StudyTrials, *, top: int, baselines: str) -> list[Candidate]:
    """:func:`retrain_candidates` of a study read with its baselines (``open_study(..., baselines=True)``)."""
    from igcnas.analysis import candidate_mask, filter_budget
    from igcnas.analysis.baselines import baseline_mask

    study, settings, frame = opened.name, opened.settings, opened.frame
    usable = frame[candidate_mask(frame) & frame["accuracy"].notna()]
    usable = filter_budget(usable, max_params=settings.get("max_params"), max_flops=settings.get("max_flops"))
    is_baseline = baseline_mask(usable)
    found = usable[~is_baseline & usable["reused_from"].isna()] if "reused_from" in usable else usable[~is_baseline]
    found = found.sort_values(["accuracy", "params"], ascending=[False, True], kind="stable")
    found = found.drop_duplicates("spec_id").head(top)
    out = [Candidate(f"trial {int(r.trial)}", "found", int(r.trial), str(r.arch_path), int(r.params), int(r.flops),
                     float(r.accuracy)) for r in found.itertuples()]
    if baselines != "none":  # trained baselines, within the budget or not (the comparison names the budget)
        rows = frame[baseline_mask(frame) & candidate_mask(frame)]
        if baselines != "all":
            wanted = [n.strip() for n in baselines.split(",") if n.strip()]
            missing = [n for n in wanted if n not in set(rows["baseline"].astype(str))]
            if missing:
                raise UserError(f"--baselines: {', '.join(missing)} is not a trained baseline of study {study}; "
                                f"trained: {', '.join(rows['baseline'].astype(str)) or 'none'}")
            rows = rows[rows["baseline"].astype(str).isin(wanted)]
        out += [Candidate(str(r.baseline), "baseline", int(r.trial), str(r.arch_path), int(r.params), int(r.flops),
                          float(r.accuracy)) for r in rows.itertuples()]
    if not out:
        raise UserError(f"--study {study}: no fully trained trial or baseline to retrain yet; run 'igcnas search' "
                        "first (or let it finish)")
    return out


def retrain(study: str, *, top: int = 1, seeds: int = 2, epochs: int = 15, baselines: str = "all",
            data_dir: str | None = None, storage: str | None = None, trials_dir: str | Path = "trials",
            device: str = "auto", num_threads: int | None = None, progress: bool = True,
            artifacts: str | None = None) -> list[dict[str, Any]]:
    """Retrain the comparison's architectures (``seeds`` seeds each, ``epochs`` epochs); returns its rows.

    ``artifacts``: the artifact store that holds the study's trial files where ``trials_dir`` lacks them (default:
    the one recorded with the study).

    The rows are those of :func:`igcnas.store.read_retrained` (all finished runs of the study, this call's and
    earlier ones): ``{name, role, trial, params, flops, epochs, seeds, test_accuracy_mean, test_accuracy_std}``.
    Several processes may retrain one study at once: each run is locked by the process training it, and the
    others skip it (``igcnas retrain --workers N`` starts N such processes).
    """
    import torch

    from igcnas.arch.spec import load_spec
    from igcnas.data import load_data
    from igcnas.nn.network import build
    from igcnas.search.results import open_study
    from igcnas.store import RetrainRun, RunLock, read_retrained, run_folder, write_run
    from igcnas.train import TrainConfig, train

    for name, value, low in (("--top", top, 1), ("--seeds", seeds, 1), ("--epochs", epochs, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UserError(f"{name}: {value!r} must be an integer >= {low}")
    opened = open_study(study, storage=storage, trials_dir=trials_dir, artifacts=artifacts, baselines=True)
    settings = opened.settings
    if not settings.get("dataset"):
        raise UserError(f"--study {study}: its study.json names no dataset; was it made by 'igcnas search'?")
    candidates = _candidates(opened, top=top, baselines=baselines)  # the study read once
    todo = [(c, s) for c in candidates for s in range(seeds)
            if not (run_folder(opened.folder, role=c.role, name=c.name, trial=c.trial, seed=s) / "run.json").is_file()]
    if not todo:  # every run finished: nothing to load
        return read_retrained(opened.folder)
    data = load_data(str(settings["dataset"]), data_dir=data_dir, train_subset=None, seed=int(settings.get("seed", 0)))
    schedule = (f"{epochs} epochs on the full training split ({len(data.train)} images), batch "
                f"{settings.get('batch_size')}, lr {settings.get('lr')}, weight decay {settings.get('weight_decay')}")
    config_of = {seed: TrainConfig(epochs=epochs, batch_size=int(settings.get("batch_size", 128)),
                                   lr=float(settings.get("lr", 0.1)),
                                   weight_decay=float(settings.get("weight_decay", 1e-4)), seed=seed, device=device,
                                   num_threads=num_threads or 1)
                 for seed in range(seeds)}
    _say(progress, f"retrain {study}: {len(candidates)} architectures x {seeds} seeds, {schedule}; "
                   f"{len(todo)} runs to go")
    started = time.perf_counter()
    for index, (candidate, seed) in enumerate(todo, 1):
        folder = run_folder(opened.folder, role=candidate.role, name=candidate.name, trial=candidate.trial, seed=seed)
        with RunLock(folder) as mine:
            if not mine or (folder / "run.json").is_file():  # another process trains it, or just finished it
                continue
            resuming = (folder / "checkpoint.pt").is_file()
            _say(progress, f"[{index}/{len(todo)}] {candidate.role} {candidate.name} ({candidate.params:,} params), seed "
                           f"{seed}" + (" (resuming)" if resuming else ""))
            spec = load_spec(candidate.arch_path)
            torch.manual_seed(seed)
            model = build(spec)
            result = train(model, data, config_of[seed], checkpoint_dir=folder, arch=spec.to_dict(), progress=progress,
                           evaluate_test=True, resume=True)
            if result.status != "completed" or result.test_accuracy is None:
                raise UserError(f"retrain {candidate.name} seed {seed}: {result.status} ({result.reason}); its folder "
                                f"{folder} keeps the metrics")
            write_run(opened.folder, RetrainRun(
                name=candidate.name, role=candidate.role, trial=candidate.trial, spec_id=spec.id,
                params=candidate.params, flops=candidate.flops, epochs=epochs, seed=seed,
                test_accuracy=float(result.test_accuracy), val_accuracy=float(result.val_accuracy),
                seconds=float(result.seconds), schedule=schedule))
            (folder / "checkpoint.pt").unlink(missing_ok=True)
            elapsed = time.perf_counter() - started
            _say(progress, f"[{index}/{len(todo)}] test acc {result.test_accuracy:.4f}; "
                           f"{elapsed / 60:.1f} min so far, about {elapsed / index * (len(todo) - index) / 60:.0f} min left")
    return read_retrained(opened.folder)


def _say(progress: bool, line: str) -> None:
    """One progress line on stderr."""
    import sys

    if progress:
        print(line, file=sys.stderr, flush=True)
