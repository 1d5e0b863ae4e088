"""The settings of one search (:class:`SearchConfig`), what defines a study, and storage URLs.

Example:
    >>> cfg = SearchConfig(trials=3, epochs=2, max_params=50_000)
    >>> cfg.study_name("igc_cifar"), cfg.objective_columns()
    ('igc_cifar-digits', [('accuracy', 'max'), ('params', 'min')])
    >>> redact_url("postgresql://me:secret@db/igcnas")
    'postgresql://me:***@db/igcnas'
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from igcnas.errors import UserError

__all__ = [
    "SearchConfig",
    "OBJECTIVES",
    "SAMPLERS",
    "PRUNERS",
    "BACKENDS",
    "study_settings",
    "study_file",
    "compare_settings",
    "fingerprint",
    "redact_url",
    "default_storage",
    "check_ray_only",
    "RAY_ONLY",
]

OBJECTIVES: dict[str, tuple[str, str]] = {
    "acc": ("accuracy", "max"),
    "accuracy": ("accuracy", "max"),
    "params": ("params", "min"),
    "flops": ("flops", "min"),
}
"""Objective name -> (trials-table column, direction)."""
SAMPLERS: tuple[str, ...] = ("auto", "random", "tpe", "nsga2")
PRUNERS: tuple[str, ...] = ("sha", "hyperband", "pareto", "none")
BACKENDS: tuple[str, ...] = ("optuna", "ray")
RAY_ONLY: tuple[str, ...] = ("address", "storage_path", "cpus_per_trial", "gpus_per_trial")
"""The fields (options) that only the Ray backend reads."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_SEED_LIMIT = 2**32


def check_ray_only(backend: str, given: dict[str, object]) -> None:
    """Raise a one-line UserError for a Ray-only option (``given[name]`` not None) without ``--backend ray``."""
    if backend == "ray":
        return
    for name in RAY_ONLY:
        if given.get(name) is not None:
            option = f"--{name.replace('_', '-')}"
            raise UserError(f"{option} is for --backend ray; add --backend ray (or drop {option})")


@dataclass(frozen=True)
class SearchConfig:
    """Every setting of one ``igcnas search`` (the CLI's options; see ``igcnas search --help``).

    ``trials`` counts *trained* trials (completed, pruned or failed) this run adds to the study; infeasible
    candidates (over budget, never trained) and duplicates (an architecture the study already trained) do not
    count. At most ``max_attempts`` candidates are sampled per run (default ``100 * trials + 100``: an over-budget
    candidate costs milliseconds, and under a tight budget few fit). Each trial's draws are seeded by ``seed`` and
    the trial's number: a fresh study is reproducible whatever ``workers``, and a resumed one does not replay its
    first samples. ``prescreen`` K >= 2 trains, for each trained trial, the best of K feasible sampled
    candidates by the proxy ``prescreen_proxy`` and records the others ``screened`` (:mod:`igcnas.search._prescreen`);
    ``"auto"`` becomes 8 on CIFAR-10, where the tabular benchmark measured that it helps, and 0 elsewhere.

    Example:
        >>> cfg = SearchConfig(trials=3, epochs=2, max_params=50_000)
        >>> cfg.study_name("igc_cifar"), cfg.objective_columns()
        ('igc_cifar-digits', [('accuracy', 'max'), ('params', 'min')])
    """

    space: str = "igc_cifar"
    dataset: str = "digits"
    data_dir: str | None = None
    train_subset: int | None = None
    trials: int = 20
    epochs: int = 6
    study: str | None = None
    storage: str | None = None
    artifacts: str | None = None
    max_params: int | None = 50_000
    max_flops: int | None = None
    fill_budget: bool = False
    baselines: str = "auto"
    objectives: tuple[str, ...] = ("acc", "params")
    sampler: str = "auto"
    pruner: str = "pareto"
    backend: str = "optuna"
    address: str | None = None
    storage_path: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    seed: int = 0
    trials_dir: str = "trials"
    batch_size: int = 64
    lr: float = 0.1
    weight_decay: float = 1e-4
    num_threads: int = 1
    workers: int | None = 1
    device: str = "auto"
    max_attempts: int | None = None
    prescreen: int | Literal["auto"] = "auto"
    prescreen_proxy: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("trials", "epochs", "batch_size", "num_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"--{name.replace('_', '-')}: {value!r} must be a positive integer")
        objectives = tuple(o.strip().lower() for o in self.objectives if o.strip())
        if not objectives:
            raise UserError("--objectives: give at least one of acc, params, flops (e.g. acc,params)")
        for o in objectives:
            if o not in OBJECTIVES:
                raise UserError(f"--objectives: {o!r} is not an objective; allowed: acc, params, flops")
        columns = [OBJECTIVES[o][0] for o in objectives]
        if len(set(columns)) != len(columns):
            raise UserError(f"--objectives: {','.join(objectives)} names an objective twice")
        if "accuracy" not in columns:
            raise UserError(f"--objectives: {','.join(objectives)} has no accuracy objective, so every candidate "
                            f"would be trained and the smallest would win; add acc (e.g. --objectives "
                            f"acc,{','.join(objectives)})")
        object.__setattr__(self, "objectives", objectives)
        if self.sampler not in SAMPLERS:
            raise UserError(f"--sampler: {self.sampler!r} is not allowed; allowed: {', '.join(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise UserError(f"--pruner: {self.pruner!r} is not allowed; allowed: {', '.join(PRUNERS)}")
        if self.backend not in BACKENDS:
            raise UserError(f"--backend: {self.backend!r} is not allowed; allowed: {', '.join(BACKENDS)}")
        if self.study is not None and not _NAME.match(self.study):
            raise UserError(f"--study: {self.study!r} must be letters, digits, '_', '-' or '.' (e.g. igc-digits)")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise UserError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0 (e.g. 1 and 0.5)")
        # a Ray-only field at its default counts as not given (the CLI also refuses one given equal to it)
        defaults = {f.name: f.default for f in fields(self)}
        check_ray_only(self.backend, {name: None if getattr(self, name) == defaults[name] else getattr(self, name)
                                      for name in RAY_ONLY})
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < _SEED_LIMIT:
            raise UserError(f"--seed: {self.seed!r} must be an integer from 0 to 2**32 - 1 = {_SEED_LIMIT - 1} "
                            "(e.g. --seed 0)")
        for name in ("max_params", "max_flops"):
            budget = getattr(self, name)
            if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                                       or not 1 <= budget < float("inf")):
                raise UserError(f"--{name.replace('_', '-')}: {budget!r} must be a count >= 1 or none (e.g. 50k)")
        # a cluster's workers train (--address): this machine need not have the device
        from igcnas.train import check_device

        check_device(self.device, here=not (self.backend == "ray" and self.address))
        if self.baselines not in ("auto", "none"):
            from igcnas.zoo import get_zoo

            names = [n.strip() for n in str(self.baselines).split(",") if n.strip()]
            if not names:
                raise UserError(f"--baselines: {self.baselines!r} names no network; give auto, none or zoo names")
            for n in names:
                try:
                    get_zoo(n)
                except UserError as error:
                    raise UserError(f"--baselines: {error}") from None
        if self.fill_budget and self.max_params is None and self.max_flops is None:
            raise UserError("--fill-budget needs a budget: give --max-params and/or --max-flops")
        if self.lr <= 0 or self.weight_decay < 0:
            raise UserError("--lr must be > 0 and --weight-decay >= 0")
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 1):
            raise UserError(f"--workers: {self.workers!r} must be a positive integer or auto (e.g. --workers 2)")
        if self.workers not in (None, 1) and self.backend != "optuna":
            raise UserError(f"--workers {self.workers}: is for the Optuna backend; with --backend {self.backend} "
                            "give --cpus-per-trial / --gpus-per-trial instead")
        if isinstance(self.prescreen, str) and self.prescreen.strip().lower() == "auto":
            from igcnas.search._prescreen import default_prescreen

            object.__setattr__(self, "prescreen", default_prescreen(self.dataset))
        if isinstance(self.prescreen, bool) or not isinstance(self.prescreen, int) or self.prescreen < 0:
            raise UserError(f"--prescreen: {self.prescreen!r} must be auto or an integer >= 0 (0 or 1: no "
                            "prescreening; K >= 2: train the best of K candidates by --prescreen-proxy)")
        if self.prescreen_proxy != "auto":
            from igcnas.search._prescreen import resolve_proxy

            resolve_proxy(self.prescreen_proxy)
        if self.max_attempts is not None and self.max_attempts < 1:
            raise UserError(f"--max-attempts: {self.max_attempts} must be a positive integer")
        if self.artifacts is not None:
            from igcnas.store._artifacts import describe_artifacts

            if not str(self.artifacts).strip():
                raise UserError("--artifacts: empty; give a shared folder, s3://BUCKET/PREFIX or gs://BUCKET/PREFIX")
            object.__setattr__(self, "artifacts", describe_artifacts(str(self.artifacts)))

    def study_name(self, space_name: str) -> str:
        """The explicit study name, or ``<space>-<dataset>`` (with the subset size when one is used)."""
        if self.study:
            return self.study
        dataset = re.sub(r"[^A-Za-z0-9_.\-]", "_", self.dataset.split(":")[-1].strip("/").split("/")[-1])
        subset = f"-n{self.train_subset}" if self.train_subset else ""
        return f"{space_name}-{dataset}{subset}"

    def objective_columns(self) -> list[tuple[str, str]]:
        """(column, direction) of each objective, in order."""
        return [OBJECTIVES[o] for o in self.objectives]

    def sampler_name(self) -> str:
        """The sampler ``auto`` resolves to: NSGA-II for several objectives, TPE for one."""
        if self.sampler != "auto":
            return self.sampler
        return "nsga2" if len(self.objectives) > 1 else "tpe"

    def attempts_cap(self) -> int:
        """Most candidates one run samples."""
        return self.max_attempts or 100 * self.trials + 100

    def replace(self, **changes: Any) -> SearchConfig:
        """Copy with some fields changed."""
        return replace(self, **changes)


def study_settings(config: SearchConfig, space_settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that define a study: a rerun must use the same ones (checked on resume)."""
    return {
        "space": space_settings["name"],
        "space_digest": space_settings["digest"],
        "dataset": config.dataset,
        "train_subset": config.train_subset,
        "epochs": config.epochs,
        "max_params": config.max_params,
        "max_flops": config.max_flops,
        "fill_budget": config.fill_budget,
        "objectives": list(config.objectives),
        "sampler": config.sampler_name(),
        "pruner": config.pruner,
        "backend": config.backend,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "weight_decay": config.weight_decay,
    }


def study_file(config: SearchConfig, name: str, where: str, settings: dict[str, Any],
               space_path: str | None) -> dict[str, Any]:
    """What ``study.json`` holds: the study's name, its storage (password hidden), settings, space file and
    artifact store."""
    return {"study": name, "storage": where, **settings, "space_path": space_path, "artifacts": config.artifacts,
            "baselines": config.baselines}


def compare_settings(name: str, where: str, stored: dict[str, Any], current: dict[str, Any]) -> None:
    """Raise UserError listing the settings that differ from the stored study's."""
    diff = [
        f"{key} {stored.get(key)!r} (stored) vs {current.get(key)!r} (now)"
        for key in current
        if stored.get(key) != current.get(key)
    ]
    if diff:
        raise UserError(
            f"study {name!r} in {where} was created with different settings: {'; '.join(diff)}; rerun with the "
            f"stored settings to resume it, or give a new --study name"
        )


def redact_url(url: str) -> str:
    """Hide the password of a database URL (``postgresql://user:***@host/db``)."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def default_storage(trials_dir: str | Path) -> str:
    """``sqlite:////abs/path/<trials_dir>/igcnas.db`` (absolute, so readers in other folders find it)."""
    folder = Path(trials_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'igcnas.db'}"


def fingerprint(settings: dict[str, Any]) -> str:
    """Short hash of a settings dict."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
