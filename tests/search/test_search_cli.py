"""``igcnas search`` and ``igcnas studies`` from the command line (subprocess), on digits."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def _refused(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> str:
    """Run ``igcnas search ARGS`` in this process; assert a one-line error (rc 2) and no study written."""
    from igcnas.cli import main

    trials = tmp_path / "trials"
    # the missing CIFAR-10 folder is a tripwire: input that passes the upfront checks stops at the data error
    tripwire = ["--dataset", "cifar10", "--data-dir", str(tmp_path / "no-cifar10"), "--trials", "1", "--epochs", "1",
                "--baselines", "none", "--trials-dir", str(trials), "--quiet"]
    with pytest.raises(SystemExit) as exited:
        main(["search", *args, *tripwire])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("igcnas: error: ") and len(err.strip().splitlines()) == 1, err
    assert not trials.exists()
    return err


@pytest.mark.parametrize(("device", "words"), [("gpu", "'gpu' is not a device"), ("cuda:99", "'cuda:99'")])
def test_search_checks_device_before_writing(capsys: pytest.CaptureFixture[str], tmp_path: Path, device: str,
                                             words: str) -> None:
    err = _refused(capsys, tmp_path, "--device", device)
    assert err.startswith("igcnas: error: --device: ") and words in err


@pytest.mark.parametrize("seed", ["-1", str(2**32), "99999999999"])
def test_search_refuses_seed_out_of_numpy_range(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                seed: str) -> None:
    err = _refused(capsys, tmp_path, "--seed", seed)
    assert err.startswith(f"igcnas: error: --seed: {seed} must be an integer from 0 to 2**32 - 1")


@pytest.mark.parametrize("option", ["--max-params", "--max-flops"])
def test_search_refuses_budget_rounding_to_zero(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                option: str) -> None:
    err = _refused(capsys, tmp_path, option, "0.4")
    assert f"argument {option}: '0.4' rounds to 0; give a count of at least 1" in err


@pytest.mark.parametrize(("option", "value"), [("--address", "10.0.0.1:6379"), ("--storage-path", "ray-state"),
                                               ("--cpus-per-trial", "4"), ("--cpus-per-trial", "1"),
                                               ("--gpus-per-trial", "0")])
def test_search_refuses_ray_only_options_without_ray(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                     option: str, value: str) -> None:
    err = _refused(capsys, tmp_path, option, value)  # a given value is refused, even the Ray default
    assert err == f"igcnas: error: {option} is for --backend ray; add --backend ray (or drop {option})\n"


@pytest.mark.parametrize("objectives", ["params", "flops", "params,flops"])
def test_search_refuses_objectives_without_accuracy(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                    objectives: str) -> None:
    err = _refused(capsys, tmp_path, "--objectives", objectives)
    assert err.startswith(f"igcnas: error: --objectives: {objectives} has no accuracy objective") and "add acc" in err


def test_search_config_checks_input_up_front() -> None:
    from igcnas.errors import UserError
    from igcnas.search import SearchConfig

    cases: list[tuple[dict[str, Any], str]] = [
        ({"device": "gpu"}, "--device: 'gpu' is not a device"),
        ({"seed": -1}, "--seed: -1 must be an integer from 0"),
        ({"seed": 2**32}, "--seed: 4294967296 must be an integer from 0"),
        ({"max_params": 0}, "--max-params: 0 must be a count >= 1"),
        ({"max_flops": 0.4}, "--max-flops: 0.4 must be a count >= 1"),
        ({"address": "auto"}, "--address is for --backend ray"),
        ({"storage_path": "s3://bucket/x"}, "--storage-path is for --backend ray"),
        ({"cpus_per_trial": 4.0}, "--cpus-per-trial is for --backend ray"),
        ({"gpus_per_trial": 0.5}, "--gpus-per-trial is for --backend ray"),
        ({"objectives": ("params",)}, "--objectives: params has no accuracy objective"),
    ]
    for changes, message in cases:
        with pytest.raises(UserError, match="^" + re.escape(message)):
            SearchConfig(**changes)
    # the Ray backend keeps its resource defaults and takes the Ray-only options; cuda on a cluster is not checked here
    ray = SearchConfig(backend="ray")
    assert (ray.cpus_per_trial, ray.gpus_per_trial, ray.address, ray.storage_path) == (1.0, 0.0, None, None)
    assert SearchConfig(backend="ray", address="auto", device="cuda", gpus_per_trial=0.5).gpus_per_trial == 0.5
    assert SearchConfig(seed=2**32 - 1, max_params=1).seed == 2**32 - 1
