"""Workers as separate machines on one Optuna study: a real PostgreSQL server, or a JournalStorage log file.

Three ``igcnas search`` processes share one study, each with its own ``--trials-dir`` (nothing on disk in
common but the storage and the ``--artifacts`` store, as on three machines with a database server or an NFS
path). One is killed with SIGKILL mid-trial. A fourth folder that ran nothing then reads the whole study and
exports its best trial.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "IGCNAS_HEARTBEAT_S": "1", "IGCNAS_HEARTBEAT_GRACE_S": "5"}
STUDY = "mm"
TRIALS_PER_WORKER = 5
SPACE = REPO / "tests" / "search" / "fixtures" / "small_igc.yaml"
"""A small space, most of whose candidates fit the 30k budget: with the default (paper-scale) space most were over
it, and a worker could reach its attempts cap one trial short of its count (seen once: 9 of 10 trained)."""


def _rows(folder: Path) -> list[dict[str, Any]]:
    """The readable trial.json rows of a study folder."""
    rows = []
    for path in sorted(folder.glob("*/trial.json")):
        try:
            rows.append(json.loads(path.read_text()))
        except (OSError, ValueError):  # being replaced right now
            continue
    return rows


def _worker(machine: Path, storage: str, artifacts: Path) -> subprocess.Popen[str]:
    """One ``igcnas search`` worker in its own folder (its own trials dir), on the shared storage and artifacts."""
    machine.mkdir(parents=True, exist_ok=True)
    args = ["search", "--space", str(SPACE), "--train-subset", "200", "--epochs", "3", "--trials", str(TRIALS_PER_WORKER),
            "--max-params", "30k", "--storage", storage, "--artifacts", str(artifacts), "--study", STUDY,
            "--pruner", "none", "--batch-size", "16", "--device", "cpu", "--workers", "1", "--quiet"]
    return subprocess.Popen([sys.executable, "-m", "igcnas", *args], cwd=machine, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _kill_mid_trial(proc: subprocess.Popen[str], folder: Path, *, timeout: float = 240) -> dict[str, Any]:
    """SIGKILL the worker's process group once one of its trials has an epoch done but is not finished."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        running = [r for r in _rows(folder) if r["state"] == "running" and 1 <= (r.get("epochs") or 0) < 3]
        if running:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return running[0]
        if proc.poll() is not None:
            pytest.fail(f"the worker ended before it could be killed: {proc.communicate()[1][-2000:]}")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    pytest.fail("no trial of the worker was mid-training before the timeout")


def _storage_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "postgres":
        server = request.getfixturevalue("postgres")
        return str(server.new_database("igcnas_mm"))
    return f"journal:{tmp_path / 'shared' / 'studies.log'}"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["postgres", "journal"])
def test_three_workers_one_study_kill_one_export_from_a_fourth(kind: str, tmp_path: Path,
                                                               request: pytest.FixtureRequest) -> None:
    import optuna

    from igcnas.search import load_study
    from igcnas.search._storage import open_storage

    storage = _storage_url(kind, tmp_path, request)
    artifacts = tmp_path / "shared" / "artifacts"
    machines = [tmp_path / f"machine{i}" for i in range(3)]
    procs = [_worker(machine, storage, artifacts) for machine in machines]
    victim = _kill_mid_trial(procs[0], machines[0] / "trials" / STUDY)
    outputs = [proc.communicate(timeout=400) for proc in procs[1:]]
    for proc, (out, err) in zip(procs[1:], outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
        for bad in ("Traceback", "OperationalError", "database is locked", "deadlock", "LockError", "warning: stopped"):
            assert bad not in out + err, (bad, err[-3000:])

    # the killed machine's folder holds only its own trials; a finished worker's closing summary read the whole
    # study, so its folder was filled from the artifact store
    own = [{int(r["trial"]) for r in _rows(machine / "trials" / STUDY)} for machine in machines]
    assert own[0] and own[0] < own[1] | own[2]

    # a fourth machine that ran nothing reads the whole study
    fourth = tmp_path / "machine3"
    fourth.mkdir()
    frame = load_study(STUDY, storage=storage, trials_dir=fourth / "trials", artifacts=str(artifacts))
    study = optuna.load_study(study_name=STUDY, storage=open_storage(storage, heartbeat=False))
    assert set(frame.trial) == {t.number for t in study.trials} >= own[0] | own[1] | own[2]
    table = frame.set_index("trial")
    assert not (table.state == "running").any(), table[["state", "reason"]]

    # the killed trial is failed by its heartbeat and retried exactly once; the retry completed
    killed = table.loc[int(victim["trial"])]
    assert killed.state == "failed" and "heartbeat stopped" in killed.reason, killed.reason
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == int(victim["trial"])]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    assert table.loc[retries[0].number, "sampled"] == killed.sampled

    # N distinct trained trials: every surviving worker trained its count, no architecture trained twice
    trained = frame[frame.state.isin(["complete", "pruned", "failed"]) & frame.reused_from.isna()]
    settled = trained[trained.trial != int(victim["trial"])]
    assert len(settled) >= 2 * TRIALS_PER_WORKER
    assert not settled.duplicated(["spec_id", "sampled"]).any(), settled[["trial", "spec_id", "sampled"]]

    # nothing completed is lost: every trained complete trial has its weights in the fourth folder now
    complete = trained[trained.state == "complete"]
    for number in complete.trial:
        assert (fourth / "trials" / STUDY / f"{int(number):04d}" / "weights.safetensors").is_file(), number

    # export --best from the fourth folder: the ONNX file's output matches PyTorch
    result = subprocess.run(
        [sys.executable, "-m", "igcnas", "export", "--study", STUDY, "--best", "--storage", storage,
         "--artifacts", str(artifacts), "--out", "best", "--format", "json"],
        cwd=fourth, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert table.loc[int(report["trial"]), "accuracy"] == pytest.approx(float(complete.accuracy.max()))
    assert report["onnx_check"]["max_abs_diff"] < 1e-3
    import torch

    from igcnas.export import check_onnx, load_exported

    model = load_exported(fourth / "best")
    shape = json.loads((fourth / "best" / "arch.json").read_text())["input_shape"]
    assert check_onnx(fourth / "best" / "model.onnx", model, torch.randn(4, *shape)) < 1e-3

    # pareto from the fourth folder lists every trial of the study
    listing = subprocess.run(
        [sys.executable, "-m", "igcnas", "pareto", "--study", STUDY, "--storage", storage, "--format", "json"],
        cwd=fourth, env=ENV, capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr[-2000:]
    payload = json.loads(listing.stdout)
    assert payload["trials"] == len(frame)
    assert payload["front"] and {int(row["trial"]) for row in payload["front"]} <= set(frame[frame.state == "complete"].trial)
