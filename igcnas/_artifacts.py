"""Writing an export folder: arch.json, weights, TorchScript, ONNX (checked), ``MODEL_CARD.md`` and ``export.json``.

Part of :mod:`igcnas.export` (which re-exports the public names); the graphs and the ONNX check are in
:mod:`igcnas._onnx`, the card text in :mod:`igcnas._model_card`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from igcnas._model_card import load_snippet, model_card
from igcnas._onnx import (
    CHECK_ATOL,
    CHECK_RTOL,
    ONNX_FILE,
    ONNX_OPSET,
    TORCHSCRIPT_FILE,
    check_onnx,
    example_input,
    write_onnx,
    write_torchscript,
)
from igcnas.arch.spec import ArchSpec
from igcnas.errors import UserError
from igcnas.store import ARCH_FILE, WEIGHTS_FILE, json_safe
from igcnas.train import save_weights

__all__ = ["MODEL_CARD_FILE", "MANIFEST_FILE", "ExportResult", "export_model"]

MODEL_CARD_FILE = "MODEL_CARD.md"
MANIFEST_FILE = "export.json"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote: the folder, the numbers in the model card and the ONNX check."""

    out_dir: Path
    spec: ArchSpec
    params: int
    flops: int
    files: dict[str, Path]
    onnx_max_abs_diff: float
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (the content of ``export.json``)."""
        return {
            "out_dir": str(self.out_dir),
            "name": self.spec.name,
            "spec_id": self.spec.id,
            "design": self.spec.design,
            "input_shape": list(self.spec.input_shape),
            "num_classes": self.spec.num_classes,
            "params": self.params,
            "flops": self.flops,
            "files": {key: path.name for key, path in self.files.items()},
            "onnx_check": {"opset": ONNX_OPSET, "max_abs_diff": self.onnx_max_abs_diff,
                           "rtol": CHECK_RTOL, "atol": CHECK_ATOL},
            **json_safe(self.info),
        }


def _check_state_dict(spec: ArchSpec, expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> None:
    """UserError unless ``given`` has exactly the keys and shapes of the architecture's state_dict."""
    problems = sorted(set(expected) ^ set(given)) + sorted(
        key for key in set(expected) & set(given) if tuple(expected[key].shape) != tuple(given[key].shape)
    )
    if problems:
        raise UserError(
            f"weights do not match the architecture {spec.id} ({len(problems)} missing, unexpected or "
            f"mis-shaped entries, e.g. {problems[0]}); export the weights trained with this arch.json"
        )


def export_model(
    spec: ArchSpec,
    state_dict: Mapping[str, torch.Tensor],
    out: str | Path,
    *,
    info: Mapping[str, Any] | None = None,
    check_batch: int = 8,
    seed: int = 0,
) -> ExportResult:
    """Write an export folder for ``spec`` with ``state_dict``: arch, weights, TorchScript, ONNX, card, manifest.

    ``info`` adds facts to the card and ``export.json`` (``study``, ``trial``, ``accuracy``, ``test_accuracy``,
    ``epochs``, ``dataset``, ``search_settings``). The ONNX file is checked against PyTorch on a seeded random
    batch of ``check_batch`` inputs. The exported graphs are built with ``impl="naive"`` (the portable form; every
    impl shares the same state_dict).

    Example:
        >>> import tempfile
        >>> from igcnas.arch.spec import ArchSpec
        >>> from igcnas.nn.network import build
        >>> spec = ArchSpec.simple("DW+PW", widths=(8, 16), depths=(1, 1), input_shape=(1, 8, 8))
        >>> result = export_model(spec, build(spec).state_dict(), tempfile.mkdtemp())
        >>> sorted(result.files), result.params
        (['arch', 'card', 'manifest', 'onnx', 'torchscript', 'weights'], 834)
    """
    from igcnas.cost import count
    from igcnas.nn.network import build

    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out: {str(out_dir)!r} is a file; give a folder to write the export into")
    model = build(spec, impl="naive")
    given = dict(state_dict)
    _check_state_dict(spec, model.state_dict(), given)
    model.load_state_dict(given, strict=True)
    model.eval()
    cost = count(spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "arch": out_dir / ARCH_FILE,
        "weights": out_dir / WEIGHTS_FILE,
        "torchscript": out_dir / TORCHSCRIPT_FILE,
        "onnx": out_dir / ONNX_FILE,
        "card": out_dir / MODEL_CARD_FILE,
        "manifest": out_dir / MANIFEST_FILE,
    }
    spec.save(files["arch"])
    save_weights(model, files["weights"])
    example = example_input(spec, 2, seed)
    write_torchscript(model, example, files["torchscript"])
    write_onnx(model, example, files["onnx"])
    diff = check_onnx(files["onnx"], model, example_input(spec, max(1, int(check_batch)), seed + 1))
    details = dict(info or {})
    details.setdefault("exported_at", datetime.now(UTC).isoformat(timespec="seconds"))
    details.setdefault("torch_version", torch.__version__)
    result = ExportResult(
        out_dir=out_dir,
        spec=spec,
        params=cost.params,
        flops=cost.flops,
        files=files,
        onnx_max_abs_diff=diff,
        info=json_safe(details),
    )
    snippet = load_snippet(out_dir, spec)
    files["card"].write_text(model_card(result, snippet), encoding="utf-8")
    manifest = result.to_dict()
    manifest["load_snippet"] = snippet
    files["manifest"].write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return result
