"""``igcnas tabular``: build the tabular benchmark (architectures trained once on CIFAR-10) or show its state."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]

HELP = """\
The tabular benchmark: architectures sampled from the shipped spaces, stratified by design and params bin, plus
the zoo's CIFAR networks, each scored by every training-free proxy and trained once on CIFAR-10 at a low
fidelity (a stratified part of them also at a high one). 'igcnas bench proxies' and 'igcnas bench search' read it.

  build  score and train what is not done yet, then write the CSV (--out; default beside the runs, under
         --trials-dir). Resumable: rerunning the same command continues (each training resumes from its
         checkpoint); --workers N processes share the runs.
  show   how many rows are planned, scored and trained, per size bin (no training)

Examples:
  igcnas tabular build --data-dir ../shared/datasets/cifar10 --workers 2
  igcnas tabular show"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``tabular`` command."""
    from igcnas.cli._common import add_trials_dir, data_dir_parent, device_parent, format_parent, positive_int

    parser = subparsers.add_parser("tabular", help="build or show the tabular benchmark (trained architectures)",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                                   parents=[device_parent("auto"), data_dir_parent(), format_parent()])
    parser.add_argument("action", choices=("build", "show"), help="build (train what is missing) or show")
    add_trials_dir(parser)  # the runs are kept in <trials-dir>/tabular-cifar10/
    parser.add_argument("--out", help="build: the CSV to write (default: <trials-dir>/tabular-cifar10/cifar10.csv, "
                                      "beside the runs; give --out igcnas/tabular/cifar10.csv in a source checkout to "
                                      "replace the packaged table that bench proxies/search and --prescreen-proxy "
                                      "auto read)")
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="build: processes training at once, each taking the next run not taken (default: "
                             "%(default)s; e.g. the number of physical cores)")
    parser.add_argument("--num-threads", type=positive_int, default=1,
                        help="build: torch CPU threads per process (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(func=run)


def _helper_argv(args: argparse.Namespace) -> list[str]:
    """The command line of a helper process: this build with one worker."""
    from igcnas.cli._common import helper_argv

    return helper_argv(args, ["tabular", "build"], ("--trials-dir", "--device", "--num-threads", "--data-dir", "--out"))


def run(args: argparse.Namespace) -> int:
    """Execute ``igcnas tabular``."""
    import json

    from igcnas._table import render_table
    from igcnas.tabular._build import build_table, table_state

    if args.action == "build":
        from igcnas.cli._common import start_helpers, wait_helpers
        from igcnas.train import check_device

        check_device(args.device)  # before the helpers start: one error line, nothing written
        helpers = start_helpers(_helper_argv(args), args.workers - 1) if args.workers > 1 else []
        try:
            path = build_table(data_dir=args.data_dir, trials_dir=args.trials_dir, out=args.out, device=args.device,
                               num_threads=args.num_threads, progress=not args.quiet)
        except BaseException:
            wait_helpers(helpers, "tabular build", check=False)
            raise
        wait_helpers(helpers, "tabular build")
        if helpers:  # the helpers' last runs may have finished after this process wrote the table
            path = build_table(data_dir=args.data_dir, trials_dir=args.trials_dir, out=args.out, device=args.device,
                               num_threads=args.num_threads, progress=False)
        print(f"wrote {path}")
        return 0
    rows = table_state(trials_dir=args.trials_dir)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(render_table(rows, title="tabular cifar10: planned, scored and trained rows per size bin:"))
    return 0
