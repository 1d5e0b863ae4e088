"""Keep freed CPU tensor memory in the process (glibc malloc tuning) so training steps stop page-faulting.

PyTorch allocates CPU tensors with ``malloc``. glibc serves every block above its mmap threshold (at most
32 MiB, often 128 KiB) with a fresh ``mmap`` and returns it to the kernel on ``free``, so each training step
re-faults every large activation: the kernel zeroes each 4 KiB page on first touch. On the project's 2-core
Xeon that was half the wall time of a CIFAR block's training step (IGCV3-D, batch 64: 210 ms -> 115 ms with
the tuning, system time 0.9 s -> 0.0 s per 5 steps).

:func:`tune_cpu_allocator` sets ``M_MMAP_MAX = 0`` (large blocks come from the heap too) and
``M_TRIM_THRESHOLD = 1 GiB`` (freed heap memory is kept for reuse), like the jemalloc/tcmalloc preload that
PyTorch's CPU performance guide recommends, without a preload. The cost: the process keeps its peak heap
(plus up to 1 GiB of free memory at the top) until it exits. It is process-wide and cannot be undone
(glibc drops its adaptive threshold once set), so igcnas applies it only where a process trains on CPU
(:func:`igcnas.train.train`), scores a training-free proxy that runs the network on CPU
(:func:`igcnas.proxies.score`), and in the benchmark's worker processes. ``IGCNAS_MALLOC=system`` in the
environment turns it off. Other C libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

__all__ = ["MALLOC_ENV", "tune_cpu_allocator", "allocator_status"]

#: environment variable: ``system`` leaves malloc as it is; anything else (or unset) allows the tuning
MALLOC_ENV = "IGCNAS_MALLOC"

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 1 << 30

_logger = logging.getLogger(__name__)
_status: str | None = None


def allocator_status() -> str:
    """``tuned``, or why not (``not tuned yet``, ``disabled by IGCNAS_MALLOC=system``, ``not glibc ...``)."""
    return _status or "not tuned yet"


def tune_cpu_allocator() -> bool:
    """Make glibc malloc keep freed memory for reuse (see the module docstring); True when it is in effect.

    Idempotent; a no-op returning False with ``IGCNAS_MALLOC=system`` or on a C library other than glibc.

    Example:
        >>> in_effect = tune_cpu_allocator()
        >>> in_effect == (allocator_status() == "tuned"), tune_cpu_allocator() == in_effect  # idempotent
        (True, True)
    """
    global _status
    if _status is not None:
        return _status == "tuned"
    if os.environ.get(MALLOC_ENV, "").strip().lower() == "system":
        _status = f"disabled by {MALLOC_ENV}=system"
        return False
    libc_name = platform.libc_ver()[0]
    if platform.system() != "Linux" or libc_name != "glibc":
        _status = f"not glibc ({platform.system()} {libc_name or 'unknown libc'}): malloc left as it is"
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    except (OSError, AttributeError) as error:  # pragma: no cover - glibc always has mallopt
        ok = False
        _logger.debug("mallopt unavailable: %s", error)
    _status = "tuned" if ok else "mallopt refused the settings: malloc left as it is"
    _logger.debug("CPU allocator: %s", _status)
    return ok
