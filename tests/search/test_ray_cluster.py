"""``igcnas search --backend ray --address ...`` on a real cluster whose worker node cannot see the driver's files.

The cluster (``tests/search/conftest.py``): a head started with ``ray start --head --num-cpus=0`` and a worker node
started with ``ray start --address ...`` in a private mount namespace with a tmpfs over the trials folder. Every
trial therefore trains on the worker node, and its record, metrics and weights must still reach the driver's
``trials/`` (through the store actor on the driver's node). Then ``igcnas export --best`` works on the driver, and
a kill -9 of the driver followed by the same command loses nothing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from igcnas.search import load_study

IGCNAS = Path(sys.executable).with_name("igcnas")
pytestmark = pytest.mark.xdist_group("ray")  # one pytest-xdist worker runs every Ray test
SMALL_SPACE = Path(__file__).with_name("fixtures") / "small_igc.yaml"
"""Most candidates of this space fit the default budget: on Ray each over-budget one is a Tune trial of its own."""


def _search(cluster: object, tmp_path: Path, *, trials: int, epochs: int, study: str = "cluster",
            subset: int = 300) -> list[str]:
    """The driver's command: one trial at a time (2 CPUs each), so none is cut short when --trials is reached."""
    return [str(IGCNAS), "search", "--backend", "ray", "--address", cluster.address,  # type: ignore[attr-defined]
            "--dataset", "digits", "--train-subset", str(subset), "--trials", str(trials), "--epochs", str(epochs),
            "--pruner", "none", "--cpus-per-trial", "2", "--space", str(SMALL_SPACE), "--study", study, "--trials-dir", str(tmp_path / "trials"), "--quiet"]


def _rows(folder: Path) -> list[dict[str, object]]:
    rows = []
    for path in sorted(folder.glob("*/trial.json")):
        try:
            rows.append(json.loads(path.read_text()))
        except ValueError:  # being replaced right now
            continue
    return rows


@pytest.mark.slow
def test_ray_cluster_without_shared_files_keeps_every_trial_on_the_driver(ray_cluster: object,
                                                                           tmp_path: Path) -> None:
    env = ray_cluster.env  # type: ignore[attr-defined]
    # the worker node really cannot see the driver's trials folder
    probe = ("import ray, sys, os; ray.init(address=sys.argv[1], logging_level='ERROR'); "
             "(tmp := sys.argv[2]) and open(os.path.join(tmp, 'driver-only'), 'w').close(); "
             "f = ray.remote(num_cpus=1)(lambda p: sorted(os.listdir(p))); print(ray.get(f.remote(tmp)))")
    seen = subprocess.run([sys.executable, "-c", probe, ray_cluster.address, str(tmp_path / "trials")],  # type: ignore[attr-defined]
                          env=env, capture_output=True, text=True, timeout=120)
    assert seen.returncode == 0, seen.stderr[-2000:]
    assert seen.stdout.strip().splitlines()[-1] == "[]"
    (tmp_path / "trials" / "driver-only").unlink()

    first = subprocess.run(_search(ray_cluster, tmp_path, trials=4, epochs=2), env=env, capture_output=True,
                           text=True, timeout=600, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Pareto front" in first.stdout
    folder = tmp_path / "trials" / "cluster"
    frame = load_study("cluster", trials_dir=tmp_path / "trials")
    trained = frame[frame.state.isin(["complete", "pruned", "failed"]) & frame.reused_from.isna()]
    assert len(trained) >= 4 and not (frame.state == "running").any()
    assert set(trained.state) == {"complete"}, frame[["trial", "state", "reason"]].to_string()
    for row in frame.itertuples():
        trial_dir = folder / f"{row.trial:04d}"
        assert (trial_dir / "trial.json").is_file() and (trial_dir / "arch.json").is_file()
        if row.state == "complete" and pd.isna(row.reused_from):
            assert (trial_dir / "weights.safetensors").stat().st_size > 0
            metrics = json.loads((trial_dir / "metrics.json").read_text())
            assert metrics["status"] == "completed" and len(metrics["history"]) == 2
    head_and_workers = {str(n) for n in frame.node if str(n)}
    assert len(head_and_workers) == 1  # the head has no CPUs: every trial trained on the hidden worker node

    out = tmp_path / "best"
    export = subprocess.run([str(IGCNAS), "export", "--study", "cluster", "--trials-dir", str(tmp_path / "trials"),
                             "--best", "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert export.returncode == 0, export.stderr[-3000:]
    assert (out / "model.onnx").is_file() and (out / "weights.safetensors").is_file()

    # kill -9 of the driver mid-search, then the same command again: nothing completed is lost
    folder = tmp_path / "trials" / "killed"
    before: dict[int, object] = {}
    command = _search(ray_cluster, tmp_path, trials=3, epochs=8, study="killed", subset=500)
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and driver.poll() is None:
            rows = _rows(folder)
            if any(r["state"] == "complete" and int(r["trial"]) not in before for r in rows) and \
                    any(r["state"] == "running" for r in rows):
                break
            time.sleep(0.2)
        assert driver.poll() is None, "the search ended before it could be killed mid-trial"
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    completed_at_kill = {int(r["trial"]): r for r in _rows(folder) if r["state"] == "complete"}
    assert completed_at_kill, "killed before any trial completed"
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    final = load_study("killed", trials_dir=tmp_path / "trials")
    assert not (final.state == "running").any()
    for number, row in completed_at_kill.items():
        now = final[final.trial == number].iloc[0]
        assert now.state == "complete" and now.accuracy == pytest.approx(float(row["accuracy"]))  # type: ignore[arg-type]
        if row.get("reused_from") is None:
            assert (folder / f"{number:04d}" / "weights.safetensors").is_file()
    assert len(final[final.state == "complete"]) > len(completed_at_kill)
