"""The Optuna backend: budgets (infeasible never trained), duplicates, pruning, failures, resume, load_study."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from igcnas.data import DataBundle
from igcnas.errors import UserError
from igcnas.search import SearchConfig, load_space, load_study, run_search

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits(digits400: DataBundle) -> DataBundle:
    return digits400


def _config(tmp_path: Path, **changes: Any) -> SearchConfig:
    base = {"space": str(REPO / "search_spaces/igc_cifar.yaml"), "trials": 4, "epochs": 2,
            "trials_dir": str(tmp_path / "trials"), "device": "cpu", "progress": False, "train_subset": 400}
    return SearchConfig(**{**base, **changes})


def test_infeasible_candidates_are_never_trained(tmp_path: Path, digits: DataBundle,
                                                 scripted_train: Any) -> None:
    fake = scripted_train()
    config = _config(tmp_path, trials=4, max_params=25_000, pruner="none", sampler="random")
    name = run_search(config, data=digits, train_fn=fake)
    frame = load_study(name, trials_dir=config.trials_dir)
    infeasible = frame[frame.state == "infeasible"]
    trained = frame[frame.state.isin(["complete", "pruned", "failed"]) & frame.reused_from.isna()]
    assert len(trained) == 4 == len(fake.calls)  # --trials counts trained trials only
    assert len(infeasible) >= 1, "a 25k budget on igc_cifar must meet over-budget candidates"
    trained_ids = {call["arch"] and _spec_id(call["arch"]) for call in fake.calls}
    for row in infeasible.itertuples():
        assert row.params > 25_000 and "budget 25k" in row.reason and "over" in row.reason
        assert row.spec_id not in trained_ids
        folder = Path(config.trials_dir) / name / f"{row.trial:04d}"
        assert sorted(p.name for p in folder.iterdir()) == ["arch.json", "trial.json"]
    assert (trained.params <= 25_000).all()
    # Optuna knows the constraint values, so the samplers can learn the boundary
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'trials' / 'igcnas.db'}")
    for t in study.trials:
        assert (t.constraints["max_params"] > 0) == (t.user_attrs["igcnas_state"] == "infeasible")


def _spec_id(arch: dict) -> str:
    from igcnas.arch.spec import ArchSpec

    return ArchSpec.from_dict(arch).id


def test_successive_halving_prunes_worse_trials(tmp_path: Path, digits: DataBundle,
                                                scripted_train: Any) -> None:
    fake = scripted_train(start=0.9)
    config = _config(tmp_path, trials=3, epochs=3, max_params=None, pruner="sha", sampler="random")
    name = run_search(config, data=digits, train_fn=fake)
    frame = load_study(name, trials_dir=config.trials_dir)
    trained = frame[frame.reused_from.isna()]
    assert list(trained.state) == ["complete", "pruned", "pruned"]
    assert list(trained.epochs) == [3, 1, 1]
    assert "pruned after epoch 1/3" in trained.reason.iloc[1]
    # partial trials never reach the front
    from igcnas.analysis import pareto_front

    assert set(pareto_front(frame).trial) <= set(frame[frame.state == "complete"].trial)


def test_failures_are_isolated_and_recorded(tmp_path: Path, digits: DataBundle, scripted_train: Any) -> None:
    fake = scripted_train(fail_on=1)
    config = _config(tmp_path, trials=3, max_params=None, pruner="none", sampler="random")
    name = run_search(config, data=digits, train_fn=fake)
    frame = load_study(name, trials_dir=config.trials_dir).set_index("trial")
    failed = frame[frame.state == "failed"]
    assert len(failed) == 1 and "RuntimeError: simulated crash inside training" in failed.reason.iloc[0]
    assert (frame.state == "complete").sum() == 2  # the study went on after the failure


def test_resume_adds_trials_and_refuses_other_settings(tmp_path: Path, digits: DataBundle,
                                                       scripted_train: Any) -> None:
    config = _config(tmp_path, trials=2, max_params=None, pruner="none")
    name = run_search(config, data=digits, train_fn=scripted_train())
    first = load_study(name, trials_dir=config.trials_dir)
    assert run_search(config, data=digits, train_fn=scripted_train()) == name
    second = load_study(name, trials_dir=config.trials_dir)
    assert len(second) >= len(first) + 2 and set(first.trial) < set(second.trial)
    study_json = json.loads((Path(config.trials_dir) / name / "study.json").read_text())
    assert study_json["epochs"] == 2 and study_json["study"] == name == "igc_cifar-digits-n400"
    with pytest.raises(UserError, match=r"different settings: epochs 2 \(stored\) vs 3 \(now\)"):
        run_search(config.replace(epochs=3), data=digits, train_fn=scripted_train())


def test_duplicates_reuse_the_recorded_result(tmp_path: Path, digits: DataBundle,
                                              scripted_train: Any, monkeypatch) -> None:
    fake = scripted_train()
    space = load_space(REPO / "search_spaces/igc_cifar.yaml")
    fixed = {"design": "DW+PW", "base_width": 8, "depth0": 1, "depth1": 1, "depth2": 1, "bn": "each",
             "relu": "none", "identity": True}
    monkeypatch.setattr(type(space), "define", lambda self, trial, fill_budget=False: {
        k: trial.suggest_categorical(k, [v]) for k, v in fixed.items()})
    config = _config(tmp_path, trials=2, max_params=None, pruner="none", max_attempts=3)
    name = run_search(config, space=space, data=digits, train_fn=fake)
    frame = load_study(name, trials_dir=config.trials_dir)
    assert len(fake.calls) == 1 and len(frame) == 3
    dups = frame[frame.reused_from.notna()]
    assert len(dups) == 2 and (dups.accuracy == frame.accuracy.iloc[0]).all()
    assert frame.spec_id.nunique() == 1


def test_budget_below_the_smallest_architecture(tmp_path: Path, digits: DataBundle,
                                                scripted_train: Any) -> None:
    with pytest.raises(UserError, match=r"smallest architecture .* has [\d,]+ params"):
        run_search(_config(tmp_path, max_params=500), data=digits, train_fn=scripted_train())


def test_fill_budget_widens_to_the_budget(tmp_path: Path, digits: DataBundle, scripted_train: Any) -> None:
    config = _config(tmp_path, trials=2, max_params=20_000, fill_budget=True, pruner="none")
    name = run_search(config, data=digits, train_fn=scripted_train())
    frame = load_study(name, trials_dir=config.trials_dir)
    done = frame[frame.state == "complete"]
    assert len(done) >= 2 and (done.params <= 20_000).all() and (done.params > 5_000).all()
    assert all("budget filling" in r for r in done.reason)


def test_load_study_is_exported_lazily(tmp_path: Path) -> None:
    import igcnas

    assert igcnas.load_study is load_study
    with pytest.raises(UserError, match="no folder"):
        load_study("missing", trials_dir=tmp_path)


def test_pareto_promotion_keeps_small_networks() -> None:
    from igcnas.search._fidelity import pareto_promote, rung_epochs

    assert rung_epochs(10) == (1, 3, 9) and rung_epochs(3) == (1,) and rung_epochs(1) == ()
    big = ("big", (-0.9, 50_000.0))
    small = ("small", (-0.8, 10_000.0))  # less accurate but smaller: not dominated
    worse = ("worse", (-0.7, 60_000.0))  # dominated by big
    assert pareto_promote([big], small)
    assert not pareto_promote([big, small], worse)
    # accuracy-only ranking would stop the small network
    assert not pareto_promote([("big", (-0.9,))], ("small", (-0.8,)))


def test_pareto_pruner_on_the_optuna_backend(tmp_path: Path, digits: DataBundle, scripted_train: Any) -> None:
    fake = scripted_train(start=0.9)
    config = _config(tmp_path, trials=4, epochs=3, max_params=None, pruner="pareto", sampler="random")
    name = run_search(config, data=digits, train_fn=fake)
    frame = load_study(name, trials_dir=config.trials_dir)
    trained = frame[frame.reused_from.isna()].reset_index(drop=True)
    assert trained.state.iloc[0] == "complete" and set(trained.state) <= {"complete", "pruned"}
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'trials' / 'igcnas.db'}")
    first = study.trials[int(trained.trial.iloc[0])]
    assert first.user_attrs["rung:1"]["values"][0] == pytest.approx(-0.9)
    # every trial later in the run is less accurate: it survives rung 1 only if it is smaller than all before it
    for row in trained.iloc[1:].itertuples():
        earlier = trained[trained.trial < row.trial]
        smaller = (row.params < earlier.params).all()
        assert (row.state == "complete") == bool(smaller), (row.trial, row.params, list(earlier.params))


def test_config_validation_and_url_redaction() -> None:
    from igcnas.search import redact_url

    assert redact_url("postgresql://nas:s3cret@db.example:5432/igcnas") == "postgresql://nas:***@db.example:5432/igcnas"
    assert redact_url("sqlite:///trials/igcnas.db") == "sqlite:///trials/igcnas.db"
    assert SearchConfig().study_name("igc_cifar") == "igc_cifar-digits"
    assert SearchConfig(objectives=("acc",)).sampler_name() == "tpe"
    assert SearchConfig().sampler_name() == "nsga2"
    with pytest.raises(UserError, match="--objectives: 'speed'"):
        SearchConfig(objectives=("acc", "speed"))
    with pytest.raises(UserError, match="--fill-budget needs a budget"):
        SearchConfig(fill_budget=True, max_params=None)
    with pytest.raises(UserError, match="--study"):
        SearchConfig(study="a/b")


def test_a_run_short_of_its_trials_warns_even_when_quiet(tmp_path: Path, digits: DataBundle,
                                                         scripted_train: Any,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    fake = scripted_train()
    config = _config(tmp_path, trials=5, max_attempts=2, max_params=None, pruner="none", sampler="random")
    assert not config.progress
    run_search(config, data=digits, train_fn=fake)
    err = capsys.readouterr().err
    assert len(fake.calls) == 2
    assert "warning: stopped after 2 sampled candidates with only 2 of 5 trained" in err


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_trial_whose_process_died_before_any_beat_is_failed_and_retried(kind: str, tmp_path: Path) -> None:
    """A trial created by a worker killed before the objective's first lines has no heartbeat, which Optuna's RDB
    check never finds stale; once a grace period and a beat have passed it is failed and retried. Trials an
    objective claimed, screening candidates and young trials are left alone."""
    import optuna
    from optuna.trial import TrialState

    from igcnas.search import optuna_backend as ob
    from igcnas.search._storage import open_storage

    url = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'j.log'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    unclaimed = study.ask()
    claimed = study.ask()
    claimed.set_user_attr(ob._RUN_ATTR, "some run")
    screening = study.ask()
    screening.set_user_attr(ob._STATE_ATTR, ob.SCREENING)
    ob._fail_unclaimed(study)  # young: nothing happens
    assert [t.state for t in study.get_trials(deepcopy=False)] == [TrialState.RUNNING] * 3
    later = time.time() + ob.GRACE_PERIOD_S + ob.HEARTBEAT_INTERVAL_S + 1
    ob._fail_unclaimed(study, now=later)
    ob._fail_unclaimed(study, now=later)  # a second process finding it too: still one retry
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING,
                                         TrialState.WAITING]
    assert trials[3].system_attrs["failed_trial"] == unclaimed.number
    # an objective's trial has a beat before its claim: a stale heartbeat finds it if its process dies
    ob._first_beat(study, claimed)
    if kind == "journal":
        from igcnas.search._storage import _BEAT

        assert _BEAT in study.get_trials(deepcopy=False)[claimed.number].system_attrs
    else:
        import contextlib
        import sqlite3

        with contextlib.closing(sqlite3.connect(tmp_path / "s.db")) as db:
            assert db.execute("select count(*) from trial_heartbeats").fetchone()[0] == 1
