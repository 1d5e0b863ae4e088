from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from igcnas.cli import main
from igcnas.cli.pareto import parse_objective_list
from igcnas.errors import UserError


@pytest.fixture(scope="module")
def trials_dir(tmp_path_factory: pytest.TempPathFactory, fake_study) -> Path:
    fake = fake_study
    root = tmp_path_factory.mktemp("trials")
    fake.write_fake_study(root, "demo")
    fake.write_empty_study(root, "empty")
    return root


def _pareto(capsys, trials_dir: Path, *args: str) -> str:
    assert main(["pareto", "--study", "demo", "--trials-dir", str(trials_dir), *args]) == 0
    return capsys.readouterr().out


def test_table_lists_the_front_best_first_with_architecture_and_hypervolume(capsys, trials_dir: Path,
                                                                           fake_study) -> None:
    out = _pareto(capsys, trials_dir)
    assert "7 trials (5 complete, 1 pruned, 1 failed)" in out
    lines = [line.split() for line in out.splitlines() if line.strip() and line.split()[0].isdigit()]
    assert [int(cells[0]) for cells in lines] == fake_study.FRONT
    assert lines[1][-1] == "1"  # trial 6 ties trial 1 exactly
    assert "PW+DW+PW" in out and "8-16" in out and "1-1" in out
    # front (accuracy, params): (0.9, 2298), (0.85, 1290), (0.8, 834); reference (0, 20k): the study's own budget
    expected_hv = 0.9 * (20_000 - 2298) + 0.85 * (2298 - 1290) + 0.8 * (1290 - 834)
    hv_line = next(line for line in out.splitlines() if line.startswith("hypervolume"))
    assert float(hv_line.split()[1]) == pytest.approx(expected_hv, rel=1e-5)


def test_csv_is_the_front_with_schema_columns(capsys, trials_dir: Path, fake_study) -> None:
    front = pd.read_csv(io.StringIO(_pareto(capsys, trials_dir, "--format", "csv")))
    assert front["trial"].tolist() == fake_study.FRONT
    assert {"design", "widths", "depths", "arch_path", "duplicate_of", "params", "flops"} <= set(front.columns)
    assert (front["state"] == "complete").all()


def test_json_filters_by_budget_and_objectives(capsys, trials_dir: Path) -> None:
    payload = json.loads(_pareto(capsys, trials_dir, "--format", "json", "--max-params", "2k"))
    assert [row["trial"] for row in payload["front"]] == [3, 0]
    assert payload["budget"]["max_params"] == 2000 and payload["reference"]["params"] == 2000.0
    assert payload["hypervolume"] == pytest.approx(0.85 * (2000 - 1290) + 0.8 * (1290 - 834))
    payload = json.loads(_pareto(capsys, trials_dir, "--format", "json", "--objectives", "acc,flops",
                                 "--max-flops", "20k"))
    assert payload["objectives"] == ["accuracy:max", "flops:min"]
    assert [row["trial"] for row in payload["front"]] == [0]


def test_empty_front_is_reported(capsys, trials_dir: Path) -> None:
    out = _pareto(capsys, trials_dir, "--max-params", "100")
    assert "the front is empty" in out


def test_plot_png_and_html_are_written(capsys, trials_dir: Path, tmp_path: Path) -> None:
    png = tmp_path / "front.png"
    out = _pareto(capsys, trials_dir, "--plot", str(png), "--zoo")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert f"plot written to {png}" in out
    html = tmp_path / "front.html"
    _pareto(capsys, trials_dir, "--plot", str(html))
    text = html.read_text()
    assert "<svg" in text and "PW+DW+PW" in text


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--study", "nope"], "known studies: demo, empty"),
        (["--study", "demo", "--objectives", "speed"], "--objectives: 'speed' is not an objective"),
        (["--study", "demo", "--objectives", "nosuchcolumn:max"], "nosuchcolumn"),
        (["--study", "demo", "--max-params", "lots"], "--max-params"),
        (["--study", "demo", "--plot", "front.gif"], "front.gif"),
        (["--study", "demo", "--objectives", "acc,params,flops", "--plot", "f.png"], "exactly 2 objectives"),
    ],
)
def test_errors_are_one_line_exit_2(capsys, trials_dir: Path, args: list[str], needle: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["pareto", "--trials-dir", str(trials_dir), *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("igcnas: error:") and len(err.strip().splitlines()) == 1
    assert needle in err


def test_objective_shorthands() -> None:
    assert parse_objective_list("acc,params") == ("accuracy:max", "params:min")
    assert parse_objective_list("test_acc, flops, duration_s:min") == (
        "test_accuracy:max", "flops:min", "duration_s:min")
    with pytest.raises(UserError, match="names no objective"):
        parse_objective_list(" , ")


def test_zoo_reference_points_from_a_zoo_module(capsys, trials_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from igcnas.arch.spec import ArchSpec

    zoo = ModuleType("igcnas.zoo")
    networks = {
        "tiny-dw": ArchSpec.simple("DW+PW", widths=(16, 24), depths=(1, 1)),  # CIFAR input: re-counted at 8x8
        "huge": ArchSpec.simple("DW+PW", widths=(256, 512), depths=(4, 4)),  # far outside the study's range
    }
    zoo.get_zoo = lambda: networks  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "igcnas.zoo", zoo)
    png = tmp_path / "front.png"
    out = _pareto(capsys, trials_dir, "--zoo", "--plot", str(png))
    assert "zoo reference networks" in out and "tiny-dw" in out and "huge" in out
    assert png.read_bytes()[:4] == b"\x89PNG"
    payload = json.loads(_pareto(capsys, trials_dir, "--zoo", "--format", "json"))
    tiny = next(row for row in payload["zoo"] if row["name"] == "tiny-dw")
    from igcnas.cost import count

    expected = count(ArchSpec.simple("DW+PW", widths=(16, 24), depths=(1, 1), input_shape=(1, 8, 8)))
    assert (tiny["params"], tiny["flops"]) == (expected.params, expected.flops)


def test_missing_zoo_is_skipped_with_a_note(capsys, trials_dir: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "igcnas.zoo", None)  # import fails
    assert main(["pareto", "--study", "demo", "--trials-dir", str(trials_dir), "--zoo"]) == 0
    captured = capsys.readouterr()
    assert "Pareto front" in captured.out and "--zoo ignored" in captured.err
