"""The trial store: the only code that names, writes and reads a study's folder (``trials/<study>/``).

* :mod:`igcnas.store._files`: the file names, the atomic writer and the JSON reader/writer.
* :mod:`igcnas.store._record`: :class:`TrialRecord` (one ``trial.json`` row), its states, and what "complete
  and fully trained" means.
* :mod:`igcnas.store._local`: :class:`StudyStore`, a study folder on a local or shared path.
* :mod:`igcnas.store._retrained`: the retrained comparison's runs inside a study folder (``igcnas retrain``).
* :mod:`igcnas.store._tabular`: the tabular benchmark's runs (``igcnas tabular build``).
* :mod:`igcnas.store._lock`: the lock that lets several processes share a list of runs.

Example:
    >>> import tempfile
    >>> store = StudyStore(tempfile.mkdtemp(), "demo")
    >>> store.write_record(TrialRecord(trial=1, state="complete", accuracy=0.8, epochs=2, max_epochs=2))
    >>> [fully_trained(row) for row in store.rows()]
    [True]
"""

from __future__ import annotations

from igcnas.store._files import (
    ARCH_FILE,
    CHECKPOINT_FILE,
    METRICS_FILE,
    STUDY_FILE,
    TRIAL_FILE,
    TRIAL_FILES,
    WEIGHTS_FILE,
    atomic_write,
    json_safe,
    read_json_file,
    trial_folder_name,
    write_json,
    write_json_if_changed,
)
from igcnas.store._local import StudyStore, list_study_names
from igcnas.store._lock import FileLock, RunLock
from igcnas.store._record import (
    SETTLED_STATES,
    TRAINED_STATES,
    TrialRecord,
    fully_trained,
    fully_trained_mask,
)
from igcnas.store._retrained import (
    RETRAINED_DIR,
    RetrainRun,
    read_retrained,
    read_runs,
    run_folder,
    write_run,
)
from igcnas.store._tabular import (
    TabularRun,
    read_plan,
    read_proxy_scores,
    read_tabular_run,
    tabular_folder,
    tabular_run_folder,
    write_plan,
    write_proxy_scores,
    write_tabular_run,
)

__all__ = [
    "ARCH_FILE",
    "CHECKPOINT_FILE",
    "METRICS_FILE",
    "STUDY_FILE",
    "TRIAL_FILE",
    "TRIAL_FILES",
    "WEIGHTS_FILE",
    "SETTLED_STATES",
    "TRAINED_STATES",
    "StudyStore",
    "RetrainRun",
    "RETRAINED_DIR",
    "read_retrained",
    "read_runs",
    "run_folder",
    "write_run",
    "TrialRecord",
    "atomic_write",
    "fully_trained",
    "fully_trained_mask",
    "json_safe",
    "list_study_names",
    "read_json_file",
    "trial_folder_name",
    "write_json",
    "write_json_if_changed",
    "RunLock",
    "FileLock",
    "TabularRun",
    "read_plan",
    "write_plan",
    "read_proxy_scores",
    "read_tabular_run",
    "tabular_folder",
    "tabular_run_folder",
    "write_proxy_scores",
    "write_tabular_run",
]
