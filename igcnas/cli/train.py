"""``igcnas train``: retrain an architecture from scratch (a zoo name, an arch.json or an export folder)."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from igcnas.errors import UserError

if TYPE_CHECKING:
    from igcnas.arch.spec import ArchSpec
    from igcnas.train import TrainConfig

__all__ = ["register", "run", "resolve_architecture"]

HELP = """\
Train an architecture from scratch with the long schedule (SGD + Nesterov momentum, the papers' step schedule:
lr / 10 at 50%, 75% and 87.5% of the epochs), printing one line per epoch. ARCH is an export folder (its
arch.json), an arch.json file, or a zoo name. The checkpoint folder --out receives arch.json, metrics.json (after
every epoch), checkpoint.pt (resumable with --resume) and, at the end, weights.safetensors; load the result with
igcnas.load_exported(OUT) or measure it with 'igcnas evaluate OUT --dataset ...'.

Examples:
  igcnas train exported/best --dataset digits --epochs 30 --out runs/best-long
  igcnas train arch.json --dataset cifar10 --epochs 200 --lr 0.1 --batch-size 64"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``train`` command."""
    from igcnas.cli._common import count, dataset_parent, device_parent, fraction, positive_int

    parser = subparsers.add_parser("train", help="retrain an architecture from scratch", description=HELP,
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   parents=[dataset_parent("the one recorded in ARCH/export.json"),
                                            device_parent("auto")])
    parser.add_argument("arch", metavar="ARCH", help="export folder, arch.json file or zoo name")
    parser.add_argument("--epochs", type=positive_int, default=30, help="training epochs (default: 30)")
    parser.add_argument("--out", metavar="DIR", help="checkpoint folder (default: runs/<name>-<spec id>)")
    parser.add_argument("--lr", type=float, default=0.1, help="initial learning rate (default: 0.1)")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="mini-batch size (default: 128)")
    parser.add_argument("--schedule", choices=("step", "cosine", "step30", "constant"), default="step",
                        help="learning-rate schedule (default: step, the papers' CIFAR schedule)")
    parser.add_argument("--warmup-epochs", type=int, default=0, help="linear warm-up epochs (default: 0)")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="weight decay (default: 1e-4)")
    parser.add_argument("--val-fraction", type=fraction, default=0.1,
                        help="fraction of the training set held out for validation (default: 0.1)")
    parser.add_argument("--train-subset", type=count, help="train on this many images only, e.g. 5k")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data split, initialisation and batches")
    parser.add_argument("--threads", type=positive_int, help="CPU threads used by torch (default: torch's)")
    parser.add_argument("--no-augment", action="store_true", help="train without pad-crop/flip augmentation")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint.pt")
    parser.add_argument("--quiet", action="store_true", help="print only the final summary")
    parser.set_defaults(func=run)


def _looks_like_path(source: str) -> bool:
    """Whether ``source`` names a file rather than a zoo network: a ``*.json`` name or one with a path separator."""
    import os

    separators = [sep for sep in (os.sep, os.altsep, "/") if sep]
    return source.lower().endswith(".json") or source.startswith("~") or any(sep in source for sep in separators)


_FLAGS = {"num_threads": "--threads", "augment": "--no-augment"}
"""TrainConfig fields whose option is not ``--<field with dashes>``."""


def _train_config(**fields: Any) -> TrainConfig:
    """``TrainConfig(**fields)`` with its errors naming this command's options (``--lr``, not ``TrainConfig.lr``).

    Example:
        >>> _train_config(epochs=5, warmup_epochs=50)
        Traceback (most recent call last):
        ...
        igcnas.errors.UserError: --warmup-epochs: 50 must be smaller than --epochs 5
    """
    from igcnas.train import TrainConfig

    def flag(name: str) -> str:
        return _FLAGS.get(name, "--" + name.replace("_", "-"))

    try:
        return TrainConfig(**fields)
    except UserError as error:
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        text = re.sub(r"^TrainConfig\.(\w+)", lambda m: flag(m[1]) if m[1] in names else m[0], str(error))
        text = re.sub(r"\b(\w+)=([^\s,)]+)", lambda m: f"{flag(m[1])} {m[2]}" if m[1] in names else m[0], text)
        raise UserError(text) from None


def _record_data(out: Path, *, dataset: str, seed: int, val_fraction: float, train_subset: int | None) -> None:
    """Write the run's ``export.json`` with its dataset and data split before training, so that ``igcnas evaluate
    OUT --split val`` carves the validation images this run held out (and ``igcnas train OUT`` knows the
    dataset)."""
    from igcnas.export import MANIFEST_FILE
    from igcnas.store import write_json_if_changed

    out.mkdir(parents=True, exist_ok=True)
    write_json_if_changed(out / MANIFEST_FILE, {
        "source": "igcnas train", "dataset": dataset, "seed": seed,
        "data": {"val_fraction": val_fraction, "train_subset": train_subset},
    })


def resolve_architecture(source: str) -> tuple[ArchSpec, Path | None]:
    """The spec named by ``source`` (folder, arch.json or zoo name) and the folder it came from (if any).

    Example:
        >>> import tempfile
        >>> spec, folder = resolve_architecture("IGC-L24M2-D20")  # a zoo name
        >>> spec.design, folder
        ('GC+PWG', None)
        >>> with tempfile.TemporaryDirectory() as export:  # a folder holding arch.json, e.g. an export
        ...     _ = (Path(export) / "arch.json").write_text(spec.to_json())
        ...     resolve_architecture(export) == (spec, Path(export))
        True
    """
    from igcnas.arch.spec import ArchSpec, load_spec

    path = Path(source).expanduser()
    if path.is_dir():
        return load_spec(path), path
    if path.is_file() or _looks_like_path(source):  # a missing file: the same error as 'igcnas describe'
        return load_spec(path), None
    import importlib

    try:
        get_zoo = getattr(importlib.import_module("igcnas.zoo"), "get_zoo", None)
    except ImportError:
        get_zoo = None
    if not callable(get_zoo):
        raise UserError(
            f"ARCH: {source!r} is neither a folder nor an arch.json file (and the zoo is not available); "
            "give an export folder or an arch.json"
        )
    try:
        entry = get_zoo(source)
    except (KeyError, LookupError):
        raise UserError(
            f"ARCH: {source!r} is not a folder, an arch.json file or a zoo name (see 'igcnas zoo')"
        ) from None
    spec = entry if isinstance(entry, ArchSpec) else getattr(entry, "spec", None)
    if not isinstance(spec, ArchSpec):
        raise UserError(f"ARCH: the zoo entry {source!r} has no architecture spec")
    return spec, None


def run(args: argparse.Namespace) -> int:
    """Execute ``igcnas train``."""
    import torch

    from igcnas.cli._common import check_recorded_data_dir
    from igcnas.data import load_data
    from igcnas.export import read_manifest
    from igcnas.nn.network import build
    from igcnas.train import CHECKPOINT_FILE, WEIGHTS_FILE, resolve_device, train
    from igcnas.units import format_count

    spec, folder = resolve_architecture(args.arch)
    manifest = read_manifest(folder) if folder is not None else {}
    dataset = args.dataset or manifest.get("dataset")
    if not dataset:
        raise UserError(f"--dataset: {args.arch!r} does not record its dataset; pass --dataset (e.g. --dataset digits)")
    if args.dataset is None and folder is not None:  # else main() checked --dataset
        check_recorded_data_dir(folder, manifest, args.data_dir)
    out = Path(args.out) if args.out else Path("runs") / f"{spec.name or 'arch'}-{spec.id}".replace("/", "-")
    if args.resume and not (out / CHECKPOINT_FILE).is_file():
        raise UserError(f"--resume: no {CHECKPOINT_FILE} in {str(out)!r}; drop --resume to start a new run "
                        "(or give the --out of the run to continue)")
    if not args.resume and ((out / CHECKPOINT_FILE).is_file() or (out / WEIGHTS_FILE).is_file()):
        raise UserError(
            f"--out: {str(out)!r} already holds a training run; pass --resume to continue it or choose another --out"
        )
    if folder is not None and out.resolve() == folder.resolve():
        raise UserError(f"--out: {str(out)!r} is the folder ARCH was read from; choose another --out")
    config = _train_config(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        schedule=args.schedule,
        warmup_epochs=args.warmup_epochs,
        weight_decay=args.weight_decay,
        seed=args.seed,
        device=args.device,
        augment=not args.no_augment,
        num_threads=args.threads,
    )
    _record_data(out, dataset=str(dataset), seed=args.seed, val_fraction=args.val_fraction,
                 train_subset=args.train_subset)
    data = load_data(str(dataset), data_dir=args.data_dir, val_fraction=args.val_fraction,
                     train_subset=args.train_subset, seed=args.seed, progress=not args.quiet)
    if tuple(data.input_shape) != tuple(spec.input_shape) or data.num_classes != spec.num_classes:
        print(f"igcnas: note: adapting the architecture to {dataset}: input {tuple(spec.input_shape)} -> "
              f"{tuple(data.input_shape)}, {spec.num_classes} -> {data.num_classes} classes", file=sys.stderr)
        channels, height, width = data.input_shape
        spec = replace(spec, input_shape=(channels, height, width), num_classes=data.num_classes)
    torch.manual_seed(args.seed)
    model = build(spec)
    if not args.quiet:
        params = sum(p.numel() for p in model.parameters())
        print(f"training {spec.name or spec.id} ({spec.design}, {format_count(params)} params) on {dataset} for "
              f"{config.epochs} epochs into {out}", file=sys.stderr)
        if resolve_device(config.device).type == "cpu":
            from igcnas.nn._native import native_status

            status = native_status()
            kernels = "native C kernels" if status == "available" else f"torch forms (native kernels {status})"
            print(f"CPU sparse ops: {kernels}", file=sys.stderr)
    result = train(model, data, config, checkpoint_dir=out, arch=spec.to_dict(), progress=not args.quiet,
                   evaluate_test=data.test is not None, resume=args.resume)
    test = f", test accuracy {result.test_accuracy:.2%}" if result.test_accuracy is not None else ""
    print(f"{result.status} after {result.epochs_trained}/{config.epochs} epochs: val accuracy "
          f"{result.val_accuracy:.2%} (best {result.best_val_accuracy:.2%} at epoch {result.best_epoch}){test}")
    print(f"checkpoint folder: {out} (igcnas evaluate {out} --dataset {dataset})")
    return 0 if result.status == "completed" else 1
