"""Baselines: zoo networks trained first with the study's schedule, once, outside the search's trial count."""

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

from igcnas.analysis.baselines import compare_with_baselines
from igcnas.cli import main
from igcnas.data import DataBundle, load_data
from igcnas.errors import UserError
from igcnas.search import SearchConfig, load_study, run_search
from igcnas.search._baselines import resolve_baselines
from igcnas.train import EpochMetrics, TrainResult

REPO = Path(__file__).resolve().parents[2]
NAMES = "RegConv-W16-D8,IGC-L24M2-D20"


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_data("digits", train_subset=300, seed=0)


class Spy:
    """Stands in for igcnas.train.train: records the order of what it trains (baselines by their spec name)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, model: Any, data: Any, config: Any, *, on_epoch: Any, checkpoint_dir: Any, arch: Any,
                 progress: bool) -> TrainResult:
        self.calls.append(arch.get("name") or "searched")
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        acc = 0.5 + (len(self.calls) % 7) / 20
        history = [EpochMetrics(e, 1.0, acc, 1.0, acc, 0.1, 0.01, 1000.0, 100) for e in range(1, config.epochs + 1)]
        for metrics in history:
            on_epoch(metrics)
        (Path(checkpoint_dir) / "weights.safetensors").write_bytes(b"")
        return TrainResult("completed", len(history), history, acc, acc, None, 0.01, "completed")  # type: ignore[arg-type]


def _config(tmp_path: Path, **changes: Any) -> SearchConfig:
    base = {"trials": 3, "epochs": 2, "trials_dir": str(tmp_path / "trials"), "device": "cpu", "progress": False,
            "train_subset": 300, "max_params": 60_000, "baselines": NAMES, "pruner": "none", "sampler": "random"}
    return SearchConfig(**{**base, **changes})


def test_auto_takes_the_layouts_networks_within_the_budget() -> None:
    found = resolve_baselines("auto", layout="cifar", input_shape=(3, 32, 32), num_classes=10, max_params=156_000,
                              max_flops=None)
    assert [b.name for b in found] == ["RegConv-W16-D8", "IGC-L24M2-D20", "IGCV1-C48-D20", "IGCV2-C80-D20"]
    assert all(b.params <= 156_000 and not b.over for b in found)
    assert resolve_baselines("auto", layout="cifar", input_shape=(3, 32, 32), num_classes=10, max_params=None,
                             max_flops=None) == []
    assert resolve_baselines("none", layout="cifar", input_shape=(3, 32, 32), num_classes=10, max_params=1e9,
                             max_flops=None) == []
    named = resolve_baselines("IGC-L24M2-D20", layout="cifar", input_shape=(1, 8, 8), num_classes=10,
                              max_params=20_000, max_flops=None)
    assert named[0].spec.input_shape == (1, 8, 8) and "params" in named[0].over  # named: trained over budget


def test_an_unknown_baseline_is_a_one_line_error_listing_the_zoo() -> None:
    with pytest.raises(UserError, match=r"^--baselines: unknown zoo network 'IGC-L99'; did you mean .*\? \(list "
                                        r"them all with 'igcnas zoo'\)$"):
        SearchConfig(baselines="IGC-L24M2-D20,IGC-L99")


def test_baselines_are_trained_first_once_and_outside_the_trial_count(tmp_path: Path, digits: DataBundle) -> None:
    spy = Spy()
    config = _config(tmp_path)
    name = run_search(config, data=digits, train_fn=spy)
    assert spy.calls[:2] == ["RegConv-W16-D8", "IGC-L24M2-D20"] and spy.calls[2:] == ["searched"] * 3
    frame = load_study(name, trials_dir=config.trials_dir)
    assert (frame.trial >= 0).all() and "baseline" not in frame or frame["baseline"].isna().all()
    both = load_study(name, trials_dir=config.trials_dir, baselines=True)
    rows = both[both.trial < 0]
    assert sorted(rows.baseline) == sorted(NAMES.split(",")) and set(rows.state) == {"complete"}
    assert (Path(config.trials_dir) / name / "baseline-001" / "trial.json").is_file()
    # a rerun trains no baseline again and adds --trials searched trials
    run_search(config, data=digits, train_fn=spy)
    assert spy.calls[5:] and set(spy.calls[5:]) == {"searched"}
    trained = load_study(name, trials_dir=config.trials_dir).query("state == 'complete' and reused_from.isna()")
    assert len(trained) == spy.calls.count("searched")  # baselines never enter the search's own count
    assert len(load_study(name, trials_dir=config.trials_dir, baselines=True).query("trial < 0")) == 2


def test_the_summary_compares_with_the_trials_table(tmp_path: Path, digits: DataBundle, capsys,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import igcnas.train

    spy = Spy()
    monkeypatch.setattr(igcnas.train, "train", spy)
    args = ["search", "--trials", "3", "--epochs", "2", "--train-subset", "300", "--max-params", "80k",
            "--baselines", NAMES, "--pruner", "none", "--sampler", "random", "--trials-dir",
            str(tmp_path / "trials"), "--workers", "1", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.startswith("best searched trial"))
    both = load_study("igc_cifar-digits-n300", trials_dir=tmp_path / "trials", baselines=True)
    c = compare_with_baselines(both, max_params=80_000)
    assert c is not None and c["baseline"] == "RegConv-W16-D8"  # IGC-L24M2-D20 is over the 80k budget
    assert f"trial {c['found_trial']} " in line and f"{c['found_accuracy']:.4f}" in line
    assert f"{c['delta_points']:+.2f} points" in line and f"{c['delta_params']:+,} params" in line
    assert main(["pareto", "--study", "igc_cifar-digits-n300", "--trials-dir", str(tmp_path / "trials"),
                 "--baselines", "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert {b["baseline"] for b in payload["baselines"]} == set(NAMES.split(","))
    assert payload["comparison"] == c and payload["retrained"] == []
    assert all(row["trial"] >= 0 for row in payload["front"])


@pytest.mark.slow
def test_a_baseline_killed_mid_training_is_trained_again_and_only_then(tmp_path: Path) -> None:
    import optuna

    trials = tmp_path / "trials"
    cmd = [sys.executable, "-m", "igcnas", "search", "--trials", "1", "--epochs", "12", "--train-subset", "300",
           "--max-params", "30k", "--baselines", "IGC-L24M2-D20", "--pruner", "none", "--trials-dir", str(trials),
           "--workers", "1", "--study", "killed"]
    env = {**os.environ, "IGCNAS_HEARTBEAT_S": "1", "IGCNAS_HEARTBEAT_GRACE_S": "3"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    metrics = trials / "killed" / "baseline-001" / "metrics.json"
    deadline = time.monotonic() + 120
    while not metrics.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert metrics.is_file(), "the baseline never started training"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(4)  # past the grace period: the killed attempt is stale
    rerun = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "baseline IGC-L24M2-D20 training" in rerun.stderr
    row = json.loads((trials / "killed" / "baseline-001" / "trial.json").read_text())
    assert row["state"] == "complete" and row["epochs"] == 12 and row["baseline"] == "IGC-L24M2-D20"
    third = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert third.returncode == 0 and "baseline IGC-L24M2-D20 training" not in third.stderr
    side = optuna.load_study(study_name="killed::baselines", storage=f"sqlite:///{trials / 'igcnas.db'}")
    states = sorted(t.state.name for t in side.get_trials())
    assert states == ["COMPLETE", "FAIL"]
    assert not list((trials / "killed").glob("baseline-002"))  # the retry rewrote the killed attempt's record


def test_retrain_compares_the_best_trial_with_the_baselines_and_resumes(tmp_path: Path, digits: DataBundle,
                                                                       capsys) -> None:
    from igcnas.search.retrain import retrain, retrain_candidates
    from igcnas.store import read_runs

    config = _config(tmp_path, baselines="RegConv-W16-D8", trials=2, epochs=1)
    name = run_search(config, data=digits, train_fn=Spy())
    candidates = retrain_candidates(name, top=1, trials_dir=config.trials_dir)
    frame = load_study(name, trials_dir=config.trials_dir)
    best = frame[frame.state == "complete"].sort_values("accuracy", ascending=False).iloc[0]
    assert [(c.role, c.trial) for c in candidates] == [("found", int(best.trial)), ("baseline", -1)]
    rows = retrain(name, top=1, seeds=2, epochs=1, trials_dir=config.trials_dir, device="cpu", progress=False)
    assert [(r["role"], r["seeds"], r["epochs"]) for r in rows] == [(r["role"], [0, 1], 1) for r in rows]
    assert {r["role"] for r in rows} == {"found", "baseline"}
    assert all(0.0 <= r["test_accuracy_mean"] <= 1.0 and r["test_accuracy_std"] >= 0.0 for r in rows)
    study_folder = Path(config.trials_dir) / name
    runs = read_runs(study_folder)
    assert len(runs) == 4
    # a rerun trains nothing again
    assert retrain(name, top=1, seeds=2, epochs=1, trials_dir=config.trials_dir, device="cpu", progress=False) == rows
    assert read_runs(study_folder) == runs
    assert main(["pareto", "--study", name, "--trials-dir", config.trials_dir, "--baselines", "--format",
                 "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["retrained"] == rows
    keys = {"name", "role", "trial", "params", "flops", "epochs", "seeds", "test_accuracy_mean", "test_accuracy_std"}
    assert all(set(r) == keys for r in payload["retrained"])


def test_a_baseline_is_exported_like_any_trial(tmp_path: Path, digits: DataBundle) -> None:
    from igcnas.export import export_trial

    config = _config(tmp_path, baselines="RegConv-W16-D8", trials=1, epochs=1)
    name = run_search(config, data=digits)  # real training: the export needs real weights
    out = tmp_path / "exported"
    export_trial(name, out, trials_dir=config.trials_dir, trial=-1)
    assert json.loads((out / "arch.json").read_text())["name"] == "RegConv-W16-D8"


def test_retrain_with_two_workers_trains_each_run_once(tmp_path: Path, digits: DataBundle) -> None:
    from igcnas.store import read_runs

    config = _config(tmp_path, baselines="RegConv-W16-D8", trials=1, epochs=1)
    name = run_search(config, data=digits, train_fn=Spy())
    args = ["retrain", "--study", name, "--trials-dir", config.trials_dir, "--seeds", "2", "--epochs", "1",
            "--workers", "2", "--device", "cpu", "--quiet", "--baselines", "RegConv-W16-D8"]
    assert main(args) == 0
    runs = read_runs(Path(config.trials_dir) / name)
    assert sorted((r.role, r.seed) for r in runs) == [("baseline", 0), ("baseline", 1), ("found", 0), ("found", 1)]
    from igcnas.search.retrain import retrain_candidates

    with pytest.raises(UserError, match=r"^--baselines: IGC-L24M2-D20 is not a trained baseline of study"):
        retrain_candidates(name, top=1, baselines="IGC-L24M2-D20", trials_dir=config.trials_dir)


def test_retrain_reads_the_study_through_the_artifact_store_it_is_given(tmp_path: Path, monkeypatch,
                                                                        one_line_error) -> None:
    import igcnas.search.results as results

    seen: dict[str, object] = {}

    def opened(name: str, **options: object) -> None:
        seen.update(options)
        raise UserError("stop: the options are seen")

    monkeypatch.setattr(results, "open_study", opened)
    err = one_line_error(["retrain", "--study", "s", "--trials-dir", str(tmp_path), "--artifacts", "file:///store"])
    assert err == "igcnas: error: stop: the options are seen" and seen["artifacts"] == "file:///store"
