"""``igcnas tune``: measure the fastest form of every op of a network on this machine, ahead of training."""

from __future__ import annotations

import argparse
import time

__all__ = ["register", "run"]

SAMPLES = 4
"""Sampled configurations of a search space that ``igcnas tune --space`` measures by default."""

HELP = """\
Measure, on this machine, which form (reference conv, grouped, dense, native kernel) computes each sparse conv of
a network fastest, for a training step and for inference, and cache the choices (per CPU model, ISA flags,
library versions, thread count and malloc regime; see IGCNAS_TUNE in the README). It measures under the malloc
tuning that training runs with (IGCNAS_MALLOC=system: the system malloc, as a plain PyTorch script has). Training does this at first use anyway; tuning
ahead of time takes that cost out of the first epoch and shows the choices.

Examples:
  igcnas tune IGC-L24M2-D20
  igcnas tune best/arch.json --batch-size 128 --threads 2
  igcnas tune --space igc_cifar --samples 8"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``tune`` command."""
    from igcnas.cli._common import format_parent, positive_int

    parser = subparsers.add_parser("tune", help="measure the fastest form of each op on this machine (cached)",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                                   parents=[format_parent(("table", "json"))])
    parser.add_argument("arch", nargs="?", metavar="NAME|arch.json", help="zoo name or arch.json (or --space)")
    parser.add_argument("--space", help="tune the networks a search space claims and --samples sampled ones")
    parser.add_argument("--samples", type=positive_int, default=None,
                        help=f"sampled configurations of --space (default: {SAMPLES}; only with --space)")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="batch (default: %(default)s)")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="torch threads per trial, as training will use (default: %(default)s)")
    parser.set_defaults(func=run)


def _specs(args: argparse.Namespace) -> list[tuple[str, object]]:
    """(label, spec) of what to tune."""
    from igcnas.errors import UserError

    if args.arch is None and args.space is None:
        raise UserError("igcnas tune: give a network (NAME|arch.json, e.g. igcnas tune IGC-L24M2-D20) or --space NAME")
    if args.arch is not None and args.space is not None:
        raise UserError(f"igcnas tune: give a network ({args.arch}) or --space {args.space}, not both")
    if args.samples is not None and args.space is None:
        raise UserError(f"--samples {args.samples}: is for --space (sampled configurations of a search space); "
                        "drop it when tuning one network")
    if args.arch is not None:
        from igcnas.zoo import resolve_network

        spec, _ = resolve_network(args.arch)
        return [(args.arch, spec)]
    import optuna

    from igcnas.search import load_space
    from igcnas.zoo import ZOO, paper_specs

    space = load_space(args.space)
    out: list[tuple[str, object]] = []
    for name, params in space.claimed().items():
        reference = ZOO[name].spec if name in ZOO else paper_specs()[name]
        out.append((name, space.to_spec(params, input_shape=reference.input_shape,
                                        num_classes=reference.num_classes)[0]))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for index in range(SAMPLES if args.samples is None else args.samples):
        params = space.define(study.ask())
        out.append((f"sample {index}", space.to_spec(params, input_shape=(3, 32, 32), num_classes=10)[0]))
    return out


def run(args: argparse.Namespace) -> int:
    """Execute ``igcnas tune``."""
    import json

    from igcnas._table import render_table
    from igcnas.nn.tune import tune_network

    rows: list[dict[str, object]] = []
    started = time.perf_counter()
    for name, spec in _specs(args):
        t0 = time.perf_counter()
        found = tune_network(spec, batch=args.batch_size, threads=args.threads)
        rows.extend({"network": name, **row} for row in found)
        if args.format == "table":
            print(f"{name}: {len(found)} op signatures, {sum(1 for r in found if r['measured_now'])} measured now, "
                  f"{time.perf_counter() - t0:.1f}s")
    if args.format == "json":
        print(json.dumps({"seconds": time.perf_counter() - started, "signatures": rows}, indent=2))
        return 0
    seen: set[str] = set()
    table = []
    for row in rows:
        if row["signature"] in seen:
            continue
        seen.add(str(row["signature"]))
        ms = row["ms"] if isinstance(row["ms"], dict) else {}
        table.append({"signature": row["signature"], "table": row["table"] or "-", "chosen": row["form"],
                      "ms per candidate": ", ".join(f"{k} {v:.3g}" for k, v in sorted(ms.items(), key=lambda kv: kv[1]))})
    print(render_table(table, title=f"forms measured on this machine ({args.threads} thread(s), batch "
                                    f"{args.batch_size}):"))
    print(f"elapsed {time.perf_counter() - started:.1f}s")
    return 0
