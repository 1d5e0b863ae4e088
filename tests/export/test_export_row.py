"""export_row: exporting a row of a trials frame (e.g. of a Pareto front) equals exporting that trial by number."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from igcnas.analysis import pareto_front
from igcnas.errors import UserError
from igcnas.export import MANIFEST_FILE, MODEL_CARD_FILE, ExportResult, export_row, export_trial
from igcnas.search.results import load_study, open_study
from igcnas.store import ARCH_FILE, WEIGHTS_FILE

_PER_RUN = ("out_dir", "exported_at", "load_snippet")  # what differs between two exports of the same trial


def _manifest(result: ExportResult) -> dict[str, Any]:
    """The export.json of a result without the entries that name its folder or time."""
    manifest = json.loads((result.out_dir / MANIFEST_FILE).read_text())
    return {key: value for key, value in manifest.items() if key not in _PER_RUN}


def _assert_same_export(got: ExportResult, want: ExportResult) -> None:
    """Two exports of one trial agree in everything but their folder and time."""
    assert got.spec == want.spec
    assert (got.params, got.flops, got.onnx_max_abs_diff) == (want.params, want.flops, want.onnx_max_abs_diff)
    assert {k: p.name for k, p in got.files.items()} == {k: p.name for k, p in want.files.items()}
    assert {k: v for k, v in got.info.items() if k != "exported_at"} == {
        k: v for k, v in want.info.items() if k != "exported_at"}
    assert _manifest(got) == _manifest(want)
    for name in (ARCH_FILE, WEIGHTS_FILE, "search_metrics.json"):
        assert (got.out_dir / name).read_bytes() == (want.out_dir / name).read_bytes(), name
    card = (got.out_dir / MODEL_CARD_FILE).read_text().replace(str(got.out_dir), "OUT")
    assert card == (want.out_dir / MODEL_CARD_FILE).read_text().replace(str(want.out_dir), "OUT")


@pytest.fixture(scope="module")
def by_number(trials_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    """The first trial of the demo study's Pareto front, exported by its number."""
    first = int(pareto_front(load_study("demo", trials_dir=trials_dir)).iloc[0]["trial"])
    return export_trial("demo", tmp_path_factory.mktemp("by-number") / "out", trial=first, trials_dir=trials_dir)


@pytest.mark.parametrize("given", ["trials_dir", "study", "row only", "dict row"])
def test_export_first_front_row_equals_export_by_number(
    trials_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, by_number: ExportResult, given: str
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./trials folder: "row only" must find the study from the row
    front = pareto_front(load_study("demo", trials_dir=trials_dir))
    row = front.iloc[0]
    assert int(row["trial"]) == by_number.info["trial"] == 1  # fake_study.FRONT[0]
    options: dict[str, Any] = {
        "trials_dir": {"trials_dir": trials_dir},
        "study": {"study": open_study("demo", trials_dir=trials_dir)},
        "row only": {},  # the study folder is the one holding the row's arch_path
        "dict row": {"trials_dir": trials_dir},
    }[given]
    result = export_row(row.to_dict() if given == "dict row" else row, out_dir=tmp_path / "row", **options)
    assert result.out_dir == tmp_path / "row"
    _assert_same_export(result, by_number)


def _row(trials_dir: Path, trial: int) -> dict[str, Any]:
    """One row of the demo study as a dict."""
    frame = load_study("demo", trials_dir=trials_dir)
    return frame.loc[frame["trial"] == trial].iloc[0].to_dict()


@pytest.mark.parametrize(
    ("trial", "needle"),
    [(4, r"trial 4 of study 'demo' is pruned, not complete.*pareto_front"),
     (5, r"trial 5 of study 'demo' is failed \(build failed: out of memory\), not complete")],
)
def test_row_that_is_not_complete_is_a_one_line_error(trials_dir: Path, tmp_path: Path, trial: int,
                                                      needle: str) -> None:
    with pytest.raises(UserError, match=needle) as info:
        export_row(_row(trials_dir, trial), out_dir=tmp_path / "out", trials_dir=trials_dir)
    assert len(str(info.value).splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_complete_row_without_weights_names_the_trial_and_the_fix(fake, tmp_path: Path) -> None:
    root = tmp_path / "trials"
    fake.write_fake_study(root, "demo")
    (root / "demo" / "0003" / WEIGHTS_FILE).unlink()
    row = _row(root, 3)
    with pytest.raises(UserError, match=rf"trial 3 of study 'demo': no {WEIGHTS_FILE} .*pick another trial") as info:
        export_row(row, out_dir=tmp_path / "out", trials_dir=root)
    assert len(str(info.value).splitlines()) == 1
    with pytest.raises(UserError, match=r"it reused the result of trial 1 .*export trial 1"):
        export_row({**row, "reused_from": 1}, out_dir=tmp_path / "out", trials_dir=root)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("make_row", "needle"),
    [
        (lambda frame: frame, "pass one row"),
        (lambda frame: [1, 2], "expected a row of a trials frame"),
        (lambda frame: {"state": "complete", "study": "demo"}, "has no trial number"),
        (lambda frame: {"trial": 1, "state": "complete"}, "names no study"),
    ],
)
def test_rows_that_are_not_rows_say_what_to_pass(trials_dir: Path, tmp_path: Path, make_row, needle: str) -> None:
    frame = load_study("demo", trials_dir=trials_dir)
    with pytest.raises(UserError, match=needle):
        export_row(make_row(frame), out_dir=tmp_path / "out", trials_dir=trials_dir)


def test_row_of_another_study_is_refused(trials_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"row of study 'demo' but study= is 'empty'"):
        export_row(_row(trials_dir, 1), out_dir=tmp_path / "out", study=open_study("empty", trials_dir=trials_dir))
