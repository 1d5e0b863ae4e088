"""Fault injection: kill -9 and resume, failing trials, bad input, two workers on one study, safe loading.

Every fault injected and every bad input tried is counted in the ``fault_stats`` tally (tests/conftest.py); the
run ends with ``faults: injected=N bad_inputs_tried=M completed_trials_lost=0``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "tests" / "search" / "fixtures" / "small_igc.yaml"
"""A small space (most candidates of these small budgets are feasible): the faults, not the space, are tested."""
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "IGCNAS_HEARTBEAT_S": "1", "IGCNAS_HEARTBEAT_GRACE_S": "2"}
PASSWORD_URL = "postgresql://u:secret@127.0.0.1:1/x"


def _igcnas(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m igcnas ARGS`` and capture its output."""
    return subprocess.run([sys.executable, "-m", "igcnas", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def _rows(folder: Path) -> list[dict[str, Any]]:
    """The trial.json rows of a study folder."""
    rows = []
    for path in sorted(folder.glob("*/trial.json")):
        try:
            rows.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):  # being replaced right now
            continue
    return rows


def _trained_complete(frame: Any) -> Any:
    """Complete trials that were trained here (not a reused duplicate result)."""
    return frame[(frame.state == "complete") & frame.reused_from.isna()]


# -- 1. crash and resume with real processes and real signals ---------------------------------------------------
def _search_args(tmp: Path, trials: int, *extra: str) -> list[str]:
    return ["search", "--train-subset", "300", "--epochs", "3", "--trials", str(trials), "--max-params", "30k",
            "--trials-dir", str(tmp / "trials"), "--storage", f"sqlite:///{tmp / 's.db'}", "--study", "faults",
            "--pruner", "none", "--batch-size", "8", "--device", "cpu", "--workers", "1", "--quiet", "--space",
            str(SPACE), *extra]


def _kill_mid_trial(args: list[str], folder: Path, *, completed_first: int, timeout: float = 150) -> dict[str, Any]:
    """Start ``igcnas ARGS``; SIGKILL its process group once ``completed_first`` trials are complete and another
    is running with at least one epoch done. Returns the killed trial's row."""
    proc = subprocess.Popen([sys.executable, "-m", "igcnas", *args], cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + timeout
    victim = None
    try:
        while time.time() < deadline and victim is None:
            rows = _rows(folder)
            done = sum(r["state"] == "complete" for r in rows)
            running = [r for r in rows if r["state"] == "running" and 1 <= (r.get("epochs") or 0) < r["max_epochs"]]
            if done >= completed_first and running:
                os.killpg(proc.pid, signal.SIGKILL)  # kill -9 of the whole process group, mid-trial
                victim = running[0]
                break
            if proc.poll() is not None:
                pytest.fail(f"the search ended before it could be killed: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
            time.sleep(0.02)
    finally:
        if victim is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()  # type: ignore[union-attr]
    assert victim is not None, "no trial was running with an epoch done before the timeout"
    assert proc.returncode == -signal.SIGKILL
    return victim


@pytest.mark.slow
def test_kill_9_mid_trial_then_rerun_keeps_completed_and_retries_once(tmp_path: Path, fault_stats: Counter[str]) -> None:
    from igcnas.search import load_study

    folder = tmp_path / "trials" / "faults"
    args = _search_args(tmp_path, 4)
    victim = _kill_mid_trial(args, folder, completed_first=2)
    fault_stats["injected"] += 1
    storage = f"sqlite:///{tmp_path / 's.db'}"
    before = load_study("faults", storage=storage, trials_dir=tmp_path / "trials")
    done_before = {(r.trial, r.spec_id) for r in _trained_complete(before).itertuples()}
    assert len(done_before) >= 2
    assert before.set_index("trial").loc[victim["trial"], "state"] in ("running", "failed")
    time.sleep(3.5)  # past heartbeat interval + grace period (1 s + 2 s): the rerun sees the trial as stale

    rerun = _igcnas(*args, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "database is locked" not in rerun.stderr and "Traceback" not in rerun.stderr
    after = load_study("faults", storage=storage, trials_dir=tmp_path / "trials").set_index("trial")
    done_after = {(r.Index, r.spec_id) for r in _trained_complete(after).itertuples()}
    lost = done_before - done_after
    fault_stats["completed_trials_lost"] += len(lost)
    assert not lost, f"completed trials lost by the crash: {lost}"
    # the interrupted trial is failed (heartbeat), its configuration retried exactly once and completed
    killed = after.loc[victim["trial"]]
    assert killed.state == "failed" and "heartbeat stopped" in killed.reason and "retried as trial" in killed.reason
    retry = int(re.search(r"retried as trial (\d+)", killed.reason).group(1))  # type: ignore[union-attr]
    assert after.loc[retry, "state"] == "complete" and after.loc[retry, "sampled"] == killed.sampled
    same = after[(after.sampled == killed.sampled) & after.reused_from.isna()]
    assert list(same.state) == ["failed", "complete"]  # trained twice: the dead one and one retry, no more
    assert (after[after.sampled == killed.sampled].reused_from.dropna() == retry).all()  # later samples reuse it
    assert not (after.state == "running").any()
    # the rerun added the requested 4 trained trials (the retry among them), with no duplicate training
    new = _trained_complete(after.reset_index())
    new = new[new.trial > before.trial.max()]
    assert len(new) == 4 and retry in set(new.trial)
    trained = _trained_complete(after)
    assert not trained.duplicated(["spec_id", "sampled"]).any(), trained[["spec_id", "sampled"]]
    # the Optuna record agrees
    import optuna

    study = optuna.load_study(study_name="faults", storage=storage)
    states = {t.number: t.state.name for t in study.trials}
    assert states[victim["trial"]] == "FAIL" and states[retry] == "COMPLETE"
    assert study.trials[retry].system_attrs["failed_trial"] == victim["trial"]


@pytest.mark.slow
@pytest.mark.xdist_group("ray")
def test_ray_driver_kill_9_then_rerun_resumes(tmp_path: Path, fault_stats: Counter[str]) -> None:
    pytest.importorskip("ray")
    from igcnas.search import load_study

    folder = tmp_path / "trials" / "faults"
    args = _search_args(tmp_path, 3, "--backend", "ray")
    victim = _kill_mid_trial(args, folder, completed_first=1, timeout=240)
    fault_stats["injected"] += 1
    storage = f"sqlite:///{tmp_path / 's.db'}"
    before = load_study("faults", storage=storage, trials_dir=tmp_path / "trials")
    done_before = {(r.trial, r.spec_id) for r in _trained_complete(before).itertuples()}
    assert done_before
    rerun = _igcnas(*args, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = load_study("faults", storage=storage, trials_dir=tmp_path / "trials")
    done_after = {(r.trial, r.spec_id) for r in _trained_complete(after).itertuples()}
    lost = done_before - done_after
    fault_stats["completed_trials_lost"] += len(lost)
    assert not lost
    assert not (after.state == "running").any()
    assert len(done_after) > len(done_before)
    # the interrupted trial was started again by Tuner.restore (trained from its first epoch), or (when the
    # experiment's last snapshot predates it) failed with that reason and retried once: never left running
    killed = after.set_index("trial").loc[victim["trial"]]
    assert killed.state in ("complete", "pruned") or (killed.state == "failed" and "killed" in killed.reason)
    if killed.state == "failed":  # not in the snapshot: its configuration was retried once, as a later trial
        import optuna

        study = optuna.load_study(study_name="faults", storage=storage)
        retries = [t for t in study.trials if t.user_attrs.get("retry_of") == victim["trial"]]
        assert len(retries) == 1, [t.user_attrs for t in study.trials]
        assert retries[0].params == study.trials[victim["trial"]].params
        assert after.set_index("trial").loc[retries[0].number].state in ("complete", "pruned")
    trained = _trained_complete(after)
    assert not trained.duplicated(["spec_id", "sampled"]).any()


# -- 2. one trial's failure fails that trial, with the reason; the study goes on ------------------------------
@pytest.fixture(scope="module")
def digits() -> Any:
    from igcnas.data import load_data

    return load_data("digits", train_subset=300, seed=0)


def _nan_forward(model: torch.nn.Module) -> None:
    """Make the model's output NaN (a diverging network)."""
    forward = model.forward

    def broken(x: torch.Tensor) -> torch.Tensor:
        return forward(x) * float("nan")

    model.forward = broken


def _raising_forward(model: torch.nn.Module) -> None:
    """Make the model raise inside its forward pass (a bug in a layer)."""

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise ValueError("shape mismatch in block 2 (injected)")

    model.forward = broken


def _oom(model: torch.nn.Module) -> None:
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")


def _oom_runtime(model: torch.nn.Module) -> None:
    raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")


@pytest.mark.parametrize(("fault", "reason"), [
    (_nan_forward, r"diverged: .*(nan|NaN)"),
    (_raising_forward, r"ValueError: shape mismatch in block 2 \(injected\)"),
    (_oom, r"OutOfMemoryError: CUDA out of memory"),
    (_oom_runtime, r"RuntimeError: CUDA out of memory"),
], ids=["nan-loss", "model-exception", "torch-oom", "runtime-oom"])
def test_one_failing_trial_is_recorded_and_the_study_goes_on(tmp_path: Path, digits: Any, fault: Any, reason: str,
                                                             fault_stats: Counter[str]) -> None:
    from igcnas.search import SearchConfig, load_study, run_search
    from igcnas.train import train

    calls: list[int] = []

    def train_fn(model: torch.nn.Module, data: Any, config: Any, **kwargs: Any) -> Any:
        calls.append(len(calls))
        if len(calls) == 2:  # the second trained trial
            fault_stats["injected"] += 1
            fault(model)
        return train(model, data, config, **kwargs)

    torch.set_num_threads(1)
    config = SearchConfig(space=str(SPACE), trials=3, epochs=1, max_params=30_000, pruner="none",
                          trials_dir=str(tmp_path / "trials"), device="cpu", progress=False, train_subset=300,
                          study="fail1", sampler="random")
    name = run_search(config, data=digits, train_fn=train_fn)
    frame = load_study(name, trials_dir=config.trials_dir)
    trained = frame[frame.state.isin(["complete", "pruned", "failed"]) & frame.reused_from.isna()]
    assert len(calls) == 3 == len(trained)
    failed = trained[trained.state == "failed"]
    assert len(failed) == 1, trained[["trial", "state", "reason"]]
    assert re.search(reason, failed.reason.iloc[0]), failed.reason.iloc[0]
    assert (trained.state == "complete").sum() == 2  # trained before and after the failure
    assert failed.trial.iloc[0] < trained[trained.state == "complete"].trial.max()  # the study went on
    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'trials' / 'igcnas.db'}")
    assert study.trials[int(failed.trial.iloc[0])].state.name == "FAIL"


def test_a_sampling_error_is_recorded_and_not_counted(tmp_path: Path, digits: Any, monkeypatch: pytest.MonkeyPatch,
                                                     fault_stats: Counter[str]) -> None:
    from igcnas.search import SearchConfig, load_space, load_study, run_search
    from igcnas.search.search_space import SearchSpace

    space = load_space(SPACE)
    define = SearchSpace.define
    calls: list[int] = []

    def flaky(self: Any, trial: Any, fill_budget: bool = False) -> dict[str, Any]:
        calls.append(trial.number)
        if len(calls) == 2:
            fault_stats["injected"] += 1
            raise RuntimeError("database is busy (injected)")
        return define(self, trial, fill_budget=fill_budget)

    monkeypatch.setattr(SearchSpace, "define", flaky)
    config = SearchConfig(space=str(SPACE), trials=2, epochs=1, max_params=None, pruner="none", sampler="random",
                          trials_dir=str(tmp_path / "trials"), device="cpu", progress=False, study="flaky")
    run_search(config, space=space, data=digits, train_fn=lambda *a, **k: _fake_result(k["on_epoch"]))
    frame = load_study("flaky", trials_dir=config.trials_dir).set_index("trial")
    assert frame.loc[1, "state"] == "failed"
    assert frame.loc[1, "reason"] == "sampling failed: RuntimeError: database is busy (injected)"
    assert (frame.state == "complete").sum() == 2  # the failed sampling did not use up one of the 2 trials


def _fake_result(on_epoch: Any) -> Any:
    """A one-epoch TrainResult without training."""
    from igcnas.train import EpochMetrics, TrainResult

    metrics = EpochMetrics(1, 1.0, 0.5, 1.0, 0.5, 0.1, 0.01, 1000.0, 100)
    on_epoch(metrics)
    return TrainResult("completed", 1, [metrics], 0.5, 0.5, None, 0.01, "completed")


# -- 3. bad input: one line, exit status 2, no traceback --------------------------------------------------------
_YAML_BASE = """\
name: bad
layout: cifar
designs: [GC+PWG, DW+PW]
base_widths: [8, 16]
depths: [1]
groups: [2, 4]
"""


def _space(tmp: Path, text: str) -> str:
    path = tmp / "space.yaml"
    path.write_text(text)
    return str(path)


def _png(path: Path, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, value, value)).save(path)


def _folder_with_corrupt_image(tmp: Path) -> str:
    root = tmp / "images"
    for cls in ("cat", "dog"):
        for i in range(4):
            _png(root / "train" / cls / f"{i}.png", 40 * i)
    (root / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    return f"imagefolder:{root}"


def _empty_folder(tmp: Path) -> str:
    (tmp / "empty" / "train" / "cat").mkdir(parents=True)
    return f"imagefolder:{tmp / 'empty'}"


def _study_without_completed_trial(tmp: Path) -> Path:
    """A search study whose only trained trial failed."""
    from igcnas.data import load_data
    from igcnas.search import SearchConfig, run_search

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected failure")

    config = SearchConfig(space=str(SPACE), trials=1, epochs=1, max_params=30_000, pruner="none",
                          trials_dir=str(tmp / "trials"), device="cpu", progress=False, study="nothing")
    run_search(config, data=load_data("digits", train_subset=200, seed=0), train_fn=failing)
    return tmp / "trials"


def _db_with_another_study(tmp: Path) -> str:
    """A SQLite storage URL holding one study named 'other'."""
    import optuna

    url = f"sqlite:///{tmp / 'other.db'}"
    optuna.create_study(study_name="other", storage=url)
    return url


def _search(tmp: Path, *args: str) -> list[str]:
    return ["search", "--trials-dir", str(tmp / "trials"), "--trials", "1", "--epochs", "1", "--train-subset",
            "200", "--device", "cpu", "--quiet", *args]


# (id, argv builder, regexes the one-line message must match: what is wrong, and how to fix it)
BAD_INPUTS: list[tuple[str, Any, list[str]]] = [
    ("malformed-yaml", lambda t: _search(t, "--space", _space(t, _YAML_BASE + "depths: [1, 2\n")),
     [r"not valid YAML", r"space\.yaml"]),
    ("yaml-unknown-key", lambda t: _search(t, "--space", _space(t, _YAML_BASE + "colour: red\n")),
     [r"unknown key\(s\) colour", r"allowed keys: .*designs"]),
    ("yaml-wrong-type", lambda t: _search(t, "--space", _space(t, _YAML_BASE.replace("depths: [1]", "depths: deep"))),
     [r"depths", r"'deep'", r"allowed values: integers"]),
    ("yaml-not-a-mapping", lambda t: _search(t, "--space", _space(t, "- just\n- a list\n")),
     [r"expected a mapping", r"designs"]),
    ("design-removed-by-funnel", lambda t: _search(t, "--space", _space(
        t, _YAML_BASE.replace("[GC+PWG, DW+PW]", "[DW+PWG+PWG]"))), [r"DW\+PWG\+PWG", r"allowed values: .*DW\+PW"]),
    ("unknown-kernel-kind", lambda t: _search(t, "--space", _space(
        t, _YAML_BASE.replace("[GC+PWG, DW+PW]", "[GC+XYZ]"))), [r"XYZ|GC\+XYZ", r"allowed"]),
    ("groups-not-dividing", lambda t: _search(t, "--space", _space(
        t, _YAML_BASE.replace("groups: [2, 4]", "groups: [3]") + "groups_rule: free\n")),
     [r"group number\(s\) 3 divide no base width", r"allowed here"]),
    ("budget-below-smallest", lambda t: _search(t, "--max-params", "500"),
     [r"smallest architecture", r"has [\d,]+ params", r"raise --max-params"]),
    ("missing-dataset-folder", lambda t: _search(t, "--dataset", f"imagefolder:{t / 'nowhere'}"),
     [r"nowhere", r"(does not exist|not a folder|no folder|missing)"]),
    ("empty-dataset-folder", lambda t: _search(t, "--dataset", _empty_folder(t)), [r"empty", r"(no image|images)"]),
    ("unreadable-image", lambda t: _search(t, "--dataset", _folder_with_corrupt_image(t)),
     [r"broken\.png", r"(skip|remove|delete|replace)"]),
    ("unknown-dataset", lambda t: _search(t, "--dataset", "mnistt"), [r"'mnistt'", r"known datasets: .*digits"]),
    ("unreachable-storage", lambda t: _search(t, "--storage", PASSWORD_URL), [r"--storage", r"u:\*\*\*@127\.0\.0\.1"]),
    ("unwritable-sqlite-storage", lambda t: _search(t, "--storage", "sqlite:////proc/nope/s.db"),
     [r"--storage", r"/proc/nope/s\.db"]),
    ("studies-unreachable-storage", lambda t: ["studies", "--trials-dir", str(t / "trials"), "--storage",
                                                PASSWORD_URL], [r"--storage", r"u:\*\*\*@"]),
    ("pareto-unknown-study", lambda t: ["pareto", "--study", "nope", "--trials-dir", str(t / "trials")],
     [r"'nope'", r"igcnas studies|known studies|check the name"]),
    ("pareto-unknown-study-in-storage", lambda t: ["pareto", "--study", "nope", "--trials-dir", str(t / "trials"),
                                                    "--storage", _db_with_another_study(t)],
     [r"'nope'", r"check the name"]),
    ("export-unknown-study", lambda t: ["export", "--study", "nope", "--trials-dir", str(t / "trials"), "--out",
                                         str(t / "out")], [r"'nope'", r"igcnas studies|known studies|check the name"]),
    ("export-no-completed-trial", lambda t: ["export", "--study", "nothing", "--trials-dir",
                                              str(_study_without_completed_trial(t)), "--out", str(t / "out")],
     [r"nothing", r"no complete"]),
    ("units-2X", lambda t: _search(t, "--max-params", "2X"), [r"--max-params", r"'2X'", r"e\.g\. 0\.5M"]),
    ("trials-zero", lambda t: _search(t, "--trials", "0"), [r"--trials", r"'0'", r">= 1"]),
    ("epochs-negative", lambda t: _search(t, "--epochs", "-1"), [r"--epochs", r"'-1'", r">= 1"]),
    ("max-params-zero", lambda t: _search(t, "--max-params", "0"), [r"--max-params", r"'0'", r"none"]),
    ("max-flops-negative", lambda t: _search(t, "--max-flops=-5M"), [r"--max-flops", r"'-5M'"]),
    ("train-subset-zero", lambda t: _search(t, "--train-subset", "0"), [r"--train-subset", r"'0'"]),
    ("pareto-max-params-zero", lambda t: ["pareto", "--study", "x", "--max-params", "0"], [r"--max-params", r"'0'"]),
    ("yaml-python-tag", lambda t: _search(t, "--space", _space(
        t, "name: !!python/object/apply:os.system ['touch " + str(t / "pwned") + "']\n")),
     [r"not valid YAML|python/object", r"space\.yaml"]),
]


_BATCH_CLI = r"""
import contextlib, json, os, sys, tempfile, traceback, warnings

from igcnas.cli import main

results = {}
for case, (argv, cwd) in json.load(sys.stdin).items():
    os.chdir(cwd)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        streams = [open(fd, "w", closefd=False) for fd in (1, 2)]
        try:
            # fresh warning filters: a warning shown for an earlier case is shown again, as in its own process
            with warnings.catch_warnings(), contextlib.redirect_stdout(streams[0]), \
                    contextlib.redirect_stderr(streams[1]):
                try:
                    code = main(argv)
                except SystemExit as stop:
                    code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
                except BaseException:
                    traceback.print_exc()
                    code = 1
        finally:
            for stream in streams:
                stream.close()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        out.seek(0)
        err.seek(0)
        results[case] = [code, out.read(), err.read()]
print(json.dumps(results))
"""
"""Runs ``igcnas.cli.main`` on each case of a JSON ``{case: [argv, cwd]}`` read from stdin, in one process (one
import of torch instead of one per case), each with its own working folder, file-level stdout/stderr capture and
warning state; prints ``{case: [exit status, stdout, stderr]}``."""


def _igcnas_in_one_process(jobs: dict[str, tuple[list[str], Path]]) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run each job's ``igcnas`` argv in its folder, all in one fresh process (see ``_BATCH_CLI``)."""
    payload = json.dumps({case: [args, str(folder)] for case, (args, folder) in jobs.items()})
    done = subprocess.run([sys.executable, "-c", _BATCH_CLI], input=payload, env=ENV, capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return {case: subprocess.CompletedProcess(jobs[case][0], code, out, err)
            for case, (code, out, err) in results.items()}


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    """Every BAD_INPUTS command, each in its own folder; case id -> (result, folder)."""
    jobs = {}
    for case, argv, _ in BAD_INPUTS:
        folder = tmp_path_factory.mktemp(case)
        jobs[case] = (argv(folder), folder)
    return {case: (done, jobs[case][1]) for case, done in _igcnas_in_one_process(jobs).items()}


@pytest.mark.parametrize(("case", "expect"), [(c[0], c[2]) for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2(bad_input_runs: dict[str, Any], case: str, expect: list[str],
                                      fault_stats: Counter[str]) -> None:
    done, folder = bad_input_runs[case]  # a hang would have raised subprocess.TimeoutExpired (90 s)
    fault_stats["bad_inputs_tried"] += 1
    err = done.stderr
    assert done.returncode == 2, f"{case}: exit {done.returncode}\nstdout: {done.stdout[-800:]}\nstderr: {err[-2000:]}"
    assert "Traceback" not in err and "Traceback" not in done.stdout, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("igcnas: error: "), err
    for pattern in expect:
        assert re.search(pattern, lines[0]), f"{case}: {pattern!r} not in {lines[0]!r}"
    assert "secret" not in err and "secret" not in done.stdout
    assert not (folder / "pwned").exists()


def test_bad_dataset_does_not_create_the_study(tmp_path: Path, fault_stats: Counter[str]) -> None:
    """A failed start leaves nothing behind: rerunning with the mistake fixed is not a 'different settings' study."""
    args = _search(tmp_path, "--study", "fixme", "--max-params", "500", "--storage", f"sqlite:///{tmp_path / 's.db'}")
    fault_stats["bad_inputs_tried"] += 1
    done = _igcnas(*args, cwd=tmp_path)
    assert done.returncode == 2 and "smallest architecture" in done.stderr
    import optuna

    if (tmp_path / "s.db").exists():
        assert "fixme" not in optuna.study.get_all_study_names(f"sqlite:///{tmp_path / 's.db'}")


# -- 4. two workers on one SQLite study ------------------------------------------------------------------------
@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(tmp_path: Path, fault_stats: Counter[str]) -> None:
    from igcnas.search import load_study

    storage = f"sqlite:///{tmp_path / 's.db'}"
    args = ["search", "--train-subset", "200", "--epochs", "1", "--trials", "5", "--max-params", "30k", "--trials-dir",
            str(tmp_path / "trials"), "--storage", storage, "--study", "shared", "--pruner", "none", "--device", "cpu",
            "--quiet", "--space", str(SPACE)]  # most of its candidates fit: the time goes to the concurrent writes
    procs = [subprocess.Popen([sys.executable, "-m", "igcnas", *args], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    fault_stats["injected"] += 1  # concurrent writers on one SQLite file
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
        assert "database is locked" not in err + out and "OperationalError" not in err + out
        assert "Traceback" not in err
    frame = load_study("shared", storage=storage, trials_dir=tmp_path / "trials")
    assert not (frame.state == "running").any()
    trained = frame[frame.state.isin(["complete", "pruned", "failed"]) & frame.reused_from.isna()]
    assert len(trained) == 10, frame[["trial", "state", "reused_from"]]
    assert frame.trial.is_unique
    import optuna

    study = optuna.load_study(study_name="shared", storage=storage)
    assert len(study.trials) == len(frame)  # every Optuna trial has its trial folder: nothing lost
    complete = trained[trained.state == "complete"]
    # a worker that samples an architecture another worker is training waits for that result and reuses it;
    # only two samples registered in the same instant (before either is visible) can both train: at most one
    assert complete.spec_id.nunique() >= len(complete) - 1


def test_workers_creating_a_new_sqlite_database_at_once(tmp_path: Path, fault_stats: Counter[str]) -> None:
    """Several processes opening one fresh SQLite file race on creating its schema; every one must get in."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    code = ("import sys, time\n"
            "import optuna.storages._rdb.models\n"
            "from igcnas.search.optuna_backend import open_storage\n"
            "while time.time() < float(sys.argv[2]):\n"  # imports done: all start together (plain RDBStorage
            "    time.sleep(0.001)\n"                      # fails here with 'table ... already exists')
            "open_storage(sys.argv[1])\n")
    start = str(time.time() + 8)
    procs = [subprocess.Popen([sys.executable, "-c", code, url, start], cwd=REPO, env=ENV, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    fault_stats["injected"] += 1
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors


# -- 5. security: safe loading only, passwords never printed --------------------------------------------------
def _source_files() -> list[Path]:
    return sorted((REPO / "igcnas").rglob("*.py"))


def _calls(text: str, name: str) -> list[str]:
    """The full text of every call ``name(...)`` in source text (parentheses balanced)."""
    out = []
    for match in re.finditer(re.escape(name) + r"\(", text):
        depth, i = 1, match.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        out.append(text[match.start():i])
    return out


def test_only_safe_loaders_in_the_source(fault_stats: Counter[str]) -> None:
    offences = []
    for path in _source_files():
        text = path.read_text()
        where = path.relative_to(REPO)
        for bad in ("pickle.load(", "pickle.loads(", "cPickle", "dill.load", "yaml.unsafe_load", "yaml.full_load",
                    "marshal.load", "joblib.load"):
            if bad in text:
                offences.append(f"{where}: {bad}")
        for call in _calls(text, "torch.load"):
            if "weights_only=True" not in call:
                offences.append(f"{where}: {call}")
        for call in _calls(text, "yaml.load"):
            if "SafeLoader" not in call and "CSafeLoader" not in call:
                offences.append(f"{where}: {call}")
    assert not offences, "unsafe loading:\n" + "\n".join(offences)


def test_python_yaml_tag_is_rejected_in_process(tmp_path: Path, fault_stats: Counter[str]) -> None:
    from igcnas.errors import UserError
    from igcnas.search import load_space

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n" + _YAML_BASE.split("\n", 1)[1])
    fault_stats["bad_inputs_tried"] += 1
    with pytest.raises(UserError) as info:
        load_space(path)
    assert "\n" not in str(info.value) and "evil.yaml" in str(info.value)
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # one of its runs is a Ray search
def test_password_never_printed(tmp_path: Path, fault_stats: Counter[str]) -> None:
    runs = [
        ["studies", "--trials-dir", str(tmp_path / "trials"), "--storage", PASSWORD_URL],
        _search(tmp_path, "--storage", PASSWORD_URL),
        _search(tmp_path, "--storage", PASSWORD_URL, "--backend", "ray"),
        ["pareto", "--study", "x", "--trials-dir", str(tmp_path / "trials"), "--storage", PASSWORD_URL],
        ["export", "--study", "x", "--trials-dir", str(tmp_path / "trials"), "--storage", PASSWORD_URL, "--out",
         str(tmp_path / "o")],
    ]
    results = _igcnas_in_one_process({str(n): (args, tmp_path) for n, args in enumerate(runs)})
    for args, done in zip(runs, results.values(), strict=True):
        fault_stats["bad_inputs_tried"] += 1
        assert done.returncode == 2, (args, done.stderr[-2000:])
        assert "secret" not in done.stdout + done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    # nothing written to disk carries it either
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.stat().st_size < 1_000_000:
            assert b"secret" not in path.read_bytes(), path
