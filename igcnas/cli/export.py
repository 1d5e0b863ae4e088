"""``igcnas export``: write a study's trial as arch.json, weights, TorchScript, ONNX and a model card."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]

HELP = """\
Export one trial of a study into --out DIR: arch.json, weights.safetensors, model.ts (TorchScript), model.onnx
(opset 17, dynamic batch axis; checked with onnxruntime against PyTorch), MODEL_CARD.md (params, FLOPs, accuracy,
dataset, search settings, how to load it) and export.json. Without --trial, the most accurate completed trial is
exported (within --best-under-params / --best-under-flops when given).

Examples:
  igcnas export --study cifar --best --out exported/best
  igcnas export --study cifar --best-under-params 0.2M --out exported/small
  igcnas export --study cifar --trial 17 --out exported/t17"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``export`` command."""
    from igcnas.cli._common import count, format_parent, storage_parent, study_parent

    parser = subparsers.add_parser("export", help="export a trial (ONNX, TorchScript, weights, model card)",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                                   parents=[study_parent(), storage_parent(), format_parent(("text", "json"), "text")])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--trial", type=int, metavar="N", help="export trial number N")
    which.add_argument("--best", action="store_true", help="export the most accurate completed trial (default)")
    parser.add_argument("--best-under-params", type=count, metavar="COUNT",
                        help="the most accurate completed trial with at most COUNT parameters, e.g. 0.2M")
    parser.add_argument("--best-under-flops", type=count, metavar="COUNT",
                        help="the most accurate completed trial with at most COUNT FLOPs, e.g. 30M")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write the export into")
    parser.add_argument("--force", action="store_true",
                        help="write into an --out that already holds a model (an export, or an 'igcnas train' run: "
                             "its files are replaced, its checkpoint.pt and metrics.json removed); without it such an "
                             "--out is refused")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``igcnas export``."""
    import json

    from igcnas.errors import UserError
    from igcnas.export import export_trial
    from igcnas.units import format_count

    if args.trial is not None and (args.best_under_params is not None or args.best_under_flops is not None):
        raise UserError("--trial: cannot be combined with --best-under-params/--best-under-flops; give one of them")
    result = export_trial(
        args.study,
        args.out,
        trial=args.trial,
        max_params=args.best_under_params,
        max_flops=args.best_under_flops,
        storage=args.storage,
        artifacts=args.artifacts,
        trials_dir=args.trials_dir,
        force=args.force,
    )
    if args.format == "json":
        print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
        return 0
    info = result.info
    accuracy = info.get("accuracy")
    acc_text = f"{accuracy:.2%}" if isinstance(accuracy, float) else "unknown"
    print(f"exported trial {info.get('trial')} of study {info.get('study')} to {result.out_dir}")
    print(f"  {result.spec.design}  widths {'-'.join(str(s.width) for s in result.spec.stages)}  "
          f"depths {'-'.join(str(s.depth) for s in result.spec.stages)}")
    print(f"  params {format_count(result.params)}  FLOPs {format_count(result.flops)}  "
          f"val accuracy {acc_text}")
    print(f"  ONNX checked with onnxruntime: max |difference| to PyTorch {result.onnx_max_abs_diff:.2g}")
    print("  files: " + ", ".join(path.name for path in result.files.values()))
    return 0
