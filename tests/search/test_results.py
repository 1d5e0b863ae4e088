"""Reading a study back (igcnas.search.results): which storage answers, and the errors when it cannot."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from igcnas.errors import UserError
from igcnas.search._storage import open_storage
from igcnas.search.results import list_studies, load_study


def test_a_named_storage_without_the_study_is_an_error_not_the_folders_rows(tmp_path: Path, fake_study) -> None:
    fake_study.write_fake_study(tmp_path / "trials", "demo")
    url = f"sqlite:///{tmp_path / 'other.db'}"
    optuna.create_study(study_name="another", storage=open_storage(url))
    assert len(load_study("demo", trials_dir=tmp_path / "trials")) > 0  # no --storage: the folder answers
    with pytest.raises(UserError, match="study 'demo' is neither a folder of --trials-dir nor in sqlite:///"):
        load_study("demo", storage=url, trials_dir=tmp_path / "trials")


def test_studies_with_a_storage_still_lists_the_folders_own_studies(tmp_path: Path, fake_study) -> None:
    fake_study.write_fake_study(tmp_path / "trials", "demo")
    url = f"sqlite:///{tmp_path / 'other.db'}"
    optuna.create_study(study_name="another", storage=open_storage(url))
    assert "demo" in {row["study"] for row in list_studies(trials_dir=tmp_path / "trials", storage=url)}
