"""Suite-wide hooks: the fault-injection tally of ``tests/test_faults.py`` (printed at the end, gathered from the
pytest-xdist workers), how many workers ``-n auto`` starts and how their OpenMP threads wait, malloc left alone,
a fresh cache of measured forms, the shared CIFAR-10 image folder (``../shared`` beside the repository), and a
scripted stand-in for training."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from igcnas.train import TrainResult

__all__ = ["FAULTS", "SHARED_CIFAR10", "ScriptedTrain", "fault_stats", "scripted_train", "shared_cifar10",
           "pytest_terminal_summary"]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist workers share the cores: an OpenMP thread that spins while its sibling is descheduled by the other
    # worker costs far more than one that sleeps (set before torch loads OpenMP; no result depends on it)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SHARED_CIFAR10 = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar10"
"""The real CIFAR-10 as an image folder, in ``../shared`` relative to the repository."""


@pytest.fixture(scope="session")
def shared_cifar10() -> Path:
    """The shared CIFAR-10 folder; skipped where it is absent, except under CI (``CI`` set), where it must be."""
    if not (SHARED_CIFAR10 / "train").is_dir():
        message = f"the shared CIFAR-10 image folder is not at ../shared/datasets/cifar10 ({SHARED_CIFAR10})"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI runs with ../shared beside the repository")
        pytest.skip(message)
    return SHARED_CIFAR10

class ScriptedTrain:
    """Stands in for igcnas.train.train: records what it is asked to train, plays a scripted learning curve.

    Trial k (in call order) reaches accuracy ``start - 0.1 * k`` at every epoch, so later trials are always worse
    and a successive-halving pruner must stop them at the first rung.
    """

    def __init__(self, *, start: float = 0.9, fail_on: int | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.start = start
        self.fail_on = fail_on

    def __call__(self, model: Any, data: Any, config: Any, *, on_epoch: Any, checkpoint_dir: Any, arch: Any,
                 progress: bool) -> TrainResult:
        from igcnas.testing import replay_curve

        index = len(self.calls)
        self.calls.append({"arch": arch, "dir": Path(checkpoint_dir)})
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        (Path(checkpoint_dir) / "metrics.json").write_text("{}")
        if index == self.fail_on:
            raise RuntimeError("simulated crash inside training")
        acc = max(0.05, self.start - 0.1 * index)
        return replay_curve([acc] * config.epochs, on_epoch=on_epoch, checkpoint_dir=checkpoint_dir)


@pytest.fixture
def scripted_train() -> type[ScriptedTrain]:
    """The :class:`ScriptedTrain` class, a stand-in for ``igcnas.train.train`` whose pruning outcome is exact."""
    return ScriptedTrain


FAULTS: Counter[str] = Counter()
"""What the fault tests did: ``injected`` faults, ``bad_inputs_tried``, ``completed_trials_lost``, ``modules``."""


@pytest.fixture
def one_line_error(capsys: pytest.CaptureFixture[str]) -> Any:
    """``run(argv)``: run ``igcnas argv``, check it exits 2 with one ``igcnas: error:`` line and return that line."""
    from igcnas.cli import main

    def run(argv: list[str]) -> str:
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("igcnas: error: ") and len(err.strip().splitlines()) == 1, err
        return err.strip()

    return run


@pytest.fixture(scope="session")
def fake_study() -> Any:
    """tests/export/fake_study.py (a small study on disk with known accuracies), imported by path (the tests run
    with --import-mode=importlib)."""
    import importlib.util
    import sys

    name = "igcnas_tests_fake_study"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / "export" / "fake_study.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def fault_stats() -> Counter[str]:
    """The suite-wide fault tally (tests increment it for every fault they inject or bad input they try)."""
    FAULTS["modules"] = 1
    return FAULTS


def pytest_configure(config: Any) -> None:
    """Keep glibc malloc as it is in the pytest process (the tuning is process-wide and cannot be undone).

    Training tests would otherwise tune it for the rest of the session; ``tests/test_allocator.py`` checks the
    tuning in subprocesses, and the end-to-end tests' ``igcnas`` subprocesses tune their own malloc as usual.
    """
    import tempfile

    from igcnas import _allocator

    _allocator._status = "left as it is in the pytest process (tests/conftest.py)"
    # measured forms (igcnas.nn.tune) are measured as on a fresh machine, into a cache of this session only (the
    # environment reaches the suite's igcnas subprocesses too)
    os.environ["IGCNAS_TUNE_DIR"] = tempfile.mkdtemp(prefix="igcnas-tune-")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: Any) -> int:
    """``-n auto`` (the default, pyproject.toml): one pytest-xdist worker per usable CPU, between 2 and 4.

    Two even on one CPU: much of the suite waits on subprocesses (``igcnas`` commands, Ray, PostgreSQL). At most
    four: the Ray tests run one after another on a single worker (``xdist_group("ray")``), which bounds the wall
    time however many workers share the rest.
    """
    return max(2, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2))


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    """In a pytest-xdist worker, hand its fault tally to the controller (:func:`pytest_testnodedown`)."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["faults"] = dict(FAULTS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """In the pytest-xdist controller, add a finished worker's fault tally to the suite-wide one."""
    FAULTS.update(getattr(node, "workeroutput", {}).get("faults", {}))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    """One line with what the fault tests injected, when any of them ran."""
    if not FAULTS.get("modules"):
        return
    terminalreporter.write_sep("-", "fault injection")
    terminalreporter.write_line(
        f"faults: injected={FAULTS['injected']} bad_inputs_tried={FAULTS['bad_inputs_tried']} "
        f"completed_trials_lost={FAULTS['completed_trials_lost']}"
    )
