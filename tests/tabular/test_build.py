"""The tabular benchmark's builder: resumable runs, the CSV's columns, the high-fidelity rows, kill-safe reruns."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from igcnas.arch import ArchSpec
from igcnas.cost import count
from igcnas.errors import UserError
from igcnas.store import read_tabular_run, tabular_folder
from igcnas.tabular import PROXY_COLUMNS, TABLE_FILE, Fidelity, columns, read_table
from igcnas.tabular._build import build_table, gather_table, high_rows
from igcnas.tabular._sample import PlannedRow

TINY = {"low": Fidelity("low", train_subset=300, epochs=2, batch_size=32),
        "high": Fidelity("high", train_subset=300, epochs=3, batch_size=32)}


def _row(design: str, width: int, k: int) -> PlannedRow:
    spec = ArchSpec.simple(design, widths=(width, 2 * width), depths=(1, 1), input_shape=(1, 8, 8), num_classes=10)
    cost = count(spec)
    return PlannedRow(f"tiny/{design}/20k-50k/{k}", "tiny", design, "20k-50k", spec, cost.params, cost.flops)


@pytest.fixture(scope="module")
def plan() -> list[PlannedRow]:
    return [_row("DW+PW", 8, 0), _row("GC+PWG", 8, 1), _row("DW+PW", 16, 2)]


def test_high_rows_are_every_kth_sampled_row(plan: list[PlannedRow]) -> None:
    assert [r.name for r in high_rows(plan, every=2)] == [plan[0].name, plan[2].name]


def test_build_writes_every_row_and_resumes(tmp_path: Path, plan: list[PlannedRow]) -> None:
    out = tmp_path / "table.csv"
    build = dict(data_dir=None, dataset="digits", table="t", trials_dir=tmp_path, out=out, plan=plan,
                 fidelities=TINY, high_every=2, progress=False)
    assert build_table(**build) == out
    frame = pd.read_csv(out)
    assert list(frame.columns) == list(columns(TINY))
    assert list(frame["spec_id"]) == [r.spec.id for r in plan]
    assert frame["low_val_acc_2"].equals(frame["low_val_acc"])
    assert frame["high_val_acc"].notna().tolist() == [True, False, True]  # every 2nd sampled row
    assert set(PROXY_COLUMNS) <= set(frame.columns) and frame["params"].tolist() == [r.params for r in plan]
    assert frame["vote"].notna().all()
    root = tabular_folder(tmp_path, "t")
    first = read_tabular_run(root, plan[0].spec.id, "low")
    assert first is not None and len(first.val_accuracy) == 2
    assert not (root / plan[0].spec.id / "low" / "checkpoint.pt").exists()
    stamp = (root / plan[0].spec.id / "low" / "run.json").stat().st_mtime_ns
    build_table(**build)  # nothing left: trains nothing, rewrites the same table
    assert (root / plan[0].spec.id / "low" / "run.json").stat().st_mtime_ns == stamp
    assert pd.read_csv(out).equals(frame)
    packaged = TABLE_FILE.stat().st_mtime_ns if TABLE_FILE.is_file() else None
    beside = build_table(**{**build, "out": None})  # no --out: beside the runs, the packaged table left alone
    assert beside == root / "t.csv" and pd.read_csv(beside).equals(frame)
    assert (TABLE_FILE.stat().st_mtime_ns if TABLE_FILE.is_file() else None) == packaged


def test_gather_leaves_out_rows_not_trained_yet(tmp_path: Path, plan: list[PlannedRow]) -> None:
    frame = gather_table(plan, tabular_folder(tmp_path, "none"), TINY)
    assert frame.empty and list(frame.columns) == list(columns(TINY))


def test_read_table_names_the_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    pd.DataFrame({"spec_id": ["a"]}).to_csv(path, index=False)
    with pytest.raises(UserError, match="lacks the columns name"):
        read_table(path)
    with pytest.raises(UserError, match="does not exist"):
        read_table(tmp_path / "missing.csv")


def test_bad_high_every_is_a_one_line_error(tmp_path: Path, plan: list[PlannedRow]) -> None:
    with pytest.raises(UserError, match="--high-every: 0"):
        build_table(data_dir=None, dataset="digits", trials_dir=tmp_path, out=tmp_path / "x.csv", plan=plan,
                    fidelities=TINY, high_every=0, progress=False)


def test_cli_show_reads_the_frozen_plan(tmp_path: Path, plan: list[PlannedRow], capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from igcnas.cli import main
    from igcnas.store import write_plan

    root = tabular_folder(tmp_path, "cifar10")
    write_plan(root, [row.to_dict() for row in plan])
    assert main(["tabular", "show", "--trials-dir", str(tmp_path), "--format", "json"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert state[0] == {"size_bin": "20k-50k", "planned": 3, "scored": 0, "low": "0/3", "high": "0/1"}
    assert [s["planned"] for s in state[1:]] == [0, 0, 0]


def test_plan_file_round_trips_and_rejects_a_wrong_id(plan: list[PlannedRow]) -> None:
    row = plan[0].to_dict()
    assert PlannedRow.from_dict(row) == plan[0]
    with pytest.raises(UserError, match="delete the plan file"):
        PlannedRow.from_dict({**row, "spec_id": "0" * 12})


def test_a_row_another_worker_is_scoring_is_left_to_it(tmp_path: Path, plan: list[PlannedRow]) -> None:
    from igcnas.store import RunLock, read_proxy_scores

    root = tabular_folder(tmp_path, "t")
    build = dict(data_dir=None, dataset="digits", table="t", trials_dir=tmp_path, out=tmp_path / "t.csv", plan=plan,
                 fidelities={"low": TINY["low"]}, progress=False)
    with RunLock(root / plan[1].spec.id) as mine:  # as a second worker scoring that row holds it
        assert mine
        build_table(**build)
    assert read_proxy_scores(root, plan[1].spec.id) is None
    assert read_proxy_scores(root, plan[0].spec.id) is not None
    assert list(pd.read_csv(tmp_path / "t.csv")["spec_id"]) == [plan[0].spec.id, plan[2].spec.id]
    build_table(**build)  # the rerun scores what is left
    assert list(pd.read_csv(tmp_path / "t.csv")["spec_id"]) == [r.spec.id for r in plan]


@pytest.mark.parametrize(("device", "words"), [("gpu", "'gpu' is not a device"), ("cuda:99", "'cuda:99'")])
def test_build_checks_the_device_before_anything(tmp_path: Path, plan: list[PlannedRow], device: str,
                                                 words: str) -> None:
    with pytest.raises(UserError, match="^--device: ") as refused:
        build_table(data_dir=None, dataset="digits", table="t", trials_dir=tmp_path, out=tmp_path / "t.csv",
                    plan=plan, fidelities=TINY, device=device, progress=False)
    assert words in str(refused.value) and "\n" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []  # nothing scored, trained or written


def test_tabular_build_cli_checks_the_device_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from igcnas.cli import main

    # a missing CIFAR-10 folder as a tripwire: without the upfront check the error would be the data's
    with pytest.raises(SystemExit) as exited:
        main(["tabular", "build", "--device", "gpu", "--workers", "2", "--trials-dir", str(tmp_path / "trials"),
              "--data-dir", str(tmp_path / "no-cifar10"), "--out", str(tmp_path / "t.csv"), "--quiet"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("igcnas: error: --device: 'gpu' is not a device") and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
