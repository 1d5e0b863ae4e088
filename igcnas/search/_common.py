"""What both search backends share: the settings, objectives, one trial's work (count, train, record), trial.json.

Every trial leaves ``<trials_dir>/<study>/<trial:04d>/`` with ``arch.json`` and ``trial.json`` (one row of the
analysis schema, :data:`igcnas.analysis.TRIAL_COLUMNS`, plus the sampled parameters); trained trials also have
``metrics.json`` (per epoch) and, when completed, ``weights.safetensors``. ``<trials_dir>/<study>/study.json``
holds the study's settings.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from igcnas.errors import UserError

__all__ = [
    "SearchConfig",
    "OBJECTIVES",
    "SAMPLERS",
    "PRUNERS",
    "BACKENDS",
    "TrialRecord",
    "TrialContext",
    "redact_url",
    "default_storage",
    "study_settings",
    "write_json",
    "format_seconds",
    "rung_epochs",
    "pareto_promote",
    "ETA",
]

ETA = 3
"""Reduction factor of every pruner (keep the top third at each rung)."""

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
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class SearchConfig:
    """Every setting of one ``igcnas search`` (the CLI's options; see ``igcnas search --help``).

    ``trials`` counts *trained* trials (completed, pruned or failed) this run adds to the study; infeasible
    candidates (over budget, never trained) and duplicates (an architecture the study already trained) do not
    count. At most ``max_attempts`` candidates are sampled per run (default ``20 * trials + 20``). The sampler is
    seeded with ``seed + <trials already in the study>``: a fresh study is reproducible, and a resumed one does not
    replay its first samples.

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
    max_params: int | None = 50_000
    max_flops: int | None = None
    fill_budget: bool = False
    objectives: tuple[str, ...] = ("acc", "params")
    sampler: str = "auto"
    pruner: str = "pareto"
    backend: str = "optuna"
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    seed: int = 0
    trials_dir: str = "trials"
    batch_size: int = 64
    lr: float = 0.1
    weight_decay: float = 1e-4
    num_threads: int = 1
    device: str = "auto"
    max_attempts: int | None = None
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
        if self.fill_budget and self.max_params is None and self.max_flops is None:
            raise UserError("--fill-budget needs a budget: give --max-params and/or --max-flops")
        if self.lr <= 0 or self.weight_decay < 0:
            raise UserError("--lr must be > 0 and --weight-decay >= 0")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise UserError(f"--max-attempts: {self.max_attempts} must be a positive integer")

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
        return self.max_attempts or 20 * self.trials + 20

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


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (NaN becomes null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_json_safe(payload), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _json_safe(value: Any) -> Any:
    """Replace NaN/inf by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def format_seconds(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``."""
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class TrialRecord:
    """One row of the trials table as written to ``trial.json`` (schema columns first, then extras)."""

    trial: int
    state: str
    accuracy: float | None = None
    test_accuracy: float | None = None
    params: int | None = None
    flops: int | None = None
    epochs: int | None = 0
    max_epochs: int = 0
    spec_id: str = ""
    design: str = ""
    widths: str = ""
    depths: str = ""
    arch_path: str = ""
    duration_s: float | None = None
    backend: str = ""
    study: str = ""
    reason: str = ""
    node: str = ""
    reused_from: int | None = None
    sampled: dict[str, Any] = field(default_factory=dict)

    def write(self, folder: Path) -> Path:
        """Write ``trial.json`` into the trial folder."""
        target = folder / "trial.json"
        write_json(target, asdict(self))
        return target


class TrialContext:
    """Per-process state of a search: the space, the data (loaded once) and how a trial is counted and trained."""

    def __init__(self, config: SearchConfig, space: Any, study: str, *, data: Any = None,
                 train_fn: Callable[..., Any] | None = None) -> None:
        self.config = config
        self.space = space
        self.study = study
        self.study_dir = Path(config.trials_dir) / study
        self._data = data
        self._train_fn = train_fn

    # -- data ----------------------------------------------------------------------------------------------
    @property
    def data(self) -> Any:
        """The dataset bundle (loaded on first use)."""
        if self._data is None:
            from igcnas.data import load_data

            self._data = load_data(self.config.dataset, data_dir=self.config.data_dir,
                                   train_subset=self.config.train_subset, seed=self.config.seed)
        return self._data

    def shape(self) -> tuple[tuple[int, int, int], int]:
        """Input shape and class count of the dataset."""
        return tuple(self.data.input_shape), int(self.data.num_classes)

    # -- candidates ----------------------------------------------------------------------------------------
    def make_spec(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any], str]:
        """Spec, train overrides and a fill note for sampled params (budget filling widens the base width)."""
        from igcnas.cost import count

        shape, classes = self.shape()
        if not self.config.fill_budget:
            spec, overrides = self.space.to_spec(params, input_shape=shape, num_classes=classes)
            return spec, overrides, ""
        quantum = self.space.width_quantum(params)
        best = None
        width = quantum
        while width <= 4096:
            try:
                spec, overrides = self.space.to_spec(params, input_shape=shape, num_classes=classes, base_width=width)
            except UserError:
                width += quantum
                continue
            cost = count(spec)
            if self.violations(cost.params, cost.flops)[1]:
                break
            best = (spec, overrides)
            width += quantum
        if best is None:
            spec, overrides = self.space.to_spec(params, input_shape=shape, num_classes=classes, base_width=quantum)
            return spec, overrides, f"budget filling: even base width {quantum} is over budget"
        return best[0], best[1], f"budget filling: base width {best[0].stem.width}"

    def violations(self, params: int, flops: int) -> tuple[dict[str, float], str]:
        """Constraint values (> 0 means over budget) and a reason naming by how much, '' when feasible."""
        values: dict[str, float] = {}
        reasons: list[str] = []
        from igcnas.units import format_count

        for name, value, budget in (("params", params, self.config.max_params), ("flops", flops, self.config.max_flops)):
            if budget is None:
                continue
            values[f"max_{name}"] = float(value - budget)
            if value > budget:
                reasons.append(
                    f"{name} {format_count(value)} > budget {format_count(budget)} "
                    f"(+{format_count(value - budget)}, {100 * (value - budget) / budget:.0f}% over)"
                )
        return values, "; ".join(reasons)

    def trial_dir(self, number: int) -> Path:
        """``<trials_dir>/<study>/<number:04d>``."""
        return self.study_dir / f"{number:04d}"

    def base_record(self, number: int, spec: Any, cost: Any, params: dict[str, Any]) -> TrialRecord:
        """A trial.json row filled with what is known before training."""
        folder = self.trial_dir(number)
        return TrialRecord(
            trial=number,
            state="running",
            params=int(cost.params),
            flops=int(cost.flops),
            epochs=0,
            max_epochs=self.config.epochs,
            spec_id=spec.id,
            design=spec.design,
            widths="-".join(str(s.width) for s in spec.stages),
            depths="-".join(str(s.depth) for s in spec.stages),
            arch_path=str(folder / "arch.json"),
            backend=self.config.backend,
            study=self.study,
            sampled=dict(params),
        )

    def train_config(self, overrides: dict[str, Any]) -> Any:
        """The TrainConfig of a trial (study-wide settings, then the space's sampled hyper-parameters)."""
        from igcnas.train import TrainConfig

        return TrainConfig(
            epochs=self.config.epochs,
            batch_size=int(overrides.get("batch_size", self.config.batch_size)),
            lr=float(overrides.get("lr", self.config.lr)),
            weight_decay=float(overrides.get("weight_decay", self.config.weight_decay)),
            seed=self.config.seed,
            device=self.config.device,
            num_threads=self.config.num_threads,
        )

    def train(self, number: int, spec: Any, overrides: dict[str, Any], record: TrialRecord,
              on_epoch: Callable[[Any], bool | None] | None) -> TrialRecord:
        """Build and train one architecture, keeping ``trial.json`` current; returns the final record.

        A raised exception or a diverged run gives state ``failed`` with the reason; ``on_epoch`` returning
        True stops the run (state ``pruned``).
        """
        import torch

        from igcnas.nn.network import build
        from igcnas.train import train as default_train

        train_fn = self._train_fn or default_train
        folder = self.trial_dir(number)
        started = time.perf_counter()
        record.write(folder)

        def epoch_hook(metrics: Any) -> bool | None:
            record.epochs = int(metrics.epoch)
            record.accuracy = float(metrics.val_accuracy)
            record.duration_s = time.perf_counter() - started
            record.write(folder)
            return on_epoch(metrics) if on_epoch is not None else None

        try:
            torch.manual_seed(self.config.seed + number)
            model = build(spec)
            result = train_fn(model, self.data, self.train_config(overrides), on_epoch=epoch_hook,
                              checkpoint_dir=folder, arch=spec.to_dict(), progress=False)
        except Exception as error:  # noqa: BLE001 - one trial's failure must not stop the study
            record.state = "failed"
            record.reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:500]
            record.duration_s = time.perf_counter() - started
            record.write(folder)
            return record
        finally:
            (folder / "checkpoint.pt").unlink(missing_ok=True)
        record.duration_s = time.perf_counter() - started
        record.epochs = int(result.epochs_trained)
        record.accuracy = float(result.val_accuracy) if result.epochs_trained else None
        if result.status == "completed":
            record.state = "complete"
        elif result.status == "pruned":
            record.state = "pruned"
            record.reason = f"pruned after epoch {result.epochs_trained}/{self.config.epochs}"
        else:
            record.state = "failed"
            record.reason = f"diverged: {result.reason}"
        record.write(folder)
        return record


class Progress:
    """One line on stderr per trial event: states so far, best value per objective, elapsed time."""

    def __init__(self, config: SearchConfig, study: str) -> None:
        self.config = config
        self.study = study
        self.started = time.perf_counter()
        self.enabled = config.progress

    def line(self, text: str) -> None:
        """Print one progress line."""
        if self.enabled:
            print(f"[{format_seconds(time.perf_counter() - self.started):>7}] {text}", file=sys.stderr, flush=True)

    def trial(self, record: TrialRecord, counts: dict[str, int], best: dict[str, float]) -> None:
        """Report a finished trial with the study-wide tallies."""
        from igcnas.units import format_count

        acc = f"acc {record.accuracy:.3f}" if record.accuracy is not None else "acc -"
        what = f"#{record.trial:04d} {record.state:<10} {acc}  params {format_count(record.params)}  " \
               f"flops {format_count(record.flops)}  {record.epochs or 0}/{record.max_epochs} ep"
        if record.reason and record.state != "complete":
            what += f"  ({record.reason})"
        elif record.reused_from is not None:
            what += f"  (duplicate of #{record.reused_from:04d})"
        tally = " ".join(f"{k} {counts.get(k, 0)}" for k in ("complete", "running", "pruned", "infeasible", "failed"))
        bests = ", ".join(
            f"{col} {format_count(v) if col != 'accuracy' else f'{v:.3f}'}" for col, v in best.items()
        ) or "-"
        self.line(f"{what} | {tally} | best {bests}")


def tally(records: list[dict[str, Any]], objectives: list[tuple[str, str]], max_epochs: int) -> tuple[dict[str, int], dict[str, float]]:
    """State counts and the best full-fidelity value per objective over trial rows."""
    counts: dict[str, int] = {}
    best: dict[str, float] = {}
    for row in records:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
        if row["state"] != "complete" or (row.get("epochs") or 0) < max_epochs:
            continue
        for column, direction in objectives:
            value = row.get(column)
            if value is None:
                continue
            if column not in best or (value > best[column] if direction == "max" else value < best[column]):
                best[column] = float(value)
    return counts, best


def read_json_file(path: Path, what: str) -> Any:
    """Parse a JSON file; a one-line UserError naming the file when it cannot be read or is not JSON (UTF-8)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:  # JSONDecodeError, or bytes that are not UTF-8
        raise UserError(
            f"{path}: {what} is not valid JSON ({error}); repair or delete it (the search rewrites it)"
        ) from None
    except OSError as error:
        raise UserError(f"{path}: cannot read {what} ({error.strerror})") from None


def iter_trial_files(study_dir: Path, *, strict: bool = False) -> Iterator[tuple[Path, dict[str, Any]]]:
    """``(path, row)`` for every ``<study_dir>/*/trial.json`` (one trials-table row each), in path order.

    Lenient by default (the search itself reads while other workers write): an unreadable file or one that
    is not a JSON object is skipped. ``strict=True`` raises a UserError naming the file instead.
    """
    for path in sorted(study_dir.glob("*/trial.json")):
        try:
            row = read_json_file(path, "trial.json")
            if not isinstance(row, dict):
                raise UserError(f"{path}: expected a JSON object (one trials-table row), got {type(row).__name__}")
        except UserError:
            if strict:
                raise
            continue
        yield path, row


def read_records(study_dir: Path) -> list[dict[str, Any]]:
    """Every readable ``trial.json`` row under a study folder (:func:`iter_trial_files`), by trial number."""
    return sorted((row for _, row in iter_trial_files(study_dir)), key=lambda r: r.get("trial", 0))


def fingerprint(settings: dict[str, Any]) -> str:
    """Short hash of a settings dict."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def rung_epochs(max_epochs: int, *, eta: int = ETA) -> tuple[int, ...]:
    """Rung milestones 1, eta, eta^2, ... strictly below ``max_epochs`` (the last epoch is never a rung)."""
    out, rung = [], 1
    while rung < max_epochs:
        out.append(rung)
        rung *= eta
    return tuple(out)


def pareto_promote(pool: list[tuple[Any, tuple[float, ...]]], me: tuple[Any, tuple[float, ...]], *,
                   eta: int = ETA) -> bool:
    """Pareto-aware successive halving: keep ``me`` when it is in the top 1/eta of its rung.

    Entries are ``(id, values)`` with every value to be *minimised* (pass ``-accuracy``). They are ranked by how
    many other entries dominate them, so a small, slightly less accurate network survives next to a big accurate
    one (ranking on accuracy alone collapses the front onto the largest models). Ties are kept; the first eta-1
    arrivals at a rung keep only the best, as Optuna's successive halving does.
    """
    entries = [e for e in pool if e[0] != me[0]] + [me]

    def dominated(point: tuple[Any, tuple[float, ...]]) -> int:
        return sum(
            other[0] != point[0]
            and all(a <= b for a, b in zip(other[1], point[1], strict=True))
            and any(a < b for a, b in zip(other[1], point[1], strict=True))
            for other in entries
        )

    keep = max(len(entries) // eta, 1)
    ranks = sorted(dominated(e) for e in entries)
    return dominated(me) <= ranks[keep - 1]
