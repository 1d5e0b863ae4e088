"""Suite-wide hooks: the fault-injection tally of ``tests/test_faults.py`` (printed at the end), malloc left alone,
a fresh cache of measured forms, and the shared CIFAR-10 image folder (``../shared`` beside the repository)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

__all__ = ["FAULTS", "SHARED_CIFAR10", "fault_stats", "shared_cifar10", "pytest_terminal_summary"]

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

FAULTS: Counter[str] = Counter()
"""What the fault tests did: ``injected`` faults, ``bad_inputs_tried``, ``completed_trials_lost``, ``modules``."""


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


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    """One line with what the fault tests injected, when any of them ran."""
    if not FAULTS.get("modules"):
        return
    terminalreporter.write_sep("-", "fault injection")
    terminalreporter.write_line(
        f"faults: injected={FAULTS['injected']} bad_inputs_tried={FAULTS['bad_inputs_tried']} "
        f"completed_trials_lost={FAULTS['completed_trials_lost']}"
    )
