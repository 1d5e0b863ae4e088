"""Suite-wide hooks: the fault-injection tally of ``tests/test_faults.py`` (printed at the end), malloc left alone."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

__all__ = ["FAULTS", "fault_stats", "pytest_terminal_summary"]

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
    from igcnas import _allocator

    _allocator._status = "left as it is in the pytest process (tests/conftest.py)"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    """One line with what the fault tests injected, when any of them ran."""
    if not FAULTS.get("modules"):
        return
    terminalreporter.write_sep("-", "fault injection")
    terminalreporter.write_line(
        f"faults: injected={FAULTS['injected']} bad_inputs_tried={FAULTS['bad_inputs_tried']} "
        f"completed_trials_lost={FAULTS['completed_trials_lost']}"
    )
