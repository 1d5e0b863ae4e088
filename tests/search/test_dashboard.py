"""optuna-dashboard on an igcnas study: named objectives, and over-budget trials shown infeasible with their values.

A small real search (random sampler, a tight params budget, a scripted trainer) writes a SQLite study; the test
starts ``optuna-dashboard`` on it as a subprocess on 127.0.0.1 and reads the JSON API the web page itself reads
(``/api/studies``, ``/api/studies/<id>``). The page calls a trial feasible when every value of its
``constraints`` list is <= 0 (an empty list included), and draws COMPLETE trials with a positive value as
"Infeasible".
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from igcnas.data import DataBundle, load_data
from igcnas.search import SearchConfig, run_search
from igcnas.testing import replay_curve
from igcnas.train import TrainResult

pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed (pip install -e '.[dashboard]')")

REPO = Path(__file__).resolve().parents[2]
MAX_PARAMS = 25_000
STARTUP_S = 60.0


def _fake_train(model: Any, data: Any, config: Any, *, on_epoch: Any, checkpoint_dir: Any, arch: Any,
                progress: bool) -> TrainResult:
    """Stands in for igcnas.train.train: a flat learning curve at accuracy 0.8, no real training."""
    return replay_curve([0.8] * config.epochs, on_epoch=on_epoch, checkpoint_dir=checkpoint_dir, obey_pruner=False)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(study name, storage URL) of a finished igcnas search with complete and infeasible trials."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data: DataBundle = load_data("digits", train_subset=300, seed=0)
        trials_dir = tmp_path_factory.mktemp("dashboard") / "trials"
        config = SearchConfig(space=str(REPO / "search_spaces/igc_cifar.yaml"), trials=3, epochs=1,
                              trials_dir=str(trials_dir), device="cpu", progress=False, train_subset=300,
                              max_params=MAX_PARAMS, pruner="none", sampler="random")
        name = run_search(config, data=data, train_fn=_fake_train)
    finally:
        torch.set_num_threads(threads)
    return name, f"sqlite:///{trials_dir / 'igcnas.db'}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command(storage: str, port: int) -> list[str]:
    """The ``optuna-dashboard`` script of this interpreter's environment (its entry point when absent)."""
    script = Path(sys.executable).parent / "optuna-dashboard"
    launcher = [str(script)] if script.is_file() else [
        sys.executable, "-c", "import sys; from optuna_dashboard._cli import main; sys.exit(main())"]
    return [*launcher, storage, "--host", "127.0.0.1", "--port", str(port), "--quiet"]


def _get(base: str, route: str) -> Any:
    with urllib.request.urlopen(base + route, timeout=10) as reply:
        return json.loads(reply.read().decode())


@pytest.fixture(scope="module")
def dashboard(study: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of an optuna-dashboard serving the study; stops exactly the process it started."""
    _, storage = study
    port = _free_port()
    log = tmp_path_factory.mktemp("dashboard-log") / "optuna-dashboard.log"
    with log.open("wb") as out:
        process = subprocess.Popen(_command(storage, port), stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"optuna-dashboard exited with {process.returncode} before answering:\n"
                            f"{log.read_text(errors='replace')[-3000:]}")
            try:
                _get(base, "/api/studies")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"optuna-dashboard did not answer on {base} within {STARTUP_S:.0f} s:\n"
                                f"{log.read_text(errors='replace')[-3000:]}")
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _attr(trial: dict[str, Any], key: str) -> str | None:
    """A user attribute of a trial as the dashboard serializes it (strings)."""
    return next((a["value"] for a in trial["user_attrs"] if a["key"] == key), None)


def _feasible(trial: dict[str, Any]) -> bool:
    """The dashboard page's rule (``constraints.every(c => c <= 0)``)."""
    return all(value <= 0 for value in trial["constraints"])


def test_dashboard_shows_objective_names_and_infeasible_trials(study: tuple[str, str], dashboard: str) -> None:
    name, _ = study
    summaries = _get(dashboard, "/api/studies")["study_summaries"]
    ids = {s["study_name"]: s["study_id"] for s in summaries}
    assert name in ids, f"the dashboard lists {sorted(ids)}, not {name}"
    detail = _get(dashboard, f"/api/studies/{ids[name]}")
    assert detail["directions"] == ["maximize", "minimize"]
    assert detail.get("objective_names") == ["accuracy", "params"]

    trials = detail["trials"]
    states = {t["number"]: _attr(t, "igcnas_state") for t in trials}
    assert "infeasible" in states.values() and "complete" in states.values(), states
    for trial in trials:
        params = float(_attr(trial, "params") or "nan")
        what = f"trial {trial['number']} ({states[trial['number']]}, {params:.0f} params)"
        # one value per budget (only max_params here): params - budget
        assert trial["constraints"] == [params - MAX_PARAMS], what
        if states[trial["number"]] == "infeasible":
            # told COMPLETE (accuracy 0) so the sampler learns the boundary; the page draws it "Infeasible"
            assert trial["state"] == "Complete" and trial["values"][0] == 0.0, what
            assert not _feasible(trial) and all(value > 0 for value in trial["constraints"]), what
        else:
            assert _feasible(trial) and all(value <= 0 for value in trial["constraints"]), what
