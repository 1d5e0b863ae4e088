"""Export a searched architecture: arch.json, safetensors weights, TorchScript, ONNX and a model card.

An export folder holds:

==================== ============================================================================================
``arch.json``        the :class:`~igcnas.arch.ArchSpec` (rebuild with ``igcnas.nn.build``)
``weights.safetensors`` the state_dict (loads into ``build(spec, impl=...)`` for every impl)
``model.ts``         TorchScript (``torch.jit.load``), eval mode
``model.onnx``       ONNX opset 17, input ``input`` (N, C, H, W) with a dynamic batch axis, output ``logits``
``MODEL_CARD.md``    params, FLOPs, accuracy, dataset, search settings and how to load it
``export.json``      the same facts, machine-readable (read by ``igcnas evaluate``)
==================== ============================================================================================

The ONNX file is checked with onnxruntime on a random batch before the export is reported done: its outputs must
be allclose to PyTorch's. Models take inputs normalised like the training data (``(x / 255 - mean) / std`` per
channel, the dataset's ``eval_transform()``).

This module chooses and exports a trial of a study (:func:`select_trial`, :func:`export_row`,
:func:`export_trial`); the rest lives in private modules and is re-exported here: writing the folder
(:mod:`igcnas._artifacts`), the TorchScript/ONNX files and the ONNX check (:mod:`igcnas._onnx`), the model card
(:mod:`igcnas._model_card`) and reading an export back (:mod:`igcnas._exported`).

Example:
    >>> from igcnas import load_study, pareto_front
    >>> front = pareto_front(load_study("e2e", trials_dir="trials"))  # doctest: +SKIP
    >>> result = export_row(front.iloc[0], out_dir="exported/best")  # doctest: +SKIP
    >>> result = export_trial("e2e", "exported/best", trials_dir="trials")  # doctest: +SKIP
    >>> model = load_exported("exported/best")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from igcnas._artifacts import MANIFEST_FILE, MODEL_CARD_FILE, ExportResult, export_model
from igcnas._exported import evaluate_exported, load_exported, read_manifest, weights_file
from igcnas._onnx import ONNX_FILE, ONNX_OPSET, TORCHSCRIPT_FILE, check_onnx
from igcnas.analysis.pareto import filter_budget
from igcnas.arch.spec import load_spec
from igcnas.errors import UserError
from igcnas.search.results import StudyTrials, open_study
from igcnas.store import (
    ARCH_FILE,
    CHECKPOINT_FILE,
    METRICS_FILE,
    WEIGHTS_FILE,
    StudyStore,
    read_json_file,
    trial_folder_name,
)
from igcnas.units import format_count

__all__ = [
    "TORCHSCRIPT_FILE",
    "ONNX_FILE",
    "MODEL_CARD_FILE",
    "MANIFEST_FILE",
    "ONNX_OPSET",
    "ExportResult",
    "select_trial",
    "export_row",
    "export_trial",
    "export_model",
    "load_exported",
    "read_manifest",
    "check_onnx",
    "evaluate_exported",
]

SEARCH_METRICS_FILE = "search_metrics.json"  # the trial's metrics.json, copied into the export
#: files that mark a folder as an export or an 'igcnas train' run: an export refuses to write over them unless forced
_MODEL_FILES = (ARCH_FILE, WEIGHTS_FILE, CHECKPOINT_FILE)
#: an 'igcnas train' run's files that an export does not write: removed when forced, so no stale ones remain
_RUN_ONLY_FILES = (CHECKPOINT_FILE, METRICS_FILE)


# ---------------------------------------------------------------------------------------------------------------
# choosing a trial


def _completed(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of completed trials."""
    return frame.loc[frame["state"].astype(str) == "complete"]


def _trial_list(numbers: pd.Series, limit: int = 12) -> str:
    """'0, 1, 2, ... (+n more)' for messages."""
    values = [str(int(v)) for v in numbers.tolist()]
    shown = ", ".join(values[:limit])
    return shown + (f", ... (+{len(values) - limit} more)" if len(values) > limit else "")


def select_trial(
    frame: pd.DataFrame,
    *,
    study: str = "",
    trial: int | None = None,
    max_params: str | int | float | None = None,
    max_flops: str | int | float | None = None,
) -> pd.Series:
    """The trial to export: number ``trial``, or else the most accurate completed trial within the budgets.

    "Most accurate" is the highest validation ``accuracy``; ties go to fewer params, then fewer FLOPs, then the
    lower trial number. Raises :class:`~igcnas.errors.UserError` when the study has no completed trial, the
    trial number does not exist or is not completed, or no completed trial fits the budget.

    Example:
        >>> frame = pd.DataFrame({"trial": [0, 1, 2], "state": ["complete", "complete", "pruned"],
        ...                       "accuracy": [0.9, 0.8, 0.95], "params": [300, 100, 50], "flops": [1, 1, 1]})
        >>> int(select_trial(frame)["trial"]), int(select_trial(frame, max_params=200)["trial"])
        (0, 1)
    """
    label = f"study {study!r}" if study else "the study"
    completed = _completed(frame)
    if trial is not None:
        rows = frame.loc[frame["trial"] == trial]
        if rows.empty:
            known = _trial_list(frame["trial"]) if len(frame) else "none yet"
            raise UserError(f"--trial: {label} has no trial {trial} (trials: {known})")
        row = rows.iloc[0]
        if str(row["state"]) != "complete":
            done = _trial_list(completed["trial"]) if len(completed) else "none"
            reason = f" ({row['reason']})" if "reason" in row.index and str(row["reason"]) else ""
            raise UserError(
                f"--trial: trial {trial} of {label} is {row['state']}{reason}, not complete, so it has no final "
                f"weights; export a completed trial (completed: {done})"
            )
        return row
    if completed.empty:
        states = frame["state"].astype(str).value_counts()
        summary = ", ".join(f"{n} {s}" for s, n in states.items() if n) or "no trials"
        raise UserError(
            f"--study: {label} has no completed trial yet ({summary}); let the search finish a trial first"
        )
    fitting = filter_budget(completed, max_params=max_params, max_flops=max_flops)
    if fitting.empty:
        limits = []
        for column, value, option in (("params", max_params, "--best-under-params"),
                                      ("flops", max_flops, "--best-under-flops")):
            if value is None:
                continue
            counts = pd.to_numeric(completed[column], errors="coerce")
            smallest = counts.min()
            best = "unknown" if pd.isna(smallest) else format_count(float(smallest))
            limits.append(f"{option} {value}: the smallest completed trial has {best} {column}")
        raise UserError(f"no completed trial of {label} fits the budget ({'; '.join(limits)}); raise the limit")
    ranked = fitting.assign(
        _acc=pd.to_numeric(fitting["accuracy"], errors="coerce").fillna(-1.0),
        _params=pd.to_numeric(fitting["params"], errors="coerce").astype("float64").fillna(math.inf),
        _flops=pd.to_numeric(fitting["flops"], errors="coerce").astype("float64").fillna(math.inf),
    ).sort_values(["_acc", "_params", "_flops", "trial"], ascending=[False, True, True, True], kind="stable")
    return frame.loc[ranked.index[0]]


# ---------------------------------------------------------------------------------------------------------------
# exporting a row of a trials frame


def _row_dict(row: object) -> dict[str, Any]:
    """A trials-frame row (a Series or a mapping) as a plain dict; a UserError for anything else."""
    if isinstance(row, pd.DataFrame):
        raise UserError(
            f"export_row: got a frame of {len(row)} rows; pass one row, e.g. pareto_front(frame).iloc[0]"
        )
    if isinstance(row, pd.Series):
        return {str(key): value for key, value in row.items()}
    if isinstance(row, Mapping):
        return {str(key): value for key, value in row.items()}
    raise UserError(
        f"export_row: expected a row of a trials frame (a pandas Series or a dict), got {type(row).__name__}; "
        "pass e.g. pareto_front(load_study(name)).iloc[0]"
    )


def _text(value: object) -> str:
    """A row's text cell; '' for None/NaN/NA."""
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return ""
    return str(value)


def _trial_number(values: Mapping[str, Any]) -> int:
    """The row's ``trial`` as an int (a UserError naming the fix when it is missing)."""
    value = values.get("trial")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number != int(number):
        raise UserError(
            f"export_row: the row has no trial number (trial={value!r}); pass a row of load_study(name) or "
            "pareto_front(...), which have a 'trial' column"
        )
    return int(number)


def _study_name(values: Mapping[str, Any], number: int, study: StudyTrials | None) -> str:
    """The study the row belongs to: its ``study`` cell, else ``study.name`` (they must agree)."""
    named = _text(values.get("study"))
    if study is not None and named and named != study.name:
        raise UserError(
            f"export_row: trial {number} is a row of study {named!r} but study= is {study.name!r}; "
            "pass the study the row comes from"
        )
    name = named or (study.name if study is not None else "")
    if not name:
        raise UserError(
            f"export_row: the row of trial {number} names no study; pass study=open_study(NAME, trials_dir=...)"
        )
    return name


def _check_complete(values: Mapping[str, Any], number: int, name: str) -> None:
    """A UserError unless the row is a completed trial (only those have final weights)."""
    state = _text(values.get("state")) or "in no recorded state"
    if state == "complete":
        return
    reason = _text(values.get("reason"))
    raise UserError(
        f"trial {number} of study {name!r} is {state}{f' ({reason})' if reason else ''}, not complete, so it has "
        f"no final weights; export a complete row, e.g. of pareto_front(load_study({name!r}))"
    )


def _trial_files(values: Mapping[str, Any], number: int, store: StudyStore) -> tuple[Path, Path]:
    """A trial's folder and arch.json: the recorded ``arch_path`` when it exists, else the store's trial folder."""
    arch_path = _text(values.get("arch_path"))
    if arch_path:
        candidate = Path(arch_path).expanduser()
        for path in (candidate, store.root / candidate, store.folder / candidate):
            if path.is_file():
                return path.parent, path
    folder = store.trial_dir(number)
    return folder, folder / ARCH_FILE


def _own_store(store: StudyStore, folder: Path, number: int) -> StudyStore:
    """The study folder holding the trial folder ``<root>/<study>/<trial:04d>``, else ``store``."""
    if folder.name != trial_folder_name(number) or folder.parent.name != store.name:
        return store
    return StudyStore(folder.parent.parent, store.name)


def _read_metrics(path: Path) -> dict[str, Any]:
    """The training engine's metrics.json as a dict ({} when missing or unreadable)."""
    if not path.is_file():
        return {}
    try:
        payload = read_json_file(path, METRICS_FILE)
    except UserError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _missing_weights(values: Mapping[str, Any], number: int, name: str, folder: Path) -> str:
    """The one-line message for a complete trial without weights (a reused duplicate names its twin)."""
    twin = values.get("reused_from")
    if twin is not None and not bool(pd.isna(twin)):
        return (f"trial {number} of study {name!r}: no {WEIGHTS_FILE} in {str(folder)!r}; it reused the result of "
                f"trial {int(twin)} (same architecture) instead of training; export trial {int(twin)}")
    return (f"trial {number} of study {name!r}: no {WEIGHTS_FILE} in {str(folder)!r} "
            "(the search keeps weights of completed trials only); pick another trial")


def _check_out(out: Path, *, force: bool) -> None:
    """UserError when ``out`` is no folder, or holds a model (an export or a training run) and ``force`` is off."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {str(out)!r} is a file, not a folder; give a folder to export into")
    held = [name for name in _MODEL_FILES if (out / name).exists()]
    if held and not force:
        raise UserError(
            f"--out: {str(out)!r} already holds a model ({', '.join(held)}); choose another --out, or pass --force "
            "to replace it"
        )


def _remove_run_files(out: Path) -> None:
    """Delete the files of an 'igcnas train' run in ``out`` that an export would not replace (forced export)."""
    for name in _RUN_ONLY_FILES:
        (out / name).unlink(missing_ok=True)


def export_row(
    row: pd.Series | Mapping[str, Any],
    *,
    out_dir: str | Path,
    study: StudyTrials | None = None,
    trials_dir: str | Path = "trials",
    check_batch: int = 8,
    force: bool = False,
) -> ExportResult:
    """Export the trial in ``row``, one row of a trials frame, into ``out_dir``.

    ``row`` is a row of :func:`igcnas.load_study` or of :func:`igcnas.pareto_front` (a pandas Series, or a dict
    with the same keys): ``trial`` and ``state`` are required, ``study`` names the study (else ``study.name``),
    ``arch_path`` points at the trial's ``arch.json`` (else ``<study folder>/<trial:04d>/``), and ``accuracy``,
    ``test_accuracy`` and ``epochs`` go into the model card. The study's folder and search settings
    (``study.json``) come from ``study`` (an :func:`~igcnas.search.results.open_study` result), else from the
    study folder holding the row's ``arch_path`` (``<root>/<study>/<trial:04d>/arch.json``, as ``igcnas search``
    writes it), else from ``<trials_dir>/<row's study>``.

    The trial's ``arch.json`` and ``weights.safetensors`` (or a ``.pt`` state_dict, read with
    ``weights_only=True``) are exported with :func:`export_model`; its ``metrics.json`` is copied as
    ``search_metrics.json``. A row that is not ``complete``, or whose trial has no weights, raises a one-line
    :class:`~igcnas.errors.UserError` naming the trial and the fix. An ``out_dir`` that already holds a model
    (``arch.json``, ``weights.safetensors`` or a training ``checkpoint.pt``) is refused unless ``force``; then its
    files are replaced, and a training run's ``checkpoint.pt`` and ``metrics.json`` are removed.

    Example:
        >>> from igcnas import load_study, pareto_front
        >>> front = pareto_front(load_study("e2e", trials_dir="trials"))  # doctest: +SKIP
        >>> export_row(front.iloc[0], out_dir="exported/front0").info["trial"]  # doctest: +SKIP
        7
        >>> export_row({"trial": 4, "state": "pruned", "study": "e2e"}, out_dir="exported/t4")
        Traceback (most recent call last):
        ...
        igcnas.errors.UserError: trial 4 of study 'e2e' is pruned, not complete, so it has no final weights; export a complete row, e.g. of pareto_front(load_study('e2e'))
    """
    values = _row_dict(row)
    number = _trial_number(values)
    name = _study_name(values, number, study)
    _check_complete(values, number, name)
    store = StudyStore(study.folder.parent if study is not None else trials_dir, name)
    folder, arch_file = _trial_files(values, number, store)
    if study is None:
        store = _own_store(store, folder, number)
    settings = dict(study.settings) if study is not None else store.settings(strict=True)
    if not arch_file.is_file():
        raise UserError(f"trial {number} of study {name!r}: no {ARCH_FILE} in {str(folder)!r}; it cannot be exported")
    spec = load_spec(arch_file)
    weights = weights_file(folder, _missing_weights(values, number, name, folder))
    out = Path(out_dir)
    if out.resolve() == folder.resolve():
        raise UserError(f"--out: {str(out)!r} is the trial's own folder; export into a new folder")
    _check_out(out, force=force)
    from igcnas.nn.network import build
    from igcnas.train import load_weights

    model = load_weights(build(spec, impl="naive"), weights)
    if not spec.name:
        spec = spec.with_name(f"{name}-trial{number:04d}")
    metrics = _read_metrics(folder / METRICS_FILE)
    info: dict[str, Any] = {
        "study": name,
        "trial": number,
        "accuracy": values.get("accuracy"),
        "test_accuracy": values.get("test_accuracy"),
        "epochs": values.get("epochs"),
        "dataset": settings.get("dataset") or (metrics.get("data") or {}).get("name"),
        "search_settings": settings,
        "seed": settings.get("seed"),
        "source": str(folder),
    }
    if (metrics.get("result") or {}).get("test_accuracy") is not None and pd.isna(info["test_accuracy"]):
        info["test_accuracy"] = metrics["result"]["test_accuracy"]
    if force:
        _remove_run_files(out)
    result = export_model(spec, model.state_dict(), out, info=info, check_batch=check_batch)
    if (folder / METRICS_FILE).is_file():
        shutil.copyfile(folder / METRICS_FILE, out / SEARCH_METRICS_FILE)
    return result


def export_trial(
    study: str,
    out: str | Path,
    *,
    trial: int | None = None,
    max_params: str | int | float | None = None,
    max_flops: str | int | float | None = None,
    storage: str | None = None,
    trials_dir: str | Path = "trials",
    artifacts: str | None = None,
    check_batch: int = 8,
    force: bool = False,
) -> ExportResult:
    """Export one trial of a study to ``out``: trial number ``trial``, else the best within the budgets.

    Reads the study (:func:`~igcnas.search.results.open_study`), picks its row with :func:`select_trial` (see
    there for the choice and its errors) and exports it with :func:`export_row` (``force``: replace a model
    already in ``out``).

    Example:
        >>> result = export_trial("e2e", "exported/best", max_params="20k")  # doctest: +SKIP
        >>> result.params <= 20_000  # doctest: +SKIP
        True
    """
    _check_out(Path(out), force=force)  # before reading the study: a mistaken --out fails at once
    # a baseline (negative trial number) is exported like any trial; "best" never picks one
    data = open_study(study, storage=storage, trials_dir=trials_dir, artifacts=artifacts,
                      baselines=trial is not None and trial < 0)
    row = select_trial(data.frame, study=study, trial=trial, max_params=max_params, max_flops=max_flops)
    return export_row(row, out_dir=out, study=data, check_batch=check_batch, force=force)
