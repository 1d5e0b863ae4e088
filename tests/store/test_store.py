"""The trial store: names, atomic writes, strict and lenient reads, and the one JSON policy."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from igcnas.errors import UserError
from igcnas.store import (
    ARCH_FILE,
    TRIAL_FILE,
    StudyStore,
    TrialRecord,
    fully_trained,
    fully_trained_mask,
    json_safe,
    list_study_names,
    read_json_file,
    write_json,
    write_json_if_changed,
)


def test_records_round_trip_and_rows_come_sorted(tmp_path: Path) -> None:
    store = StudyStore(tmp_path, "s")
    for number in (2, 0, 1):
        store.write_record(TrialRecord(trial=number, state="complete", accuracy=0.5, epochs=2, max_epochs=2))
    assert [r["trial"] for r in store.rows()] == [0, 1, 2]
    assert store.record(1) == TrialRecord(trial=1, state="complete", accuracy=0.5, epochs=2, max_epochs=2)
    assert store.record(7) is None
    assert (tmp_path / "s" / "0002" / TRIAL_FILE).is_file()
    assert list_study_names(tmp_path) == ["s"] and list_study_names(tmp_path / "none") == []


def test_lenient_reads_skip_a_broken_row_and_strict_reads_name_it(tmp_path: Path) -> None:
    store = StudyStore(tmp_path, "s")
    store.write_record(TrialRecord(trial=0, state="pruned"))
    broken = store.trial_dir(1) / TRIAL_FILE
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\xff{not json")
    assert [r["trial"] for r in store.rows()] == [0] and store.record(1) is None
    with pytest.raises(UserError, match=r"0001/trial\.json: trial\.json is not valid JSON"):
        store.rows(strict=True)
    (tmp_path / "s" / "study.json").write_text("[1, 2]")
    assert store.settings() == {}
    with pytest.raises(UserError, match="expected a JSON object of search settings"):
        store.settings(strict=True)


def test_arch_is_written_once_and_files_by_plain_names(tmp_path: Path) -> None:
    store = StudyStore(tmp_path, "s")
    recorded = store.write_arch(3, {"a": 1})
    assert recorded == "s/0003/arch.json"  # relative to the trials folder: records name no machine path
    path = tmp_path / recorded
    assert path == store.trial_dir(3) / ARCH_FILE
    stamp = path.stat().st_mtime_ns
    assert not write_json_if_changed(path, {"a": 1}) and path.stat().st_mtime_ns == stamp
    assert write_json_if_changed(path, {"a": 2}) and read_json_file(path, ARCH_FILE) == {"a": 2}
    store.put_file(3, "weights.safetensors", b"\x00\x01")
    assert store.read_file(3, "weights.safetensors") == b"\x00\x01" and store.read_file(3, "x") is None
    for bad in ("../escape", "a/b", "", ".."):
        with pytest.raises(ValueError, match="not a trial file name"):
            store.put_file(3, bad, b"")


def test_writes_are_atomic_and_json_is_strict(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        write_json(target, {"a": object()})
    assert read_json_file(target, "x") == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["x.json"]
    write_json(target, {"nan": math.nan, "inf": -math.inf, "np": np.float32(0.5), "i": np.int64(3),
                        "na": pd.NA, "path": Path("a/b"), "t": (1, 2)})
    assert json.loads(target.read_text()) == {"nan": None, "inf": None, "np": 0.5, "i": 3, "na": None,
                                              "path": "a/b", "t": [1, 2]}
    assert json_safe({1: [np.float64("nan")]}) == {"1": [None]}


def test_fully_trained_is_one_definition_for_rows_and_frames() -> None:
    rows = [{"state": "complete", "epochs": 6, "max_epochs": 6}, {"state": "complete", "epochs": 3, "max_epochs": 6},
            {"state": "pruned", "epochs": 6, "max_epochs": 6}, {"state": "complete", "epochs": None, "max_epochs": 0}]
    expected = [fully_trained(r) for r in rows]
    assert expected == [True, False, False, True]
    assert fully_trained_mask(pd.DataFrame(rows)).tolist() == expected


def test_a_store_pickles_by_location(tmp_path: Path) -> None:
    store = pickle.loads(pickle.dumps(StudyStore(tmp_path, "s")))
    assert (store.root, store.name, store.folder) == (tmp_path, "s", tmp_path / "s")
    record = TrialRecord.from_dict({"trial": 1, "state": "failed", "future_key": 1})  # rows of other versions
    assert record.trial == 1 and record.trained and not TrialRecord(trial=2, state="infeasible").trained
