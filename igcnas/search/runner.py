"""The one trial runner of every backend: sampled configuration -> spec -> count -> feasibility -> duplicate
check -> training with per-epoch reports -> record.

A backend only adapts it (:class:`TrialAdapter`): the Optuna backend stores constraints and attributes on its
``optuna.Trial``, finds a twin in the study and reports epochs to its pruner; the Ray backend reports to Tune and
finds a twin in the driver's trial store. Every file of the trial goes through the study's store
(:class:`~igcnas.store.StudyStore` on the driver's disk, or a proxy of it on a Ray worker that cannot see that
disk): the runner never names a file path itself.

Example:
    >>> import tempfile
    >>> from igcnas.search import SearchConfig, load_space
    >>> from igcnas.store import StudyStore
    >>> config = SearchConfig(max_params=10_000)
    >>> ctx = TrialContext(config, load_space("igc_cifar"), StudyStore(tempfile.mkdtemp(), "demo"))
    >>> params = {"design": "GC+PWG", "base_width": 32, "depth0": 2, "depth1": 2, "depth2": 2,
    ...           "groups.GC+PWG": 4, "bn": "each", "relu": "none", "identity": True}
    >>> adapter = RecordingAdapter()
    >>> record = run_trial(ctx, 0, params, adapter)  # over the 10k budget: never trained
    >>> record.state, record.reason.split(" > ")[0], adapter.calls
    ('infeasible', 'params 89.6k', [('counted', {'max_params': 79578.0})])
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from igcnas.errors import UserError
from igcnas.search.config import SearchConfig, fingerprint
from igcnas.store import CHECKPOINT_FILE, METRICS_FILE, WEIGHTS_FILE, TrialRecord

__all__ = ["TrialContext", "TrialAdapter", "RecordingAdapter", "TrialStoreLike", "run_trial", "run_spec", "trial_key",
           "row_key", "HYPER_KEYS"]

HYPER_KEYS: tuple[str, ...] = ("lr", "weight_decay", "batch_size")
"""Sampled training hyper-parameters that make two trials of one architecture different (see the space's
``train`` key)."""


class TrialStoreLike(Protocol):
    """What the runner needs of a study's store (:class:`~igcnas.store.StudyStore` or a remote proxy)."""

    name: str

    def training_dir(self, number: int) -> Path | None: ...

    def write_record(self, record: TrialRecord | dict[str, Any]) -> None: ...

    def write_arch(self, number: int, arch: dict[str, Any]) -> str: ...

    def put_file(self, number: int, name: str, data: bytes) -> None: ...

    def publish(self, number: int, name: str) -> None: ...

    def rows(self, *, strict: bool = False) -> list[dict[str, Any]]: ...

    def record(self, number: int) -> TrialRecord | None: ...


class TrialAdapter(Protocol):
    """How a backend takes part in :func:`run_trial` (every hook is called in the process training the trial)."""

    backend: str
    node: str

    def counted(self, record: TrialRecord, constraints: dict[str, float]) -> None:
        """The candidate is counted (before any decision): its cost and budget constraint values are known."""

    def twin(self, record: TrialRecord, key: str) -> dict[str, Any] | None:
        """A completed trial of the same architecture and hyper-parameters (its row), or None to train."""

    def training(self, record: TrialRecord) -> None:
        """Training starts now."""

    def report(self, record: TrialRecord, metrics: Any) -> bool:
        """One epoch is done (``record`` is current and stored); True stops the trial (pruned)."""


class RecordingAdapter:
    """An adapter that only records the hooks' calls (for tests and examples): no twins, never prunes."""

    backend = "local"
    node = ""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def counted(self, record: TrialRecord, constraints: dict[str, float]) -> None:
        self.calls.append(("counted", dict(constraints)))

    def twin(self, record: TrialRecord, key: str) -> dict[str, Any] | None:
        self.calls.append(("twin", key))
        return None

    def training(self, record: TrialRecord) -> None:
        self.calls.append(("training", record.trial))

    def report(self, record: TrialRecord, metrics: Any) -> bool:
        self.calls.append(("report", int(metrics.epoch)))
        return False


def trial_key(spec_id: str, overrides: dict[str, Any]) -> str:
    """What makes two trials the same training run: the spec id and the sampled training hyper-parameters."""
    return f"{spec_id}:{fingerprint(overrides)}"


def row_key(row: dict[str, Any]) -> str:
    """:func:`trial_key` of a trial.json row (its spec id and the hyper-parameters it sampled)."""
    sampled = row.get("sampled") or {}
    return trial_key(str(row.get("spec_id", "")), {k: sampled[k] for k in HYPER_KEYS if k in sampled})


class TrialContext:
    """Per-process state of a search: the config, the space, the study's store, and the data (loaded once)."""

    def __init__(self, config: SearchConfig, space: Any, store: TrialStoreLike, *, data: Any = None,
                 train_fn: Callable[..., Any] | None = None) -> None:
        self.config = config
        self.space = space
        self.store = store
        self.study = store.name
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
        shape, classes = self.shape()
        if not self.config.fill_budget:
            spec, overrides = self.space.to_spec(params, input_shape=shape, num_classes=classes)
            return spec, overrides, ""
        return self.space.fill_budget(params, input_shape=shape, num_classes=classes,
                                      max_params=self.config.max_params, max_flops=self.config.max_flops)

    def violations(self, params: int, flops: int) -> tuple[dict[str, float], str]:
        """Constraint values (> 0 means over budget) and a reason naming by how much, '' when feasible."""
        from igcnas.arch.fit import budget_violations

        return budget_violations(params, flops, max_params=self.config.max_params, max_flops=self.config.max_flops)

    def check_space_fits(self) -> None:
        """UserError, before any trial, when even the space's cheapest architecture is over a budget (nothing
        could be trained); nothing to check when budgets are filled."""
        from igcnas.cost import count

        if self.config.fill_budget:
            return
        shape, classes = self.shape()
        budgets = {"params": self.config.max_params, "flops": self.config.max_flops}
        for by, budget in budgets.items():
            if budget is None:
                continue
            smallest, value = self.space.smallest_spec(input_shape=shape, num_classes=classes, by=by)
            if value > budget:
                cost = count(smallest)
                _, over = self.violations(cost.params, cost.flops)
                raise UserError(
                    f"budget too small for space {self.space.name}: its smallest architecture by {by} "
                    f"({smallest.design}, widths {'-'.join(str(s.width) for s in smallest.stages)}, depths "
                    f"{'-'.join(str(s.depth) for s in smallest.stages)}) has {cost.params:,} params and "
                    f"{cost.flops:,} FLOPs ({over}); raise --max-{by}"
                )

    def base_record(self, number: int, spec: Any, cost: Any, params: dict[str, Any], *, backend: str,
                    node: str = "") -> TrialRecord:
        """A trial.json row filled with what is known before training."""
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
            backend=backend,
            study=self.study,
            node=node,
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

    # -- training ------------------------------------------------------------------------------------------
    def train(self, spec: Any, overrides: dict[str, Any], record: TrialRecord,
              on_epoch: Callable[[Any], bool | None] | None) -> TrialRecord:
        """Build and train one architecture, keeping its record current in the store; returns the final record.

        The engine writes into the store's trial folder when the store is local; otherwise (a Ray worker that
        cannot see the driver's disk) into a private scratch folder whose metrics go to the store after every
        epoch and whose weights go there at the end. A raised exception or a diverged run gives state
        ``failed`` with the reason; ``on_epoch`` returning True stops the run (state ``pruned``).
        """
        import torch

        from igcnas.nn.network import build
        from igcnas.train import train as default_train

        train_fn = self._train_fn or default_train
        number = record.trial
        local = self.store.training_dir(number)
        folder = local if local is not None else Path(tempfile.mkdtemp(prefix=f"igcnas-trial-{number:04d}-"))
        started = time.perf_counter()
        self.store.write_record(record)

        def ship(name: str) -> None:
            if local is not None:
                self.store.publish(number, name)  # written in place; an artifact store gets its copy
            elif (folder / name).is_file():
                self.store.put_file(number, name, (folder / name).read_bytes())

        def epoch_hook(metrics: Any) -> bool | None:
            record.epochs = int(metrics.epoch)
            record.accuracy = float(metrics.val_accuracy)
            record.duration_s = time.perf_counter() - started
            ship(METRICS_FILE)
            self.store.write_record(record)
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
            ship(METRICS_FILE)
            self.store.write_record(record)
            return record
        finally:
            (folder / CHECKPOINT_FILE).unlink(missing_ok=True)
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
        ship(METRICS_FILE)
        if record.state == "complete":
            ship(WEIGHTS_FILE)
        if local is None:
            shutil.rmtree(folder, ignore_errors=True)
        self.store.write_record(record)
        return record


def run_trial(ctx: TrialContext, number: int, params: dict[str, Any], adapter: TrialAdapter, *,
              screen: dict[str, Any] | None = None) -> TrialRecord:
    """Run trial ``number`` on its sampled ``params`` to the end; every step is in its ``trial.json``.

    Over budget: ``infeasible``, never built or trained. A completed twin (same spec id and hyper-parameters):
    ``complete`` with the twin's result (``reused_from``). An invalid architecture: ``failed``. Otherwise trained
    to ``complete``, ``pruned`` or ``failed``. ``screen``: how prescreening chose it (the record's ``screen``).
    """
    try:
        spec, overrides, note = ctx.make_spec(params)
    except UserError as error:
        record = TrialRecord(trial=number, state="failed", max_epochs=ctx.config.epochs, backend=adapter.backend,
                             study=ctx.study, reason=f"invalid architecture: {error}", node=adapter.node,
                             sampled=dict(params), screen=screen)
        ctx.store.write_record(record)
        return record
    return run_spec(ctx, number, spec, overrides, adapter, sampled=params, note=note, screen=screen)


def run_spec(ctx: TrialContext, number: int, spec: Any, overrides: dict[str, Any], adapter: TrialAdapter, *,
             sampled: dict[str, Any], note: str = "", baseline: str | None = None,
             screen: dict[str, Any] | None = None) -> TrialRecord:
    """The part of :func:`run_trial` after the spec is known: count, budget, twin, train, record.

    ``baseline``: the zoo name of a study's baseline; it is trained whatever its budget (the record says by how
    much it is over) and never takes a twin's result.
    """
    from igcnas.cost import count

    t0 = time.perf_counter()
    store = ctx.store
    cost = count(spec)
    record = ctx.base_record(number, spec, cost, sampled, backend=adapter.backend, node=adapter.node)
    record.baseline = baseline
    record.screen = screen
    record.arch_path = store.write_arch(number, spec.to_dict())
    constraints, over = ctx.violations(cost.params, cost.flops)
    adapter.counted(record, constraints)
    if over and baseline is None:
        record.state = "infeasible"
        record.reason = over + (f"; {note}" if note else "")
        record.duration_s = time.perf_counter() - t0
        store.write_record(record)
        return record
    twin = adapter.twin(record, trial_key(spec.id, overrides)) if baseline is None else None
    if twin is not None:
        record.state = "complete"
        record.reused_from = int(twin["trial"])
        record.accuracy = twin.get("accuracy")
        record.epochs = twin.get("epochs", ctx.config.epochs)
        record.reason = f"duplicate of trial {twin['trial']} (same spec id {spec.id}): result reused"
        record.duration_s = time.perf_counter() - t0
        store.write_record(record)
        return record
    if over:
        note = f"baseline over budget: {over}"
    if note:
        record.reason = note
    adapter.training(record)
    return ctx.train(spec, overrides, record, lambda metrics: adapter.report(record, metrics))
