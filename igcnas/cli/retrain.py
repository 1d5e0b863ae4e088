"""``igcnas retrain``: the top of a study's front and its baselines retrained from scratch, mean ± std over seeds."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]

HELP = """\
Retrain from scratch, with one longer schedule for all (--epochs on the full training split, the study's batch
size, learning rate and weight decay), the --top most accurate searched trials of a study (by validation
accuracy, within its budget) and its trained baselines, each with --seeds seeds, and measure the test split.
Results are stored in the study folder (retrained/); rerunning the same command skips finished runs and resumes
an unfinished one from its checkpoint. 'igcnas pareto --study NAME --baselines' shows them.

Examples:
  igcnas retrain --study cifar10-156k --data-dir ../shared/datasets/cifar10
  igcnas retrain --study cifar10-156k --data-dir ../shared/datasets/cifar10 --top 2 --seeds 3 --epochs 30"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``retrain`` command."""
    from igcnas.cli._common import (
        data_dir_parent,
        device_parent,
        format_parent,
        positive_int,
        storage_parent,
        study_parent,
    )

    parser = subparsers.add_parser("retrain", help="retrain a study's best trials and its baselines (mean ± std)",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                                   parents=[study_parent(), storage_parent(), device_parent("auto"),
                                            data_dir_parent(), format_parent(("table", "json"))])
    parser.add_argument("--top", type=positive_int, default=1,
                        help="searched trials to retrain, most accurate on validation first (default: %(default)s)")
    parser.add_argument("--seeds", type=positive_int, default=2, help="seeds per architecture (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, default=15,
                        help="epochs on the full training split, the same for all (default: %(default)s)")
    parser.add_argument("--baselines", default="all", metavar="all|none|NAME[,NAME...]",
                        help="which of the study's trained baselines to retrain (default: %(default)s)")
    parser.add_argument("--num-threads", type=positive_int, help="torch CPU threads per process (default: 1)")
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="processes retraining at once, each taking the next run not taken (default: "
                             "%(default)s; e.g. the number of physical cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(func=run)


def _helper_argv(args: argparse.Namespace) -> list[str]:
    """The command line of a helper process: this command with one worker and JSON output."""
    from igcnas.cli._common import helper_argv

    return helper_argv(args, ["retrain", "--format", "json"],
                       ("--study", "--top", "--seeds", "--epochs", "--baselines", "--trials-dir", "--device",
                        "--data-dir", "--storage", "--artifacts", "--num-threads"))


def _check_data_dir(args: argparse.Namespace) -> None:
    """Refuse ``--data-dir`` when the study's dataset (in its local study.json) never reads it, e.g. digits."""
    from igcnas.cli._common import check_data_dir
    from igcnas.store import StudyStore

    if args.data_dir is not None:
        dataset = StudyStore(args.trials_dir, args.study).settings().get("dataset")
        check_data_dir(dataset, args.data_dir, origin=f"of study {args.study!r}", fixed=True)


def run(args: argparse.Namespace) -> int:
    """Execute ``igcnas retrain``."""
    import json

    from igcnas._table import render_table
    from igcnas.cli._common import start_helpers, wait_helpers
    from igcnas.search.retrain import retrain
    from igcnas.units import format_count

    _check_data_dir(args)
    helpers = start_helpers(_helper_argv(args), args.workers - 1) if args.workers > 1 else []
    try:
        rows = retrain(args.study, top=args.top, seeds=args.seeds, epochs=args.epochs, baselines=args.baselines,
                       data_dir=args.data_dir, storage=args.storage, trials_dir=args.trials_dir, device=args.device,
                       num_threads=args.num_threads, progress=not args.quiet, artifacts=args.artifacts)
    except BaseException:
        wait_helpers(helpers, "retrain", check=False)
        raise
    wait_helpers(helpers, "retrain")
    if helpers:  # the helpers' runs finished after this process's own
        from igcnas.store import StudyStore, read_retrained

        rows = read_retrained(StudyStore(args.trials_dir, args.study).folder)
    if args.format == "json":
        print(json.dumps({"study": args.study, "retrained": rows}, indent=2))
        return 0
    print(render_table([{"name": r["name"], "role": r["role"], "trial": r["trial"], "params": format_count(r["params"]),
                         "epochs": r["epochs"], "seeds": len(r["seeds"]),
                         "test_acc": f"{100 * r['test_accuracy_mean']:.2f} ± {100 * r['test_accuracy_std']:.2f}"}
                        for r in rows], title=f"{args.study}: retrained from scratch (test accuracy, mean ± std):"))
    return 0
