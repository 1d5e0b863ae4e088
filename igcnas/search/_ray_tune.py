"""The Tune side of the Ray backend: the Optuna searcher that records what igcnas decided, and Pareto ASHA.

* When ASHA stops a trial, OptunaSearch would tell Optuna COMPLETE with the half-trained metrics.
  :class:`FidelityAwareOptunaSearch` tells such trials PRUNED (and failed ones FAIL), so they never enter the
  Pareto front.
* Optuna's constraints are soft and OptunaSearch copies no metrics to Optuna: the trainable decides feasibility
  from the sampled parameters with the closed-form count *before* training and reports the constraint values,
  which the searcher stores with ``set_constraint``. Tune does not tell the searcher about the trials it stops once
  the search reached ``--trials``, even one already decided (an infeasible candidate takes a fraction of a second):
  the end of the run tells every trial Optuna still has RUNNING as its ``trial.json`` says, constraints included.
"""

from __future__ import annotations

import warnings
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from igcnas.search._fidelity import pareto_promote, rung_epochs
from igcnas.search._prescreen import SCREENING, Screener, UntrainedAdapter
from igcnas.search._ray_worker import METRIC
from igcnas.search._storage import set_user_attrs
from igcnas.search.config import SearchConfig
from igcnas.search.runner import TrialContext, run_trial
from igcnas.store import SETTLED_STATES, TrialRecord

__all__ = ["FidelityAwareOptunaSearch", "ParetoASHA", "Define", "objective_metrics", "tell_outcome",
           "outcome_of"]


class FidelityAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells ASHA-stopped trials PRUNED, failed ones FAIL and stores budget constraints.

    With ``ctx``, a trial whose reports never reached the searcher (its worker died after deciding it) is told as
    its ``trial.json`` says.
    """

    def __init__(self, *args: Any, max_fidelity: int, ctx: TrialContext | None = None,
                 screener: Screener | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_fidelity = max_fidelity
        self._ctx = ctx
        self._screener = screener
        self._screens: dict[int, dict[str, Any]] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """OptunaSearch's suggestion; with ``--prescreen K``, of the best of K feasible candidates by the proxy
        (:mod:`igcnas.search._prescreen`): that candidate's own trial is trained, the others are screened."""
        screener: Screener | None = getattr(self, "_screener", None)  # a searcher pickled by an older igcnas
        if screener is not None and callable(self._space) and trial_id not in self._ot_trials:
            chosen = screener.screen(self._ask, self._settle, self._tell_screened, limit=20 * screener.k,
                                     trained=self._trained_before, train_chosen=True)
            if chosen is None:
                return None
            self._ot_trials[trial_id] = chosen.trial
            self._screens[chosen.number] = screener.screen_info(chosen)
        config = super().suggest(trial_id)
        screen = getattr(self, "_screens", {}).get(int(config["trial_number"])) if config else None
        if config is not None and screen is not None:
            config["screen"] = screen
        return config

    def _trained_before(self) -> set[str]:
        """Spec ids of the complete trials in the study's store."""
        ctx = self._ctx
        assert ctx is not None
        return {str(r.get("spec_id")) for r in ctx.store.rows() if r.get("state") == "complete"}

    def _ask(self) -> tuple[Any, dict[str, Any]]:
        """A screening candidate: a new Optuna trial and its parameters from the define-by-run function."""
        study: Any = self._ot_study
        define: Any = self._space
        trial = study.ask()
        trial.set_user_attr("igcnas_state", SCREENING)
        self._suggest_from_define_by_run_func(define, trial)
        return trial, dict(trial.params)

    def _settle(self, trial: Any, params: dict[str, Any]) -> None:
        """Record and tell an over-budget or invalid screening candidate, as the trainable would."""
        ctx = self._ctx
        assert ctx is not None
        record = run_trial(ctx, int(trial.number), params, UntrainedAdapter("ray"))
        tell_outcome(self._ot_study, trial, outcome_of(ctx, record), metrics=list(self._metric or []),
                     max_fidelity=self._max_fidelity, label=f"trial {trial.number}")

    def _tell_screened(self, trial: Any, record: TrialRecord) -> None:
        assert self._ctx is not None
        trial.set_user_attr("igcnas_state", "screened")
        trial.set_user_attr("screen", record.screen)
        tell_outcome(self._ot_study, trial, outcome_of(self._ctx, record), metrics=list(self._metric or []),
                     max_fidelity=self._max_fidelity, label=f"trial {trial.number}")

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
            record = ctx.store.record(int(ot_trial.number))
            if record is not None and record.state in SETTLED_STATES:
                result, error = outcome_of(ctx, record), False
        tell_outcome(study, ot_trial, result, metrics=list(self._metric or []), max_fidelity=self._max_fidelity,
                      error=error, label=f"trial {trial_id}")
        self._completed_trials.add(trial_id)


def objective_metrics(config: SearchConfig) -> list[str]:
    """The result keys of the objectives, in order (what OptunaSearch's ``metric`` lists)."""
    return [METRIC if col == "accuracy" else col for col, _ in config.objective_columns()]


def outcome_of(ctx: TrialContext, record: TrialRecord) -> dict[str, Any]:
    """The trainable's last report rebuilt from its ``trial.json`` (written before each report), constraint values
    included: they follow from the counted cost alone."""
    acc = float(record.accuracy or 0.0)
    out: dict[str, Any] = {"state": record.state, "epoch": int(record.epochs or 0), METRIC: acc, "accuracy": acc}
    if record.spec_id:
        out["spec_id"] = record.spec_id
    if record.params is not None and record.flops is not None:
        constraints, _ = ctx.violations(int(record.params), int(record.flops))
        out.update({"params": float(record.params), "flops": float(record.flops),
                    **{f"constraint_{k}": v for k, v in constraints.items()}})
    return out


def tell_outcome(study: Any, ot_trial: Any, result: dict[str, Any], *, metrics: list[str], max_fidelity: int,
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
    set_user_attrs(ot_trial, {key: result[key] for key in ("spec_id", "params", "flops", "state") if key in result})
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
        vector = tuple(-float(result[METRIC]) if col == "accuracy" else float(result[col])
                       for col, _ in self.objectives)
        pool = [(tid, values) for tid, values in self.entries[epoch].items() if tid != trial.trial_id]
        self.entries[epoch][trial.trial_id] = vector
        keep = pareto_promote(pool, (trial.trial_id, vector))
        return str(TrialScheduler.CONTINUE if keep else TrialScheduler.STOP)


class Define:
    """The define-by-run function given to OptunaSearch (a picklable object: the searcher is checkpointed)."""

    def __init__(self, space: Any, fill_budget: bool) -> None:
        self.space = space
        self.fill_budget = fill_budget

    def __call__(self, trial: Any) -> dict[str, Any]:
        self.space.define(trial, fill_budget=self.fill_budget)
        return {"trial_number": int(trial.ot_trial.number)}
