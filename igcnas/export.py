"""Export a searched architecture: arch.json, safetensors weights, TorchScript, ONNX and a model card.

An export folder holds:

==================== ============================================================================================
``arch.json``        the :class:`~igcnas.arch.ArchSpec` (rebuild with ``igcnas.nn.build``)
``weights.safetensors`` the state_dict (loads into ``build(spec, impl=...)`` for every impl)
``model.ts``         TorchScript (``torch.jit.load``), eval mode
``model.onnx``       ONNX opset 17, input ``input`` (N, C, H, W) with a dynamic batch axis, output ``logits``
``MODEL_CARD.md``    params, FLOPs, accuracy, dataset, search settings and how to load it
``export.json``      the same facts, machine-readable (read by ``igcnas evaluate``)
==================== ============================================================================================

The ONNX file is checked with onnxruntime on a random batch before the export is reported done: its outputs must
be allclose to PyTorch's. Models take inputs normalised like the training data (``(x / 255 - mean) / std`` per
channel, the dataset's ``eval_transform()``).

Example:
    >>> result = export_trial("e2e", "exported/best", trials_dir="trials")  # doctest: +SKIP
    >>> model = load_exported("exported/best")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from igcnas.analysis.pareto import filter_budget
from igcnas.arch.spec import ArchSpec, load_spec
from igcnas.errors import IgcnasError, UserError
from igcnas.search.results import StudyTrials, open_study
from igcnas.store import json_safe
from igcnas.train import ARCH_FILE, METRICS_FILE, WEIGHTS_FILE, load_weights, save_weights
from igcnas.units import format_count

__all__ = [
    "TORCHSCRIPT_FILE",
    "ONNX_FILE",
    "MODEL_CARD_FILE",
    "MANIFEST_FILE",
    "ONNX_OPSET",
    "ExportResult",
    "select_trial",
    "export_trial",
    "export_model",
    "load_exported",
    "read_manifest",
    "check_onnx",
    "evaluate_exported",
]

TORCHSCRIPT_FILE = "model.ts"
ONNX_FILE = "model.onnx"
MODEL_CARD_FILE = "MODEL_CARD.md"
MANIFEST_FILE = "export.json"
ONNX_OPSET = 17
_CHECK_RTOL = 1e-4
_CHECK_ATOL = 1e-5


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
                           "rtol": _CHECK_RTOL, "atol": _CHECK_ATOL},
            **json_safe(self.info),
        }


# ---------------------------------------------------------------------------------------------------------------
# choosing a trial


def _completed(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of completed trials."""
    return frame.loc[frame["state"].astype(str) == "complete"]


def _trial_list(numbers: pd.Series, limit: int = 12) -> str:
    """'0, 1, 2, ... (+n more)' for messages."""
    values = [str(int(v)) for v in numbers.tolist()]
    shown = ", ".join(values[:limit])
    return shown + (f", ... (+{len(values) - limit} more)" if len(values) > limit else "")


def select_trial(
    frame: pd.DataFrame,
    *,
    study: str = "",
    trial: int | None = None,
    max_params: str | int | float | None = None,
    max_flops: str | int | float | None = None,
) -> pd.Series:
    """The trial to export: number ``trial``, or else the most accurate completed trial within the budgets.

    "Most accurate" is the highest validation ``accuracy``; ties go to fewer params, then fewer FLOPs, then the
    lower trial number. Raises :class:`~igcnas.errors.UserError` when the study has no completed trial, the
    trial number does not exist or is not completed, or no completed trial fits the budget.

    Example:
        >>> frame = pd.DataFrame({"trial": [0, 1, 2], "state": ["complete", "complete", "pruned"],
        ...                       "accuracy": [0.9, 0.8, 0.95], "params": [300, 100, 50], "flops": [1, 1, 1]})
        >>> int(select_trial(frame)["trial"]), int(select_trial(frame, max_params=200)["trial"])
        (0, 1)
    """
    label = f"study {study!r}" if study else "the study"
    completed = _completed(frame)
    if trial is not None:
        rows = frame.loc[frame["trial"] == trial]
        if rows.empty:
            known = _trial_list(frame["trial"]) if len(frame) else "none yet"
            raise UserError(f"--trial: {label} has no trial {trial} (trials: {known})")
        row = rows.iloc[0]
        if str(row["state"]) != "complete":
            done = _trial_list(completed["trial"]) if len(completed) else "none"
            reason = f" ({row['reason']})" if "reason" in row.index and str(row["reason"]) else ""
            raise UserError(
                f"--trial: trial {trial} of {label} is {row['state']}{reason}, not complete, so it has no final "
                f"weights; export a completed trial (completed: {done})"
            )
        return row
    if completed.empty:
        states = frame["state"].astype(str).value_counts()
        summary = ", ".join(f"{n} {s}" for s, n in states.items() if n) or "no trials"
        raise UserError(
            f"--study: {label} has no completed trial yet ({summary}); let the search finish a trial first"
        )
    fitting = filter_budget(completed, max_params=max_params, max_flops=max_flops)
    if fitting.empty:
        limits = []
        for column, value, option in (("params", max_params, "--best-under-params"),
                                      ("flops", max_flops, "--best-under-flops")):
            if value is None:
                continue
            counts = pd.to_numeric(completed[column], errors="coerce")
            smallest = counts.min()
            best = "unknown" if pd.isna(smallest) else format_count(float(smallest))
            limits.append(f"{option} {value}: the smallest completed trial has {best} {column}")
        raise UserError(f"no completed trial of {label} fits the budget ({'; '.join(limits)}); raise the limit")
    ranked = fitting.assign(
        _acc=pd.to_numeric(fitting["accuracy"], errors="coerce").fillna(-1.0),
        _params=pd.to_numeric(fitting["params"], errors="coerce").astype("float64").fillna(math.inf),
        _flops=pd.to_numeric(fitting["flops"], errors="coerce").astype("float64").fillna(math.inf),
    ).sort_values(["_acc", "_params", "_flops", "trial"], ascending=[False, True, True, True], kind="stable")
    return frame.loc[ranked.index[0]]


def _trial_files(row: pd.Series, study: StudyTrials) -> tuple[Path, Path]:
    """A trial's folder and arch.json: the recorded ``arch_path`` when it exists, else ``<study>/<trial:04d>/``."""
    arch_path = str(row.get("arch_path", "") or "")
    if arch_path:
        candidate = Path(arch_path).expanduser()
        for path in (candidate, study.folder.parent / candidate, study.folder / candidate):
            if path.is_file():
                return path.parent, path
    folder = study.folder / f"{int(row['trial']):04d}"
    return folder, folder / ARCH_FILE


# ---------------------------------------------------------------------------------------------------------------
# writing an export


def _example_input(spec: ArchSpec, batch: int, seed: int) -> torch.Tensor:
    """A seeded random batch shaped like the network's input."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *spec.input_shape), generator=generator)


def _write_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Script the model (trace it if scripting fails) and save it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module: torch.jit.ScriptModule = torch.jit.script(model)
        except Exception:  # scripting is stricter than tracing; the traced graph is equivalent for this net
            module = torch.jit.trace(model, example)
        torch.jit.save(module, str(path))


def _write_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
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
    if not np.allclose(got, expected, rtol=_CHECK_RTOL, atol=_CHECK_ATOL):
        raise IgcnasError(
            f"{path}: ONNX outputs differ from PyTorch's by up to {diff:.3g} (rtol {_CHECK_RTOL}, atol {_CHECK_ATOL})"
        )
    return diff


def _percent(value: object) -> str:
    """0.931 -> '93.10%'; missing -> 'not measured'."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "not measured"
    return f"{number:.2%}" if math.isfinite(number) else "not measured"


def _snippet(out_dir: Path, spec: ArchSpec) -> str:
    """The three lines of Python that load the export and run it."""
    shape = ", ".join(str(v) for v in spec.input_shape)
    return (
        "import torch, igcnas\n"
        f"model = igcnas.load_exported({str(out_dir)!r})\n"
        f"logits = model(torch.zeros(1, {shape}))  # inputs normalised like the training data\n"
    )


def _model_card(result: ExportResult, snippet: str) -> str:
    """MODEL_CARD.md text."""
    spec, info = result.spec, result.info
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
        f"| Validation accuracy | {_percent(info.get('accuracy'))} |",
        f"| Test accuracy | {_percent(info.get('test_accuracy'))} |",
        f"| Epochs trained | {info.get('epochs') if info.get('epochs') is not None else 'unknown'} |",
        f"| Dataset | {dataset} |",
        "",
        "## Architecture",
        "",
        f"- Block design: `{spec.design}` (bottleneck {spec.block.bottleneck:g}, shuffle {spec.block.shuffle})",
        f"- Stage widths: {widths}; blocks per stage: {depths}; stem width {spec.stem.width}",
        f"- Input: {spec.input_shape[0]} x {spec.input_shape[1]} x {spec.input_shape[2]} (C x H x W), "
        f"{spec.num_classes} classes",
        f"- Spec id: `{spec.id}` (full spec in `{ARCH_FILE}`)",
        "",
        "## Search settings",
        "",
    ]
    if settings:
        for key in sorted(settings):
            lines.append(f"- {key}: `{json.dumps(json_safe(settings[key]), sort_keys=True)}`")
    else:
        lines.append("- not recorded (exported outside a study)")
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
        f"- `{ARCH_FILE}`: the architecture spec; `{WEIGHTS_FILE}`: the weights (safetensors)",
        f"- `{TORCHSCRIPT_FILE}`: TorchScript (`torch.jit.load`)",
        f"- `{ONNX_FILE}`: ONNX opset {ONNX_OPSET}, input `input` with a dynamic batch axis, output `logits`; "
        f"checked with onnxruntime (max |difference| to PyTorch {result.onnx_max_abs_diff:.2g})",
        f"- `{MANIFEST_FILE}`: these facts, machine-readable",
        "",
        "Retrain from scratch: `igcnas train DIR --dataset "
        f"{dataset if dataset != 'unknown' else 'DATASET'} --epochs 100`; "
        f"measure: `igcnas evaluate DIR --dataset {dataset if dataset != 'unknown' else 'DATASET'}`.",
        "",
    ]
    return "\n".join(lines)


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
    expected = model.state_dict()
    given = dict(state_dict)
    problems = sorted(set(expected) ^ set(given)) + sorted(
        key for key in set(expected) & set(given) if tuple(expected[key].shape) != tuple(given[key].shape)
    )
    if problems:
        raise UserError(
            f"weights do not match the architecture {spec.id} ({len(problems)} missing, unexpected or "
            f"mis-shaped entries, e.g. {problems[0]}); export the weights trained with this arch.json"
        )
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
    example = _example_input(spec, 2, seed)
    _write_torchscript(model, example, files["torchscript"])
    _write_onnx(model, example, files["onnx"])
    check = _example_input(spec, max(1, int(check_batch)), seed + 1)
    diff = check_onnx(files["onnx"], model, check)
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
    snippet = _snippet(out_dir, spec)
    files["card"].write_text(_model_card(result, snippet), encoding="utf-8")
    manifest = result.to_dict()
    manifest["load_snippet"] = snippet
    files["manifest"].write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return result


def export_trial(
    study: str,
    out: str | Path,
    *,
    trial: int | None = None,
    max_params: str | int | float | None = None,
    max_flops: str | int | float | None = None,
    storage: str | None = None,
    trials_dir: str | Path = "trials",
    check_batch: int = 8,
) -> ExportResult:
    """Export one trial of a study to ``out``: trial number ``trial``, else the best within the budgets.

    The trial's ``arch.json`` and ``weights.safetensors`` (or a ``.pt`` state_dict, read with
    ``weights_only=True``) are read from its folder; the study's ``study.json`` settings and the trial's
    metrics go into the model card. See :func:`select_trial` for the choice and its errors.

    Example:
        >>> result = export_trial("e2e", "exported/best", max_params="20k")  # doctest: +SKIP
        >>> result.params <= 20_000  # doctest: +SKIP
        True
    """
    data = open_study(study, storage=storage, trials_dir=trials_dir)
    row = select_trial(data.frame, study=study, trial=trial, max_params=max_params, max_flops=max_flops)
    number = int(row["trial"])
    folder, arch_file = _trial_files(row, data)
    if not arch_file.is_file():
        raise UserError(f"trial {number} of study {study!r}: no {ARCH_FILE} in {str(folder)!r}; it cannot be exported")
    spec = load_spec(arch_file)
    weights = _weights_file(
        folder,
        f"trial {number} of study {study!r}: no {WEIGHTS_FILE} in {str(folder)!r} "
        "(the search keeps weights of completed trials only); pick another trial",
    )
    from igcnas.nn.network import build

    model = load_weights(build(spec, impl="naive"), weights)
    if not spec.name:
        spec = spec.with_name(f"{study}-trial{number:04d}")
    settings = dict(data.settings)
    metrics = _read_metrics(folder / METRICS_FILE)
    info: dict[str, Any] = {
        "study": study,
        "trial": number,
        "accuracy": row.get("accuracy"),
        "test_accuracy": row.get("test_accuracy"),
        "epochs": row.get("epochs"),
        "dataset": settings.get("dataset") or (metrics.get("data") or {}).get("name"),
        "search_settings": settings,
        "seed": settings.get("seed"),
        "source": str(folder),
    }
    if (metrics.get("result") or {}).get("test_accuracy") is not None and pd.isna(info["test_accuracy"]):
        info["test_accuracy"] = metrics["result"]["test_accuracy"]
    out_dir = Path(out)
    if out_dir.resolve() == folder.resolve():
        raise UserError(f"--out: {str(out_dir)!r} is the trial's own folder; export into a new folder")
    result = export_model(spec, model.state_dict(), out_dir, info=info, check_batch=check_batch)
    if (folder / METRICS_FILE).is_file():
        shutil.copyfile(folder / METRICS_FILE, out_dir / "search_metrics.json")
    return result


def _read_metrics(path: Path) -> dict[str, Any]:
    """The training engine's metrics.json as a dict ({} when missing or unreadable)."""
    if not path.is_file():
        return {}
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return payload if isinstance(payload, dict) else {}


# ---------------------------------------------------------------------------------------------------------------
# reading an export


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
    weights = _weights_file(folder, f"{str(folder)!r} has no {WEIGHTS_FILE}; re-export or finish training first")
    model = load_weights(build(spec, impl=impl), weights)
    return model.to(device).eval()


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
    settings = manifest.get("search_settings") or {}
    options: dict[str, Any] = {}
    if isinstance(settings.get("val_fraction"), float):
        options["val_fraction"] = settings["val_fraction"]
    if isinstance(settings.get("train_subset"), (int, str)):
        options["train_subset"] = settings["train_subset"]
    seed = manifest.get("seed")
    data = load_data(str(name), data_dir=data_dir, seed=int(seed) if isinstance(seed, int) else 0, **options)
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


def _weights_file(folder: Path, missing: str) -> Path:
    """The folder's safetensors weights, else its first ``*.pt`` (read with weights_only); ``missing`` if neither."""
    weights = folder / WEIGHTS_FILE
    if weights.is_file():
        return weights
    candidates = sorted(folder.glob("*.pt"))
    if not candidates:
        raise UserError(missing)
    return candidates[0]
