"""The embedded Optuna backend: one study in an RDB storage (SQLite under ``trials/`` by default).

Per candidate: sample (define-by-run) -> spec -> closed-form count (cached by spec id) -> over budget: recorded
``infeasible`` with its constraint values (Optuna's ``set_constraint``, so NSGA-II/TPE learn the boundary) and
never trained -> same architecture already completed in the study: the result is reused -> else build and train,
reporting each epoch's validation accuracy to a pruner. Multi-objective studies cannot use ``trial.report``, so
each trained trial gets a twin in a single-objective side study ``<study>::fidelity`` that owns the
successive-halving / Hyperband pruner. Heartbeats mark a killed process's trial as failed, and it is retried once
(same parameters) by the next run.

For optuna-dashboard (``optuna-dashboard sqlite:///trials/igcnas.db``), the studies' objectives are named
(``set_metric_names``) and the sampler of both backends copies each trial's named constraints into the
``constraints`` list the dashboard reads (:func:`mirror_constraints`), so over-budget trials show as infeasible.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

from igcnas.errors import UserError
from igcnas.search._baselines import resolve_baselines, run_baselines
from igcnas.search._fidelity import pareto_promote, rung_epochs
from igcnas.search._prescreen import SCREENING, screener_for, stale_screening
from igcnas.search._progress import Progress, tally
from igcnas.search._samplers import (  # noqa: F401  # the classes: what Ray searchers pickled before the move name
    _NSGAIISampler,
    _RandomSampler,
    _TPESampler,
    make_pruner,
    make_sampler,
    mirror_constraints,
)
from igcnas.search._storage import (
    GRACE_PERIOD_S,
    HEARTBEAT_INTERVAL_S,
    open_storage,
    set_user_attrs,
)
from igcnas.search._study import name_objectives, open_search_study
from igcnas.search._workers import WorkerSlot
from igcnas.search.config import (
    SearchConfig,
    default_storage,
    redact_url,
    study_file,
    study_settings,
)
from igcnas.search.runner import TrialContext, run_trial
from igcnas.store import FileLock, StudyStore, TrialRecord

__all__ = ["run_optuna", "open_storage", "mirror_constraints", "name_objectives", "HEARTBEAT_INTERVAL_S",
           "GRACE_PERIOD_S"]

_STATE_ATTR = "igcnas_state"
_RUN_ATTR = "run"
"""Trial user attr: the id of the run (one ``igcnas search``, all its workers) that ran the trial."""
_TRAINED_ATTR = "trained"
"""Trial user attr: True when the trial was trained (what ``--trials`` counts)."""
_SCREEN_ATTR = "screen"
"""Trial user attr: prescreening's verdict (a screened trial's, or the trained trial it chose)."""
_ROLE_ATTR = "key_role"
"""Trial user attr of the duplicate protocol (:func:`_wait_for_running_twin`): waiting, training or reused."""

def run_optuna(
    config: SearchConfig,
    space: Any,
    *,
    data: Any = None,
    train_fn: Callable[..., Any] | None = None,
    slot: WorkerSlot | None = None,
) -> str:
    """Run (or resume) a search on the Optuna backend in this process; returns the study name.

    ``train_fn`` replaces :func:`igcnas.train.train` (tests use it to spy on what is trained). ``slot``: this
    process is one of the workers of a ``--workers N`` run (:mod:`igcnas.search._workers`); the run stops when
    its workers together have trained ``config.trials`` trials.
    """
    import optuna
    from optuna.trial import TrialState

    from igcnas.cost import count

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    name = config.study_name(space.name)
    url = config.storage or default_storage(config.trials_dir)
    where = redact_url(url)
    storage = open_storage(url)
    settings = study_settings(config, space.settings())
    store = StudyStore(config.trials_dir, name, artifacts=config.artifacts)
    ctx = TrialContext(config, space, store, data=data, train_fn=train_fn)
    shape, classes = ctx.shape()  # bad data or a budget nothing fits fail before the study is created
    ctx.check_space_fits()
    study = open_search_study(config, storage, name, settings, where)
    store.write_settings(study_file(config, name, where, settings, space.path))
    slot = slot or WorkerSlot.single()
    progress = Progress(config, name, label=slot.label)
    if slot.index == 0 and slot.count > 1:
        progress.line(f"{slot.describe(config)}, one storage")
    objectives = config.objective_columns()

    baselines = resolve_baselines(config.baselines, layout=space.layout, input_shape=shape, num_classes=classes,
                                  max_params=config.max_params, max_flops=config.max_flops)
    run_baselines(ctx, baselines, url=url, progress=progress, backend="optuna")
    previous = len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(config, config.seed)  # seeded per trial number: workers draw unalike
    pruner = make_pruner(config)
    side = None
    if pruner is not None:
        side = optuna.create_study(study_name=f"{name}::fidelity", storage=open_storage(url, heartbeat=False),
                                   direction="maximize",
                                   pruner=pruner, load_if_exists=True)
        name_objectives(side, ["accuracy"])  # validation accuracy per epoch, of the main study's trials
    lock = slot.lock(config.trials_dir)
    _fail_stale(study, lock)
    _fail_stale_screening(study)
    screener = screener_for(ctx, line=progress.line)
    progress.line(
        f"study {name} in {where}: {previous} earlier trials; space {space.name} ({len(space.designs)} designs); "
        f"{config.dataset} {shape}; budget params {config.max_params or '-'} flops {config.max_flops or '-'}; "
        f"sampler {config.sampler_name()}, pruner {config.pruner}; {config.trials} trained trials x "
        f"{config.epochs} epochs"
    )

    current: dict[str, Any] = {}

    def objective(trial: optuna.Trial) -> float | tuple[float, ...]:
        current["number"] = trial.number
        _first_beat(study, trial)  # before the claim below: a claimed trial always has a beat to go stale by
        trial.set_user_attr(_RUN_ATTR, slot.run_id)
        current.pop("release", lambda: None)()  # the trial now counts as the run's: the next worker may start
        try:
            params = space.define(trial, fill_budget=config.fill_budget)
        except Exception as error:  # a sampler or storage error: recorded, not counted as a trained trial
            reason = f"sampling failed: {type(error).__name__}: {(str(error).splitlines() or [''])[0]}"[:500]
            store.write_record(TrialRecord(trial=trial.number, state="failed", max_epochs=config.epochs,
                                           backend="optuna", study=name, reason=reason))
            set_user_attrs(trial, {_STATE_ATTR: "failed", "reason": reason})
            raise
        adapter = _OptunaTrial(study, trial, side, config, objectives, progress)
        record = run_trial(ctx, trial.number, params, adapter, screen=trial.user_attrs.get(_SCREEN_ATTR))
        current["record"] = record
        outcome = {_TRAINED_ATTR: record.trained, _STATE_ATTR: record.state, "reason": record.reason}
        if record.reused_from is not None:
            outcome.update(reused_from=record.reused_from, accuracy=record.accuracy, epochs=record.epochs)
        set_user_attrs(trial, outcome)
        adapter.close(record)
        if record.state == "pruned":
            raise optuna.TrialPruned(record.reason)
        if record.state == "failed":
            raise _TrialFailed(record.reason)
        accuracy = float(record.accuracy or 0.0) if record.state == "complete" else 0.0
        return _values(objectives, {"accuracy": accuracy, "params": float(record.params or 0),
                                    "flops": float(record.flops or 0)})

    def ask() -> tuple[Any, dict[str, Any]]:
        """A new screening candidate: its trial (not the run's yet) and its sampled parameters."""
        with warnings.catch_warnings():  # screening candidates are told within seconds: no heartbeat needed
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = study.ask()
        trial.set_user_attr(_STATE_ATTR, SCREENING)
        try:
            return trial, space.define(trial, fill_budget=config.fill_budget)
        except Exception as error:
            reason = f"sampling failed: {type(error).__name__}: {(str(error).splitlines() or [''])[0]}"[:500]
            store.write_record(TrialRecord(trial=trial.number, state="failed", max_epochs=config.epochs,
                                           backend="optuna", study=name, reason=reason))
            trial.set_user_attr(_STATE_ATTR, "failed")
            study.tell(trial, state=TrialState.FAIL)
            raise _SamplingFailed(reason) from error

    def settle(trial: Any, params: dict[str, Any]) -> None:
        """Record and tell an over-budget or invalid screening candidate (never trained)."""
        record = run_trial(ctx, trial.number, params, _OptunaTrial(study, trial, None, config, objectives, progress))
        set_user_attrs(trial, {_TRAINED_ATTR: False, _STATE_ATTR: record.state, "reason": record.reason})
        if record.state == "infeasible":
            study.tell(trial, _values(objectives, {"accuracy": 0.0, "params": float(record.params or 0),
                                                   "flops": float(record.flops or 0)}))
        else:
            study.tell(trial, state=TrialState.FAIL)

    def tell_screened(trial: Any, record: TrialRecord) -> None:
        set_user_attrs(trial, {"spec_id": record.spec_id, "params": record.params, "flops": record.flops,
                               "design": record.design, _STATE_ATTR: "screened", _SCREEN_ATTR: record.screen,
                               "reason": record.reason})
        study.tell(trial, state=TrialState.PRUNED)

    def trained_before() -> set[str]:
        """Spec ids of the study's complete trials (a prescreening ranks them after new ones)."""
        return {str(t.user_attrs.get("spec_id")) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.user_attrs.get(_STATE_ATTR) == "complete"}

    def step() -> TrialRecord | None:
        """Sample (or pop a retry) and run one trial; its final record, or None when sampling failed."""
        current.pop("record", None)
        current.pop("number", None)
        if screener is not None and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            try:
                chosen = screener.screen(ask, settle, tell_screened, limit=20 * screener.k, trained=trained_before)
            except _SamplingFailed:  # recorded as a failed trial; the run goes on (a scoring error is a bug: raised)
                return None
            if chosen is None:
                return None
            study.enqueue_trial(chosen.params, user_attrs={_SCREEN_ATTR: screener.screen_info(chosen)})
            progress.line(f"#{chosen.number:04d} chosen by prescreening ({screener.proxy} {chosen.score:.4g}, "
                          f"best of {screener.k}): training it as the next trial")
        study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=False)
        record: TrialRecord | None = current.get("record")
        if record is None:
            return None
        if record.state == "running":  # an exception outside training (a bug): Optuna marked the trial FAIL
            frozen = study.get_trials(deepcopy=False)[current["number"]]
            record.state = "failed"
            record.reason = str(frozen.system_attrs.get("fail_reason", "exception during the trial"))[:500]
            store.write_record(record)
        rows = store.rows()
        counts, best = tally(rows, objectives, config.epochs)
        counts["running"] = sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        progress.trial(record, counts, best)
        return record

    attempts = 0
    cap = config.attempts_cap()
    while attempts < cap:
        # the run's workers take turns to count its trials and start one (the objective releases the lock once
        # its trial is tagged with the run), so together they train exactly --trials
        lock.acquire()
        try:
            trained, in_flight = _run_counts(study, slot.run_id)
            if trained >= config.trials:
                break
            if trained + in_flight < config.trials:
                attempts += 1
                current.clear()
                current["release"] = lock.release
                step()
                continue
        finally:
            lock.release()
        time.sleep(0.5)  # the other workers are training the run's last trials
        _fail_stale(study, lock)
    _run_orphaned_retries(study, step, progress, run_id=slot.run_id, lock=lock)
    trained = _run_counts(study, slot.run_id)[0]
    if trained < config.trials:
        smallest, params = space.smallest_spec(input_shape=shape, num_classes=classes)
        cost = count(smallest)
        message = (
            f"stopped after {attempts} sampled candidates with only {trained} of {config.trials} trained: "
            f"most candidates were over budget or already trained. The smallest architecture of space "
            f"{space.name} ({smallest.design}, widths {'-'.join(str(s.width) for s in smallest.stages)}) has "
            f"{cost.params:,} params and {cost.flops:,} FLOPs; raise --max-params/--max-flops, use a space with "
            f"smaller widths, or raise --max-attempts"
        )
        if trained == 0:
            raise UserError(message)
        progress.warn(message)
    return name


def _fail_stale_screening(study: Any) -> None:
    """Tell FAIL the screening candidates a killed process left RUNNING (they never count, and are never retried)."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if stale_screening(trial):
            study.tell(trial.number, state=TrialState.FAIL)


def _run_counts(study: Any, run_id: str) -> tuple[int, int]:
    """The run's trained trials and its trials still running (all its workers together)."""
    from optuna.trial import TrialState

    trained = in_flight = 0
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get(_RUN_ATTR) != run_id:
            continue
        if trial.state == TrialState.RUNNING:
            in_flight += 1
        elif trial.user_attrs.get(_TRAINED_ATTR):
            trained += 1
    return trained, in_flight


def _fail_stale(study: Any, lock: FileLock) -> None:
    """Fail the study's heartbeat-stale trials and queue their retries while holding the run's lock.

    The run's workers sample only under that lock, so none of them can sample a new trial between the moment a
    stale trial is failed and the moment its retry is queued: the retry is the next trial the run trains.
    """
    import optuna

    with lock:
        optuna.storages.fail_stale_trials(study)
        _fail_unclaimed(study)


def _first_beat(study: Any, trial: Any) -> None:
    """Record the trial's first heartbeat now, in the objective's thread: Optuna's heartbeat thread records it a
    moment later, and a trial whose process dies before any beat is never found stale by Optuna (RDB storages skip
    trials without a beat)."""
    from optuna.storages._heartbeat import BaseHeartbeat

    storage = study._storage
    if isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval() is not None:
        storage.record_heartbeat(trial._trial_id)


def _fail_unclaimed(study: Any, *, now: float | None = None) -> None:
    """Fail, and queue the retry of, the RUNNING trials that no objective ever claimed (no run, no state) and that
    started more than a grace period and a heartbeat ago: their process died between creating them and the
    objective's first lines, before any heartbeat (:func:`_first_beat`), so no heartbeat check will ever find them."""
    import optuna
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.trial import TrialState

    now = time.time() if now is None else now
    storage = study._storage
    callback = storage.get_heartbeat_stale_trial_callback() if isinstance(storage, BaseHeartbeat) else None
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if (trial.user_attrs.get(_RUN_ATTR) is not None or trial.user_attrs.get(_STATE_ATTR) is not None
                or trial.datetime_start is None
                or now - trial.datetime_start.timestamp() <= GRACE_PERIOD_S + HEARTBEAT_INTERVAL_S):
            continue
        try:
            failed = storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:  # another process failed it first
            continue
        if failed and callback is not None:
            callback(study, storage.get_trial(trial._trial_id))


def _run_orphaned_retries(study: Any, step: Callable[[], TrialRecord | None], progress: Progress, *,
                          run_id: str, lock: FileLock) -> None:
    """Before leaving, make sure no trial of a dead worker is left behind: wait (at most one grace period plus a
    heartbeat) for the study's RUNNING trials of other runs to finish or go stale, and run the retries that stale
    trials get (WAITING trials), so a worker killed near the end of a search still has its trial retried. The
    run's own workers are alive while it runs (they die with its parent), so their trials are not waited for."""
    from optuna.trial import TrialState

    deadline = time.monotonic() + GRACE_PERIOD_S + HEARTBEAT_INTERVAL_S
    announced = False
    while True:
        _fail_stale(study, lock)
        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            progress.line("running the retry of a trial whose worker died")
            step()
            continue
        running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if t.user_attrs.get(_RUN_ATTR) != run_id]
        if not running or time.monotonic() > deadline:
            return
        if not announced:
            progress.line(f"waiting up to {GRACE_PERIOD_S + HEARTBEAT_INTERVAL_S} s for {len(running)} running "
                          "trial(s) of other workers to finish or be found dead (heartbeat)")
            announced = True
        time.sleep(HEARTBEAT_INTERVAL_S)


def _pareto_prune(study: Any, trial: Any, epoch: int, accuracy: float, costs: dict[str, float],
                  objectives: list[tuple[str, str]], max_epochs: int) -> bool:
    """Pareto-aware successive halving on the main study: True when the trial should stop at this rung."""
    from optuna.trial import TrialState

    if epoch not in rung_epochs(max_epochs):
        return False
    key = f"rung:{epoch}"
    number = trial.number
    vector = [-accuracy if col == "accuracy" else costs[col] for col, _ in objectives]
    trial.set_user_attr(key, {"values": vector, "attempt": number})
    pool = [
        (t.number, tuple(t.user_attrs[key]["values"]))
        for t in study.get_trials(deepcopy=False)
        if t.number != number and t.state != TrialState.FAIL and key in t.user_attrs
        and t.user_attrs[key].get("attempt") == t.number  # a retried trial inherits its origin's records
    ]
    return not pareto_promote(pool, (number, tuple(vector)))


class _OptunaTrial:
    """The Optuna backend's part in :func:`~igcnas.search.runner.run_trial` for one ``optuna.Trial``.

    Costs and constraints go on the trial (the sampler learns the budget boundary); a twin is a COMPLETE trial of
    the study with the same key (after waiting for an earlier worker's running one); epochs go to the Pareto
    pruner on the main study, or to the side study ``<study>::fidelity`` that owns Optuna's pruners.
    """

    backend = "optuna"
    node = ""

    def __init__(self, study: Any, trial: Any, side: Any, config: SearchConfig,
                 objectives: list[tuple[str, str]], progress: Progress) -> None:
        self.study = study
        self.trial = trial
        self.side = side
        self.side_trial: Any = None
        self.config = config
        self.objectives = objectives
        self.progress = progress
        self.costs: dict[str, float] = {}

    def counted(self, record: TrialRecord, constraints: dict[str, float]) -> None:
        attrs: dict[str, Any] = {"spec_id": record.spec_id, "params": record.params, "flops": record.flops,
                                 "design": record.design, "widths": record.widths, "depths": record.depths}
        set_user_attrs(self.trial, attrs)
        for name, limit in constraints.items():
            self.trial.set_constraint(name, limit)
        self.costs = {"params": float(record.params or 0), "flops": float(record.flops or 0)}

    def twin(self, record: TrialRecord, key: str) -> dict[str, Any] | None:
        from optuna.trial import TrialState

        self.trial.set_user_attr("key", key)
        _wait_for_running_twin(self.study, self.trial, key)
        for other in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if other.user_attrs.get("key") == key and other.user_attrs.get(_STATE_ATTR) == "complete":
                self.trial.set_user_attr(_ROLE_ATTR, "reused")
                return {"trial": other.number, "accuracy": other.user_attrs.get("accuracy"),
                        "epochs": other.user_attrs.get("epochs", self.config.epochs)}
        self.trial.set_user_attr(_ROLE_ATTR, "training")
        return None

    def training(self, record: TrialRecord) -> None:
        self.side_trial = self.side.ask() if self.side is not None else None
        if self.side_trial is not None:
            self.side_trial.set_user_attr("main_trial", self.trial.number)
            self.trial.set_user_attr("fidelity_trial", self.side_trial.number)
        self.progress.line(f"#{record.trial:04d} training {record.design} widths {record.widths} depths "
                           f"{record.depths} ({int(record.params or 0):,} params)")

    def report(self, record: TrialRecord, metrics: Any) -> bool:
        epoch, accuracy = int(metrics.epoch), float(metrics.val_accuracy)
        set_user_attrs(self.trial, {"epochs": epoch, "accuracy": accuracy})
        if self.config.pruner == "pareto":
            return _pareto_prune(self.study, self.trial, epoch, accuracy, self.costs, self.objectives,
                                 self.config.epochs)
        if self.side_trial is None:
            return False
        self.side_trial.report(accuracy, epoch)
        return epoch < self.config.epochs and bool(self.side_trial.should_prune())

    def close(self, record: TrialRecord) -> None:
        """Tell the side study how the trained trial ended."""
        from optuna.trial import TrialState

        if self.side is None or self.side_trial is None:
            return
        if record.state == "complete" and record.accuracy is not None:
            self.side.tell(self.side_trial, record.accuracy)
        elif record.state == "pruned":
            self.side.tell(self.side_trial, state=TrialState.PRUNED)
        else:
            self.side.tell(self.side_trial, state=TrialState.FAIL)


class _SamplingFailed(RuntimeError):
    """The sampler or the space failed to give a screening candidate; its trial is recorded failed."""


class _TrialFailed(RuntimeError):
    """A trained trial that failed (exception or divergence); its reason is in trial.json."""


def _values(objectives: list[tuple[str, str]], values: dict[str, float]) -> float | tuple[float, ...]:
    """Objective values in order (a float for a single objective)."""
    out = tuple(float(values[col]) for col, _ in objectives)
    return out[0] if len(out) == 1 else out


def _wait_for_running_twin(study: Any, trial: Any, key: str, *, poll_s: float = 1.0) -> None:
    """Wait while another worker trains (or may be about to train) the same architecture, so it is trained once.

    Every trial writes its ``key``, then reads the running trials with that key, then writes its role:
    ``waiting`` when that read saw a twin it must wait for, else ``training``. It waits for every running twin
    with a lower number, for any twin whose role is ``training``, and for a higher-numbered twin whose role is
    not yet written (that one read before this trial's key was visible, so it may train). Of two trials that
    sample one architecture at once, at least one sees the other's key, so at most one trains, and no two wait
    on each other: a ``waiting`` trial waits only on lower numbers or on a ``training`` one, which waits on
    nobody. A twin whose worker died is failed by its stale heartbeat (``fail_stale_trials``), which ends the
    wait; its result, when it completes, is then reused by the caller's duplicate check.
    """
    import optuna
    from optuna.trial import TrialState

    number = trial.number
    role_written = False
    while True:
        blockers = [
            other for other in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if other.number != number and other.user_attrs.get("key") == key
            and (other.number < number or other.user_attrs.get(_ROLE_ATTR, "unknown") in ("training", "unknown"))
        ]
        if not role_written:
            trial.set_user_attr(_ROLE_ATTR, "waiting" if blockers else "training")
            role_written = True
        if not blockers:
            return
        time.sleep(poll_s)
        if hasattr(optuna.storages, "fail_stale_trials"):
            optuna.storages.fail_stale_trials(study)
