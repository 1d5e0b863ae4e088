"""The Ray Tune backend: Tuner + OptunaSearch (define-by-run on the search space) + ASHA, local or on a cluster.

* Trials run :func:`igcnas.search.runner.run_trial` on the workers (:mod:`igcnas.search._ray_worker`); every
  file they produce reaches the driver's trial store through a store actor on the driver's node, so a cluster
  needs no shared filesystem.
* The searcher and schedulers that keep Optuna's view right live in :mod:`igcnas.search._ray_tune`.
* The Optuna study lives in the same RDB storage as the Optuna backend's (``sqlite:///trials/igcnas.db``), so
  trial numbers and the sampler's history carry over between runs; an interrupted run is resumed with
  ``Tuner.restore`` from the Tune experiment in ``trials/<study>/ray/`` (or ``--storage-path URI/<study>/``).

A cluster started with ``ray start`` (Ray >= 2.60) uses token authentication: every process that joins it, the
worker nodes and the igcnas driver, needs ``RAY_AUTH_MODE=token`` and the cluster's token (``~/.ray/auth_token``,
or ``RAY_AUTH_TOKEN``); see the README's "Searching on several machines".
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from igcnas.errors import UserError
from igcnas.search._baselines import resolve_baselines, run_baselines
from igcnas.search._fidelity import ETA
from igcnas.search._prescreen import SCREENING, screener_for
from igcnas.search._progress import Progress, tally
from igcnas.search.config import (
    SearchConfig,
    default_storage,
    redact_url,
    study_file,
    study_settings,
)
from igcnas.search.runner import TrialContext
from igcnas.store import SETTLED_STATES, TRAINED_STATES, StudyStore, TrialRecord

__all__ = ["run_ray"]

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")

from ray.tune import Callback, Stopper  # noqa: E402
from ray.tune.schedulers import FIFOScheduler  # noqa: E402

from igcnas.search._ray_tune import (  # noqa: E402
    Define,
    FidelityAwareOptunaSearch,
    ParetoASHA,
    objective_metrics,
    outcome_of,
    tell_outcome,
)
from igcnas.search._ray_worker import METRIC, pack_data, start_store, trainable  # noqa: E402

_DONE_MARKER = "igcnas-run-finished"


class _Runs:
    """The Tune experiments of one study: ``run-000``, ``run-001``, ... in a local folder or a pyarrow URI."""

    def __init__(self, location: str) -> None:
        import pyarrow.fs as pafs

        if "://" in location:
            self.fs, self.path = pafs.FileSystem.from_uri(location)
            self.root = location.rstrip("/")
        else:
            self.fs, self.path = pafs.LocalFileSystem(), str(Path(location).resolve())
            self.root = self.path

    def names(self) -> list[str]:
        """The experiments so far, oldest first."""
        import pyarrow.fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("run-"))

    def uri(self, name: str) -> str:
        """Where experiment ``name`` lives (for ``Tuner.restore``)."""
        return f"{self.root}/{name}"

    def finished(self, name: str) -> bool:
        """True when experiment ``name`` ran to its end."""
        import pyarrow.fs as pafs

        return bool(self.fs.get_file_info(f"{self.path}/{name}/{_DONE_MARKER}").type == pafs.FileType.File)

    def mark_finished(self, name: str) -> None:
        """Record that experiment ``name`` ran to its end."""
        with self.fs.open_output_stream(f"{self.path}/{name}/{_DONE_MARKER}") as out:
            out.write(b"finished\n")


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

    from igcnas.search._samplers import make_sampler
    from igcnas.search._storage import open_storage
    from igcnas.search._study import open_search_study

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    name = config.study_name(space.name)
    url = config.storage or default_storage(config.trials_dir)
    where = redact_url(url)
    settings = study_settings(config, space.settings())
    store = StudyStore(config.trials_dir, name, artifacts=config.artifacts)
    ctx = TrialContext(config, space, store, data=data, train_fn=train_fn)
    shape, classes = ctx.shape()
    bundle = ctx.data
    ctx.check_space_fits()
    storage = open_storage(url, heartbeat=False)
    study = open_search_study(config, storage, name, settings, where)  # a reused study's settings checked there
    store.write_settings(study_file(config, name, where, settings, space.path))
    progress = Progress(config, name)
    objectives = config.objective_columns()
    baselines = resolve_baselines(config.baselines, layout=space.layout, input_shape=shape, num_classes=classes,
                                  max_params=config.max_params, max_flops=config.max_flops)
    run_baselines(ctx, baselines, url=url, progress=progress, backend="ray")  # in the driver, before Tune

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

        searcher_ctx = TrialContext(config, space, store)
        screener = screener_for(searcher_ctx, line=progress.line)
        if screener is not None:
            screener.prime(bundle)  # the scoring batch travels with the searcher; the dataset does not
        searcher = FidelityAwareOptunaSearch(
            Define(space, config.fill_budget),
            metric=objective_metrics(config),
            mode=[d for _, d in objectives],
            sampler=make_sampler(config, config.seed),  # seeded per trial number
            study_name=name,
            storage=storage,
            max_fidelity=config.epochs,
            ctx=searcher_ctx,
            screener=screener,
        )
        if config.pruner == "none":
            scheduler: Any = FIFOScheduler()
        elif config.pruner == "pareto":
            scheduler = ParetoASHA(objectives, config.epochs)
        else:
            scheduler = ASHAScheduler(time_attr="epoch", metric=METRIC, mode="max", max_t=config.epochs,
                                      grace_period=1, reduction_factor=ETA)
        # Workers never write the driver's folders: their records and files go through the store actor
        _, remote_store = start_store(store)
        shell, arrays = pack_data(bundle)
        payload = {"config": config, "space": space, "store": remote_store, "data": shell, "train_fn": train_fn}
        with_data = tune.with_resources(
            tune.with_parameters(trainable, payload=payload, arrays=arrays),
            {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial},
        )
        monitor = _Monitor(config, ctx, progress, objectives)
        _ACTIVE_MONITORS.append(monitor)
        runs = _Runs(f"{config.storage_path.rstrip('/')}/{name}" if config.storage_path else str(store.folder / "ray"))
        earlier = runs.names()
        tuner = None
        if earlier and not runs.finished(earlier[-1]) and tune.Tuner.can_restore(runs.uri(earlier[-1])):
            progress.line(f"resuming the interrupted Ray run {earlier[-1]}")
            tuner = tune.Tuner.restore(runs.uri(earlier[-1]), trainable=with_data, resume_unfinished=True,
                                       resume_errored=False, restart_errored=False)
            run_name = earlier[-1]
        if tuner is None:
            run_name = f"run-{len(earlier):03d}"
            tuner = tune.Tuner(
                with_data,
                tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                            num_samples=config.attempts_cap(), reuse_actors=True),
                run_config=tune.RunConfig(name=run_name, storage_path=runs.root, verbose=0,
                                          stop=monitor, callbacks=[monitor]),
            )
        restored: set[Any] = set()
        if run_name in earlier:  # the trials the resumed experiment will carry on
            restored = _experiment_trials(runs.uri(run_name))
        _retry_orphans(ctx, study, restored, before=previous)
        monitor.ended_earlier = {int(r["trial"]) for r in store.rows() if r.get("state") in TRAINED_STATES}
        monitor.retries_out = lambda: _retries_out(study)
        grid = tuner.fit()
        _finalise(grid, ctx, monitor, study)
        runs.mark_finished(run_name)
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
    """Progress lines per finished trial, and stops the experiment once ``--trials`` trials were trained and no
    retry of a killed run's trial is queued or training (as the Optuna backend runs them before it leaves).

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
        self.retries_out: Callable[[], bool] = lambda: False
        self.ended_earlier: set[int] = set()  # trials an earlier run trained: a restored one is not counted again
        self._checked = (0.0, False)  # (when, answer) of the last retries_out() asked once reached

    # Stopper
    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        if not self.reached:
            return False
        when, out = self._checked
        if time.monotonic() - when > 1.0:  # Tune asks on every step: the study is read at most once a second
            out = self.retries_out()
            self._checked = (time.monotonic(), out)
        return not out

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
        if record.state in TRAINED_STATES and record.reused_from is None and int(number) not in self.ended_earlier:
            self.trained += 1
        if self.trained >= self.config.trials:
            self.reached = True
        counts, best = tally(self.ctx.store.rows(), self.objectives, self.config.epochs)
        counts["running"] = max(0, sum(1 for t in trials if t.status == "RUNNING") - 1)
        self.progress.trial(record, counts, best)


def _fix_record(ctx: TrialContext, number: int, result: dict[str, Any], *, error: Any) -> TrialRecord | None:
    """Turn a trial.json left 'running' (ASHA stop, search end, crash) into pruned/failed; return the record."""
    store = ctx.store
    record = store.record(number)
    if record is None:
        record = TrialRecord(trial=number, state="failed", max_epochs=ctx.config.epochs, backend="ray",
                             study=ctx.study, reason=f"the trial crashed before writing its record ({error})",
                             node=str(result.get("node", "")))
        store.write_record(record)
        return record
    if record.state == "running":
        if error:
            record.state = "failed"
            record.reason = f"error: see {error}"
        else:
            record.state = "pruned"
            by = "Pareto ASHA" if ctx.config.pruner == "pareto" else "ASHA"
            record.reason = f"stopped by {by} after epoch {record.epochs}/{record.max_epochs}"
        store.write_record(record)
    return record


def _experiment_trials(uri: str) -> set[Any]:
    """The trial numbers of every trial in a Tune experiment's last snapshot, those without a result included
    (PENDING, or RUNNING before their first report): ``Tuner.restore`` carries all of them on."""
    from ray.tune import ExperimentAnalysis

    return {trial.config.get("trial_number") for trial in ExperimentAnalysis(uri).trials if trial.config}


def _retries_out(study: Any) -> bool:
    """True while a retry queued by :func:`_retry_orphans` waits to be asked or is training."""
    from optuna.trial import TrialState

    return any("retry_of" in t.user_attrs
               for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)))


def _retry_orphans(ctx: TrialContext, study: Any, restored: set[Any], *, before: int) -> None:
    """Trials a killed run left running that the resumed experiment does not contain are failed, and their
    configuration is queued once (``enqueue_trial``): the searcher's next ``ask`` trains it again. One whose
    trial.json records its end (the killed run finished it but was killed before telling the study) is told as
    recorded instead: a completed trial is never lost."""
    from optuna.trial import TrialState

    teller: Any = None
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.number >= before or trial.number in restored:
            continue
        if trial.user_attrs.get("igcnas_state") == SCREENING:  # killed while scoring: never trained, never retried
            study.tell(trial.number, state=TrialState.FAIL)
            continue
        record = ctx.store.record(trial.number)
        if record is not None and record.state in SETTLED_STATES:
            teller = teller or _recorded_teller(ctx, study)
            _tell_as_recorded(ctx, teller, trial, record)
            continue
        if record is not None:
            record.state = "failed"
            record.reason = ("the search process running it was killed before Ray's last experiment snapshot "
                             "included it; its configuration is retried once as a new trial")
            ctx.store.write_record(record)
        study.tell(trial.number, state=TrialState.FAIL)
        if "retry_of" not in trial.user_attrs and trial.params:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def _recorded_teller(ctx: TrialContext, study: Any) -> Any:
    """The study with the search's sampler: its after_trial hooks see the trials told through it end too."""
    import optuna

    from igcnas.search._samplers import make_sampler

    return optuna.load_study(study_name=study.study_name, storage=study._storage,
                             sampler=make_sampler(ctx.config, ctx.config.seed))


def _tell_as_recorded(ctx: TrialContext, teller: Any, trial: Any, record: TrialRecord) -> None:
    """Tell the RUNNING Optuna ``trial`` the outcome its trial.json ``record`` holds (values and constraints)."""
    import optuna

    tell_outcome(teller, optuna.trial.Trial(teller, trial._trial_id), outcome_of(ctx, record),
                 metrics=objective_metrics(ctx.config), max_fidelity=ctx.config.epochs, label=f"trial {trial.number}")


def _finalise(grid: Any, ctx: TrialContext, monitor: _Monitor, study: Any) -> None:
    """After fit: no trial may stay 'running', in trial.json or in the Optuna study.

    Tune stops the trials still out once the search reached --trials (``stop_all``) without telling the searcher,
    even one whose worker had already decided it (an infeasible candidate takes a fraction of a second) and
    written its trial.json: each Optuna trial still RUNNING is told here as its trial.json says, with its
    constraints (never started: FAIL). Trials of an earlier, killed run outside the restored experiment were
    already settled by :func:`_retry_orphans` (told as their trial.json records their end, else failed and
    retried)."""
    from optuna.trial import TrialState

    for result in grid:
        number = (result.config or {}).get("trial_number")
        if number is None:
            continue
        current = ctx.store.record(int(number))
        if current is not None and current.state == "running":
            record = _fix_record(ctx, int(number), result.metrics or {}, error=result.error)
            if record is not None and record.state == "pruned" and monitor.reached:
                record.reason = f"stopped after epoch {record.epochs}/{record.max_epochs}: the search reached --trials"
                ctx.store.write_record(record)
    teller: Any = None
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        record = ctx.store.record(trial.number)
        if record is None:
            study.tell(trial.number, state=TrialState.FAIL)
        elif record.state in SETTLED_STATES:
            teller = teller or _recorded_teller(ctx, study)
            _tell_as_recorded(ctx, teller, trial, record)
