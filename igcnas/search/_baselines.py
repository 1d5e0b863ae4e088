"""A study's baselines: the zoo's networks trained with exactly the study's schedule, before its search, once.

``--baselines auto`` takes the zoo networks of the search space's layout and the dataset's class count that fit
the budget (none without a budget); ``NAME[,NAME...]`` takes those networks whatever their budget; ``none`` none.
Each is rebuilt for the dataset's input shape and class count.

The baselines of study ``S`` are coordinated in the side study ``S::baselines`` of the same Optuna storage (one
trial per attempt, user attr ``baseline``), so that the workers and machines of one study train each baseline
once: a baseline with a COMPLETE attempt is never trained again, and the duplicate protocol of the search
(:func:`~igcnas.search.optuna_backend._wait_for_running_twin`) keeps two workers from training one at once. An
attempt killed with its process is failed by its heartbeat, and the next run trains that baseline again. The
records are the trial store's rows with a negative trial number (folder ``baseline-001``) and ``baseline`` set;
the search's sampler, trial count and duplicate checks never see them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any

from igcnas.errors import UserError
from igcnas.store import TrialRecord

__all__ = ["Baseline", "BASELINES_SUFFIX", "resolve_baselines", "run_baselines", "baseline_numbers"]

BASELINES_SUFFIX = "::baselines"
"""The side study of a study's baselines: ``<study>::baselines``."""
_NAME_ATTR = "baseline"
_NUMBER_ATTR = "store_number"


@dataclass(frozen=True)
class Baseline:
    """One baseline of a study: a zoo network rebuilt for the dataset, its cost and whether it is over budget."""

    name: str
    spec: Any
    params: int
    flops: int
    over: str = ""


def resolve_baselines(choice: str, *, layout: str, input_shape: tuple[int, int, int], num_classes: int,
                      max_params: float | None, max_flops: float | None) -> list[Baseline]:
    """The baselines of ``--baselines`` (``auto``, ``none`` or zoo names), rebuilt for the dataset.

    Example:
        >>> [b.name for b in resolve_baselines("auto", layout="cifar", input_shape=(3, 32, 32), num_classes=10,
        ...                                    max_params=156_000, max_flops=None)]
        ['RegConv-W16-D8', 'IGC-L24M2-D20', 'IGCV1-C48-D20', 'IGCV2-C80-D20']
    """
    from igcnas.arch.fit import budget_violations
    from igcnas.arch.layout import layout_family
    from igcnas.cost import count
    from igcnas.zoo import ZOO, get_zoo

    text = str(choice).strip()
    if text in ("", "none"):
        return []
    automatic = text == "auto"
    if automatic:
        if max_params is None and max_flops is None:
            return []
        family = layout_family(layout)  # a space's mobilenet_cifar layout takes the cifar networks
        entries = [e for e in ZOO.values() if e.layout == family and e.spec.num_classes == num_classes]
    else:
        names = [n.strip() for n in text.split(",") if n.strip()]
        entries = []
        for name in names:
            try:
                entries.append(get_zoo(name))
            except UserError as error:
                raise UserError(f"--baselines: {error}") from None
    out: list[Baseline] = []
    seen: set[str] = set()
    for entry in entries:
        try:
            shape = (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))
            spec = replace(entry.spec, input_shape=shape, num_classes=int(num_classes))
            cost = count(spec)
        except UserError as error:
            if automatic:
                continue
            raise UserError(f"--baselines: {entry.name} cannot take input {tuple(input_shape)} ({error}); "
                            "choose a network of the dataset's layout (igcnas zoo)") from None
        _, over = budget_violations(cost.params, cost.flops, max_params=max_params, max_flops=max_flops)
        if (automatic and over) or spec.id in seen:
            continue
        seen.add(spec.id)
        out.append(Baseline(entry.name, spec, int(cost.params), int(cost.flops), over))
    return out


def run_baselines(ctx: Any, baselines: list[Baseline], *, url: str, progress: Any, backend: str) -> None:
    """Train the study's baselines that no worker has trained or is training (see the module docstring)."""
    import optuna
    from optuna.trial import TrialState

    from igcnas.search._storage import open_storage

    if not baselines:
        return
    side = optuna.create_study(study_name=ctx.study + BASELINES_SUFFIX, storage=open_storage(url, retry=False),
                               direction="maximize", load_if_exists=True)
    optuna.storages.fail_stale_trials(side)
    pending = [b for b in baselines if _status(side, b.name) != "complete"]
    # baselines another live worker is training now are left to it; this worker starts on the others
    pending.sort(key=lambda b: _status(side, b.name) == "running")
    for baseline in pending:
        optuna.storages.fail_stale_trials(side)
        if _status(side, baseline.name) != "todo":
            continue
        side.optimize(functools.partial(_attempt, ctx, side, baseline=baseline, progress=progress, backend=backend),
                      n_trials=1, catch=(Exception,), gc_after_trial=False)
    done = sum(1 for b in baselines if _status(side, b.name) == "complete")
    running = sum(1 for t in side.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    progress.line(f"baselines: {done} of {len(baselines)} trained" + (f", {running} training elsewhere" if running else ""))


def _status(side: Any, name: str) -> str:
    """``complete`` (a trained attempt), ``running`` (an attempt in progress) or ``todo``."""
    from optuna.trial import TrialState

    states = {t.state for t in side.get_trials(deepcopy=False) if t.user_attrs.get(_NAME_ATTR) == name}
    if TrialState.COMPLETE in states:
        return "complete"
    return "running" if TrialState.RUNNING in states else "todo"


def _attempt(ctx: Any, side: Any, trial: Any, *, baseline: Baseline, progress: Any, backend: str) -> float:
    """One attempt at a baseline (an Optuna trial of the side study): COMPLETE when it trained it."""
    import optuna

    from igcnas.search.optuna_backend import _wait_for_running_twin
    from igcnas.search.runner import run_spec

    trial.set_user_attr(_NAME_ATTR, baseline.name)
    earlier = [t.user_attrs[_NUMBER_ATTR] for t in side.get_trials(deepcopy=False)
               if t.user_attrs.get(_NAME_ATTR) == baseline.name and _NUMBER_ATTR in t.user_attrs]
    number = int(earlier[0]) if earlier else -(trial.number + 1)  # a retry rewrites the same record
    trial.set_user_attr(_NUMBER_ATTR, number)
    key = f"baseline:{baseline.name}"
    trial.set_user_attr("key", key)
    _wait_for_running_twin(side, trial, key)
    if _status(side, baseline.name) == "complete":  # another worker trained it while this one waited
        raise optuna.TrialPruned(f"{baseline.name} was trained by another worker")
    adapter = _BaselineTrial(backend, progress, baseline)
    record = run_spec(ctx, number, baseline.spec, {}, adapter, sampled={}, baseline=baseline.name)
    accuracy = f"acc {record.accuracy:.4f}" if record.accuracy is not None else "no accuracy"
    progress.line(f"baseline {baseline.name} {record.state}: {accuracy}, {int(record.params or 0):,} params, "
                  f"{record.epochs}/{record.max_epochs} epochs" + (f" ({record.reason})" if record.reason else ""))
    if record.state != "complete" or record.accuracy is None:
        raise RuntimeError(f"baseline {baseline.name}: {record.state} ({record.reason})")
    trial.set_user_attr("accuracy", record.accuracy)
    return float(record.accuracy)


class _BaselineTrial:
    """The runner's adapter of a baseline: no constraints to store, no twins, never pruned."""

    node = ""

    def __init__(self, backend: str, progress: Any, baseline: Baseline) -> None:
        self.backend = backend
        self.progress = progress
        self.baseline = baseline

    def counted(self, record: TrialRecord, constraints: dict[str, float]) -> None:
        """Nothing to store: the sampler never sees a baseline."""

    def twin(self, record: TrialRecord, key: str) -> dict[str, Any] | None:
        return None

    def training(self, record: TrialRecord) -> None:
        over = f", {self.baseline.over}" if self.baseline.over else ""
        self.progress.line(f"baseline {self.baseline.name} training {record.design} widths {record.widths} depths "
                           f"{record.depths} ({int(record.params or 0):,} params{over})")

    def report(self, record: TrialRecord, metrics: Any) -> bool:
        return False


def baseline_numbers(storage: Any, study: str) -> dict[str, int]:
    """Baseline name -> the trial number of its record, from the side study (empty when there is none)."""
    import optuna

    try:
        side = optuna.load_study(study_name=study + BASELINES_SUFFIX, storage=storage)
    except KeyError:
        return {}
    out: dict[str, int] = {}
    for t in side.get_trials(deepcopy=False):
        name, number = t.user_attrs.get(_NAME_ATTR), t.user_attrs.get(_NUMBER_ATTR)
        if name is not None and number is not None:
            out.setdefault(str(name), int(number))
    return out
