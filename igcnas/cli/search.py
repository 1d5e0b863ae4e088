"""``igcnas search`` (budgeted multi-objective architecture search) and ``igcnas studies`` (list studies)."""

from __future__ import annotations

import argparse
import sys
import time

from igcnas._table import render_table
from igcnas.cli._common import (
    argument_group,
    count,
    dataset_parent,
    device_parent,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    storage_parent,
)
from igcnas.units import format_count

__all__ = ["register", "run", "run_studies", "print_front"]

HELP = """\
Search a space of sparse-kernel networks (a shipped one, listed by 'igcnas spaces', or your own YAML file) for
the most accurate ones under a parameter and/or FLOP budget. Each candidate's params/FLOPs are counted in closed
form before anything is trained: a candidate over budget is recorded as infeasible (and the sampler learns the
boundary) and never trained; an architecture the study already trained is not trained again. Trained candidates report each epoch's validation
accuracy to a pruner (Pareto-aware successive halving by default; Optuna's successive halving / Hyperband, or
ASHA on Ray), so weak ones stop early; only fully trained trials enter the front.

Every trial leaves trials/<study>/<trial>/ with arch.json, trial.json, metrics.json (per epoch) and
weights.safetensors; the run ends by printing the Pareto front (complete, fully trained, feasible trials) and its
hypervolume. Rerunning the same command resumes the study and adds --trials more trained trials; several
processes on one --storage cooperate on one study. A trial whose process was killed is marked failed once its
heartbeat (every $IGCNAS_HEARTBEAT_S seconds, default 5) has been silent for $IGCNAS_HEARTBEAT_GRACE_S seconds
(default 20), and the next run retries its configuration once.

Examples:
  igcnas search                                          # 20 trials x 6 epochs on digits, <= 50k params
  igcnas search --space fog_designs --max-params 0.2M --max-flops 30M --objectives acc,flops
  igcnas search --backend ray --cpus-per-trial 1 --trials 16
  igcnas search --backend ray --address auto --gpus-per-trial 0.5   # on an existing Ray cluster"""


def _objectives(text: str) -> tuple[str, ...]:
    """Parse ``acc,params``."""
    values = tuple(v.strip().lower() for v in text.split(",") if v.strip())
    allowed = ("acc", "accuracy", "params", "flops")
    for v in values:
        if v not in allowed:
            raise argparse.ArgumentTypeError(f"{v!r} is not an objective; allowed: acc, params, flops")
    if not values:
        raise argparse.ArgumentTypeError("give at least one objective, e.g. acc,params")
    return values


def _workers(text: str) -> int | None:
    """argparse type of --workers: a positive integer, or auto (None)."""
    if text.strip().lower() == "auto":
        return None
    return positive_int(text)


def _prescreen_k(text: str) -> int | str:
    """argparse type of --prescreen: auto or an integer >= 0."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return nonnegative_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not auto or an integer >= 0 (e.g. --prescreen 8, "
                                         "or 0 for off)") from None


def _budget(text: str) -> int | None:
    """A count with units, or ``none`` for no budget (0 is refused: a zero budget admits nothing)."""
    if text.strip().lower() in ("none", "off"):
        return None
    try:
        return count(text)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"{error}, or 'none' for no budget") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``search`` and ``studies`` commands."""
    what = "what to search"
    training = "training (per trial; a space's train: ranges override them)"
    study = "study and backend"
    p = subparsers.add_parser("search", help="budgeted multi-objective architecture search", description=HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              parents=[dataset_parent("%(default)s, 8x8 digits embedded in scikit-learn", "digits",
                                                      group=what),
                                       device_parent("auto", group=training), storage_parent(group=study)])
    g = argument_group(p, what)
    g.add_argument("--space", default="igc_cifar",
                   help="a shipped space by name (default: %(default)s; 'igcnas spaces' lists them) or a "
                        "search-space YAML file")
    g.add_argument("--train-subset", type=positive_int,
                   help="train on a stratified subset of this many images (default: all)")
    g = p.add_argument_group("budget and objectives")
    g.add_argument("--trials", type=positive_int, default=20,
                   help="trained trials to add to the study in this run (default: %(default)s); infeasible and "
                        "duplicate candidates do not count")
    g.add_argument("--epochs", type=positive_int, default=6,
                   help="epochs of a fully trained trial, the pruners' resource (default: %(default)s)")
    g.add_argument("--max-params", type=_budget, default=50_000,
                   help="parameter budget with units, e.g. 0.2M, or 'none' (default: 50k)")
    g.add_argument("--max-flops", type=_budget, default=None,
                   help="FLOP budget (multiply-adds per image) with units, e.g. 30M (default: none)")
    g.add_argument("--fill-budget", action="store_true",
                   help="widen every sampled design to the budget (the papers' equal-budget comparison) instead "
                        "of sampling its base width")
    g.add_argument("--baselines", default="auto", metavar="auto|none|NAME[,NAME...]",
                   help="zoo networks trained first with exactly the study's schedule, to compare the front with "
                        "(default: auto, the zoo networks of the space's layout and the dataset's classes that fit "
                        "the budget; 'igcnas zoo' lists names). They are not search trials: 'igcnas pareto "
                        "--baselines' shows them")
    g.add_argument("--objectives", type=_objectives, default=("acc", "params"),
                   help="comma-separated: acc (maximised), params, flops (minimised) (default: acc,params)")
    g.add_argument("--sampler", choices=("auto", "random", "tpe", "nsga2"), default="auto",
                   help="auto: NSGA-II for several objectives, TPE for one; random is the baseline "
                        "(default: %(default)s)")
    g.add_argument("--pruner", choices=("sha", "hyperband", "pareto", "none"), default="pareto",
                   help="early stopping on per-epoch validation accuracy, keeping the top third at epochs 1, 3, "
                        "9, ...: pareto (successive halving that ranks a rung by Pareto dominance on all the "
                        "objectives, so small networks are not all stopped; measured: ~1.5x the front's "
                        "hypervolume of sha on digits), sha (Optuna's successive halving on accuracy; ASHA on "
                        "Ray), hyperband (Optuna; ASHA on Ray) or none (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="seed of the sampler, the data split and training "
                                                       "(default: %(default)s)")
    g.add_argument("--max-attempts", type=positive_int,
                   help="most candidates to sample in this run (default: 100 x --trials + 100)")
    g.add_argument("--prescreen", type=_prescreen_k, default="auto", metavar="K",
                   help="for each trained trial, score K feasible sampled candidates with a training-free proxy "
                        "and train only the best; the others are recorded 'screened' with their scores, so the "
                        "sampler learns from them. 0: off. auto: 8 on cifar10, where the tabular benchmark "
                        "measured a higher best accuracy at equal trained candidates ('igcnas bench search'), "
                        "off on other datasets, where it is not measured (default: auto)")
    g.add_argument("--prescreen-proxy", default="auto", metavar="NAME",
                   help="the proxy of --prescreen: auto (the best Spearman on the packaged tabular benchmark, or "
                        "the rank vote of synflow, jacob_cov and snip until it has 16 trained rows), or one of "
                        "params, flops, width, naswot, synflow, snip, grad_norm, jacob_cov, vote (default: auto)")
    g = argument_group(p, training)
    g.add_argument("--batch-size", type=positive_int, default=64,
                   help="mini-batch size (default: %(default)s, the IGC papers' CIFAR batch)")
    g.add_argument("--lr", type=positive_float, default=0.1, help="initial learning rate, cosine schedule "
                                                                  "(default: %(default)s)")
    g.add_argument("--weight-decay", type=nonnegative_float, default=1e-4, help="weight decay (default: 1e-4)")
    g.add_argument("--num-threads", type=positive_int, default=1,
                   help="torch CPU threads per trial (default: %(default)s: small models train fastest on one)")
    g.add_argument("--workers", type=_workers, default=None, metavar="N|auto",
                   help="Optuna: trials trained at once, as worker processes on the study's storage (default: "
                        "auto = one per GPU on a CUDA machine, else physical cores / --num-threads). --trials "
                        "counts the trained trials of all workers together")
    g = argument_group(p, study)
    g.add_argument("--study", help="study name (default: <space>-<dataset>, e.g. igc_cifar-digits); rerun with "
                                   "the same name to resume")
    g.add_argument("--backend", choices=("optuna", "ray"), default="optuna",
                   help="optuna: embedded, in this process; ray: Ray Tune (Tuner + OptunaSearch + ASHA) on a local "
                        "Ray instance or --address (default: %(default)s)")
    g.add_argument("--address", help="Ray cluster address ('auto' for the running cluster); default: start a "
                                     "local Ray instance")
    g.add_argument("--storage-path", metavar="URI",
                   help="Ray: where Tune keeps its experiment state for resuming (a local or NFS path, or a "
                        "pyarrow URI such as s3://bucket/igcnas); default: trials/<study>/ray on the driver. "
                        "Trial records, metrics and weights always reach the driver's --trials-dir")
    g.add_argument("--cpus-per-trial", type=positive_float, default=None,
                   help="Ray: CPUs reserved per trial (default: 1)")
    g.add_argument("--gpus-per-trial", type=nonnegative_float, default=None,
                   help="Ray: GPUs per trial, fractions share a GPU, e.g. 0.5 (default: 0)")
    g.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)

    s = subparsers.add_parser("studies", help="list search studies with trial counts and best values",
                              description="List the studies under --trials-dir (and in --storage) with their trial "
                                          "counts per state and best full-fidelity values.",
                              parents=[storage_parent()])
    s.set_defaults(func=run_studies)


def run(args: argparse.Namespace) -> int:
    """Execute ``igcnas search``."""
    from igcnas.search import SearchConfig, load_space, load_study, run_search
    from igcnas.search.config import RAY_ONLY, check_ray_only

    started = time.perf_counter()
    ray = {name: getattr(args, name) for name in RAY_ONLY if getattr(args, name) is not None}  # those given
    check_ray_only(args.backend, ray)
    config = SearchConfig(
        space=args.space,
        dataset=args.dataset,
        data_dir=args.data_dir,
        train_subset=args.train_subset,
        trials=args.trials,
        epochs=args.epochs,
        study=args.study,
        storage=args.storage,
        artifacts=args.artifacts,
        max_params=args.max_params,
        max_flops=args.max_flops,
        fill_budget=args.fill_budget,
        baselines=args.baselines,
        objectives=args.objectives,
        sampler=args.sampler,
        pruner=args.pruner,
        backend=args.backend,
        **ray,  # the Ray-only options given; SearchConfig's defaults for the others
        seed=args.seed,
        trials_dir=args.trials_dir,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        num_threads=args.num_threads,
        workers=args.workers if args.backend == "optuna" or args.workers is not None else 1,
        device=args.device,
        max_attempts=args.max_attempts,
        prescreen=args.prescreen,
        prescreen_proxy=args.prescreen_proxy,
        progress=not args.quiet,
    )
    space = load_space(config.space)
    name = run_search(config, space=space)
    frame = load_study(name, storage=config.storage, trials_dir=config.trials_dir)
    print_front(frame, config.objective_columns(), name,
                budget={"params": config.max_params, "flops": config.max_flops})
    print_baseline_comparison(load_study(name, storage=config.storage, trials_dir=config.trials_dir, baselines=True),
                              max_params=config.max_params, max_flops=config.max_flops)
    print(f"elapsed {time.perf_counter() - started:.1f}s; trials in {config.trials_dir}/{name}/")
    return 0


def print_baseline_comparison(frame: object, *, max_params: float | None, max_flops: float | None) -> None:
    """Print the best searched trial under the budget against the best baseline under it (nothing without one)."""
    import pandas as pd

    from igcnas.analysis.baselines import baseline_mask, compare_with_baselines

    assert isinstance(frame, pd.DataFrame)
    if not baseline_mask(frame).any():
        return
    budget = ", ".join(f"{k} <= {format_count(v)}" for k, v in (("params", max_params), ("flops", max_flops)) if v)
    c = compare_with_baselines(frame, max_params=max_params, max_flops=max_flops)
    if c is None:
        print(f"baselines: none trained within the budget ({budget or 'no budget'}); 'igcnas pareto --baselines' "
              "lists them")
        return
    base = (f"best baseline {c['baseline']} (trial {c['baseline_trial']}): val acc {c['baseline_accuracy']:.4f}, "
            f"{format_count(c['baseline_params'])} params")
    if c["found_trial"] is None:
        print(f"{base}; no searched trial is fully trained within the budget yet")
        return
    print(f"best searched trial {c['found_trial']} within {budget or 'no budget'}: val acc "
          f"{c['found_accuracy']:.4f}, {format_count(c['found_params'])} params vs {base}: "
          f"{c['delta_points']:+.2f} points, {c['delta_params']:+,} params")


def print_front(frame: object, objectives: list[tuple[str, str]], name: str, *,
                budget: dict[str, int | None] | None = None) -> None:
    """Print the Pareto front of a study's trials table and its hypervolume."""
    import pandas as pd

    from igcnas.analysis import front_hypervolume, pareto_front

    assert isinstance(frame, pd.DataFrame)
    specs = [f"{col}:{direction}" for col, direction in objectives]
    states = frame["state"].astype(str).value_counts().to_dict()
    shown = ("complete", "pruned", "infeasible", "failed", "running") + (("screened",) if states.get("screened") else ())
    summary = ", ".join(f"{k} {states.get(k, 0)}" for k in shown)
    front = pareto_front(frame, specs)
    print(f"study {name}: {len(frame)} trials ({summary})")
    if front.empty:
        print("Pareto front: empty (no complete, fully trained, feasible trial yet)")
        return
    rows = [
        {
            "trial": int(r.trial),
            "design": r.design,
            "widths": r.widths,
            "depths": r.depths,
            "accuracy": round(float(r.accuracy), 4),
            "params": format_count(int(r.params)),
            "flops": format_count(int(r.flops)),
            "epochs": int(r.epochs),
            "spec_id": r.spec_id,
            "same_as": None if pd.isna(r.duplicate_of) else int(r.duplicate_of),
        }
        for r in front.itertuples()
    ]
    print(render_table(rows, title=f"Pareto front ({', '.join(specs)}):"))
    reference: dict[str, float] = {}
    for col, direction in objectives:
        if direction == "max":
            reference[col] = 0.0
        elif budget and budget.get(col):
            reference[col] = float(budget[col])  # type: ignore[arg-type]
        else:
            values = pd.to_numeric(frame[col], errors="coerce").dropna()
            reference[col] = float(values.max()) if len(values) else 1.0
    hv = front_hypervolume(frame, specs, reference)
    ref = ", ".join(f"{k} {format_count(v) if k != 'accuracy' else v}" for k, v in reference.items())
    print(f"hypervolume {hv:.6g} (reference point: {ref})")


def run_studies(args: argparse.Namespace) -> int:
    """Execute ``igcnas studies``."""
    from pathlib import Path

    from igcnas.errors import UserError
    from igcnas.search import list_studies

    folder = Path(args.trials_dir)
    if not args.storage and not folder.is_dir():  # a mistyped folder is not "no studies"
        what = "a file" if folder.exists() else "no such folder"
        raise UserError(f"--trials-dir: {str(folder)!r} is {what}; give the folder a search wrote "
                        "(default trials)")
    rows = list_studies(trials_dir=args.trials_dir, storage=args.storage, artifacts=args.artifacts)
    if not rows:
        print(f"no studies in {args.trials_dir}", file=sys.stderr)
        return 0
    for row in rows:
        for key in ("min_params", "min_flops"):
            row[key] = format_count(row[key]) if row[key] is not None else None
        if row["best_accuracy"] is not None:
            row["best_accuracy"] = round(row["best_accuracy"], 4)
    print(render_table(rows))
    return 0
