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

from igcnas.errors import UserError
from igcnas.search.config import redact_url
from igcnas.store import STUDY_FILE, StudyStore, fully_trained_mask, list_study_names

__all__ = ["load_study", "list_studies", "study_info", "open_study", "StudyTrials"]


def study_info(name: str, *, trials_dir: str | Path = "trials") -> dict[str, Any]:
    """The settings in ``<trials_dir>/<name>/study.json`` (empty when there is none or it is unreadable)."""
    return StudyStore(trials_dir, name).settings()


def load_study(name: str, *, storage: str | None = None, trials_dir: str | Path = "trials") -> pd.DataFrame:
    """The trials table of a study (validated against :data:`igcnas.analysis.TRIAL_COLUMNS`), by trial number.

    Extra columns: ``node`` (the Ray node that ran the trial), ``reused_from`` (a duplicate architecture: the
    trial whose recorded result it reused instead of training) and ``sampled`` (the sampled parameters, JSON).
    Unreadable trial.json files are skipped (a search may be writing them).

    Example:
        >>> frame = load_study("igc_cifar-digits")  # doctest: +SKIP
        >>> frame[frame.state == "complete"][["trial", "accuracy", "params"]]  # doctest: +SKIP
    """
    from igcnas.analysis.trials_dir import rows_frame

    store = StudyStore(trials_dir, name)
    info = store.settings()
    if not store.exists() and storage is None:
        known = list_study_names(trials_dir)
        raise UserError(
            f"study {name!r}: no folder {store.folder}; known studies in {trials_dir}: {', '.join(known) or 'none'} "
            "(see 'igcnas studies')"
        )
    rows = store.rows()
    url = storage or (info.get("storage") if info.get("backend") == "optuna" else None)
    if url and "***" not in url:
        rows = _merge_optuna(name, url, rows, info, required=not store.exists())
    return rows_frame(((store.trial_dir(int(r["trial"])), r) for r in rows), study=name)


def _merge_optuna(name: str, url: str, rows: list[dict[str, Any]], info: dict[str, Any], *,
                  required: bool = False) -> list[dict[str, Any]]:
    """Fill in what only the Optuna storage knows: trials without trial.json, killed (stale) trials.

    ``required``: there is no trial folder, so a storage that cannot be read or lacks the study is a UserError.
    """
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    where = redact_url(url)
    missing = (f"study {name!r} is neither a folder of --trials-dir nor in {where}; check the name "
               "(see 'igcnas studies --storage URL')")
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        if required:
            raise UserError(missing)
        return rows  # never create an empty database by reading
    try:
        study = optuna.load_study(study_name=name, storage=url)
        trials = study.get_trials(deepcopy=False)
    except KeyError:
        if required:
            raise UserError(missing) from None
        return rows
    except Exception as error:  # noqa: BLE001 - the folder is still a complete record
        if required:
            raise UserError(f"--storage: cannot read {where} ({type(error).__name__}); check the URL and that "
                            "the database server is reachable") from None
        return rows
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


def list_studies(*, trials_dir: str | Path = "trials", storage: str | None = None) -> list[dict[str, Any]]:
    """One summary per study in ``trials_dir`` (and in ``storage``): trial counts and best values.

    Example:
        >>> for row in list_studies():  # doctest: +SKIP
        ...     print(row["study"], row["complete"], row["best_accuracy"])
    """
    names = [n for n in list_study_names(trials_dir) if (Path(trials_dir) / n / STUDY_FILE).is_file()]
    if storage:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        try:
            stored = optuna.study.get_all_study_names(storage)
        except Exception as error:  # noqa: BLE001
            raise UserError(f"--storage: cannot read {redact_url(storage)} ({type(error).__name__})") from None
        names = sorted(set(names) | {n for n in stored if "::" not in n})
    out = []
    for name in names:
        info = study_info(name, trials_dir=trials_dir)
        frame = load_study(name, storage=storage, trials_dir=trials_dir)
        states = frame["state"].astype(str).value_counts().to_dict()
        full = frame[fully_trained_mask(frame)]
        out.append({
            "study": name,
            "backend": info.get("backend", "optuna"),
            "space": info.get("space", ""),
            "dataset": info.get("dataset", ""),
            "trials": len(frame),
            **{state: int(states.get(state, 0)) for state in ("complete", "pruned", "infeasible", "failed", "running")},
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


def open_study(name: str, *, storage: str | None = None, trials_dir: str | Path = "trials") -> StudyTrials:
    """A study's trials (:func:`load_study`), with its folder and settings (strictly read).

    Without a storage URL the study folder ``<trials_dir>/<name>`` must exist (else a UserError lists the known
    studies).

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
    frame = load_study(name, storage=storage, trials_dir=trials_dir)
    return StudyTrials(name=name, frame=frame, folder=store.folder, settings=store.settings(strict=True))
