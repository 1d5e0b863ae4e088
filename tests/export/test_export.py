from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import igcnas
from igcnas.arch.spec import load_spec
from igcnas.cli import main
from igcnas.errors import UserError
from igcnas.export import (
    MANIFEST_FILE,
    MODEL_CARD_FILE,
    ONNX_FILE,
    TORCHSCRIPT_FILE,
    export_model,
    export_trial,
    load_exported,
    select_trial,
)
from igcnas.nn.network import build
from igcnas.train import load_weights


def _batch(shape: tuple[int, ...], n: int, seed: int = 5) -> torch.Tensor:
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))


def test_export_writes_every_artifact(exported: Path, trials_dir: Path) -> None:
    for name in ("arch.json", "weights.safetensors", TORCHSCRIPT_FILE, ONNX_FILE, MODEL_CARD_FILE, MANIFEST_FILE):
        assert (exported / name).is_file() and (exported / name).stat().st_size > 0, name
    manifest = json.loads((exported / MANIFEST_FILE).read_text())
    assert manifest["study"] == "demo" and manifest["trial"] == 1  # best accuracy; tie with 6 -> lower number
    assert manifest["params"] == 2298 and manifest["dataset"] == "digits"
    assert manifest["onnx_check"]["opset"] == 17
    # same architecture as the trial
    assert load_spec(exported).id == load_spec(trials_dir / "demo" / "0001").id


def test_onnx_inference_matches_pytorch_with_dynamic_batch(exported: Path) -> None:
    model = load_exported(exported)
    session = ort.InferenceSession(str(exported / ONNX_FILE), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "input"
    for n in (1, 5, 33):  # the export traced a batch of 2: the batch axis must be dynamic
        x = _batch((1, 8, 8), n)
        (got,) = session.run(None, {"input": x.numpy()})
        with torch.no_grad():
            expected = model(x).numpy()
        assert got.shape == (n, 10)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_torchscript_loads_and_matches(exported: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch marks TorchScript deprecated; it still loads
        scripted = torch.jit.load(str(exported / TORCHSCRIPT_FILE))
    model = load_exported(exported)
    x = _batch((1, 8, 8), 7)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=1e-4, atol=1e-5)


def test_load_exported_round_trip_equals_trial_weights(exported: Path, trials_dir: Path) -> None:
    trial_dir = trials_dir / "demo" / "0001"
    reference = load_weights(build(load_spec(trial_dir)), trial_dir / "weights.safetensors").eval()
    for impl in ("auto", "naive"):
        model = igcnas.load_exported(exported, impl=impl)
        assert not model.training
        for key, value in reference.state_dict().items():
            torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
        x = _batch((1, 8, 8), 4)
        with torch.no_grad():
            torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-6)


def test_load_exported_reads_a_weights_only_pt_file(exported: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pt"
    folder.mkdir()
    shutil.copy(exported / "arch.json", folder / "arch.json")
    torch.save(load_exported(exported).state_dict(), folder / "weights.pt")
    model = load_exported(folder)
    x = _batch((1, 8, 8), 3)
    with torch.no_grad():
        torch.testing.assert_close(model(x), load_exported(exported)(x))


def test_model_card_has_facts_and_a_three_line_snippet_that_runs(exported: Path) -> None:
    card = (exported / MODEL_CARD_FILE).read_text()
    for needle in ("2.3k", "2,298", "FLOPs", "90.00%", "88.00%", "digits", "DW+PW", "16-32", "max_params",
                   "opset 17"):
        assert needle in card, needle
    match = re.search(r"```python\n(.*?)```", card, re.S)
    assert match is not None
    snippet = match.group(1)
    assert len(snippet.strip().splitlines()) == 3
    namespace: dict[str, object] = {}
    exec(snippet, namespace)  # noqa: S102 - the snippet a user copies
    logits = namespace["logits"]
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, 10)


def test_best_under_budgets_and_trial_choice(trials_dir: Path, fake) -> None:
    frame = fake.read_study("demo", trials_dir)
    assert int(select_trial(frame)["trial"]) == 1
    assert int(select_trial(frame, max_params="2k")["trial"]) == 3
    assert int(select_trial(frame, max_params=1000)["trial"]) == 0
    assert int(select_trial(frame, max_flops="20k")["trial"]) == 0
    assert int(select_trial(frame, trial=2)["trial"]) == 2


def test_export_under_budget_respects_it(trials_dir: Path, tmp_path: Path) -> None:
    result = export_trial("demo", tmp_path / "small", max_params="1.3k", trials_dir=trials_dir)
    assert result.info["trial"] == 3 and result.params <= 1300
    assert result.onnx_max_abs_diff < 1e-4


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"study": "nope"}, "known studies: demo, empty"),
        ({"study": "empty"}, "no completed trial"),
        ({"study": "demo", "trial": 42}, "has no trial 42"),
        ({"study": "demo", "trial": 4}, "is pruned"),
        ({"study": "demo", "max_params": 500}, "fits the budget"),
    ],
)
def test_export_errors_name_the_problem(trials_dir: Path, tmp_path: Path, kwargs: dict, needle: str) -> None:
    study = kwargs.pop("study")
    with pytest.raises(UserError, match=needle):
        export_trial(study, tmp_path / "out", trials_dir=trials_dir, **kwargs)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--study", "nope"], "known studies: demo, empty"),
        (["--study", "empty"], "no completed trial"),
        (["--study", "demo", "--trial", "42"], "has no trial 42"),
        (["--study", "demo", "--best-under-params", "500"], "smallest completed trial has 834 params"),
        (["--study", "demo", "--trial", "1", "--best"], "not allowed with argument"),
        (["--study", "demo", "--best-under-params", "abc"], "--best-under-params"),
    ],
)
def test_export_cli_errors_are_one_line_exit_2(trials_dir: Path, tmp_path: Path, capsys, args, needle) -> None:
    with pytest.raises(SystemExit) as info:
        main(["export", *args, "--trials-dir", str(trials_dir), "--out", str(tmp_path / "x")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("igcnas: error:")
    assert needle in err


def test_export_cli_reports_and_writes(trials_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "t3"
    assert main(["export", "--study", "demo", "--trial", "3", "--trials-dir", str(trials_dir), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "exported trial 3 of study demo" in text and "PW+DW+PW" in text and "1.29k" in text
    assert (out / ONNX_FILE).is_file()


def test_export_cli_subprocess_error_has_no_traceback(trials_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "igcnas", "export", "--study", "demo", "--trial", "5", "--trials-dir",
         str(trials_dir), "--out", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "trial 5" in proc.stderr and "failed" in proc.stderr and "Traceback" not in proc.stderr


def test_export_model_rejects_mismatched_weights(fake, tmp_path: Path) -> None:
    small, large = fake.spec_of(0), fake.spec_of(1)
    with pytest.raises(UserError, match="do not match"):
        export_model(small, build(large).state_dict(), tmp_path / "bad")
