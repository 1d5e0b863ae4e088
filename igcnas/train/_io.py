"""Safetensors weights and ``load_weights``; atomic writes are the trial store's (re-exported here)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from igcnas.errors import UserError
from igcnas.store import atomic_write
from igcnas.store import write_json as write_json_atomic

__all__ = ["atomic_write", "write_json_atomic", "save_weights", "load_weights", "state_dict_for_saving"]


def state_dict_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU copy of ``model.state_dict()``: contiguous, no shared storage (as safetensors requires)."""
    return {
        name: tensor.detach().to("cpu").clone(memory_format=torch.contiguous_format)
        for name, tensor in model.state_dict().items()
    }


def save_weights(model: nn.Module, path: Path) -> None:
    """Save the model's state_dict to ``path`` with ``safetensors.torch.save_file`` (atomically)."""
    tensors = state_dict_for_saving(model)
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp)))


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load weights into ``model`` (strict) from ``.safetensors`` or a torch ``.pt`` file; returns ``model``.

    ``.pt`` files are read with ``torch.load(weights_only=True)``; a training ``checkpoint.pt`` (a dict with a
    ``"model"`` entry) works too.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> net = torch.nn.Linear(2, 3)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_weights(net, Path(d) / "w.safetensors")
        ...     loaded = load_weights(torch.nn.Linear(2, 3), Path(d) / "w.safetensors")
        >>> torch.equal(loaded.weight, net.weight), torch.equal(loaded.bias, net.bias)
        (True, True)
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {str(path)!r} does not exist (give a .safetensors or .pt file)")
    if path.suffix == ".safetensors":
        try:
            state: Any = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise UserError(f"weights file {str(path)!r} is not a valid safetensors file: {exc}") from exc
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle/zip errors for a file that is not a weights-only torch file
            raise UserError(
                f"weights file {str(path)!r} could not be read with torch.load(weights_only=True): {exc}"
            ) from exc
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
    if not isinstance(state, dict):
        raise UserError(f"weights file {str(path)!r} does not hold a state_dict (got {type(state).__name__})")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        if wrong_shape:
            parts.append(
                "wrong shape "
                + _few([f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong_shape])
            )
        raise UserError(
            f"weights file {str(path)!r} does not match the model ({'; '.join(parts)}); "
            "build the model from the same architecture (arch.json) the weights were trained with"
        )
    model.load_state_dict(state, strict=True)
    return model


def _few(items: list[str], limit: int = 5) -> str:
    """Join up to ``limit`` items, noting how many more there are."""
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")
