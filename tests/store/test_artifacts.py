"""The trial store's artifact-store backend: every write mirrored, pulls fill a folder that ran nothing."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest

from igcnas.errors import UserError
from igcnas.store import StudyStore, TrialRecord
from igcnas.store._artifacts import ArtifactMirror, describe_artifacts, open_artifact_store


def _write_trial(store: StudyStore, number: int, state: str = "complete") -> None:
    store.write_arch(number, {"design": "gc+pwg", "n": number})
    store.put_file(number, "weights.safetensors", b"weights-%d" % number)
    store.write_record(TrialRecord(trial=number, state=state, accuracy=0.5, epochs=2, max_epochs=2))


def test_every_write_reaches_the_artifact_store_and_a_fresh_folder_pulls_it(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    writer = StudyStore(tmp_path / "a", "s", artifacts=str(shared))
    writer.write_settings({"study": "s", "epochs": 2})
    for number in (0, 1):
        _write_trial(writer, number)
    (writer.trial_dir(1) / "metrics.json").write_text('{"history": []}')  # written in place by the engine
    writer.publish(1, "metrics.json")

    reader = StudyStore(tmp_path / "b", "s", artifacts=str(shared))
    assert not reader.exists()
    assert reader.pull([0, 1, 7]) == 8  # study.json + (trial, arch, weights) x 2 + metrics of trial 1
    assert reader.settings() == {"study": "s", "epochs": 2}
    assert [r["trial"] for r in reader.rows()] == [0, 1]
    assert reader.read_file(1, "weights.safetensors") == b"weights-1"
    assert reader.read_file(1, "metrics.json") == b'{"history": []}'
    assert reader.pull([0, 1]) == 0  # up to date: nothing rewritten

    # a rewritten trial.json replaces the artifact, and the next pull takes it (and refreshes its files)
    writer.write_record(TrialRecord(trial=0, state="complete", accuracy=0.9, epochs=2, max_epochs=2))
    assert reader.pull([0]) >= 1
    assert reader.record(0).accuracy == pytest.approx(0.9)  # type: ignore[union-attr]


def test_without_artifacts_pull_is_a_no_op(tmp_path: Path) -> None:
    store = StudyStore(tmp_path, "s")
    _write_trial(store, 0)
    assert store.mirror is None and store.pull([0]) == 0


def test_a_store_pickles_with_its_artifact_store(tmp_path: Path) -> None:
    store = StudyStore(tmp_path / "t", "s", artifacts=str(tmp_path / "shared"))
    clone = pickle.loads(pickle.dumps(store))
    assert (clone.root, clone.name, clone.artifacts) == (store.root, "s", str(tmp_path / "shared"))
    _write_trial(clone, 3)
    assert ArtifactMirror(str(tmp_path / "shared"), "s").get(3, "weights.safetensors") == b"weights-3"


def test_ids_keep_studies_apart_and_never_leave_the_folder(tmp_path: Path) -> None:
    one, two = ArtifactMirror(str(tmp_path), "a"), ArtifactMirror(str(tmp_path), "b")
    one.put(0, "trial.json", b"1")
    assert two.get(0, "trial.json") is None
    assert one.artifact_id(5, "arch.json") == "a/0005/arch.json" and one.artifact_id(None, "study.json") == "a/study.json"
    store = open_artifact_store(str(tmp_path))
    with pytest.raises(ValueError):
        store.write("../outside", io.BytesIO(b"x"))


def test_file_writes_are_atomic(tmp_path: Path) -> None:
    """A failing write leaves the previous artifact whole and no temporary file behind."""
    store = open_artifact_store(f"file://{tmp_path}")
    store.write("s/0000/trial.json", io.BytesIO(b"old"))

    class Broken(io.BytesIO):
        def read(self, *args: object) -> bytes:
            raise OSError("disk gone")

    with pytest.raises(OSError):
        store.write("s/0000/trial.json", Broken())
    assert (tmp_path / "s" / "0000" / "trial.json").read_bytes() == b"old"
    assert [p.name for p in (tmp_path / "s" / "0000").iterdir()] == ["trial.json"]


@pytest.mark.parametrize(("uri", "message"), [
    ("ftp://host/x", "has the scheme 'ftp'; allowed"),
    ("s3://", "names no bucket"),
    ("  ", "is not an artifact store"),
])
def test_bad_uris_are_one_line_errors(uri: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        open_artifact_store(uri)
    assert "\n" not in str(info.value) and "--artifacts" in str(info.value)


def test_a_path_is_recorded_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert describe_artifacts("shared/art") == str(tmp_path / "shared" / "art")
    assert describe_artifacts("s3://bucket/p") == "s3://bucket/p"
