"""Where and how torch runs a training or evaluation: the device, data placement and process-wide settings.

:func:`resolve_device` turns ``"auto"``/``"cpu"``/``"cuda[:N]"`` into a device that exists here; :func:`_place`
moves a split that fits to the GPU once; :func:`_torch_settings` sets threads, determinism (CPU) or cuDNN
autotuning (CUDA) for a run and restores them; :func:`_autocast` is the bfloat16 autocast context.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from igcnas._allocator import tune_cpu_allocator
from igcnas.data import ImageTensors
from igcnas.errors import UserError

__all__ = ["resolve_device"]

# Splits up to this size are moved to the GPU once, so batching and augmentation run there.
_GPU_RESIDENT_BYTES = 4 << 30


def check_device(device: object, *, here: bool = True) -> None:
    """Raise a one-line UserError naming --device unless ``device`` is auto, cpu or cuda[:N] (spelled as
    :class:`~igcnas.train.TrainConfig` takes it) and, with ``here``, a device this machine has
    (:func:`resolve_device`)."""
    from igcnas.train._config import DEVICE_NAME

    if not isinstance(device, str) or not DEVICE_NAME.match(device):
        raise UserError(f"--device: {device!r} is not a device; use auto, cpu, cuda or cuda:N (e.g. --device cpu)")
    if not here or device in ("auto", "cpu"):
        return
    try:
        resolve_device(device)
    except UserError as error:
        reason = str(error).split(": ", 1)[-1]
        raise UserError(f"--device: {reason}") from None


def resolve_device(name: str | torch.device) -> torch.device:
    """Turn ``"auto"``/``"cpu"``/``"cuda"``/``"cuda:N"`` into a ``torch.device`` that exists on this machine."""
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"device: {name!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device: {name!r} requested but CUDA is not available here; use 'cpu' or 'auto'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"device: {name!r} does not exist (this machine has {torch.cuda.device_count()} CUDA device(s))"
            )
    elif device.type != "cpu":
        raise UserError(f"device: {name!r} is not supported; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return device


def _place(split: ImageTensors, device: torch.device) -> ImageTensors:
    """On CUDA, move a split that fits comfortably to the GPU once (batching then runs there)."""
    if device.type == "cuda" and split.images.numel() <= _GPU_RESIDENT_BYTES:
        return split.to(device)
    return split


@contextlib.contextmanager
def _torch_settings(device: torch.device, num_threads: int | None) -> Iterator[None]:
    """Threads, determinism (CPU) or cuDNN autotuning (CUDA) for the run; restores the previous settings.

    On CPU it also tunes glibc malloc for the process (:mod:`igcnas._allocator`; not undone, opt out with
    ``IGCNAS_MALLOC=system``): large activations stop being re-faulted every step.
    """
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    try:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        if device.type == "cpu":
            tune_cpu_allocator()
            _set_deterministic(True, warn_only=True)
        else:
            torch.backends.cudnn.benchmark = True
        yield
    finally:
        torch.set_num_threads(threads)
        _set_deterministic(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark


def _set_deterministic(mode: bool, *, warn_only: bool) -> None:
    """``torch.use_deterministic_algorithms(mode, warn_only=...)`` without its import of torch._inductor.

    The public call imports ``torch._inductor.config`` (about 2 s of torch._dynamo imports in every fresh process,
    e.g. each search worker) only to copy ``mode`` into it; when inductor is not loaded there is nothing to copy.
    """
    import sys

    if (torch.are_deterministic_algorithms_enabled() == mode
            and torch.is_deterministic_algorithms_warn_only_enabled() == warn_only):
        return
    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        torch._C._set_deterministic_algorithms(mode, warn_only=warn_only)


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast on ``device`` when enabled, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
