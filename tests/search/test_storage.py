"""Opening ``--storage`` URLs: JournalStorage with igcnas's heartbeats, PostgreSQL drivers, one-line errors."""

from __future__ import annotations

import contextlib
import pickle
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


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_set_user_attrs_writes_every_key_and_an_rdb_commits_once(kind: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'j.log'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    trial = study.ask()
    commits = []
    backend = getattr(study._storage, "_backend", study._storage)
    if kind == "sqlite":
        from sqlalchemy import event

        event.listen(backend.engine, "commit", lambda conn: commits.append(1))
    attrs = {"spec_id": "abc", "params": 1234, "widths": [8, 16], "screen": {"k": 4}, "reason": None}
    _storage.set_user_attrs(trial, attrs)
    if kind == "sqlite":
        assert len(commits) == 1  # Trial.set_user_attr would commit 5 times
    assert trial.user_attrs == attrs  # the trial's own cache
    assert study.get_trials(deepcopy=False)[0].user_attrs == attrs  # the storage
    _storage.set_user_attrs(trial, {"params": 99})  # an update of one key keeps the others
    assert optuna.load_study(study_name="s", storage=url if kind == "sqlite" else open_storage(url)).trials[0] \
        .user_attrs == {**attrs, "params": 99}


def test_set_user_attrs_falls_back_to_one_call_per_key_when_optunas_private_api_differs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = _storage._rdb_session_writer

    def changed(backend: object) -> object:
        scope, write = found(backend)  # type: ignore[misc]

        def new_signature(session: object, trial_id: int, key: str, value: object, *, extra: object) -> None:
            write(session, trial_id, key, value)  # never reached: the call without 'extra' is a TypeError

        return scope, new_signature

    monkeypatch.setattr(_storage, "_rdb_session_writer", changed)
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}")
    trial = study.ask()
    _storage.set_user_attrs(trial, {"a": 1, "b": [2]})
    assert study.get_trials(deepcopy=False)[0].user_attrs == {"a": 1, "b": [2]} == trial.user_attrs


def test_set_user_attrs_on_a_finished_trial_fails_as_optuna_does(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}")
    trial = study.ask()
    study.tell(trial, 1.0)
    with pytest.raises(RuntimeError):
        _storage.set_user_attrs(trial, {"a": 1, "b": 2})
    assert study.trials[0].user_attrs == {}


def _journal_mode(path: Path) -> str:
    """The journal mode stored in a SQLite file."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as db:
        return str(db.execute("PRAGMA journal_mode").fetchone()[0])


def test_a_written_sqlite_database_uses_wal_and_normal_sync(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "s.db"
    storage = open_storage(f"sqlite:///{path}")
    optuna.create_study(study_name="s", storage=storage).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert _journal_mode(path) == "wal"
    with storage.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    copy = pickle.loads(pickle.dumps(storage))  # Ray ships the storage to its workers
    assert len(optuna.load_study(study_name="s", storage=copy).trials) == 2
    with copy.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1


def test_a_reader_leaves_the_journal_mode_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    optuna.create_study(study_name="s", storage=url)  # Optuna's own storage: rollback journal
    assert _journal_mode(path) == "delete"
    reader = open_storage(url, heartbeat=False, write=False)
    assert optuna.study.get_all_study_names(reader) == ["s"]
    assert _journal_mode(path) == "delete"
    with reader.engine.connect() as connection:  # NORMAL only under WAL: a rollback journal keeps full syncs
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2


def test_igcnas_sqlite_wal_0_keeps_the_rollback_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IGCNAS_SQLITE_WAL", "0")
    optuna.create_study(study_name="s", storage=open_storage(f"sqlite:///{tmp_path}/k.db"))
    assert _journal_mode(tmp_path / "k.db") == "delete"
    monkeypatch.setenv("IGCNAS_SQLITE_WAL", "yes")
    with pytest.raises(UserError, match=r"^IGCNAS_SQLITE_WAL='yes' must be 1"):
        open_storage(f"sqlite:///{tmp_path}/k.db")


def test_sqlite_path_takes_only_plain_file_urls(tmp_path: Path) -> None:
    assert _storage.sqlite_path(f"sqlite:///{tmp_path}/a.db") == str(tmp_path / "a.db")
    assert _storage.sqlite_path("sqlite:///rel/a.db") == str(Path("rel/a.db").absolute())
    assert _storage.sqlite_path("sqlite:///:memory:") is None and _storage.sqlite_path("sqlite://") is None
    assert _storage.sqlite_path("sqlite:///a.db?timeout=5") is None
    assert _storage.sqlite_file("sqlite:///a.db?timeout=5") == str(Path("a.db").absolute())
    assert _storage.sqlite_file(f"sqlite:///{tmp_path}/a%20b.db") == str(tmp_path / "a b.db")  # as SQLAlchemy reads it
    assert _storage.sqlite_path("postgresql://h/db") is None
