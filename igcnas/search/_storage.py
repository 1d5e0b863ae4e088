"""Opening the Optuna storage a ``--storage`` URL names: an RDB URL, or ``journal:PATH`` (JournalStorage).

* ``sqlite:///PATH`` (the default, ``<trials-dir>/igcnas.db``), ``postgresql://...``, ``mysql+pymysql://...``:
  :class:`optuna.storages.RDBStorage`. A plain ``postgresql://`` URL uses psycopg 3 when psycopg2 is not
  installed (``pip install 'igcnas[postgres]'``).
* ``journal:PATH``: :class:`optuna.storages.JournalStorage` on a log file (``JournalFileBackend``), Optuna's
  storage for a shared filesystem (NFS) without a database server.

A SQLite database a search writes is switched to write-ahead logging (``journal_mode=WAL``, kept in the file)
and every connection to it runs with ``synchronous=NORMAL``: a commit appends to the log without a disk sync, and
readers do not block the writer. A process killed mid-write loses nothing that was committed; only a power cut
or an OS crash can lose the last commits, never the database's consistency. WAL needs the database on a local
disk (SQLite's shared memory does not work over NFS): for several machines use PostgreSQL or ``journal:``, and
``IGCNAS_SQLITE_WAL=0`` keeps SQLite's rollback journal (with full syncs) where the file must stay on one. A
reader (``write=False``) leaves the file's journal mode as it is.

Every storage gets heartbeats: a trial whose process stops beating for :data:`GRACE_PERIOD_S` is failed and its
parameters are retried once (``RetryHeartbeatStaleTrialCallback``). RDBStorage has them built in; JournalStorage
has none, so :class:`HeartbeatJournalStorage` records a wall-clock beat as a trial system attribute (the workers'
clocks must agree to within the grace period, as NTP keeps them).

Example:
    >>> import tempfile
    >>> storage = open_storage(f"journal:{tempfile.mkdtemp()}/study.log")
    >>> type(storage).__name__, storage.get_heartbeat_interval() == HEARTBEAT_INTERVAL_S
    ('HeartbeatJournalStorage', True)
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from optuna.storages import JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat

from igcnas.errors import UserError
from igcnas.search.config import redact_url

__all__ = ["open_storage", "storage_exists", "set_user_attrs", "sqlite_path", "sqlite_file", "sqlite_connect",
           "HeartbeatJournalStorage", "RetryOnce", "HEARTBEAT_INTERVAL_S", "GRACE_PERIOD_S", "JOURNAL_PREFIX",
           "ARTIFACTS_ATTR", "SQLITE_TIMEOUT_S"]

JOURNAL_PREFIX = "journal:"
"""``--storage journal:PATH``: a JournalStorage log file."""
ARTIFACTS_ATTR = "igcnas_artifacts"
"""Study user attr: the ``--artifacts`` URI the study's trial files go to (readers on other machines use it)."""
_BEAT = "igcnas:heartbeat"
"""Trial system attr of :class:`HeartbeatJournalStorage`: the wall-clock time of the last beat."""


def _env_seconds(name: str, default: int) -> int:
    """A whole number of seconds >= 1 from the environment variable ``name``."""
    text = os.environ.get(name, str(default))
    if not text.strip().isdigit() or int(text) < 1:
        raise UserError(f"{name}: {text!r} must be a whole number of seconds >= 1 (e.g. {name}={default})")
    return int(text)


HEARTBEAT_INTERVAL_S = _env_seconds("IGCNAS_HEARTBEAT_S", 5)
"""Seconds between heartbeats of a running trial (environment: IGCNAS_HEARTBEAT_S)."""
GRACE_PERIOD_S = _env_seconds("IGCNAS_HEARTBEAT_GRACE_S", 20)
"""A trial without heartbeat for this long belongs to a dead process: it is failed and retried once."""


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """JournalStorage with Optuna's heartbeat protocol: beats are trial system attrs holding ``time.time()``.

    A RUNNING trial is stale when its last beat and its start are both older than the grace period;
    :func:`optuna.storages.fail_stale_trials` then fails it and calls the retry callback, as with RDBStorage.
    """

    def __init__(self, backend: Any, *, heartbeat_interval: int, grace_period: int,
                 stale_trial_callback: Callable[..., None] | None) -> None:
        super().__init__(backend)
        self._interval = heartbeat_interval
        self._grace = grace_period
        self._callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        import optuna

        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # finished between two beats
            self.set_trial_system_attr(trial_id, _BEAT, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        from optuna.trial import TrialState

        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            # a retried trial inherits its dead origin's system attrs, old beat included: count from its start
            marks = [float(trial.system_attrs.get(_BEAT, 0.0))]
            if trial.datetime_start is not None:
                marks.append(trial.datetime_start.timestamp())
            if now - max(marks) > self._grace:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[..., None] | None:
        return self._callback


class RetryOnce:
    """Optuna's retry of a heartbeat-stale trial (a WAITING copy), queued once per trial however many processes fail it.

    Workers that resume a study together each find its stale trials and fail them; SQLite and journal files do not
    lock the row, so each would queue a retry (PostgreSQL does: the second fail raises). Under a file lock beside the
    database, a retry is queued only when the study holds none of that trial yet.

    Example:
        >>> import optuna
        >>> study = optuna.create_study()
        >>> stale = study.ask(); _ = study.tell(stale, state=optuna.trial.TrialState.FAIL)
        >>> retry = RetryOnce(None)
        >>> retry(study, study.trials[0]); retry(study, study.trials[0])
        >>> [t.state.name for t in study.trials]
        ['FAIL', 'WAITING']
    """

    def __init__(self, lock_path: str | Path | None) -> None:
        import optuna

        from igcnas.store import FileLock

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
        self._lock = FileLock(lock_path)

    def __call__(self, study: Any, trial: Any) -> None:
        with self._lock:
            for other in study.get_trials(deepcopy=False):
                history = other.system_attrs.get("retry_history") or []
                if history and history[-1] == trial.number:
                    return  # another process queued its retry first
            self._retry(study, trial)


def _retry_lock_path(url: str) -> Path | None:
    """The lock file beside a SQLite database or journal file (None for a server database, which locks rows)."""
    sqlite = sqlite_file(url)
    if sqlite is not None:
        path = Path(sqlite)
    elif url.startswith(JOURNAL_PREFIX):
        path = Path(url[len(JOURNAL_PREFIX):]).expanduser()
    else:
        return None
    return path.with_name(path.name + ".retry-lock")


def storage_exists(url: str) -> bool:
    """False for a SQLite database or journal file that does not exist yet (a reader must not create it)."""
    sqlite = sqlite_file(url)
    if sqlite is not None:
        return Path(sqlite).is_file()
    if url.startswith(JOURNAL_PREFIX):
        return Path(url[len(JOURNAL_PREFIX):]).expanduser().is_file()
    return True


SQLITE_TIMEOUT_S = 60
"""Seconds a SQLite connection waits for another worker's write lock before it fails."""


def sqlite_file(url: str) -> str | None:
    """The database file of a ``sqlite:///PATH[?options]`` URL (absolute, percent-decoded as SQLAlchemy reads it),
    or None (another storage, in-memory, a ``file:`` URI)."""
    if not url.startswith("sqlite:///"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return str(Path(database).absolute())


def sqlite_path(url: str) -> str | None:
    """:func:`sqlite_file` of a URL without options (igcnas connects to it itself), else None (SQLAlchemy does)."""
    return None if "?" in url else sqlite_file(url)


def _wal_wanted() -> bool:
    """``IGCNAS_SQLITE_WAL``: 1 (default) puts a written SQLite database in WAL mode; 0 keeps its journal mode."""
    text = os.environ.get("IGCNAS_SQLITE_WAL", "1").strip()
    if text not in ("0", "1"):
        raise UserError(f"IGCNAS_SQLITE_WAL={text!r} must be 1 (write-ahead log, the default) or 0 (keep SQLite's "
                        "rollback journal, e.g. on a network filesystem)")
    return text == "1"


def sqlite_connect(path: str) -> sqlite3.Connection:
    """A DB-API connection to ``path`` with igcnas's settings: the busy timeout, and ``synchronous=NORMAL`` when
    the file is in WAL mode (in rollback-journal mode NORMAL could corrupt it on a power cut; FULL is kept)."""
    connection = sqlite3.connect(path, timeout=SQLITE_TIMEOUT_S, check_same_thread=False)
    mode = connection.execute("PRAGMA journal_mode").fetchone()
    if mode is not None and str(mode[0]).lower() == "wal":
        connection.execute("PRAGMA synchronous=NORMAL")
    return connection


def _use_wal(path: str) -> None:
    """Switch the database file to write-ahead logging (a no-op when it already is; kept when it cannot be)."""
    with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(path, timeout=SQLITE_TIMEOUT_S)) as db:
        db.execute("PRAGMA journal_mode=WAL")


def _postgres_driver(url: str) -> str:
    """``postgresql://`` with psycopg 3 when psycopg2 is absent; a UserError when neither driver is installed."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql://{rest}"
    if importlib.util.find_spec("psycopg") is not None:
        return f"postgresql+psycopg://{rest}"
    raise UserError(f"--storage {redact_url(url)}: no PostgreSQL driver is installed; "
                    "pip install 'igcnas[postgres]' (psycopg 3)")


def open_storage(url: str, *, heartbeat: bool = True, retry: bool = True, write: bool = True) -> Any:
    """The Optuna storage of a ``--storage`` URL, with heartbeats and one retry of stale trials (``retry``).

    SQLite gets a generous busy timeout; when ``write`` (and ``IGCNAS_SQLITE_WAL`` is not 0), WAL, under which
    connections run ``synchronous=NORMAL`` (see the module docstring). The schema race of workers creating one new
    database is retried.
    """
    import optuna
    from optuna.storages import RDBStorage

    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs = {"heartbeat_interval": HEARTBEAT_INTERVAL_S, "grace_period": GRACE_PERIOD_S}
    callback = RetryOnce(_retry_lock_path(url)) if heartbeat and retry else None
    if url.startswith(JOURNAL_PREFIX):
        return _open_journal(url, heartbeat=heartbeat, callback=callback)
    url = _postgres_driver(url)
    engine_kwargs: dict[str, Any] = {}
    path = sqlite_path(url)
    if path is not None:
        if write:
            wal = _wal_wanted()
            with contextlib.suppress(OSError):  # an unwritable place: opening the storage below says so, one line
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                if wal:
                    _use_wal(path)
        engine_kwargs["creator"] = functools.partial(sqlite_connect, path)
    elif url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    if callback is not None:
        kwargs["heartbeat_stale_trial_callback"] = callback
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        except Exception as error:  # noqa: BLE001 - connection errors of any driver
            racing = "already exists" in str(error) or "UNIQUE constraint failed" in str(error)
            if racing and attempt < 4:
                time.sleep(0.5 * (attempt + 1))  # another worker is creating the schema of a new database
                continue
            raise UserError(f"--storage: cannot open {redact_url(url)} ({type(error).__name__}: "
                            f"{str(error).splitlines()[0][:200]})") from None
    raise AssertionError("unreachable")


def _open_journal(url: str, *, heartbeat: bool, callback: Any) -> Any:
    """A (heartbeat) JournalStorage on the log file of ``journal:PATH``."""
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

    path = Path(url[len(JOURNAL_PREFIX):]).expanduser()
    if not str(path) or path.is_dir():
        raise UserError(f"--storage {url}: give the journal's log file, e.g. journal:/shared/igcnas/studies.log")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # a worker killed while it holds the log's lock leaves the lock behind; Optuna breaks it after 30 s, during
        # which no worker can write a heartbeat, so every live trial would go stale: break it well within the grace
        lock = JournalFileSymlinkLock(str(path), grace_period=max(1, GRACE_PERIOD_S // 4))
        backend = JournalFileBackend(str(path), lock_obj=lock)
    except OSError as error:
        raise UserError(f"--storage {url}: cannot open the journal file ({error.strerror}); give a writable "
                        "path on the shared filesystem") from None
    if not heartbeat:
        return JournalStorage(backend)
    return HeartbeatJournalStorage(backend, heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=GRACE_PERIOD_S,
                                   stale_trial_callback=callback)


def set_user_attrs(trial: Any, attrs: dict[str, Any]) -> None:
    """Set the user attrs of a running ``optuna.Trial``: one transaction on an RDB storage, else one call each.

    ``Trial.set_user_attr`` commits once per key; a SQLite commit is a disk sync, and an over-budget candidate
    records a dozen keys. Through Optuna's RDB session the keys of one call share a commit. Any other storage, or
    an Optuna whose private session API differs, gets the public per-key calls: the same result, slower.
    """
    if not attrs:
        return
    if len(attrs) == 1 or not _set_in_one_transaction(trial, attrs):
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    trial._cached_frozen_trial.user_attrs.update(attrs)  # what Trial.set_user_attr does after its write


def _set_in_one_transaction(trial: Any, attrs: dict[str, Any]) -> bool:
    """Write ``attrs`` in one RDB transaction; False (nothing written) where this storage or Optuna cannot."""
    storage = trial.storage
    backend = getattr(storage, "_backend", storage)  # Study wraps an RDBStorage in _CachedStorage
    found = _rdb_session_writer(backend)
    if found is None or not hasattr(trial, "_cached_frozen_trial"):
        return False
    session_scope, write = found
    try:
        with session_scope() as session:
            for key, value in attrs.items():
                write(session, trial._trial_id, key, value)
    except (TypeError, AttributeError):  # another Optuna's private signature: nothing was committed
        backend.scoped_session().rollback()
        return False
    return True


def _rdb_session_writer(backend: Any) -> tuple[Callable[[], Any], Callable[..., None]] | None:
    """Optuna's RDB session scope and its uncommitted user-attr upsert ``write(session, trial_id, key, value)``."""
    try:
        from optuna.storages import RDBStorage
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:
        return None
    upsert = getattr(backend, "_set_trial_attr_without_commit", None)
    if not isinstance(backend, RDBStorage) or upsert is None:
        return None

    def write(session: Any, trial_id: int, key: str, value: Any) -> None:
        upsert(session, models.TrialUserAttributeModel, trial_id, key, value)

    return (lambda: _create_scoped_session(backend.scoped_session, True)), write
