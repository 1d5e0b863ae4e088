"""The Ray Tune backend: Tuner + OptunaSearch (define-by-run on the search space) + ASHA, local or on a cluster.

Known traps, and what this module does about them:

* OptunaSearch uses a NopPruner and sends nothing intermediate to Optuna for several metrics, so early stopping
  comes from Tune's ASHA scheduler on one per-epoch key (``val_acc``, time attribute ``epoch``).
* When ASHA stops a trial, OptunaSearch would tell Optuna COMPLETE with the half-trained metrics.
  :class:`FidelityAwareOptunaSearch` tells such trials PRUNED (and failed ones FAIL), and their ``trial.json``
  says ``pruned`` with the epochs reached, so they never enter the Pareto front.
* Optuna's constraints are soft and OptunaSearch copies no metrics to Optuna: the trainable decides feasibility
  from the sampled parameters with the closed-form count *before* training and reports the constraint values,
  which the searcher stores with ``set_constraint``. Tune does not tell the searcher about the trials it stops once
  the search reached ``--trials``, even one already decided (an infeasible candidate takes a fraction of a second):
  the end of the run tells every trial Optuna still has RUNNING as its ``trial.json`` says, constraints included.
* The define-by-run function only samples (no counting inside it); the Optuna study lives in the same RDB storage
  as the Optuna backend's (``sqlite:///trials/igcnas.db``), so trial numbers and the sampler's history carry over
  between runs, and an interrupted run is resumed with ``Tuner.restore``.

Results land in ``trials/<study>/<trial>/trial.json`` like the Optuna backend's, with the Ray node id.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from igcnas.errors import UserError
from igcnas.search._common import (
    ETA,
    Progress,
    SearchConfig,
    TrialContext,
    TrialRecord,
    compare_settings,
    default_storage,
    fingerprint,
    pareto_promote,
    read_records,
    redact_url,
    rung_epochs,
    study_settings,
    tally,
    write_json,
)

__all__ = ["run_ray", "FidelityAwareOptunaSearch"]

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")

from ray.tune import Callback, Stopper  # noqa: E402
from ray.tune.schedulers import FIFOScheduler, TrialScheduler  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

_METRIC = "val_acc"
_DONE_MARKER = "igcnas-run-finished"


class FidelityAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells ASHA-stopped trials PRUNED, failed ones FAIL and stores budget constraints.

    With ``ctx``, a trial whose reports never reached the searcher (its worker died after deciding it) is told as
    its ``trial.json`` says.
    """

    def __init__(self, *args: Any, max_fidelity: int, ctx: TrialContext | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_fidelity = max_fidelity
        self._ctx = ctx

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        study: Any = self._ot_study
        if study._storage.get_trial(ot_trial._trial_id).state.is_finished():
            self._completed_trials.add(trial_id)  # told before the driver died: a restored run replays its end
            return
        result = result or {}
        ctx: TrialContext | None = getattr(self, "_ctx", None)  # a searcher pickled by an older igcnas has none
        if "state" not in result and ctx is not None:  # no report reached Tune: trust what the trial wrote
            record = _read_record(ctx, int(ot_trial.number))
            if record is not None and record.state in _SETTLED:
                result, error = _outcome(ctx, record), False
        _tell_outcome(study, ot_trial, result, metrics=list(self._metric or []), max_fidelity=self._max_fidelity,
                      error=error, label=f"trial {trial_id}")
        self._completed_trials.add(trial_id)


_SETTLED = ("complete", "pruned", "failed", "infeasible")
"""trial.json states that say how a trial ended ('running' ones are fixed up first)."""


def _metrics(config: SearchConfig) -> list[str]:
    """The result keys of the objectives, in order (what OptunaSearch's ``metric`` lists)."""
    return [_METRIC if col == "accuracy" else col for col, _ in config.objective_columns()]


def _outcome(ctx: TrialContext, record: TrialRecord) -> dict[str, Any]:
    """The trainable's last report rebuilt from its ``trial.json`` (written before each report), constraint values
    included: they follow from the counted cost alone."""
    acc = float(record.accuracy or 0.0)
    out: dict[str, Any] = {"state": record.state, "epoch": int(record.epochs or 0), _METRIC: acc, "accuracy": acc}
    if record.spec_id:
        out["spec_id"] = record.spec_id
    if record.params is not None and record.flops is not None:
        constraints, _ = ctx.violations(int(record.params), int(record.flops))
        out.update({"params": float(record.params), "flops": float(record.flops),
                    **{f"constraint_{k}": v for k, v in constraints.items()}})
    return out


def _tell_outcome(study: Any, ot_trial: Any, result: dict[str, Any], *, metrics: list[str], max_fidelity: int,
                  error: bool = False, label: str = "") -> None:
    """Store a running Optuna trial's constraints and attrs from a trainable result, then tell it: FAIL when it
    failed, PRUNED below full fidelity, else its objective values (infeasible ones too: their positive
    constraints keep them off the feasible front)."""
    import optuna
    from optuna.trial import TrialState

    with warnings.catch_warnings():  # a restored trial may be told twice: its constraints are already set
        warnings.simplefilter("ignore", UserWarning)
        for key, value in result.items():
            if key.startswith("constraint_"):
                ot_trial.set_constraint(key[len("constraint_"):], float(value))
    state = result.get("state")
    epoch = result.get("epoch")
    for key in ("spec_id", "params", "flops", "state"):
        if key in result:
            ot_trial.set_user_attr(key, result[key])
    try:
        if error or state == "failed":
            study.tell(ot_trial, state=TrialState.FAIL)
        elif state != "infeasible" and (state != "complete" or epoch is None or epoch < max_fidelity):
            ot_trial.set_user_attr("epochs", epoch)
            study.tell(ot_trial, state=TrialState.PRUNED)
        else:
            values = [float(result[m]) for m in metrics]
            study.tell(ot_trial, values)
    except (ValueError, KeyError, optuna.exceptions.OptunaError) as exc:  # e.g. a NaN value
        warnings.warn(f"{label or 'a trial'}: could not record it in Optuna ({exc})", stacklevel=1)


class ParetoASHA(FIFOScheduler):
    """Asynchronous successive halving that ranks a rung's trials by Pareto dominance on the objectives."""

    def __init__(self, objectives: list[tuple[str, str]], max_epochs: int) -> None:
        super().__init__()
        self.objectives = objectives
        self.rungs = rung_epochs(max_epochs)
        self.entries: dict[int, dict[str, tuple[float, ...]]] = {r: {} for r in self.rungs}

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        epoch = int(result.get("epoch", 0))
        if epoch not in self.entries or result.get("state") != "running":
            return str(TrialScheduler.CONTINUE)
        vector = tuple(-float(result[_METRIC]) if col == "accuracy" else float(result[col])
                       for col, _ in self.objectives)
        pool = [(tid, values) for tid, values in self.entries[epoch].items() if tid != trial.trial_id]
        self.entries[epoch][trial.trial_id] = vector
        keep = pareto_promote(pool, (trial.trial_id, vector))
        return str(TrialScheduler.CONTINUE if keep else TrialScheduler.STOP)


class _Define:
    """The define-by-run function given to OptunaSearch (a picklable object: the searcher is checkpointed)."""

    def __init__(self, space: Any, fill_budget: bool) -> None:
        self.space = space
        self.fill_budget = fill_budget

    def __call__(self, trial: Any) -> dict[str, Any]:
        self.space.define(trial, fill_budget=self.fill_budget)
        return {"trial_number": int(trial.ot_trial.number)}


_SPLITS = ("train", "val", "test")


def _pack(bundle: Any) -> tuple[Any, dict[str, Any]]:
    """Split a DataBundle into a tensor-free shell and numpy arrays (Ray shares numpy zero-copy between workers;
    torch tensors would be copied into every worker)."""
    from igcnas.data import ImageTensors

    arrays: dict[str, Any] = {}
    shells: dict[str, Any] = {}
    for name in _SPLITS:
        split = getattr(bundle, name)
        if split is None:
            continue
        arrays[f"{name}.images"] = split.images.cpu().numpy()
        arrays[f"{name}.labels"] = split.labels.cpu().numpy()
        shells[name] = ImageTensors(split.images[:0], split.labels[:0])
    return replace(bundle, **shells), arrays


def _unpack(shell: Any, arrays: dict[str, Any]) -> Any:
    """Inverse of :func:`_pack` (the tensors view the shared read-only arrays; training only reads them)."""
    import torch

    from igcnas.data import ImageTensors

    splits = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "the given NumPy array is not writable"
        for name in _SPLITS:
            if f"{name}.images" in arrays:
                splits[name] = ImageTensors(torch.from_numpy(arrays[f"{name}.images"]),
                                            torch.from_numpy(arrays[f"{name}.labels"]))
    return replace(shell, **splits)


def _trainable(tune_config: dict[str, Any], payload: dict[str, Any], arrays: dict[str, Any]) -> None:
    """One Ray trial: count, decide feasibility, reuse a duplicate or train with per-epoch reports."""
    import ray
    from ray import tune

    from igcnas.cost import count

    config: SearchConfig = payload["config"]
    space = payload["space"]
    data = _unpack(payload["data"], arrays)
    ctx = TrialContext(config, space, payload["study"], data=data, train_fn=payload["train_fn"])
    number = int(tune_config["trial_number"])
    params = {k: v for k, v in tune_config.items() if k != "trial_number"}
    node = ray.get_runtime_context().get_node_id()
    folder = ctx.trial_dir(number)
    t0 = time.perf_counter()
    base = {"trial_number": number, "node": node, "epoch": 0, _METRIC: 0.0, "accuracy": 0.0}
    try:
        spec, overrides, note = ctx.make_spec(params)
    except UserError as error:
        record = TrialRecord(trial=number, state="failed", max_epochs=config.epochs, backend="ray",
                             study=ctx.study, reason=f"invalid architecture: {error}", node=node, sampled=params)
        record.write(folder)
        tune.report({**base, "state": "failed"})
        return
    cost = count(spec)
    record = ctx.base_record(number, spec, cost, params)
    record.node = node
    spec.save(folder)
    constraints, over = ctx.violations(cost.params, cost.flops)
    base.update({"params": float(cost.params), "flops": float(cost.flops), "spec_id": spec.id,
                 **{f"constraint_{k}": v for k, v in constraints.items()}})
    if over:
        record.state = "infeasible"
        record.reason = over + (f"; {note}" if note else "")
        record.duration_s = time.perf_counter() - t0
        record.write(folder)
        tune.report({**base, "state": "infeasible"})
        return
    key = f"{spec.id}:{fingerprint(overrides)}"
    for row in read_records(ctx.study_dir):
        sampled = row.get("sampled") or {}
        hyper = {k: sampled[k] for k in ("lr", "weight_decay", "batch_size") if k in sampled}
        same = row.get("spec_id") == spec.id and fingerprint(hyper) == fingerprint(overrides)
        if same and row.get("state") == "complete" and row.get("reused_from") is None and row["trial"] != number:
            record.state = "complete"
            record.reused_from = int(row["trial"])
            record.accuracy = row.get("accuracy")
            record.epochs = row.get("epochs")
            record.reason = f"duplicate of trial {row['trial']} (same spec id {spec.id}): result reused"
            record.duration_s = time.perf_counter() - t0
            record.write(folder)
            acc = float(record.accuracy or 0.0)
            tune.report({**base, _METRIC: acc, "accuracy": acc, "epoch": int(record.epochs or 0),
                         "state": "complete", "key": key})
            return
    if note:
        record.reason = note

    def on_epoch(metrics: Any) -> bool:
        if int(metrics.epoch) < config.epochs:  # the last epoch is reported after training (weights saved)
            acc = float(metrics.val_accuracy)
            tune.report({**base, _METRIC: acc, "accuracy": acc, "epoch": int(metrics.epoch), "state": "running"})
        return False

    record = ctx.train(number, spec, overrides, record, on_epoch)
    acc = float(record.accuracy or 0.0)
    tune.report({**base, _METRIC: acc, "accuracy": acc, "epoch": int(record.epochs or 0), "state": record.state,
                 "key": key})


def run_ray(
    config: SearchConfig,
    space: Any,
    *,
    data: Any = None,
    train_fn: Callable[..., Any] | None = None,
) -> str:
    """Run (or resume) a search on Ray Tune; returns the study name."""
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from igcnas.search.optuna_backend import _directions, _open_study, _sampler, open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    name = config.study_name(space.name)
    url = config.storage or default_storage(config.trials_dir)
    where = redact_url(url)
    settings = study_settings(config, space.settings())
    ctx = TrialContext(config, space, name, data=data, train_fn=train_fn)
    shape, classes = ctx.shape()
    bundle = ctx.data
    from igcnas.search.optuna_backend import _check_space_fits

    _check_space_fits(ctx, space, shape, classes)
    storage = open_storage(url, heartbeat=False)
    study = _open_study(config, storage, name, settings, where)
    stored = study.user_attrs.get("igcnas_settings", {})
    compare_settings(name, where, stored, settings)
    ctx.study_dir.mkdir(parents=True, exist_ok=True)
    write_json(ctx.study_dir / "study.json", {"study": name, "storage": where, **settings, "space_path": space.path})
    progress = Progress(config, name)
    objectives = config.objective_columns()

    started_ray = False
    if not ray.is_initialized():
        try:
            if config.address:
                ray.init(address=config.address, log_to_driver=False, logging_level=logging.ERROR)
            else:
                ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                         log_to_driver=False, logging_level=logging.ERROR)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise UserError(f"--address: cannot connect to Ray at {config.address or 'local'} "
                            f"({str(error).splitlines()[0][:200]})") from None
        started_ray = True
    try:
        resources = ray.cluster_resources()
        if config.gpus_per_trial > 0 and resources.get("GPU", 0) < config.gpus_per_trial:
            raise UserError(
                f"--gpus-per-trial {config.gpus_per_trial}: the Ray cluster has {resources.get('GPU', 0):g} GPUs; "
                "use --gpus-per-trial 0 or a cluster with GPUs"
            )
        if resources.get("CPU", 0) < config.cpus_per_trial:
            raise UserError(f"--cpus-per-trial {config.cpus_per_trial:g}: the Ray cluster has only "
                            f"{resources.get('CPU', 0):g} CPUs")
        previous = len(study.get_trials(deepcopy=False))
        progress.line(
            f"study {name} (Ray, {len([n for n in ray.nodes() if n.get('Alive')])} node(s), "
            f"{resources.get('CPU', 0):g} CPUs) in {where}: {previous} earlier trials; space {space.name}; "
            f"{config.dataset} {shape}; budget params {config.max_params or '-'} flops {config.max_flops or '-'}; "
            f"{config.trials} trained trials x {config.epochs} epochs"
        )

        searcher = FidelityAwareOptunaSearch(
            _Define(space, config.fill_budget),
            metric=_metrics(config),
            mode=[d for _, d in objectives],
            sampler=_sampler(config, config.seed + previous),
            study_name=name,
            storage=storage,
            max_fidelity=config.epochs,
            ctx=TrialContext(config, space, name),
        )
        assert _directions(config)
        if config.pruner == "none":
            scheduler: Any = FIFOScheduler()
        elif config.pruner == "pareto":
            scheduler = ParetoASHA(objectives, config.epochs)
        else:
            scheduler = ASHAScheduler(time_attr="epoch", metric=_METRIC, mode="max", max_t=config.epochs,
                                      grace_period=1, reduction_factor=ETA)
        # Ray workers run in their own folders: give them an absolute trials folder (shared storage on clusters)
        worker_config = config.replace(trials_dir=str(Path(config.trials_dir).resolve()))
        shell, arrays = _pack(bundle)
        payload = {"config": worker_config, "space": space, "study": name, "data": shell, "train_fn": train_fn}
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, payload=payload, arrays=arrays),
            {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial},
        )
        monitor = _Monitor(config, TrialContext(config, space, name), progress, objectives)
        _ACTIVE_MONITORS.append(monitor)
        runs_dir = (ctx.study_dir / "ray").resolve()
        runs = sorted(p for p in runs_dir.glob("run-*") if p.is_dir()) if runs_dir.is_dir() else []
        tuner = None
        if runs and not (runs[-1] / _DONE_MARKER).exists() and tune.Tuner.can_restore(str(runs[-1])):
            progress.line(f"resuming the interrupted Ray run {runs[-1].name}")
            tuner = tune.Tuner.restore(str(runs[-1]), trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=False)
            run_dir = runs[-1]
        if tuner is None:
            run_dir = runs_dir / f"run-{len(runs):03d}"
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                            num_samples=config.attempts_cap(), reuse_actors=True),
                run_config=tune.RunConfig(name=run_dir.name, storage_path=str(runs_dir), verbose=0,
                                          stop=monitor, callbacks=[monitor]),
            )
        restored: set[Any] = set()
        if run_dir in runs:  # the trials the resumed experiment will carry on
            results: Any = tuner.get_results()
            restored = {r.config.get("trial_number") for r in results if r.config}
        _retry_orphans(ctx, study, restored, before=previous)
        grid = tuner.fit()
        _finalise(grid, ctx, monitor, study)
        (run_dir / _DONE_MARKER).write_text("finished\n")
    finally:
        _ACTIVE_MONITORS.clear()
        if started_ray:
            ray.shutdown()
    if monitor.trained < config.trials:
        smallest, _ = space.smallest_spec(input_shape=shape, num_classes=classes)
        progress.line(f"warning: only {monitor.trained} of {config.trials} trials trained in "
                      f"{config.attempts_cap()} candidates (smallest architecture of the space: "
                      f"{smallest.design} widths {'-'.join(str(s.width) for s in smallest.stages)})")
        if monitor.trained == 0:
            raise UserError(f"no candidate of space {space.name} could be trained within the budget in "
                            f"{config.attempts_cap()} attempts; raise --max-params/--max-flops")
    return name


_ACTIVE_MONITORS: list[_Monitor] = []


def _active_monitor() -> _Monitor:
    """The monitor of this process's run: what the monitor pickled in a restored experiment's tuner.pkl becomes."""
    if not _ACTIVE_MONITORS:
        raise RuntimeError("no igcnas search is running in this process to restore its Ray experiment into")
    return _ACTIVE_MONITORS[-1]


class _Monitor(Callback, Stopper):
    """Progress lines per finished trial, and stops the experiment once ``--trials`` trials were trained.

    ``Tuner.restore`` brings back the run config pickled by the killed run, callbacks and stopper included; a
    monitor therefore pickles as a reference to the current run's monitor, so a resumed run counts its own trials.
    """

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_active_monitor, ())

    def __init__(self, config: SearchConfig, ctx: TrialContext, progress: Progress,
                 objectives: list[tuple[str, str]]) -> None:
        self.config = config
        self.ctx = ctx
        self.progress = progress
        self.objectives = objectives
        self.trained = 0
        self.running = 0
        self.seen: set[str] = set()
        self.reached = False

    # Stopper
    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.reached

    # Callback
    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.running = sum(1 for t in trials if t.status == "RUNNING")

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._finished(trial, trials, error=None)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._finished(trial, trials, error=getattr(trial, "error_file", None) or "error")

    def _finished(self, trial: Any, trials: list[Any], *, error: Any) -> None:
        if trial.trial_id in self.seen:
            return
        self.seen.add(trial.trial_id)
        number = trial.config.get("trial_number")
        if number is None:
            return
        result = trial.last_result or {}
        record = _fix_record(self.ctx, int(number), result, error=error)
        if record is None:
            return
        if record.state in ("complete", "pruned", "failed") and record.reused_from is None:
            self.trained += 1
        if self.trained >= self.config.trials:
            self.reached = True
        counts, best = tally(read_records(self.ctx.study_dir), self.objectives, self.config.epochs)
        counts["running"] = max(0, sum(1 for t in trials if t.status == "RUNNING") - 1)
        self.progress.trial(record, counts, best)


def _fix_record(ctx: TrialContext, number: int, result: dict[str, Any], *, error: Any) -> TrialRecord | None:
    """Turn a trial.json left 'running' (ASHA stop, search end, crash) into pruned/failed; return the record."""
    path = ctx.trial_dir(number) / "trial.json"
    if not path.is_file():
        record = TrialRecord(trial=number, state="failed", max_epochs=ctx.config.epochs, backend="ray",
                             study=ctx.study, reason=f"the trial crashed before writing its record ({error})",
                             node=str(result.get("node", "")))
        record.write(ctx.trial_dir(number))
        return record
    data = json.loads(path.read_text())
    known = {k: data[k] for k in TrialRecord.__dataclass_fields__ if k in data}
    record = TrialRecord(**known)
    if record.state == "running":
        if error:
            record.state = "failed"
            record.reason = f"error: see {error}"
        else:
            record.state = "pruned"
            by = "Pareto ASHA" if ctx.config.pruner == "pareto" else "ASHA"
            record.reason = f"stopped by {by} after epoch {record.epochs}/{record.max_epochs}"
        record.write(ctx.trial_dir(number))
    return record


def _read_record(ctx: TrialContext, number: int) -> TrialRecord | None:
    """The trial.json of one trial as a record, or None when the trial left no folder."""
    path = ctx.trial_dir(number) / "trial.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return TrialRecord(**{k: data[k] for k in TrialRecord.__dataclass_fields__ if k in data})


def _retry_orphans(ctx: TrialContext, study: Any, restored: set[Any], *, before: int) -> None:
    """Trials a killed run left running that the resumed experiment does not contain are failed, and their
    configuration is queued once (``enqueue_trial``): the searcher's next ``ask`` trains it again."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.number >= before or trial.number in restored:
            continue
        record = _read_record(ctx, trial.number)
        if record is not None:
            record.state = "failed"
            record.reason = ("the search process running it was killed before Ray's last experiment snapshot "
                             "included it; its configuration is retried once as a new trial")
            record.write(ctx.trial_dir(trial.number))
        study.tell(trial.number, state=TrialState.FAIL)
        if "retry_of" not in trial.user_attrs and trial.params:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def _finalise(grid: Any, ctx: TrialContext, monitor: _Monitor, study: Any) -> None:
    """After fit: no trial may stay 'running', in trial.json or in the Optuna study.

    Tune stops the trials still out once the search reached --trials (``stop_all``) without telling the searcher,
    even one whose worker had already decided it (an infeasible candidate takes a fraction of a second) and
    written its trial.json: each Optuna trial still RUNNING is told here as its trial.json says, with its
    constraints (never started: FAIL). Trials of an earlier, killed run outside the restored experiment were
    already failed and retried by :func:`_retry_orphans`."""
    import optuna
    from optuna.trial import TrialState

    for result in grid:
        number = (result.config or {}).get("trial_number")
        if number is None:
            continue
        error = result.error
        path = Path(ctx.trial_dir(int(number))) / "trial.json"
        if path.is_file() and '"state": "running"' in path.read_text():
            record = _fix_record(ctx, int(number), result.metrics or {}, error=error)
            if record is not None and record.state == "pruned" and monitor.reached:
                record.reason = f"stopped after epoch {record.epochs}/{record.max_epochs}: the search reached --trials"
                record.write(ctx.trial_dir(int(number)))
    from igcnas.search.optuna_backend import _sampler

    metrics = _metrics(ctx.config)
    teller: Any = None  # the study with the search's sampler: its after_trial hooks see these trials end too
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        record = _read_record(ctx, trial.number)
        if record is None:
            study.tell(trial.number, state=TrialState.FAIL)
        elif record.state in _SETTLED:
            if teller is None:
                teller = optuna.load_study(study_name=study.study_name, storage=study._storage,
                                           sampler=_sampler(ctx.config, ctx.config.seed))
            _tell_outcome(teller, optuna.trial.Trial(teller, trial._trial_id), _outcome(ctx, record),
                          metrics=metrics, max_fidelity=ctx.config.epochs, label=f"trial {trial.number}")
