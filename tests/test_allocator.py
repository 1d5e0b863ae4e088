"""The glibc malloc tuning keeps freed tensor memory: repeated large allocations stop page-faulting."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

_PROBE = """
import json, resource, sys
import torch
from igcnas._allocator import allocator_status, tune_cpu_allocator
tuned = tune_cpu_allocator()
again = tune_cpu_allocator()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(16):  # the heap grows to a layout that fits the aligned blocks (a few cycles)
    torch.empty(16 << 20).fill_(1.0)
start = faults()
for _ in range(8):
    torch.empty(16 << 20).fill_(1.0)
print(json.dumps({"tuned": tuned, "again": again, "status": allocator_status(), "faults": faults() - start}))
"""

PAGES_PER_TENSOR = (64 << 20) // 4096

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="malloc tuning is glibc-only"
)


def _probe(malloc: str | None) -> dict[str, object]:
    env = {key: value for key, value in os.environ.items() if key != "IGCNAS_MALLOC"}
    if malloc is not None:
        env["IGCNAS_MALLOC"] = malloc
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True, timeout=120
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


@glibc_only
def test_tuned_malloc_reuses_large_blocks_instead_of_refaulting_them() -> None:
    tuned, system = _probe(None), _probe("system")
    assert tuned["tuned"] is True and tuned["again"] is True and tuned["status"] == "tuned"
    assert system["tuned"] is False and system["status"] == "disabled by IGCNAS_MALLOC=system"
    # eight more 64 MiB allocate/fill/free cycles: glibc's default mmaps and re-faults every one of them
    assert int(system["faults"]) > 4 * PAGES_PER_TENSOR  # type: ignore[call-overload]
    assert int(tuned["faults"]) < PAGES_PER_TENSOR // 2  # type: ignore[call-overload]


def test_status_names_why_it_is_not_tuned(monkeypatch: pytest.MonkeyPatch) -> None:
    from igcnas import _allocator

    monkeypatch.setattr(_allocator, "_status", None)
    monkeypatch.setenv("IGCNAS_MALLOC", "system")
    assert _allocator.allocator_status() == "not tuned yet"
    assert _allocator.tune_cpu_allocator() is False
    assert "IGCNAS_MALLOC=system" in _allocator.allocator_status()
