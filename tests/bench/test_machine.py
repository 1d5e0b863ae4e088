"""The machine line that heads every timing benchmark's table."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from igcnas.bench._machine import machine_line


def test_a_cpu_run_names_the_cpu_its_kernels_and_threads_only() -> None:
    line = machine_line(threads=1)
    assert line.startswith("machine: ") and line.endswith("; 1 thread")
    assert f"runs {torch.backends.cpu.get_cpu_capability()} kernels" in line and "GPU" not in line


def test_a_cuda_run_also_names_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: f"Test GPU {index}")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: SimpleNamespace(total_memory=80 * 2**30))
    assert machine_line(threads=2, device="cuda").endswith(
        f"; 2 threads; GPU 0: Test GPU 0 (80 GiB), CUDA {torch.version.cuda}")
    assert "; GPU 1: Test GPU 1 (80 GiB)" in machine_line(threads=2, device="cuda:1")


def test_a_cuda_run_without_cuda_or_with_a_bad_device_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert machine_line(threads=2, device="cuda").endswith("; cuda asked for, but torch sees no CUDA device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert machine_line(threads=2, device="cuda:x").endswith(
        "; device 'cuda:x' is not a torch device (cpu, cuda or cuda:N)")
