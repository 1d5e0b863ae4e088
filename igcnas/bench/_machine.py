"""The one line that names the machine a speed benchmark ran on (CPU, vector ISA, library caps, native build, and
the GPU when it runs on one)."""

from __future__ import annotations

import os
import platform

__all__ = ["machine_line"]


def _widest_vectors(flags: set[str]) -> str:
    """The widest x86 vector extension among the CPU's flags (or the architecture's name elsewhere)."""
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2")):
        if flag in flags:
            return name
    return platform.machine() or "unknown ISA"


def _gpu(device: str) -> str:
    """``; GPU <name> (<memory> GiB), CUDA <version>`` for a CUDA ``device`` (that it is unavailable, when it is);
    nothing for a CPU device."""
    if not device.startswith("cuda"):
        return ""
    import torch

    if not torch.cuda.is_available():
        return f"; {device} asked for, but torch sees no CUDA device"
    try:
        index = torch.device(device).index
    except RuntimeError:
        return f"; device {device!r} is not a torch device (cpu, cuda or cuda:N)"
    index = torch.cuda.current_device() if index is None else index
    props = torch.cuda.get_device_properties(index)
    return (f"; GPU {index}: {torch.cuda.get_device_name(index)} ({props.total_memory / 2**30:.0f} GiB), "
            f"CUDA {torch.version.cuda}")


def machine_line(*, threads: int, device: str = "cpu") -> str:
    """``machine: <CPU>, <cores>, <widest vectors>; torch <version> runs <ISA> kernels[, caps]; native kernels
    -march=<value>; <n> thread(s)[; GPU <i>: <name> (<memory> GiB), CUDA <version>]`` for the header of a speed
    benchmark's table, so that every printed ratio names the CPU (and, on a CUDA ``device``, the GPU) and the code
    that produced it.

    Example:
        >>> machine_line(threads=2).startswith("machine: ") and machine_line(threads=2).endswith("; 2 threads")
        True
    """
    import torch

    from igcnas.nn._native_build import cpuinfo_lines, march_setting
    from igcnas.nn._tune_cache import library_isa

    info: dict[str, str] = {}
    for key, value, _ in cpuinfo_lines():
        info.setdefault(key, value)  # the first processor's
    model = info.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    if info.get("cpu family") and info.get("model"):
        model += f" (family {info['cpu family']} model {info['model']})"
    isa = library_isa()
    caps = [f"{name}={value}" for name, value in isa.items() if name != "torch"]
    library = f"torch {torch.__version__} runs {isa['torch']} kernels"
    return (f"machine: {model}, {os.cpu_count()} logical CPUs, {_widest_vectors(set(info.get('flags', '').split()))}"
            f"; {library}{' (' + ', '.join(caps) + ')' if caps else ''}; native kernels -march={march_setting()}"
            f"; {threads} thread{'' if threads == 1 else 's'}{_gpu(device)}")
