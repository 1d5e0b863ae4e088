"""Reading studies back: one trials table per study, the same for both backends.

The trial store (``<trials_dir>/<study>/<trial>/trial.json``, :mod:`igcnas.store`) is the record; for Optuna
studies the storage adds what a killed process could not write (a trial whose heartbeat stopped is ``failed``,
not ``running``), and the rows of trials whose folder is elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from igcnas.analysis.schema import TRIAL_STATES
from igcnas.errors import UserError
from igcnas.search._baselines import baseline_numbers
from igcnas.search._storage import ARTIFACTS_ATTR, open_storage, storage_exists
from igcnas.search.config import redact_url
from igcnas.store import STUDY_FILE, StudyStore, fully_trained_mask, list_study_names

__all__ = ["load_study", "list_studies", "study_info", "open_study", "StudyTrials"]


def study_info(name: str, *, trials_dir: str | Path = "trials") -> dict[str, Any]:
    """The settings in ``<trials_dir>/<name>/study.json`` (empty when there is none or it is unreadable)."""
    return StudyStore(trials_dir, name).settings()


def load_study(name: str, *, storage: str | None = None, trials_dir: str | Path = "trials",
               artifacts: str | None = None, baselines: bool = False) -> pd.DataFrame:
    """The trials table of a study (validated against :data:`igcnas.analysis.TRIAL_COLUMNS`), by trial number.

    Extra columns: ``node`` (the Ray node that ran the trial), ``reused_from`` (a duplicate architecture: the
    trial whose recorded result it reused instead of training) and ``sampled`` (the sampled parameters, JSON).
    Unreadable trial.json files are skipped (a search may be writing them).

    ``artifacts``: the artifact store of the study's trial files (default: the one recorded in study.json or in
    the Optuna study); the files of every trial the storage knows are pulled from it into ``trials_dir`` first,
    so a machine that ran no trial reads the whole study.

    ``baselines``: add the rows of the study's baselines (the zoo networks trained with its schedule, column
    ``baseline`` names each; negative trial numbers). They are never part of the search's own rows.

    Example:
        >>> frame = load_study("igc_cifar-digits")  # doctest: +SKIP
        >>> frame[frame.state == "complete"][["trial", "accuracy", "params"]]  # doctest: +SKIP
    """
    from igcnas.analysis.trials_dir import rows_frame

    store, rows = _read_study(name, storage=storage, trials_dir=trials_dir, artifacts=artifacts)
    if baselines:
        rows = sorted(store.baseline_rows() + rows, key=lambda r: int(r["trial"]))
    return rows_frame(((store.trial_dir(int(r["trial"])), r) for r in rows), study=name)


def _read_study(name: str, *, storage: str | None, trials_dir: str | Path,
                artifacts: str | None) -> tuple[StudyStore, list[dict[str, Any]]]:
    """The study's store (with its artifact store, pulled) and its rows merged with the Optuna storage's."""
    store = StudyStore(trials_dir, name)
    info = store.settings()
    url = storage or (info.get("storage") if info.get("backend") == "optuna" else None)
    # a storage the user names must hold the study (else the folder's rows would pass for the storage's)
    required = storage is not None or not store.exists()
    stored = _optuna_study(name, url, required=required) if url and "***" not in url else None
    if stored is None and not store.exists():
        known = list_study_names(trials_dir)
        raise UserError(
            f"study {name!r}: no folder {store.folder}; known studies in {trials_dir}: {', '.join(known) or 'none'} "
            "(see 'igcnas studies')"
        )
    uri = artifacts or info.get("artifacts") or (stored[0].get(ARTIFACTS_ATTR) if stored is not None else None)
    if uri:
        store = StudyStore(trials_dir, name, artifacts=uri)
        numbers = ([t.number for t in stored[1]] + list(stored[2].values()) if stored is not None
                   else [int(r["trial"]) for r in store.rows(baselines=True) if "trial" in r])
        store.pull(numbers)
        info = store.settings()
    rows = store.rows()
    if stored is not None:
        rows = _merge_optuna(name, rows, stored[1], info)
    return store, rows


def _optuna_study(name: str, url: str, *, required: bool) -> tuple[dict[str, Any], list[Any], dict[str, int]] | None:
    """The Optuna study's user attrs, trials and baselines' record numbers, or None when the storage lacks it or
    cannot be read.

    ``required``: there is no trial folder, so a storage that cannot be read or lacks the study is a UserError.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    where = redact_url(url)
    missing = (f"study {name!r} is neither a folder of --trials-dir nor in {where}; check the name "
               "(see 'igcnas studies --storage URL')")
    if not storage_exists(url):
        if required:
            raise UserError(missing)
        return None  # never create an empty database by reading
    try:
        opened = open_storage(url, heartbeat=False, write=False)
        study = optuna.load_study(study_name=name, storage=opened)
        return dict(study.user_attrs), study.get_trials(deepcopy=False), baseline_numbers(opened, name)
    except KeyError:
        if required:
            raise UserError(missing) from None
        return None
    except UserError:
        if required:
            raise
        return None
    except Exception as error:  # noqa: BLE001 - the folder is still a complete record
        if required:
            raise UserError(f"--storage: cannot read {where} ({_why(error, url)}); check the URL and that "
                            "the database server is reachable") from None
        return None


def _why(error: Exception, url: str) -> str:
    """``<type>: <first line of the message>`` of a storage error, the URL's password hidden."""
    text = str(error).splitlines()[0].replace(url, redact_url(url)) if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _merge_optuna(name: str, rows: list[dict[str, Any]], trials: list[Any],
                  info: dict[str, Any]) -> list[dict[str, Any]]:
    """Fill in what only the Optuna storage knows: trials without trial.json, killed (stale) trials."""
    from optuna.trial import TrialState

    by_number = {int(r["trial"]): r for r in rows if "trial" in r}
    retried: dict[int, int] = {}
    for t in trials:
        origin = t.system_attrs.get("failed_trial")
        if origin is not None:
            retried[int(origin)] = t.number
    for t in trials:
        row = by_number.get(t.number)
        if row is None:
            state = {TrialState.RUNNING: "running", TrialState.WAITING: "running", TrialState.COMPLETE: "complete",
                     TrialState.PRUNED: "pruned"}.get(t.state, "failed")
            row = {"trial": t.number, "state": state, "accuracy": t.user_attrs.get("accuracy"),
                   "params": t.user_attrs.get("params"), "flops": t.user_attrs.get("flops"),
                   "epochs": t.user_attrs.get("epochs", 0), "max_epochs": info.get("epochs", 0),
                   "spec_id": t.user_attrs.get("spec_id", ""), "design": t.user_attrs.get("design", ""),
                   "widths": t.user_attrs.get("widths", ""), "depths": t.user_attrs.get("depths", ""),
                   "backend": "optuna", "study": name, "reason": t.user_attrs.get("reason", ""),
                   "sampled": dict(t.params)}
            rows.append(row)
            by_number[t.number] = row
        if row.get("state") == "running" and t.state == TrialState.FAIL:
            row["state"] = "failed"
            row["reason"] = "the process running it died (heartbeat stopped)"
        if t.number in retried and row.get("state") == "failed":
            row["reason"] = f"{row.get('reason', '')}; retried as trial {retried[t.number]}".lstrip("; ")
    return sorted(rows, key=lambda r: int(r["trial"]))


def list_studies(*, trials_dir: str | Path = "trials", storage: str | None = None,
                 artifacts: str | None = None) -> list[dict[str, Any]]:
    """One summary per study in ``trials_dir`` (and in ``storage``): trial counts and best values.

    Example:
        >>> for row in list_studies():  # doctest: +SKIP
        ...     print(row["study"], row["complete"], row["best_accuracy"])
    """
    names = [n for n in list_study_names(trials_dir) if (Path(trials_dir) / n / STUDY_FILE).is_file()]
    in_storage: set[str] = set()
    if storage:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        if not storage_exists(storage):
            raise UserError(f"--storage: {redact_url(storage)} does not exist; check the path")
        try:
            stored = optuna.study.get_all_study_names(open_storage(storage, heartbeat=False, write=False))
        except UserError:
            raise
        except Exception as error:  # noqa: BLE001
            raise UserError(f"--storage: cannot read {redact_url(storage)} ({_why(error, storage)})") from None
        in_storage = {n for n in stored if "::" not in n}
        names = sorted(set(names) | in_storage)
    out = []
    for name in names:
        # a study of the folder only is read as without --storage (its own settings name its storage)
        frame = load_study(name, storage=storage if storage and name in in_storage else None,
                           trials_dir=trials_dir, artifacts=artifacts)
        info = study_info(name, trials_dir=trials_dir)
        states = frame["state"].astype(str).value_counts().to_dict()
        full = frame[fully_trained_mask(frame)]
        out.append({
            "study": name,
            "backend": info.get("backend", "optuna"),
            "space": info.get("space", ""),
            "dataset": info.get("dataset", ""),
            "trials": len(frame),
            **{state: int(states.get(state, 0)) for state in TRIAL_STATES},
            "best_accuracy": float(full["accuracy"].max()) if len(full) else None,
            "min_params": int(full["params"].min()) if len(full) else None,
            "min_flops": int(full["flops"].min()) if len(full) else None,
        })
    return out


@dataclass(frozen=True)
class StudyTrials:
    """A study's trials frame, its folder under the trials directory and its search settings."""

    name: str
    frame: pd.DataFrame = field(repr=False)
    folder: Path
    settings: dict[str, Any] = field(default_factory=dict)


def open_study(name: str, *, storage: str | None = None, trials_dir: str | Path = "trials",
               artifacts: str | None = None, baselines: bool = False) -> StudyTrials:
    """A study's trials (:func:`load_study`), with its folder and settings (strictly read).

    Without a storage URL the study folder ``<trials_dir>/<name>`` must exist (else a UserError lists the known
    studies). With one, and an artifact store (``artifacts``, or the one recorded in the Optuna study), the folder
    is filled from the artifact store first (see :func:`load_study`).

    Example:
        >>> open_study("nope", trials_dir="/nonexistent/trials")
        Traceback (most recent call last):
        ...
        igcnas.errors.UserError: --study: no study 'nope' in '/nonexistent/trials' (no study found under '/nonexistent/trials'); check the name, pass --trials-dir, or run 'igcnas search --study NAME' first
    """
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"--study: {name!r} is not a study name (e.g. --study cifar-search)")
    store = StudyStore(trials_dir, name)
    if storage is None and not store.exists():
        known = list_study_names(trials_dir)
        listing = f"known studies: {', '.join(known)}" if known else f"no study found under {str(trials_dir)!r}"
        raise UserError(
            f"--study: no study {name!r} in {str(trials_dir)!r} ({listing}); "
            "check the name, pass --trials-dir, or run 'igcnas search --study NAME' first"
        )
    frame = load_study(name, storage=storage, trials_dir=trials_dir, artifacts=artifacts, baselines=baselines)
    return StudyTrials(name=name, frame=frame, folder=store.folder, settings=store.settings(strict=True))
