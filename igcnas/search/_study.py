"""The search's study in an Optuna storage, as both backends open it: created with its directions, settings and
objective names, or reused after checking its settings (:func:`open_search_study`)."""

from __future__ import annotations

import time
from typing import Any

from igcnas.errors import UserError
from igcnas.search._storage import ARTIFACTS_ATTR
from igcnas.search.config import SearchConfig, compare_settings, fingerprint

__all__ = ["directions", "name_objectives", "open_search_study", "record_artifacts"]


def name_objectives(study: Any, names: list[str]) -> None:
    """Name the study's objectives (``study.set_metric_names``: optuna-dashboard's objective names), unless set."""
    if study.metric_names is None:
        study.set_metric_names(names)


def directions(config: SearchConfig) -> list[Any]:
    """Optuna directions of the objectives."""
    return ["maximize" if d == "max" else "minimize" for _, d in config.objective_columns()]


def open_search_study(config: SearchConfig, storage: Any, name: str, settings: dict[str, Any], where: str) -> Any:
    """The search's study in ``storage``: created (directions, settings, objective names, artifact store), or
    reused after checking that its stored settings are this search's (a one-line UserError naming what differs)."""
    import optuna

    try:
        existing = optuna.study.get_all_study_names(storage)
    except Exception as error:  # noqa: BLE001
        raise UserError(f"--storage: cannot read {where} ({type(error).__name__}: {str(error)[:200]})") from None
    if name in existing:
        study = optuna.load_study(study_name=name, storage=storage)
        stored = study.user_attrs.get("igcnas_settings")
        for _ in range(20):  # another worker may have created the study a moment ago and not yet tagged it
            if stored is not None or study.get_trials(deepcopy=False):
                break
            time.sleep(0.25)
            stored = study.user_attrs.get("igcnas_settings")
        if stored is None:
            raise UserError(f"study {name!r} in {where} was not created by igcnas search; give another --study name")
        compare_settings(name, where, stored, settings)
        name_objectives(study, [col for col, _ in config.objective_columns()])  # a study of an older igcnas
        record_artifacts(study, config)
        return study
    try:
        study = optuna.create_study(study_name=name, storage=storage, directions=directions(config))
    except optuna.exceptions.DuplicatedStudyError:  # another process created it just now
        return open_search_study(config, storage, name, settings, where)
    study.set_user_attr("igcnas_settings", settings)
    study.set_user_attr("igcnas_fingerprint", fingerprint(settings))
    name_objectives(study, [col for col, _ in config.objective_columns()])
    record_artifacts(study, config)
    return study


def record_artifacts(study: Any, config: SearchConfig) -> None:
    """Record the artifact store in the study, unless one is recorded already (the first worker's URI)."""
    if config.artifacts and study.user_attrs.get(ARTIFACTS_ATTR) is None:
        study.set_user_attr(ARTIFACTS_ATTR, config.artifacts)
