"""``igcnas export --out``: a folder already holding a model (an export or a training run) needs --force; a path
that cannot be written is one line, not a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from igcnas.cli import main
from igcnas.errors import UserError
from igcnas.export import MANIFEST_FILE, export_trial


def _training_run(exported: Path, folder: Path) -> Path:
    """A folder laid out like an 'igcnas train' run (arch.json, weights, checkpoint.pt, metrics.json)."""
    folder.mkdir(parents=True)
    for name in ("arch.json", "weights.safetensors"):
        shutil.copy(exported / name, folder / name)
    (folder / "checkpoint.pt").write_bytes(b"the user's checkpoint")
    (folder / "metrics.json").write_text(json.dumps({"status": "completed"}))
    return folder


def _export(trials_dir: Path, out: Path, *extra: str) -> list[str]:
    """The argv of 'igcnas export' of the fake study's trial 0 into ``out``."""
    return ["export", "--study", "demo", "--trials-dir", str(trials_dir), "--trial", "0", "--out", str(out), *extra]


@pytest.mark.parametrize("held", ["arch.json", "weights.safetensors", "checkpoint.pt"])
def test_export_refuses_an_out_holding_a_model(trials_dir: Path, tmp_path: Path, capsys, held: str) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / held).write_bytes(b"precious")
    with pytest.raises(SystemExit) as info:
        main(_export(trials_dir, out))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"igcnas: error: --out: {str(out)!r} already holds a model ({held}); choose another "
                           "--out, or pass --force to replace it")
    assert [p.name for p in out.iterdir()] == [held] and (out / held).read_bytes() == b"precious"


def test_export_force_replaces_a_training_run_without_stale_files(exported: Path, trials_dir: Path,
                                                                   tmp_path: Path, capsys) -> None:
    out = _training_run(exported, tmp_path / "run")
    assert main(_export(trials_dir, out, "--force", "--format", "json")) == 0
    assert json.loads(capsys.readouterr().out)["trial"] == 0
    assert json.loads((out / MANIFEST_FILE).read_text())["trial"] == 0
    assert not (out / "checkpoint.pt").exists() and not (out / "metrics.json").exists()  # no stale run files


def test_export_into_an_empty_or_new_folder_needs_no_force(trials_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("kept")
    assert export_trial("demo", tmp_path / "empty", trial=0, trials_dir=trials_dir).info["trial"] == 0
    assert (tmp_path / "empty" / "notes.txt").read_text() == "kept"
    with pytest.raises(UserError, match="already holds a model"):  # the library refuses too
        export_trial("demo", tmp_path / "empty", trial=0, trials_dir=trials_dir)


def test_export_help_documents_force(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "--force" in capsys.readouterr().out


def test_export_into_a_path_under_a_file_is_one_line(trials_dir: Path, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as info:
        main(_export(trials_dir, blocker / "sub"))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"igcnas: error: cannot write/read {blocker}") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
