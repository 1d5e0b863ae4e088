"""Bad input to ``igcnas train`` and ``igcnas evaluate`` fails on one line before any data is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from igcnas.cli import main


def test_train_resume_without_a_checkpoint_is_refused(exported: Path, tmp_path: Path, capsys,
                                                      one_line_error) -> None:
    out = tmp_path / "typo"
    err = one_line_error(["train", str(exported), "--out", str(out), "--resume", "--device", "cpu"])
    assert err.startswith(f"igcnas: error: --resume: no checkpoint.pt in {str(out)!r}; drop --resume to start a "
                          "new run")
    assert not out.exists()  # nothing was trained or written


@pytest.mark.parametrize("name", ["missing.json", "runs/missing", "Missing.JSON"])
def test_train_names_a_missing_path_not_an_unknown_zoo_network(tmp_path: Path, capsys, name: str,
                                                               one_line_error) -> None:
    source = tmp_path / name
    err = one_line_error(["train", str(source), "--dataset", "digits", "--out", str(tmp_path / "out")])
    assert err == (f"igcnas: error: {source}: no such arch.json (give a zoo name, an arch.json file or a directory "
                   "with one)")
    assert "zoo network" not in err


def test_train_relative_json_name_is_a_path_too(tmp_path: Path, capsys, monkeypatch, one_line_error) -> None:
    monkeypatch.chdir(tmp_path)
    err = one_line_error(["train", "best.json", "--dataset", "digits"])
    assert err.startswith("igcnas: error: best.json: no such arch.json")


def test_train_refuses_data_dir_for_the_recorded_digits(exported: Path, tmp_path: Path, capsys,
                                                        one_line_error) -> None:
    err = one_line_error(["train", str(exported), "--data-dir", str(tmp_path), "--out",
                                   str(tmp_path / "out")])
    assert err == (f"igcnas: error: --data-dir is not read by the dataset digits (recorded in "
                   f"{str(exported / 'export.json')!r}); add --dataset cifar10 (or drop --data-dir)")


def test_evaluate_refuses_data_dir_for_the_recorded_digits(exported: Path, tmp_path: Path, capsys,
                                                           one_line_error) -> None:
    err = one_line_error(["evaluate", str(exported), "--data-dir", str(tmp_path)])
    assert "--data-dir is not read by the dataset digits (recorded in" in err


def test_evaluate_val_on_a_train_run_uses_the_split_it_held_out(exported: Path, tmp_path: Path, capsys,
                                                                one_line_error) -> None:
    import json

    out = tmp_path / "run"
    assert main(["train", str(exported), "--out", str(out), "--epochs", "1", "--train-subset", "200",
                 "--val-fraction", "0.3", "--seed", "3", "--device", "cpu", "--quiet"]) == 0
    recorded = json.loads((out / "export.json").read_text())
    assert recorded == {"source": "igcnas train", "dataset": "digits", "seed": 3,
                        "data": {"val_fraction": 0.3, "train_subset": 200}}
    capsys.readouterr()
    assert main(["evaluate", str(out), "--split", "val", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 60  # 30% of the run's 200 images, not 10% of all
    (out / "export.json").unlink()  # a folder that does not record its split
    err = one_line_error(["evaluate", str(out), "--dataset", "digits", "--split", "val"])
    assert "does not record the data split it was trained with" in err and "use --split test" in err


@pytest.mark.parametrize(("options", "message"), [
    (["--lr", "-1"], "igcnas: error: --lr: -1.0 must be > 0 (e.g. --lr 0.1)"),
    (["--warmup-epochs", "50", "--epochs", "5"], "igcnas: error: --warmup-epochs: 50 must be smaller than --epochs 5"),
])
def test_train_errors_name_the_options_not_the_config_fields(exported: Path, tmp_path: Path, capsys,
                                                             options: list[str], message: str, one_line_error) -> None:
    err = one_line_error(["train", str(exported), "--out", str(tmp_path / "run"), *options])
    assert err == message and "TrainConfig" not in err
