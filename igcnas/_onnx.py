"""The TorchScript and ONNX files of an export, and the onnxruntime check of the ONNX file against PyTorch.

Part of :mod:`igcnas.export` (which re-exports the public names); the graphs are written from an eval-mode model
built with ``impl="naive"``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from igcnas.arch.spec import ArchSpec
from igcnas.errors import IgcnasError

__all__ = ["TORCHSCRIPT_FILE", "ONNX_FILE", "ONNX_OPSET", "CHECK_RTOL", "CHECK_ATOL", "example_input",
           "write_torchscript", "write_onnx", "check_onnx"]

TORCHSCRIPT_FILE = "model.ts"
ONNX_FILE = "model.onnx"
ONNX_OPSET = 17
CHECK_RTOL = 1e-4
CHECK_ATOL = 1e-5


def example_input(spec: ArchSpec, batch: int, seed: int) -> torch.Tensor:
    """A seeded random batch shaped like the network's input."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *spec.input_shape), generator=generator)


def write_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Script the model (trace it if scripting fails) and save it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module: torch.jit.ScriptModule = torch.jit.script(model)
        except Exception:  # scripting is stricter than tracing; the traced graph is equivalent for this net
            module = torch.jit.trace(model, example)
        torch.jit.save(module, str(path))


def write_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """ONNX export (TorchScript-based exporter, opset 17) with a dynamic batch axis."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


def check_onnx(path: str | Path, model: nn.Module, inputs: torch.Tensor) -> float:
    """Run the ONNX file with onnxruntime on ``inputs``; return the max |difference| to PyTorch's outputs.

    Raises :class:`~igcnas.errors.IgcnasError` when the outputs are not allclose (rtol 1e-4, atol 1e-5).

    Example:
        >>> diff = check_onnx("exported/best/model.onnx", load_exported("exported/best"), torch.randn(4, 1, 8, 8))  # doctest: +SKIP
    """
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, min(2, torch.get_num_threads()))
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    got = np.asarray(session.run(None, {name: inputs.detach().cpu().numpy().astype(np.float32)})[0])
    model.eval()
    with torch.no_grad():
        expected = model(inputs.detach().cpu()).numpy()
    if got.shape != expected.shape:
        raise IgcnasError(f"{path}: ONNX output shape {got.shape} differs from PyTorch's {expected.shape}")
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    if not np.allclose(got, expected, rtol=CHECK_RTOL, atol=CHECK_ATOL):
        raise IgcnasError(
            f"{path}: ONNX outputs differ from PyTorch's by up to {diff:.3g} (rtol {CHECK_RTOL}, atol {CHECK_ATOL})"
        )
    return diff
