"""Reading an export (or training checkpoint) folder back: its manifest, the rebuilt model, its accuracy.

Part of :mod:`igcnas.export` (which re-exports the public names).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from igcnas._artifacts import MANIFEST_FILE
from igcnas.arch.spec import load_spec
from igcnas.errors import UserError
from igcnas.store import ARCH_FILE, WEIGHTS_FILE
from igcnas.train import load_weights

__all__ = ["read_manifest", "load_exported", "evaluate_exported", "weights_file"]


def weights_file(folder: Path, missing: str) -> Path:
    """The folder's safetensors weights, else its first ``*.pt`` (read with weights_only); ``missing`` if neither."""
    weights = folder / WEIGHTS_FILE
    if weights.is_file():
        return weights
    candidates = sorted(folder.glob("*.pt"))
    if not candidates:
        raise UserError(missing)
    return candidates[0]


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The ``export.json`` of an export folder ({} when the folder has none, e.g. a training checkpoint)."""
    manifest = Path(path) / MANIFEST_FILE
    if not manifest.is_file():
        return {}
    try:
        payload = json.loads(manifest.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{manifest}: not valid JSON ({error}); re-export the model") from None
    return payload if isinstance(payload, dict) else {}


def load_exported(path: str | Path, *, impl: str = "auto", device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the network in an export (or training checkpoint) folder and load its weights, in eval mode.

    Reads ``arch.json`` and ``weights.safetensors`` (or, failing that, a ``.pt`` state_dict loaded with
    ``torch.load(weights_only=True)``). ``impl`` picks the sparse-conv implementation (same weights for all).

    Example:
        >>> import torch, igcnas
        >>> model = igcnas.load_exported("exported/best")  # doctest: +SKIP
        >>> model(torch.zeros(1, 1, 8, 8)).shape  # doctest: +SKIP
        torch.Size([1, 10])
    """
    from igcnas.nn.network import build

    folder = Path(path)
    if not folder.is_dir():
        raise UserError(
            f"{str(folder)!r} is not a folder; give the folder 'igcnas export' or 'igcnas train' wrote "
            f"(it holds {ARCH_FILE} and {WEIGHTS_FILE})"
        )
    if not (folder / ARCH_FILE).is_file():
        raise UserError(f"{str(folder)!r} has no {ARCH_FILE}; give an export folder ('igcnas export --out DIR')")
    spec = load_spec(folder)
    weights = weights_file(folder, f"{str(folder)!r} has no {WEIGHTS_FILE}; re-export or finish training first")
    model = load_weights(build(spec, impl=impl), weights)
    return model.to(device).eval()


def _data_options(manifest: dict[str, Any]) -> dict[str, Any]:
    """The ``load_data`` options that carve the validation split (val_fraction, train_subset) of the study (an
    export's ``search_settings``) or of the run (an ``igcnas train`` folder's ``data``)."""
    settings = manifest.get("search_settings") or manifest.get("data") or {}
    options: dict[str, Any] = {}
    if isinstance(settings.get("val_fraction"), float):
        options["val_fraction"] = settings["val_fraction"]
    if isinstance(settings.get("train_subset"), (int, str)):
        options["train_subset"] = settings["train_subset"]
    return options


def evaluate_exported(
    path: str | Path,
    *,
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    split: str = "test",
    batch_size: int = 512,
    device: str = "cpu",
) -> dict[str, Any]:
    """Accuracy and loss of an exported model on a dataset split (``"test"`` or ``"val"``).

    ``dataset`` defaults to the one recorded in the export's ``export.json``. The validation split is carved
    with the study's seed (recorded at export) so that it is the one the search validated on.

    Example:
        >>> evaluate_exported("exported/best", dataset="digits")["accuracy"]  # doctest: +SKIP
        0.93
    """
    from igcnas.data import load_data
    from igcnas.train import evaluate, resolve_device

    if split not in ("test", "val"):
        raise UserError(f"--split: {split!r} is not 'test' or 'val'")
    model = load_exported(path)
    manifest = read_manifest(path)
    name = dataset or manifest.get("dataset")
    if not name:
        raise UserError(
            f"--dataset: {str(path)!r} does not record its dataset; pass --dataset (e.g. --dataset digits)"
        )
    spec = load_spec(path)
    seed = manifest.get("seed")
    if split == "val" and not isinstance(seed, int):
        raise UserError(f"--split val: {str(path)!r} does not record the data split it was trained with (no "
                        f"{MANIFEST_FILE} with its seed), so the validation images would not be the ones held out; "
                        "use --split test")
    data = load_data(str(name), data_dir=data_dir, seed=int(seed) if isinstance(seed, int) else 0,
                     **_data_options(manifest))
    if tuple(data.input_shape) != tuple(spec.input_shape) or data.num_classes != spec.num_classes:
        raise UserError(
            f"--dataset: {name} has inputs {tuple(data.input_shape)} and {data.num_classes} classes but the model "
            f"in {str(path)!r} expects {tuple(spec.input_shape)} and {spec.num_classes}; pass the dataset it was "
            "trained on"
        )
    images = data.test if split == "test" else data.val
    if images is None or len(images) == 0:
        raise UserError(f"--split: {name} has no {split} split; use --split val")
    loss, accuracy = evaluate(model, images, data, batch_size=batch_size, device=resolve_device(device))
    return {
        "path": str(path),
        "dataset": str(name),
        "split": split,
        "images": len(images),
        "accuracy": float(accuracy),
        "loss": float(loss),
        "params": int(manifest["params"]) if isinstance(manifest.get("params"), int) else None,
    }
