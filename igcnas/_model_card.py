"""The text of an export's ``MODEL_CARD.md`` and the three-line load snippet it (and ``export.json``) shows.

Part of :mod:`igcnas.export`: :func:`igcnas.export.export_model` writes the card from its
:class:`~igcnas.export.ExportResult`. File names come from the result's ``files``, so the card lists what was
written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from igcnas._onnx import ONNX_OPSET
from igcnas.arch.spec import ArchSpec
from igcnas.store import json_safe
from igcnas.units import format_count

if TYPE_CHECKING:
    from igcnas._artifacts import ExportResult

__all__ = ["load_snippet", "model_card", "percent"]


def percent(value: object) -> str:
    """0.931 -> '93.10%'; missing -> 'not measured'."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "not measured"
    return f"{number:.2%}" if math.isfinite(number) else "not measured"


def load_snippet(out_dir: Path, spec: ArchSpec) -> str:
    """The three lines of Python that load the export and run it."""
    shape = ", ".join(str(v) for v in spec.input_shape)
    return (
        "import torch, igcnas\n"
        f"model = igcnas.load_exported({str(out_dir)!r})\n"
        f"logits = model(torch.zeros(1, {shape}))  # inputs normalised like the training data\n"
    )


def model_card(result: ExportResult, snippet: str) -> str:
    """MODEL_CARD.md text."""
    spec, info = result.spec, result.info
    names = {key: path.name for key, path in result.files.items()}
    settings: Mapping[str, Any] = info.get("search_settings") or {}
    widths = "-".join(str(s.width) for s in spec.stages)
    depths = "-".join(str(s.depth) for s in spec.stages)
    dataset = info.get("dataset") or "unknown"
    title = spec.name or f"architecture {spec.id}"
    lines = [
        f"# {title}",
        "",
        "Exported by igcnas"
        + (f" from study `{info['study']}`, trial {info['trial']}" if info.get("study") is not None else "")
        + ".",
        "",
        "## Numbers",
        "",
        "| | |",
        "|---|---|",
        f"| Parameters | {format_count(result.params)} ({result.params:,}) |",
        f"| FLOPs (multiply-adds per image) | {format_count(result.flops)} ({result.flops:,}) |",
        f"| Validation accuracy | {percent(info.get('accuracy'))} |",
        f"| Test accuracy | {percent(info.get('test_accuracy'))} |",
        f"| Epochs trained | {info.get('epochs') if info.get('epochs') is not None else 'unknown'} |",
        f"| Dataset | {dataset} |",
        "",
        "## Architecture",
        "",
        f"- Block design: `{spec.design}` (bottleneck {spec.block.bottleneck:g}, shuffle {spec.block.shuffle})",
        f"- Stage widths: {widths}; blocks per stage: {depths}; stem width {spec.stem.width}",
        f"- Input: {spec.input_shape[0]} x {spec.input_shape[1]} x {spec.input_shape[2]} (C x H x W), "
        f"{spec.num_classes} classes",
        f"- Spec id: `{spec.id}` (full spec in `{names['arch']}`)",
        "",
        "## Search settings",
        "",
    ]
    if settings:
        for key in sorted(settings):
            lines.append(f"- {key}: `{json.dumps(json_safe(settings[key]), sort_keys=True)}`")
    else:
        lines.append("- not recorded (exported outside a study)")
    shown = dataset if dataset != "unknown" else "DATASET"
    lines += [
        "",
        "## Load it in three lines of Python",
        "",
        "```python",
        snippet.rstrip("\n"),
        "```",
        "",
        "Inputs are float tensors (N, C, H, W) normalised per channel like the training data: "
        f"`(x / 255 - mean) / std`, as `igcnas.data.load_data({dataset!r}).eval_transform()` produces them.",
        "",
        "## Files",
        "",
        f"- `{names['arch']}`: the architecture spec; `{names['weights']}`: the weights (safetensors)",
        f"- `{names['torchscript']}`: TorchScript (`torch.jit.load`)",
        f"- `{names['onnx']}`: ONNX opset {ONNX_OPSET}, input `input` with a dynamic batch axis, output `logits`; "
        f"checked with onnxruntime (max |difference| to PyTorch {result.onnx_max_abs_diff:.2g})",
        f"- `{names['manifest']}`: these facts, machine-readable",
        "",
        f"Retrain from scratch: `igcnas train DIR --dataset {shown} --epochs 100`; "
        f"measure: `igcnas evaluate DIR --dataset {shown}`.",
        "",
    ]
    return "\n".join(lines)
