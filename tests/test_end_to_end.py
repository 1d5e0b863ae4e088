"""search -> pareto -> export -> ONNX inference on digits, through the command line (no download)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from igcnas.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
BUDGET = 20_000


def _commands() -> set[str]:
    """Sub-commands registered in the igcnas CLI."""
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(REPO)  # the default search space path is relative to the repository root
    monkeypatch.setenv("IGCNAS_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_search_pareto_export_onnx_end_to_end(tmp_path: Path, capsys) -> None:
    missing = {"search", "pareto", "export", "evaluate"} - _commands()
    if missing:
        pytest.skip(f"'igcnas {' / '.join(sorted(missing))}' not registered in igcnas.cli yet")
    import onnxruntime as ort

    from igcnas.arch.spec import load_spec
    from igcnas.cost import count
    from igcnas.data import load_data
    from igcnas.export import load_exported

    trials = tmp_path / "trials"
    assert main(["search", "--trials", "3", "--epochs", "2", "--max-params", "20k", "--study", "e2e",
                 "--trials-dir", str(trials), "--dataset", "digits", "--device", "cpu", "--quiet"]) == 0
    capsys.readouterr()

    assert main(["pareto", "--study", "e2e", "--trials-dir", str(trials), "--format", "json",
                 "--plot", str(tmp_path / "front.png")]) == 0
    front = json.loads(capsys.readouterr().out)
    assert front["front"], "the search should leave at least one completed trial on the front"
    assert all(row["params"] <= BUDGET for row in front["front"])
    assert (tmp_path / "front.png").read_bytes()[:4] == b"\x89PNG"

    out = tmp_path / "best"
    assert main(["export", "--study", "e2e", "--best", "--trials-dir", str(trials), "--out", str(out)]) == 0
    capsys.readouterr()
    manifest = json.loads((out / "export.json").read_text())
    spec = load_spec(out)
    assert manifest["params"] == count(spec).params <= BUDGET
    assert manifest["trial"] in {row["trial"] for row in front["front"]}
    assert manifest["dataset"] == "digits"

    # ONNX on real, normalised digits images agrees with PyTorch
    data = load_data("digits")
    assert data.test is not None
    images = data.eval_transform()(data.test.images[:64])
    model = load_exported(out)
    with torch.no_grad():
        expected = model(images).numpy()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": images.numpy()})
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert (got.argmax(1) == expected.argmax(1)).all()

    assert main(["evaluate", str(out), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dataset"] == "digits" and 0.0 <= report["accuracy"] <= 1.0
