"""``--workers N``: worker processes on one storage, progress from each, exact trial counts, kill -9 of the parent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from igcnas.errors import UserError
from igcnas.search import SearchConfig, run_search
from igcnas.search._workers import default_workers, physical_cores, resolve_workers, worker_env

REPO = Path(__file__).resolve().parents[2]
SPACE = Path(__file__).with_name("fixtures") / "small_igc.yaml"
"""Most of its candidates fit 30k params: the workers, not the space, are tested."""
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "IGCNAS_HEARTBEAT_S": "1", "IGCNAS_HEARTBEAT_GRACE_S": "2"}


def test_default_is_one_worker_per_gpu_else_per_physical_core() -> None:
    assert default_workers(cores=2, num_threads=1, gpus=0) == 2
    assert default_workers(cores=2, num_threads=4, gpus=0) == 1
    assert default_workers(cores=16, num_threads=1, gpus=2) == 2
    assert 1 <= physical_cores() <= (os.cpu_count() or 1)
    assert resolve_workers(SearchConfig(workers=None, device="cpu")) == physical_cores()
    assert resolve_workers(SearchConfig(workers=3)) == 3


def test_each_gpu_worker_sees_its_own_gpu() -> None:
    assert [worker_env(i, gpus=2, visible=None)["CUDA_VISIBLE_DEVICES"] for i in range(3)] == ["0", "1", "0"]
    assert worker_env(0, gpus=2, visible="3,7")["CUDA_VISIBLE_DEVICES"] == "3"
    assert worker_env(0, gpus=0, visible=None).get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")
    assert worker_env(1, gpus=0, visible=None, num_threads=2)["OMP_NUM_THREADS"] == "2"


@pytest.mark.parametrize(("changes", "message"), [
    ({"workers": 0}, "--workers: 0 must be a positive integer or auto"),
    ({"workers": 2, "backend": "ray"}, "is for the Optuna backend"),
])
def test_bad_workers_are_one_line_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        SearchConfig(**changes)


def test_workers_cannot_share_in_process_data(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="pass data/train_fn only with workers=1"):
        run_search(SearchConfig(workers=2, trials_dir=str(tmp_path)), train_fn=lambda *a, **k: None)


def _args(tmp: Path, trials: int, epochs: int = 2) -> list[str]:
    return ["search", "--workers", "2", "--train-subset", "300", "--epochs", str(epochs), "--trials", str(trials),
            "--max-params", "30k", "--trials-dir", str(tmp / "trials"), "--study", "wk", "--pruner", "none",
            "--batch-size", "16", "--device", "cpu", "--space", str(SPACE)]


def _rows(folder: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(folder.glob("*/trial.json")):
        try:
            rows.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return rows


@pytest.mark.slow
def test_two_workers_train_exactly_the_trials_asked_and_both_report(tmp_path: Path) -> None:
    import optuna

    proc = subprocess.run([sys.executable, "-m", "igcnas", *_args(tmp_path, 5)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 workers on" in proc.stderr and " w1/2 " in proc.stderr and " w2/2 " in proc.stderr
    assert "Pareto front" in proc.stdout
    study = optuna.load_study(study_name="wk", storage=f"sqlite:///{tmp_path / 'trials' / 'igcnas.db'}")
    runs = {t.user_attrs.get("run") for t in study.trials}
    assert len(runs) == 1  # one run: both workers tag their trials with its id
    assert sum(bool(t.user_attrs.get("trained")) for t in study.trials) == 5
    assert all(t.state.name != "RUNNING" for t in study.trials)
    rows = _rows(tmp_path / "trials" / "wk")
    trained = [r for r in rows if r["state"] in ("complete", "pruned", "failed") and r.get("reused_from") is None]
    assert len(trained) == 5 and len({(r["spec_id"], json.dumps(r.get("sampled"))) for r in trained}) == 5


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_kill_9_of_the_parent_leaves_no_worker_and_the_rerun_resumes(
        tmp_path: Path, marked_processes: Callable[[str], list[int]]) -> None:
    from igcnas.search import load_study

    _marked = marked_processes
    mark = uuid.uuid4().hex
    env = {**ENV, "IGCNAS_TEST_CLUSTER": mark}
    args = _args(tmp_path, 6, epochs=3)
    parent = subprocess.Popen([sys.executable, "-m", "igcnas", *args], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    folder = tmp_path / "trials" / "wk"
    deadline = time.time() + 180
    try:
        # first a completed trial and both workers up: the parent (worker 1) and the forked worker 2 (counting them
        # scans every process, too slow to do between seeing a trial mid-training and the kill)
        while not (any(r["state"] == "complete" for r in _rows(folder)) and len(_marked(mark)) >= 2):
            assert parent.poll() is None, "the search ended before it could be killed"
            assert time.time() < deadline, "no trial completed with both workers up before the timeout"
            time.sleep(0.02)
        # then a trial after its first of 3 epochs, killed at once: two epochs to go, it is still running when the
        # parent dies (one seen at its second epoch once finished in between, and the rerun had nothing to retry)
        while not any(r["state"] == "running" and r.get("epochs") == 1 for r in _rows(folder)):
            assert parent.poll() is None, "the search ended before it could be killed"
            assert time.time() < deadline, "no trial was mid-training before the timeout"
            time.sleep(0.01)
        os.kill(parent.pid, signal.SIGKILL)  # the parent only, not its process group
        parent.wait()
        for _ in range(100):
            if not _marked(mark):
                break
            time.sleep(0.1)
        left = _marked(mark)
        assert not left, f"worker processes outlived their parent: {left}"
    finally:
        for pid in _marked(mark):
            os.kill(pid, signal.SIGKILL)
    before = load_study("wk", trials_dir=tmp_path / "trials")
    done_before = set(before[(before.state == "complete") & before.reused_from.isna()].trial)
    time.sleep(3)  # past heartbeat + grace: the rerun finds the interrupted trials stale
    rerun = subprocess.run([sys.executable, "-m", "igcnas", *args], cwd=REPO, env=ENV, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = load_study("wk", trials_dir=tmp_path / "trials").set_index("trial")
    assert done_before <= set(after[after.state == "complete"].index)  # nothing completed is lost
    assert not (after.state == "running").any(), after[["state", "reason"]]
    killed = after[after.reason.astype(str).str.contains("heartbeat stopped")]
    assert len(killed) >= 1 and killed.reason.str.contains("retried as trial").all()
