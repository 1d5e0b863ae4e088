from __future__ import annotations

import json
from pathlib import Path

import pytest

from igcnas.analysis import TRIAL_COLUMNS
from igcnas.analysis.trials_dir import list_study_dirs, read_study_settings, read_trials_dir
from igcnas.errors import UserError
from igcnas.search.results import open_study


def _write(folder: Path, trial: int, **extra: object) -> Path:
    row = {"trial": trial, "state": "complete", "accuracy": 0.5 + trial / 100, "params": 100 * (trial + 1),
           "flops": 1000, "epochs": 2, "max_epochs": 2, **extra}
    target = folder / f"{trial:04d}"
    target.mkdir(parents=True, exist_ok=True)
    (target / "trial.json").write_text(json.dumps(row))
    return target


def test_reads_rows_sorted_with_schema_and_absolute_arch_paths(tmp_path: Path) -> None:
    study = tmp_path / "s1"
    for trial in (2, 0, 1):
        _write(study, trial)
    (study / "0001" / "arch.json").write_text("{}")
    (study / "0003").mkdir()  # a trial that has not written its row yet
    frame = read_trials_dir(study)
    assert frame["trial"].tolist() == [0, 1, 2]
    assert list(frame.columns[: len(TRIAL_COLUMNS)]) == list(TRIAL_COLUMNS)
    assert frame["study"].tolist() == ["s1"] * 3
    assert frame["arch_path"].tolist() == ["", str((study / "0001" / "arch.json").resolve()), ""]


def test_relative_arch_path_resolves_against_the_trial_folder(tmp_path: Path) -> None:
    folder = _write(tmp_path / "s", 0, arch_path="arch.json")
    (folder / "arch.json").write_text("{}")
    assert read_trials_dir(tmp_path / "s")["arch_path"].iloc[0] == str((folder / "arch.json").resolve())


def test_empty_study_gives_an_empty_schema_frame(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    frame = read_trials_dir(tmp_path / "s")
    assert len(frame) == 0 and list(frame.columns) == list(TRIAL_COLUMNS)


def test_bad_files_and_missing_folders_raise_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        read_trials_dir(tmp_path / "missing")
    folder = _write(tmp_path / "s", 0)
    (folder / "trial.json").write_text("{not json")
    with pytest.raises(UserError, match="trial.json is not valid JSON"):
        read_trials_dir(tmp_path / "s")
    (folder / "trial.json").write_bytes(b"\xff\xfe{}")  # not UTF-8: the same one-line error
    with pytest.raises(UserError, match="trial.json is not valid JSON"):
        read_trials_dir(tmp_path / "s")
    from igcnas.store import StudyStore

    assert StudyStore(tmp_path, "s").rows() == []  # the search's lenient reader skips it
    (folder / "trial.json").write_text(json.dumps({"trial": 0, "state": "complete", "accuracy": 93,
                                                   "params": 1, "flops": 1, "epochs": 1, "max_epochs": 1}))
    with pytest.raises(UserError, match="percentage"):
        read_trials_dir(tmp_path / "s")


def test_settings_and_study_listing(tmp_path: Path) -> None:
    _write(tmp_path / "b", 0)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "study.json").write_text(json.dumps({"dataset": "digits", "seed": 3}))
    (tmp_path / "not-a-study").mkdir()
    assert list_study_dirs(tmp_path) == ["a", "b"]
    assert read_study_settings(tmp_path / "a") == {"dataset": "digits", "seed": 3}
    assert read_study_settings(tmp_path / "b") == {}


def test_open_study_lists_known_studies_for_an_unknown_name(tmp_path: Path) -> None:
    _write(tmp_path / "alpha", 0)
    (tmp_path / "alpha" / "study.json").write_text("{}")
    with pytest.raises(UserError, match="known studies: alpha"):
        open_study("beta", trials_dir=tmp_path)
    with pytest.raises(UserError, match="no study found"):
        open_study("beta", trials_dir=tmp_path / "nowhere")
    study = open_study("alpha", trials_dir=tmp_path)
    assert study.frame["trial"].tolist() == [0] and study.folder == tmp_path / "alpha"
