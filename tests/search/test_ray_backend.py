"""The Ray Tune backend: a small end-to-end search, resume, and trials on both nodes of a 2-node local cluster."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from igcnas.data import DataBundle, load_data
from igcnas.search import SearchConfig, load_study, run_search

SMALL_SPACE = Path(__file__).with_name("fixtures") / "small_igc.yaml"

pytest.importorskip("ray")
pytestmark = pytest.mark.xdist_group("ray")  # one pytest-xdist worker runs every Ray test


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_data("digits", train_subset=300, seed=0)


def _config(tmp_path: Path, **changes: object) -> SearchConfig:
    base: dict[str, object] = {
        # the small test space: most of its candidates fit 30k params (on Ray every over-budget candidate is a
        # Tune trial of its own, about a second each)
        "space": str(SMALL_SPACE), "backend": "ray", "trials": 3, "epochs": 2,
        "max_params": 30_000, "trials_dir": str(tmp_path / "trials"), "device": "cpu", "progress": False,
        "train_subset": 300,
    }
    return SearchConfig(**{**base, **changes})  # type: ignore[arg-type]


def pd_na() -> object:
    import pandas as pd

    return pd.NA


def _sample(trial: object) -> dict[str, object]:
    return {}


def _write(ctx: object, number: int, state: str, **fields: object) -> None:
    from igcnas.store import TrialRecord

    ctx.store.write_record(TrialRecord(trial=number, state=state, max_epochs=3, backend="ray", **fields))  # type: ignore[arg-type, attr-defined]


def test_finalise_tells_trials_tune_stopped_before_their_report(tmp_path: Path) -> None:
    """Reaching --trials stops the trials still out without telling the searcher, also ones that had already written
    their trial.json (an infeasible candidate is decided in a fraction of a second): the end of the run tells them
    as their trial.json says, with the constraints, never leaving an infeasible row without one."""
    import optuna

    from igcnas.search._progress import Progress
    from igcnas.search.ray_backend import _finalise, _Monitor
    from igcnas.search.runner import TrialContext
    from igcnas.store import StudyStore

    config = _config(tmp_path, epochs=3)
    ctx = TrialContext(config, None, StudyStore(config.trials_dir, "s"))
    study = optuna.create_study(directions=["maximize", "minimize"])
    for _ in range(5):
        study.ask()
    _write(ctx, 0, "infeasible", params=40_000, flops=900_000, spec_id="a")
    _write(ctx, 1, "complete", params=20_000, flops=500_000, accuracy=0.5, epochs=3, spec_id="b")
    _write(ctx, 2, "pruned", params=25_000, flops=600_000, accuracy=0.3, epochs=1, spec_id="c")
    _write(ctx, 3, "failed", reason="invalid architecture")  # never counted: no constraint to know
    monitor = _Monitor(config, ctx, Progress(config.replace(progress=False), "s"), config.objective_columns())
    _finalise([], ctx, monitor, study)  # trial 4: asked, never started
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED", "FAIL", "FAIL"]
    assert trials[0].constraints["max_params"] == 10_000 and trials[0].values == [0.0, 40_000]
    assert trials[1].constraints["max_params"] == -10_000 and trials[1].values == [0.5, 20_000]
    assert trials[2].constraints["max_params"] == -5_000 and trials[2].user_attrs["epochs"] == 1
    assert trials[0].user_attrs["state"] == "infeasible"


def test_a_killed_runs_trial_that_finished_untold_keeps_its_result_on_resume(tmp_path: Path) -> None:
    """The killed driver may have finished a trial (its trial.json says complete) and died before telling the
    study, in a trial the resumed experiment's snapshot does not hold: the resume tells it as recorded. It used to
    fail it, rewrite its trial.json as failed and queue a retry: a completed trial lost (seen once under the
    parallel suite's load in the Ray kill test)."""
    import optuna
    from optuna.trial import TrialState

    from igcnas.search.ray_backend import _retry_orphans
    from igcnas.search.runner import TrialContext
    from igcnas.store import StudyStore

    config = _config(tmp_path, epochs=3)
    ctx = TrialContext(config, None, StudyStore(config.trials_dir, "s"))
    study = optuna.create_study(directions=["maximize", "minimize"])
    for _ in range(2):
        study.ask({"x": optuna.distributions.IntDistribution(0, 9)})
    _write(ctx, 0, "complete", params=20_000, flops=500_000, accuracy=0.5, epochs=3, spec_id="b")
    _write(ctx, 1, "running", params=20_000, flops=500_000, accuracy=0.2, epochs=1, spec_id="c")
    _retry_orphans(ctx, study, set(), before=2)
    trials = study.get_trials()
    assert [t.state for t in trials[:2]] == [TrialState.COMPLETE, TrialState.FAIL]
    assert trials[0].values == [0.5, 20_000] and ctx.store.record(0).state == "complete"  # type: ignore[union-attr]
    assert ctx.store.record(1).state == "failed"  # type: ignore[union-attr]
    assert [t.user_attrs.get("retry_of") for t in trials[2:]] == [1]  # only the unfinished one is retried


def test_reaching_trials_stops_only_once_no_retry_of_a_killed_trial_is_queued_or_training(tmp_path: Path) -> None:
    """A retry queued for a killed run's trial is trained before the run stops (as the Optuna backend does): never
    left WAITING, which the trials table would show as running, and never cut short once started."""
    import optuna
    from optuna.trial import TrialState

    from igcnas.search._progress import Progress
    from igcnas.search.ray_backend import _Monitor, _retries_out
    from igcnas.search.runner import TrialContext
    from igcnas.store import StudyStore

    config = _config(tmp_path, epochs=3)
    ctx = TrialContext(config, None, StudyStore(config.trials_dir, "s"))
    study = optuna.create_study()
    study.tell(study.ask(), 1.0)
    monitor = _Monitor(config, ctx, Progress(config.replace(progress=False), "s"), config.objective_columns())
    monitor.retries_out = lambda: _retries_out(study)
    assert not monitor.stop_all()  # --trials not reached
    monitor.reached = True
    assert monitor.stop_all()
    study.enqueue_trial({}, user_attrs={"retry_of": 0})
    monitor._checked = (0.0, False)  # forget the answer cached for a second
    assert _retries_out(study) and not monitor.stop_all()  # queued
    retry = study.ask()
    monitor._checked = (0.0, False)
    assert retry.user_attrs["retry_of"] == 0 and not monitor.stop_all()  # training
    study.tell(retry, state=TrialState.PRUNED)
    monitor._checked = (0.0, False)
    assert not _retries_out(study) and monitor.stop_all()


def test_a_trial_that_ended_before_tunes_snapshot_is_reported_not_trained_again_nor_counted(tmp_path: Path) -> None:
    """Tuner.restore starts again every trial its last snapshot held as running, also one the killed run went on
    to finish: the trainable reports that trial's end from its trial.json instead of training it again, and the
    resumed run does not count it among its own --trials."""
    from types import SimpleNamespace

    from igcnas.search._progress import Progress
    from igcnas.search._ray_worker import METRIC, ended_before
    from igcnas.search.ray_backend import _Monitor
    from igcnas.search.runner import TrialContext
    from igcnas.store import StudyStore

    config = _config(tmp_path, epochs=3)
    ctx = TrialContext(config, None, StudyStore(config.trials_dir, "s"))
    _write(ctx, 0, "complete", params=20_000, flops=500_000, accuracy=0.5, epochs=3, spec_id="b")
    _write(ctx, 1, "infeasible", params=40_000, flops=900_000, spec_id="a")
    _write(ctx, 2, "running", params=20_000, flops=500_000, accuracy=0.4, epochs=1, spec_id="c")
    _write(ctx, 3, "screened", params=20_000, flops=500_000, spec_id="d")
    ended = ended_before(ctx, 0)
    assert ended is not None and ended["state"] == "complete" and ended[METRIC] == 0.5 and ended["epoch"] == 3
    assert ended["constraint_max_params"] == -10_000
    assert ended_before(ctx, 1)["state"] == "infeasible"  # type: ignore[index]
    assert ended_before(ctx, 2) is None and ended_before(ctx, 3) is None and ended_before(ctx, 4) is None

    monitor = _Monitor(config, ctx, Progress(config.replace(progress=False), "s"), config.objective_columns())
    monitor.ended_earlier = {0}
    _write(ctx, 5, "complete", params=20_000, flops=500_000, accuracy=0.6, epochs=3, spec_id="e")
    for number in (0, 5):
        monitor._finished(SimpleNamespace(trial_id=f"t{number}", config={"trial_number": number}, last_result={}),
                          [], error=None)
    assert monitor.trained == 1


def test_searcher_tells_a_trial_without_a_report_from_its_trial_json(tmp_path: Path) -> None:
    """A worker that dies after deciding its trial sends no result: the searcher reads the trial's trial.json."""
    import optuna

    from igcnas.search._ray_tune import FidelityAwareOptunaSearch
    from igcnas.search.runner import TrialContext
    from igcnas.store import StudyStore

    config = _config(tmp_path, epochs=3)
    ctx = TrialContext(config, None, StudyStore(config.trials_dir, "s"))
    searcher = FidelityAwareOptunaSearch(_sample, metric=["val_acc", "params"], mode=["max", "min"],
                                         storage=optuna.storages.InMemoryStorage(), study_name="s", max_fidelity=3,
                                         ctx=ctx)
    for trial_id in ("a", "b"):
        searcher.suggest(trial_id)
    _write(ctx, searcher._ot_trials["a"].number, "infeasible", params=31_000, flops=900_000)
    searcher.on_trial_complete("a", error=True)
    searcher.on_trial_complete("b", error=True)  # no trial.json: it failed
    study = searcher._ot_study
    assert study is not None
    first, second = study.get_trials()
    assert first.state.name == "COMPLETE" and first.constraints["max_params"] == 1_000
    assert second.state.name == "FAIL" and second.constraints == {}


@pytest.mark.slow
def test_ray_two_node_cluster_places_trials_on_both_nodes(tmp_path: Path, digits: DataBundle) -> None:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        config = _config(tmp_path, trials=4, epochs=2, max_params=None, pruner="none",
                         address=cluster.address, cpus_per_trial=1.0)
        name = run_search(config, data=digits)
        assert not ray.is_initialized()  # run_search connected and disconnected
        rows = [json.loads(p.read_text()) for p in (Path(config.trials_dir) / name).glob("*/trial.json")]
        nodes = {r["node"] for r in rows if r["state"] != "infeasible"}
        assert len(nodes) == 2, f"trials ran on {nodes}"
        assert all(len(n) > 8 for n in nodes)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="class")
def local_ray() -> Iterator[None]:
    """One local Ray for the tests of a class: ``run_search`` uses a Ray it finds started (and leaves it)."""
    import ray

    ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.usefixtures("local_ray")
class TestOnALocalRay:
    """Searches on a local Ray started once for the class (each start costs seconds)."""

    @pytest.mark.slow
    def test_ray_search_end_to_end_same_trial_format(self, tmp_path: Path, digits: DataBundle) -> None:
        config = _config(tmp_path, epochs=3, pruner="sha")  # ASHA
        name = run_search(config, data=digits)
        frame = load_study(name, trials_dir=config.trials_dir)
        assert set(frame.backend) == {"ray"}
        assert not (frame.state == "running").any()
        trained = frame[frame.state.isin(["complete", "pruned", "failed"]) & frame.reused_from.isna()]
        assert len(trained) >= 3
        assert (frame[frame.state == "infeasible"].params > 30_000).all()
        folder = Path(config.trials_dir) / name
        for row in frame.itertuples():
            trial_dir = folder / f"{row.trial:04d}"
            assert (trial_dir / "trial.json").is_file() and (trial_dir / "arch.json").is_file()
            if row.state == "infeasible":
                assert not (trial_dir / "metrics.json").exists()  # decided before any training
            if row.state == "complete" and row.reused_from is pd_na():
                assert row.epochs == 3 and (trial_dir / "weights.safetensors").is_file()
            if row.state == "pruned":  # ASHA-stopped or cut at the end: partial fidelity, kept off the front
                assert row.epochs < 3
            assert row.node  # the Ray node that ran it
        from igcnas.analysis import pareto_front

        front = pareto_front(frame)
        assert len(front) >= 1 and (front.epochs == 3).all() and (front.state == "complete").all()
        # the Optuna study behind OptunaSearch saw the same trials: partial ones are not COMPLETE there
        import optuna

        study = optuna.load_study(study_name=name, storage=f"sqlite:///{Path(config.trials_dir) / 'igcnas.db'}")
        states = {t.number: t.state.name for t in study.trials}
        for row in frame.itertuples():
            if row.state == "pruned":
                assert states[row.trial] == "PRUNED"
            if row.state == "infeasible":
                assert study.trials[row.trial].constraints["max_params"] > 0
        # a second run resumes the study: more trials, same numbering
        run_search(config.replace(trials=1), data=digits)
        import ray

        assert ray.is_initialized()  # a Ray that was running before the search is left running
        again = load_study(name, trials_dir=config.trials_dir)
        assert len(again) > len(frame) and set(frame.trial) < set(again.trial)

    @pytest.mark.slow
    def test_storage_path_keeps_tunes_experiment_elsewhere(self, tmp_path: Path, digits: DataBundle) -> None:
        """--storage-path: Tune's experiment state goes to <path>/<study>/run-NNN; the trials stay in --trials-dir."""
        config = _config(tmp_path, trials=1, epochs=1, pruner="none", storage_path=str(tmp_path / "tune-state"))
        name = run_search(config, data=digits)
        runs = tmp_path / "tune-state" / name
        assert (runs / "run-000" / "igcnas-run-finished").is_file()
        assert not (Path(config.trials_dir) / name / "ray").exists()
        frame = load_study(name, trials_dir=config.trials_dir)
        assert (frame.state == "complete").sum() >= 1
        run_search(config, data=digits)  # a second run: a new experiment beside the finished one
        assert (runs / "run-001" / "igcnas-run-finished").is_file()
