"""``igcnas evaluate`` and ``igcnas train`` on exported models (digits: no download)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from igcnas.cli import main
from igcnas.export import evaluate_exported, load_exported


def test_evaluate_reports_test_accuracy(exported: Path, capsys) -> None:
    assert main(["evaluate", str(exported), "--dataset", "digits"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("test accuracy ") and "on digits, 359 images" in out
    assert main(["evaluate", str(exported), "--split", "val", "--format", "json"]) == 0  # dataset from export.json
    report = json.loads(capsys.readouterr().out)
    assert report["split"] == "val" and report["dataset"] == "digits" and report["images"] == 144
    assert 0.0 <= report["accuracy"] <= 1.0 and report["loss"] > 0


def test_evaluate_measures_the_model(exported: Path) -> None:
    # the exported weights are untrained: about chance level on 10 balanced classes
    report = evaluate_exported(exported, dataset="digits")
    assert report["accuracy"] < 0.4


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["{missing}"], "is not a folder"),
        (["{exported}", "--dataset", "mnist"], "mnist"),
        (["{bare}"], "pass --dataset"),
    ],
)
def test_evaluate_errors_are_one_line_exit_2(exported: Path, tmp_path: Path, capsys, args, needle) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(exported / "arch.json", bare / "arch.json")
    shutil.copy(exported / "weights.safetensors", bare / "weights.safetensors")
    paths = {"missing": tmp_path / "missing", "exported": exported, "bare": bare}
    with pytest.raises(SystemExit) as info:
        main(["evaluate", *[a.format(**paths) for a in args]])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("igcnas: error:") and len(err.strip().splitlines()) == 1 and needle in err


def test_train_retrains_an_export_into_a_checkpoint_folder(exported: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "retrained"
    status = main(["train", str(exported), "--epochs", "3", "--out", str(out), "--device", "cpu", "--lr", "0.2",
                   "--batch-size", "32", "--schedule", "cosine"])
    captured = capsys.readouterr()
    assert status == 0
    assert all(f"epoch {e}/3" in captured.err for e in (1, 2, 3))  # per-epoch progress
    assert "CPU sparse ops: " in captured.err  # native kernels or torch forms, said once
    assert "completed after 3/3 epochs" in captured.out and "test accuracy" in captured.out
    for name in ("arch.json", "weights.safetensors", "metrics.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed" and len(metrics["history"]) == 3
    assert metrics["config"]["schedule"] == "cosine" and metrics["data"]["name"] == "digits"
    model = load_exported(out)  # the checkpoint folder loads like an export
    assert sum(p.numel() for p in model.parameters()) == 2298
    report = evaluate_exported(out, dataset="digits")
    assert report["accuracy"] > 0.3  # trained three epochs (~0.9 here): well above chance (0.1)
    assert report["accuracy"] == pytest.approx(metrics["result"]["test_accuracy"])

    with pytest.raises(SystemExit) as info:  # a second run into the same folder needs --resume
        main(["train", str(exported), "--epochs", "2", "--out", str(out)])
    assert info.value.code == 2 and "--resume" in capsys.readouterr().err


def test_train_takes_an_arch_json_and_rejects_unknown_names(exported: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "from-json"
    assert main(["train", str(exported / "arch.json"), "--dataset", "digits", "--epochs", "1", "--out", str(out),
                 "--device", "cpu", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "completed after 1/1 epochs" in captured.out
    assert json.loads((out / "metrics.json").read_text())["config"]["schedule"] == "step"  # the long schedule
    with pytest.raises(SystemExit) as info:
        main(["train", "no-such-net", "--dataset", "digits", "--out", str(tmp_path / "x")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no-such-net" in err
    with pytest.raises(SystemExit):
        main(["train", str(exported / "arch.json"), "--out", str(tmp_path / "y")])
    assert "pass --dataset" in capsys.readouterr().err


def test_train_takes_a_zoo_name_and_adapts_it_to_the_dataset(tmp_path: Path, capsys, monkeypatch) -> None:
    import sys
    from types import ModuleType

    from igcnas.arch.spec import ArchSpec

    zoo = ModuleType("igcnas.zoo")
    networks = {"tiny-dw": ArchSpec.simple("DW+PW", widths=(8, 16), depths=(1, 1), name="tiny-dw")}

    def get_zoo(name: str) -> ArchSpec:
        return networks[name]

    zoo.get_zoo = get_zoo  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "igcnas.zoo", zoo)
    out = tmp_path / "zoo-run"
    assert main(["train", "tiny-dw", "--dataset", "digits", "--epochs", "1", "--out", str(out), "--device", "cpu",
                 "--train-subset", "300"]) == 0
    captured = capsys.readouterr()
    assert "adapting the architecture to digits" in captured.err
    assert load_exported(out).spec_id == ArchSpec.simple(
        "DW+PW", widths=(8, 16), depths=(1, 1), input_shape=(1, 8, 8), name="tiny-dw").id
    with pytest.raises(SystemExit):
        main(["train", "other-net", "--dataset", "digits", "--out", str(tmp_path / "x")])
    assert "not a folder, an arch.json file or a zoo name" in capsys.readouterr().err
