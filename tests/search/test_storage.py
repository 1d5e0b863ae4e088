"""Opening ``--storage`` URLs: JournalStorage with igcnas's heartbeats, PostgreSQL drivers, one-line errors."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from igcnas.errors import UserError
from igcnas.search import _storage
from igcnas.search._storage import HeartbeatJournalStorage, open_storage, storage_exists


def _journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grace: int = 1) -> HeartbeatJournalStorage:
    monkeypatch.setattr(_storage, "GRACE_PERIOD_S", grace)
    monkeypatch.setattr(_storage, "HEARTBEAT_INTERVAL_S", 1)
    storage = open_storage(f"journal:{tmp_path / 'j.log'}")
    assert isinstance(storage, HeartbeatJournalStorage)
    return storage


def test_a_journal_trial_without_beats_is_failed_and_retried_once(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    storage = _journal(tmp_path, monkeypatch)
    study = optuna.create_study(study_name="s", storage=storage)
    dead = study.ask({"x": optuna.distributions.IntDistribution(0, 9)})
    storage.record_heartbeat(dead._trial_id)
    alive = study.ask()
    time.sleep(1.3)
    storage.record_heartbeat(alive._trial_id)  # this one keeps beating
    optuna.storages.fail_stale_trials(study)
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert states[dead.number] == TrialState.FAIL and states[alive.number] == TrialState.RUNNING
    retries = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert len(retries) == 1 and retries[0].system_attrs["failed_trial"] == dead.number


def test_a_popped_retry_is_not_stale_for_its_origins_old_beat(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The retry copies the dead trial's system attrs (its last beat too): staleness counts from its own start."""
    storage = _journal(tmp_path, monkeypatch)
    study = optuna.create_study(study_name="s", storage=storage)
    dead = study.ask({"x": optuna.distributions.IntDistribution(0, 9)})
    storage.record_heartbeat(dead._trial_id)
    time.sleep(1.3)
    optuna.storages.fail_stale_trials(study)
    retry = study.ask()  # pops the WAITING retry
    assert study.get_trials(deepcopy=False)[retry.number].system_attrs["failed_trial"] == dead.number
    optuna.storages.fail_stale_trials(study)
    assert study.get_trials(deepcopy=False)[retry.number].state == TrialState.RUNNING


def test_a_retry_is_not_retried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = _journal(tmp_path, monkeypatch)
    study = optuna.create_study(study_name="s", storage=storage)
    study.ask({"x": optuna.distributions.IntDistribution(0, 9)})
    for _ in range(2):
        time.sleep(1.3)
        optuna.storages.fail_stale_trials(study)
        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            study.ask()
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.FAIL, TrialState.FAIL]


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_stale_trial_failed_by_two_workers_is_retried_once(kind: str, tmp_path: Path) -> None:
    """Two workers resuming one study can both fail its stale trial (a file database does not lock the row) and
    both call the retry callback: one retry is queued, not two."""
    url = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'j.log'}"
    first, second = open_storage(url), open_storage(url)
    study = optuna.create_study(study_name="s", storage=first)
    dead = study.ask({"x": optuna.distributions.IntDistribution(0, 9)})
    study.tell(dead, state=TrialState.FAIL)
    other = optuna.load_study(study_name="s", storage=second)
    for storage, view in ((first, study), (second, other)):
        storage.get_heartbeat_stale_trial_callback()(view, view.get_trials(deepcopy=False)[dead.number])
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[1].system_attrs["failed_trial"] == dead.number
    lock = tmp_path / ("s.db.retry-lock" if kind == "sqlite" else "j.log.retry-lock")
    assert lock.is_file()


def test_readers_do_not_create_storages(tmp_path: Path) -> None:
    assert not storage_exists(f"journal:{tmp_path / 'none.log'}")
    assert not storage_exists(f"sqlite:///{tmp_path / 'none.db'}")
    assert storage_exists("postgresql://u@127.0.0.1/x")


def test_a_journal_path_that_is_a_folder_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="give the journal's log file"):
        open_storage(f"journal:{tmp_path}")


def test_postgresql_uses_psycopg3_when_psycopg2_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "psycopg2" else real(name, *a))
    if real("psycopg") is None:
        with pytest.raises(UserError, match=r"pip install 'igcnas\[postgres\]'"):
            _storage._postgres_driver("postgresql://u:pw@h/db")
    else:
        assert _storage._postgres_driver("postgresql://u:pw@h/db") == "postgresql+psycopg://u:pw@h/db"
    assert _storage._postgres_driver("postgresql+psycopg2://h/db") == "postgresql+psycopg2://h/db"


def test_an_unreachable_postgres_server_is_a_one_line_error_without_the_password() -> None:
    with pytest.raises(UserError) as info:
        open_storage("postgresql://me:secret@127.0.0.1:1/x")
    assert "secret" not in str(info.value) and "\n" not in str(info.value)


def test_the_postgres_fixture_serves_optuna(postgres: object) -> None:
    url = postgres.new_database("igcnas_smoke")  # type: ignore[attr-defined]
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    again = optuna.load_study(study_name="s", storage=open_storage(url, heartbeat=False))
    assert len(again.trials) == 3
