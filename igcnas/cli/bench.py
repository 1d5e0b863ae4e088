"""``igcnas bench``: the benchmarks that back the speed goals (ratios measured side by side in one run)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from igcnas._table import render_table
from igcnas.cli._common import count as count_arg
from igcnas.cli._common import format_parent, positive_int

__all__ = ["register", "run"]

HELP = """\
Benchmarks, each printed as a table (or JSON). They measure ratios side by side in one run, so they are
meaningful on a noisy machine; run them on your own hardware (CUDA is used when --device cuda).
  space  the design-space funnel (5460 chains) for several C
  cost   counting one candidate: closed form vs fvcore vs cached
  ops    naive vs fast sparse-kernel blocks and zoo networks, train and eval images/s (the networks timed
         interleaved, every network in every round, so their rows compare with each other too)
         (with --data-dir, also the data benchmark below: one command for the whole training engine)
  stages  where a zoo network's training step goes: its stem, each stage and its head timed naive vs fast, as
         ops times the networks (interleaved, batch --batch / 2, --repeats / 2 rounds), as ms per step with both
         builds under the same malloc, each part's share of the step and the speed-ups; --network NAME or
         arch.json (repeat it; default: the four networks ops times)
  data   igcnas's tensor pipeline vs torchvision ImageFolder + DataLoader (needs --data-dir)
  train  IGC-L24M2 vs RegConv-W16 (D=20), same short schedule, full CIFAR-10 (needs --data-dir)
  search two parts (--part; default: both with --data-dir, else tabular):
         tabular: 12 strategies simulated by lookups in the tabular benchmark (--table): random / TPE /
           NSGA-II x prescreening off / --prescreen K (default 8, ranked by --proxy, default the column
           'igcnas search' takes) x successive-halving pruning off / on, over the rows trained at --target with
           params <= --max-params (default 156k); budgets of N = --trials (default 10) trained candidates and
           of E = N x the fidelity's epochs; mean ± std over --seeds (default 25) of the hypervolume and of the
           best accuracy. Seconds, no training.
         live: random vs TPE vs NSGA-II (equal trials), with vs without pruning (equal epochs), and the per-trial
           overhead of the real search, on a stratified CIFAR-10 subset (needs --data-dir; --train-subset,
           default 2000; --trials default 8, --max-params default 50k)
         JSON: one list, the tabular rows then the live rows
  workers  'igcnas search' at equal trained trials: --workers 1 vs the default (one per physical core),
         alternating, median wall time of --repeats runs each (default 3); digits, or CIFAR-10 with --data-dir;
         default size the main job's (--trials 20, --epochs 6)
  proxies  Spearman/Kendall of every training-free proxy against the tabular benchmark's trained accuracy (--table, --target)
  proxy-time  seconds each proxy takes, alone, on every CIFAR-10 zoo network with <= --max-params params (default
         1M), --threads torch threads (default 1, as a search worker scores), batch --batch (64), after one
         warm-up scoring; median of --repeats (default 3); floor_s: snip's and grad_norm's multiply-adds at
         this machine's float32 matrix-product rate on those threads (nothing computes them faster here)"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` command."""
    parser = subparsers.add_parser("bench", help="run a benchmark (space, cost, ops, stages, data, train, search, workers, "
                                   "proxies, proxy-time)",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                                   parents=[format_parent()])
    parser.add_argument("what", choices=("space", "cost", "ops", "stages", "data", "train", "search", "workers",
                                         "proxies", "proxy-time"),
                        help="which benchmark")
    parser.add_argument("--repeats", type=positive_int, default=None,
                        help="timed repeats per case, median reported (default: 5; workers, proxy-time: 3)")
    parser.add_argument("--batch", type=positive_int, default=64,
                        help="ops, stages, proxy-time: batch size (default 64; ops times the networks, and stages "
                             "their parts, at half of it; also the proxies' scoring batch)")
    parser.add_argument("--size", type=positive_int, default=32, help="ops: spatial size (default 32)")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="proxy-time: torch CPU threads while scoring (default %(default)s, as each search worker "
                             "scores; a script calling igcnas.proxies.score gets torch's default, all cores)")
    parser.add_argument("--device", default="cpu", help="ops/stages/train: cpu or cuda (default cpu)")
    parser.add_argument("--network", action="append", default=None, metavar="NAME|arch.json",
                        help="stages: a zoo network or an arch.json (e.g. an exported search result) to break down "
                             "(repeat for several; default: the four networks ops times)")
    parser.add_argument("--data-dir", help="data/train/search (and ops, optionally): an ImageFolder root with train/ "
                        "and test/ (CIFAR-10 JPGs)")
    parser.add_argument("--limit", type=positive_int, help="data: use at most this many images")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help="train: epochs of the short schedule (default 3); search, workers: epochs per trial "
                             "(default 3; workers: 6)")
    parser.add_argument("--train-subset", type=positive_int,
                        help="train/search: stratified subset of the training set (search: default 2000)")
    parser.add_argument("--trials", type=positive_int, default=None,
                        help="search: trained candidates per strategy, N (tabular: default 10; live: default 8); "
                             "workers: trained trials (default 20)")
    parser.add_argument("--max-params", type=count_arg, default=None,
                        help="search, workers: parameter budget, also the hypervolume reference (search tabular: "
                             "default 156k, IGC-L24M2-D20's; live and workers: default 50k); proxy-time: the largest "
                             "zoo network timed (default 1M)")
    parser.add_argument("--part", choices=("tabular", "live", "both"), default=None,
                        help="search: the tabular simulation, the live run, or both (default: both when "
                             "--data-dir is given, live only while no --table is given and the packaged table "
                             "does not exist yet; without --data-dir, tabular)")
    parser.add_argument("--seeds", type=positive_int, default=25,
                        help="search tabular: runs per strategy, sampler seeds 0..SEEDS-1 (default: %(default)s)")
    parser.add_argument("--prescreen", type=positive_int, default=8,
                        help="search tabular: K >= 2, the asks per trained candidate of the prescreening "
                             "strategies (default: %(default)s)")
    parser.add_argument("--proxy", default=None,
                        help="search tabular: the table's proxy column that ranks prescreened asks (default: the "
                             "one 'igcnas search --prescreen-proxy auto' takes, the highest Spearman against the "
                             "low-fidelity accuracy over the whole table, params and flops included)")
    parser.add_argument("--space", default="igc_cifar", help="search: a shipped space name or a YAML file (default: %(default)s)")
    parser.add_argument("--table", default=None,
                        help="proxies, search: the tabular benchmark CSV (default: the packaged table)")
    parser.add_argument("--target", choices=("low", "high"), default="low",
                        help="proxies, search: the fidelity whose val accuracy is the target (default: %(default)s)")
    parser.set_defaults(func=run, bench_defaults={dest: parser.get_default(dest) for dest in _READERS})


_READERS: dict[str, tuple[str, ...]] = {
    "repeats": ("space", "cost", "ops", "stages", "workers", "proxy-time"),
    "batch": ("ops", "stages", "proxy-time"),
    "size": ("ops",),
    "threads": ("proxy-time",),
    "device": ("ops", "stages", "train"),
    "network": ("stages",),
    "data_dir": ("ops", "data", "train", "search", "workers"),
    "limit": ("ops", "data"),
    "epochs": ("train", "search", "workers"),
    "train_subset": ("train", "search", "workers"),
    "trials": ("search", "workers"),
    "max_params": ("search", "workers", "proxy-time"),
    "part": ("search",),
    "seeds": ("search",),
    "prescreen": ("search",),
    "proxy": ("search",),
    "space": ("search", "workers"),
    "table": ("proxies", "search"),
    "target": ("proxies", "search"),
}
"""The benchmarks that read each option (by its argparse dest): any other refuses it rather than ignore it."""

_TIMED = frozenset({"ops", "stages", "data", "train", "workers", "proxy-time"})
"""The benchmarks that time code: their tables open with the machine's line (CPU, ISA, native build, threads)."""


def run(args: argparse.Namespace) -> int:
    """Execute ``igcnas bench``."""
    _refuse_unread_options(args)
    runner: dict[str, Callable[[argparse.Namespace], list[dict[str, Any]] | None]] = {
        "space": _space,
        "cost": _cost,
        "ops": _ops,
        "stages": _stages,
        "data": _data,
        "train": _train,
        "workers": _workers,
    }
    if args.repeats is None:
        args.repeats = 3 if args.what in ("workers", "proxy-time") else 5
    if args.epochs is None:
        args.epochs = 6 if args.what == "workers" else 3  # workers: the main job's size
    if args.format == "table" and args.what in _TIMED:
        import torch

        from igcnas.bench._machine import machine_line

        threads = args.threads if args.what == "proxy-time" else torch.get_num_threads()
        print(machine_line(threads=threads, device=args.device) + "\n", flush=True)
    if args.what == "search":
        return _search(args)
    if args.what == "proxies":
        from igcnas.bench.proxies import render

        report = _proxies(args)
        print(json.dumps(report, indent=2, default=str) if args.format == "json" else render(report))
        return 0
    if args.what == "proxy-time":
        from igcnas.bench.proxy_time import bench_proxy_time
        from igcnas.bench.proxy_time import render as render_times

        times = bench_proxy_time(max_params=args.max_params or 1_000_000, repeats=args.repeats, batch=args.batch,
                                 num_threads=args.threads)
        print(json.dumps(times, indent=2) if args.format == "json"
              else render_times(times, batch=args.batch, num_threads=args.threads))
        return 0
    rows = runner[args.what](args)
    if rows is None:  # the runner printed its own report
        return 0
    if args.format == "json":
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(render_table(rows))
    return 0


def _refuse_unread_options(args: argparse.Namespace) -> None:
    """A one-line UserError for an option given (other than its default) to a benchmark that does not read it."""
    from igcnas.errors import UserError

    defaults: dict[str, Any] = getattr(args, "bench_defaults", {})
    for dest, readers in _READERS.items():
        if dest in defaults and getattr(args, dest) != defaults[dest] and args.what not in readers:
            flag = "--" + dest.replace("_", "-")
            raise UserError(f"{flag}: 'bench {args.what}' does not read it (it is for "
                            f"{', '.join(f'bench {name}' for name in readers)}); drop {flag}")


def _space(args: argparse.Namespace) -> list[dict[str, Any]]:
    from igcnas.bench.space import bench_space

    return bench_space(repeats=args.repeats)


def _cost(args: argparse.Namespace) -> list[dict[str, Any]]:
    from igcnas.bench.cost import bench_cost

    return bench_cost(repeats=args.repeats)


def _ops(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    from igcnas.bench.ops import bandwidth_note, bench_blocks, bench_networks, copy_bandwidth
    from igcnas.train import resolve_device

    args.device = str(resolve_device(args.device))  # a one-line error before anything runs
    on_cpu = args.device == "cpu"
    noted = on_cpu and args.format == "table"  # the memory line is printed under the table only
    before = copy_bandwidth() if noted else 0.0
    rows = list(bench_blocks(batch=args.batch, size=args.size, repeats=args.repeats, device=args.device))
    rows += bench_networks(batch=max(1, args.batch // 2), repeats=max(1, args.repeats // 2), device=args.device)
    after = copy_bandwidth() if noted else 0.0
    from igcnas.bench.ops import TABLE_COLUMNS

    keep = [column for column in TABLE_COLUMNS if column not in ("size", "input_format")]
    if args.format == "table" and on_cpu:  # one runtime elsewhere
        from igcnas.bench.ops import LEGEND

        print(LEGEND + "\n")
    shown = [{key: round(row[key], 3 if key != "max_abs_diff" else 8) if isinstance(row[key], float) else row[key]
              for key in keep} for row in rows]
    if args.format == "json":  # with the forms each row's fast build ran
        shown = [{**row, "forms": source.get("forms", "")} for row, source in zip(shown, rows, strict=True)]
        return shown + (_data(args) if args.data_dir else [])
    import torch

    from igcnas.bench.ops import table_notes

    notes = [*table_notes(rows), *([bandwidth_note(before, after, threads=torch.get_num_threads())] if noted else [])]
    print("\n\n".join([render_table(shown), *notes]) + "\n")
    if not args.data_dir:
        return None
    data_rows = _data(args)
    print("data pipeline vs torchvision ImageFolder + DataLoader (ratio = images/s over torchvision's):")
    return data_rows


def _stages(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    from igcnas.bench.ops import NETWORKS, bench_stages, forms_listing, stage_table
    from igcnas.bench.ops_blocks import network_cases
    from igcnas.train import resolve_device

    args.device = str(resolve_device(args.device))
    names = args.network or list(NETWORKS)
    for name in names:
        network_cases(name)  # an unknown name: one line listing the zoo, before anything runs
    if args.format == "table":
        print("ms per training step of each part, both builds under igcnas's tuned malloc (the ops alone); share = "
              "the part's share of the sum over the parts\n", flush=True)
    rows = []
    for name in names:
        measured = bench_stages(name, batch=max(1, args.batch // 2), repeats=max(1, args.repeats // 2),
                                device=args.device)
        table, line = stage_table(measured, display=args.format == "table")
        if args.format == "table":  # each network as soon as it is timed, with the forms each part's fast build ran
            print("\n".join([render_table(table), line, forms_listing(measured), ""]), flush=True)
        rows += [{**row, "summary": line, "forms": source.get("forms", "")}
                 for row, source in zip(table, measured, strict=True)]
    return rows if args.format == "json" else None


def _require_data_dir(args: argparse.Namespace) -> str:
    from igcnas.errors import UserError

    if not args.data_dir:
        raise UserError(f"bench {args.what}: give --data-dir, an ImageFolder root with train/<class>/ images "
                        "(e.g. --data-dir ../shared/datasets/cifar10)")
    return str(args.data_dir)


def _data(args: argparse.Namespace) -> list[dict[str, Any]]:
    from pathlib import Path

    from igcnas.data import bench_data

    return list(bench_data(Path(_require_data_dir(args)), limit=args.limit))


def _train(args: argparse.Namespace) -> list[dict[str, Any]]:
    from igcnas.bench.train import bench_train

    return bench_train(_require_data_dir(args), epochs=args.epochs, device=args.device,
                       train_subset=args.train_subset)


def _search(args: argparse.Namespace) -> int:
    """``bench search``: the tabular simulation and/or the live run (see --part), printed or as one JSON list."""
    import sys

    from igcnas.tabular import TABLE_FILE

    part = args.part
    if part is None:
        part = "both" if args.data_dir else "tabular"
        if part == "both" and args.table is None and not TABLE_FILE.is_file():
            print(f"bench search: no tabular benchmark at {TABLE_FILE} yet; running the live part only "
                  "(give --table to add the tabular part)", file=sys.stderr)
            part = "live"
    data_dir = _require_data_dir(args) if part in ("live", "both") else None  # fail before the tabular part
    tabular: list[dict[str, Any]] = []
    live: list[dict[str, Any]] = []
    if part in ("tabular", "both"):
        from igcnas.bench.strategies import MAX_PARAMS, bench_strategies, render

        tabular = bench_strategies(table=args.table, max_params=args.max_params or MAX_PARAMS,
                                   trials=args.trials or 10, seeds=args.seeds, prescreen=args.prescreen,
                                   proxy=args.proxy, fidelity=args.target)
        if args.format != "json":
            print(render(tabular))
    if part in ("live", "both"):
        from igcnas.bench.search import bench_search

        live = bench_search(data_dir=data_dir, train_subset=args.train_subset or 2000,
                            trials=args.trials or 8, epochs=args.epochs, space=args.space,
                            max_params=args.max_params or 50_000, progress=True)
        if args.format != "json":
            print(("\n" if tabular else "") + "live search (samplers, pruning and per-trial overhead):")
            print(render_table(live))
    if args.format == "json":
        print(json.dumps(tabular + live, indent=2, default=str))
    return 0


def _workers(args: argparse.Namespace) -> list[dict[str, Any]]:
    from igcnas.bench.workers import bench_workers

    return bench_workers(trials=args.trials or 20, epochs=args.epochs,
                         max_params=args.max_params or 50_000, space=args.space, data_dir=args.data_dir,
                         train_subset=args.train_subset, repeats=args.repeats)


def _proxies(args: argparse.Namespace) -> dict[str, Any]:
    from igcnas.bench.proxies import bench_proxies

    return bench_proxies(table=args.table, target=args.target)
