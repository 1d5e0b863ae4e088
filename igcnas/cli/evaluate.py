"""``igcnas evaluate``: accuracy of an exported (or trained) model on a dataset split."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]

HELP = """\
Load the model in DIR (an 'igcnas export' or 'igcnas train' folder: arch.json + weights.safetensors) and report
its accuracy and loss on the test split (or the validation split, carved with the study's seed).

Example: igcnas evaluate exported/best --dataset digits"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``evaluate`` command."""
    from igcnas.cli._common import dataset_parent, device_parent, format_parent, positive_int

    parser = subparsers.add_parser("evaluate", help="test accuracy of an exported model", description=HELP,
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   parents=[dataset_parent("the one recorded in DIR/export.json"),
                                            device_parent("cpu"), format_parent(("text", "json"), "text")])
    parser.add_argument("path", metavar="DIR", help="export or training folder (arch.json + weights)")
    parser.add_argument("--split", choices=("test", "val"), default="test", help="split to measure (default: test)")
    parser.add_argument("--batch-size", type=positive_int, default=512, help="evaluation batch size (default: 512)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``igcnas evaluate``."""
    import json
    from pathlib import Path

    from igcnas.cli._common import check_recorded_data_dir
    from igcnas.export import evaluate_exported, read_manifest

    if args.dataset is None and args.data_dir is not None and Path(args.path).is_dir():  # else main() checked it
        check_recorded_data_dir(Path(args.path), read_manifest(args.path), args.data_dir)
    report = evaluate_exported(args.path, dataset=args.dataset, data_dir=args.data_dir, split=args.split,
                               batch_size=args.batch_size, device=args.device)
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['split']} accuracy {report['accuracy']:.2%} (loss {report['loss']:.4f}) on "
              f"{report['dataset']}, {report['images']} images: {report['path']}")
    return 0
