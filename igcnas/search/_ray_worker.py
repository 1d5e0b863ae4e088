"""What runs on a Ray worker: the trainable, its adapter to the trial runner, and the driver's trial store as an
actor.

No Ray worker writes into the driver's folders. The driver starts one :class:`StoreServer` actor pinned to its
own node (``NodeAffinitySchedulingStrategy``, no CPUs), holding the driver's :class:`~igcnas.store.StudyStore`;
a worker reaches it through :class:`RemoteStudyStore`, which has the store's methods. Each write is a blocking
call, so a record is on the driver's disk before the trial reports to Tune: on a worker node that cannot see the
driver's files (separate machines, no NFS), records, metrics and weights still land in the driver's ``trials/``,
and the duplicate check reads the driver's rows, across nodes.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from igcnas.search.config import SearchConfig
from igcnas.search.runner import TrialContext, row_key, run_trial
from igcnas.store import TRAINED_STATES, StudyStore, TrialRecord, fully_trained

__all__ = ["METRIC", "StoreServer", "RemoteStudyStore", "start_store", "pack_data", "unpack_data", "trainable",
           "ended_before"]

METRIC = "val_acc"
"""The per-epoch key Tune's schedulers read (validation accuracy)."""

_SPLITS = ("train", "val", "test")


class StoreServer:
    """The body of the store actor: a :class:`~igcnas.store.StudyStore` on the driver's disk."""

    def __init__(self, root: str, name: str, artifacts: str | None = None) -> None:
        self.store = StudyStore(root, name, artifacts=artifacts)

    def write_record(self, row: dict[str, Any]) -> None:
        self.store.write_record(row)

    def write_arch(self, number: int, arch: dict[str, Any]) -> str:
        return self.store.write_arch(number, arch)

    def put_file(self, number: int, name: str, data: bytes) -> None:
        self.store.put_file(number, name, data)

    def publish(self, number: int, name: str) -> None:
        self.store.publish(number, name)

    def rows(self) -> list[dict[str, Any]]:
        return self.store.rows()

    def record_row(self, number: int) -> dict[str, Any] | None:
        record = self.store.record(number)
        return record.to_dict() if record is not None else None

    def ping(self) -> str:
        """The folder this actor writes (the driver checks it started)."""
        return str(self.store.folder)


class RemoteStudyStore:
    """The driver's study store seen from a Ray worker: the same methods, each a call to the store actor."""

    def __init__(self, actor: Any, name: str) -> None:
        self.actor = actor
        self.name = name

    def training_dir(self, number: int) -> Path | None:
        """None: the worker trains in a private scratch folder and sends the files (see ``TrialContext.train``)."""
        return None

    def write_record(self, record: TrialRecord | dict[str, Any]) -> None:
        import ray

        row = record.to_dict() if isinstance(record, TrialRecord) else dict(record)
        ray.get(self.actor.write_record.remote(row))

    def write_arch(self, number: int, arch: dict[str, Any]) -> str:
        import ray

        return str(ray.get(self.actor.write_arch.remote(number, arch)))

    def put_file(self, number: int, name: str, data: bytes) -> None:
        import ray

        ray.get(self.actor.put_file.remote(number, name, data))

    def publish(self, number: int, name: str) -> None:
        import ray

        ray.get(self.actor.publish.remote(number, name))

    def rows(self, *, strict: bool = False) -> list[dict[str, Any]]:
        import ray

        return list(ray.get(self.actor.rows.remote()))

    def record(self, number: int) -> TrialRecord | None:
        import ray

        row = ray.get(self.actor.record_row.remote(number))
        return TrialRecord.from_dict(row) if row is not None else None


def start_store(store: StudyStore) -> tuple[Any, RemoteStudyStore]:
    """Start the store actor on this (the driver's) node; returns the actor and the proxy workers use."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    actor_class = ray.remote(num_cpus=0)(StoreServer)
    actor: Any = actor_class.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
    ).remote(str(Path(store.root).resolve()), store.name, store.artifacts)
    ray.get(actor.ping.remote())
    return actor, RemoteStudyStore(actor, store.name)


def pack_data(bundle: Any) -> tuple[Any, dict[str, Any]]:
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


def unpack_data(shell: Any, arrays: dict[str, Any]) -> Any:
    """Inverse of :func:`pack_data` (the tensors view the shared read-only arrays; training only reads them)."""
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


class _RayTrial:
    """The Ray backend's part in :func:`~igcnas.search.runner.run_trial`: results go to Tune with ``report``.

    Every report carries the trial's costs and budget constraint values (the searcher stores them in Optuna);
    the last epoch is reported only once the trial's record and weights are in the store.
    """

    backend = "ray"

    def __init__(self, ctx: TrialContext, number: int, node: str) -> None:
        self.ctx = ctx
        self.number = number
        self.node = node
        self.base: dict[str, Any] = {"trial_number": number, "node": node, "epoch": 0, METRIC: 0.0, "accuracy": 0.0}

    def counted(self, record: TrialRecord, constraints: dict[str, float]) -> None:
        self.base.update({"params": float(record.params or 0), "flops": float(record.flops or 0),
                          "spec_id": record.spec_id, **{f"constraint_{k}": v for k, v in constraints.items()}})

    def twin(self, record: TrialRecord, key: str) -> dict[str, Any] | None:
        self.base["key"] = key
        for row in self.ctx.store.rows():
            if (row.get("trial") != self.number and row.get("reused_from") is None and fully_trained(row)
                    and row_key(row) == key):
                return row
        return None

    def training(self, record: TrialRecord) -> None:
        pass

    def report(self, record: TrialRecord, metrics: Any) -> bool:
        from ray import tune

        if int(metrics.epoch) < self.ctx.config.epochs:  # the last epoch is reported after training (weights)
            acc = float(metrics.val_accuracy)
            tune.report({**self.base, METRIC: acc, "accuracy": acc, "epoch": int(metrics.epoch), "state": "running"})
        return False  # Tune's scheduler stops a trial by ending its process

    def final(self, record: TrialRecord) -> None:
        """Report how the trial ended."""
        from ray import tune

        acc = float(record.accuracy or 0.0)
        tune.report({**self.base, METRIC: acc, "accuracy": acc, "epoch": int(record.epochs or 0),
                     "state": record.state})


def trainable(tune_config: dict[str, Any], payload: dict[str, Any], arrays: dict[str, Any]) -> None:
    """One Ray trial: run it with the trial runner against the driver's store, reporting to Tune."""
    import ray

    config: SearchConfig = payload["config"]
    ctx = TrialContext(config, payload["space"], payload["store"], data=unpack_data(payload["data"], arrays),
                       train_fn=payload["train_fn"])
    number = int(tune_config["trial_number"])
    node = ray.get_runtime_context().get_node_id()
    ended = ended_before(ctx, number)
    if ended is not None:  # trained by a killed run after Tune's snapshot, which Tuner.restore starts it from
        from ray import tune

        tune.report({"trial_number": number, "node": node, **ended})
        return
    params = {k: v for k, v in tune_config.items() if k not in ("trial_number", "screen")}
    adapter = _RayTrial(ctx, number, node)
    record = run_trial(ctx, number, params, adapter, screen=tune_config.get("screen"))
    adapter.final(record)


def ended_before(ctx: TrialContext, number: int) -> dict[str, Any] | None:
    """The last report of trial ``number`` rebuilt from its trial.json when it already ended (trained, failed or
    over budget), else None: a trial that a killed run finished after Tune's last experiment snapshot is started
    again by ``Tuner.restore``, and must not be trained twice."""
    from igcnas.search._ray_tune import outcome_of

    record = ctx.store.record(number)
    if record is None or record.state not in (*TRAINED_STATES, "infeasible"):
        return None
    return outcome_of(ctx, record)
