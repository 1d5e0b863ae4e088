"""``igcnas search`` and ``igcnas studies`` from the command line (subprocess), on digits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _igcnas(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "igcnas", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_search_cli_end_to_end_then_resume_and_list(tmp_path: Path) -> None:
    trials = str(tmp_path / "trials")
    # under 30k, few candidates of the paper-scale space fit (the first fitting one came anywhere from the 5th to
    # the 93rd sample in runs of this test): --max-attempts far above that
    # keeps the default cap (60 here) from stopping a run one trial short
    common = ["search", "--trials", "2", "--epochs", "2", "--train-subset", "300", "--max-params", "30k",
              "--trials-dir", trials, "--device", "cpu", "--max-attempts", "2000"]
    first = _igcnas(*common)
    # live progress on stderr: states, best values, elapsed time
    assert "study igc_cifar-digits-n300" in first.stderr and "0 earlier trials" in first.stderr
    assert "| complete " in first.stderr and " infeasible " in first.stderr and "| best " in first.stderr
    out = first.stdout
    assert "Pareto front (accuracy:max, params:min):" in out and "hypervolume" in out
    assert "trial  design" in out
    folder = Path(trials) / "igc_cifar-digits-n300"
    rows = [json.loads(p.read_text()) for p in sorted(folder.glob("*/trial.json"))]
    trained = [r for r in rows if r["state"] in ("complete", "pruned", "failed") and r["reused_from"] is None]
    assert len(trained) == 2
    for row in rows:
        trial_dir = folder / f"{row['trial']:04d}"
        assert (trial_dir / "arch.json").is_file()
        if row["state"] == "complete" and row["reused_from"] is None:
            assert (trial_dir / "weights.safetensors").is_file() and (trial_dir / "metrics.json").is_file()
        if row["state"] == "infeasible":
            assert not (trial_dir / "metrics.json").exists() and row["params"] > 30_000

    second = _igcnas(*common, "--quiet")  # rerunning the same command resumes the study
    assert second.stderr == ""
    rows2 = list(folder.glob("*/trial.json"))
    assert len(rows2) >= len(rows) + 2

    listed = _igcnas("studies", "--trials-dir", trials)
    assert "igc_cifar-digits-n300" in listed.stdout and "best_accuracy" in listed.stdout

    other = _igcnas(
        "search", "--trials", "1", "--epochs", "3", "--train-subset", "300", "--max-params", "30k",
        "--trials-dir", trials, check=False)
    assert other.returncode == 2
    assert other.stderr.startswith("igcnas: error: study 'igc_cifar-digits-n300'") and "epochs 2" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1


def test_search_help_and_bad_options() -> None:
    helped = _igcnas("search", "--help")
    for option in ("--space", "--max-params", "--max-flops", "--fill-budget", "--objectives", "--sampler",
                   "--pruner", "--backend", "--address", "--cpus-per-trial", "--gpus-per-trial", "--storage",
                   "--study", "--trials-dir"):
        assert option in helped.stdout
    bad = _igcnas("search", "--objectives", "acc,speed", check=False)
    assert bad.returncode == 2 and "'speed' is not an objective" in bad.stderr
    missing = _igcnas("search", "--space", "nope.yaml", check=False)
    assert missing.returncode == 2 and "nope.yaml is not a file" in missing.stderr and "shipped spaces: fog_designs, igc_cifar" in missing.stderr


@pytest.mark.slow
def test_killed_trial_is_failed_and_retried_once_on_rerun(tmp_path: Path) -> None:
    import signal
    import time

    trials = tmp_path / "trials"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IGCNAS_HEARTBEAT_S": "1", "IGCNAS_HEARTBEAT_GRACE_S": "2"}
    args = [sys.executable, "-m", "igcnas", "search", "--trials", "1", "--epochs", "15", "--train-subset", "200",
            "--pruner", "none", "--max-params", "none", "--study", "k9", "--trials-dir", str(trials), "--quiet"]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record = trials / "k9" / "0000" / "trial.json"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if record.is_file() and (json.loads(record.read_text()).get("epochs") or 0) >= 1:
                break
            assert proc.poll() is None, "the search ended before it could be killed"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # kill -9 in the middle of trial 0
    finally:
        proc.wait()
    killed = json.loads(record.read_text())
    assert killed["state"] == "running" and killed["epochs"] < 15
    time.sleep(4)  # past the grace period
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    from igcnas.search import load_study

    frame = load_study("k9", trials_dir=trials).set_index("trial")
    assert frame.loc[0, "state"] == "failed" and "heartbeat stopped" in frame.loc[0, "reason"]
    assert "retried as trial 1" in frame.loc[0, "reason"]
    assert frame.loc[1, "state"] == "complete" and frame.loc[1, "sampled"] == frame.loc[0, "sampled"]
