"""``igcnas pareto``: the non-dominated trials of a study, their architectures and the front's hypervolume."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from igcnas.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

    from igcnas.arch.spec import ArchSpec

__all__ = ["register", "run", "parse_objective_list", "zoo_reference_points", "zoo_specs", "OBJECTIVE_ALIASES"]

HELP = """\
Read a study's trials, keep the completed, fully trained ones within the budget, and print the non-dominated
trials (best first; exact ties are all kept and flagged in 'dup_of') with their architecture (design, widths,
depths) and the hypervolume of the front. The hypervolume's reference point is accuracy 0 and, for params/FLOPs,
the budget given here, else the study's own search budget (as `igcnas search` reports it), else the worst value
among the trials shown.

Examples:
  igcnas pareto --study cifar
  igcnas pareto --study cifar --objectives acc,flops --max-flops 30M --format csv
  igcnas pareto --study cifar --plot front.png --zoo"""

OBJECTIVE_ALIASES: dict[str, str] = {
    "acc": "accuracy:max",
    "accuracy": "accuracy:max",
    "val": "accuracy:max",
    "test": "test_accuracy:max",
    "test_acc": "test_accuracy:max",
    "test_accuracy": "test_accuracy:max",
    "params": "params:min",
    "flops": "flops:min",
    "time": "duration_s:min",
    "duration": "duration_s:min",
    "duration_s": "duration_s:min",
}
"""Short objective names accepted by ``--objectives`` (``column:max``/``column:min`` also work)."""

_TABLE_COLUMNS = ("trial", "accuracy", "test_accuracy", "params", "flops", "epochs", "design", "widths",
                  "depths", "spec_id", "duplicate_of")
_HEADINGS = {"accuracy": "val_acc", "test_accuracy": "test_acc", "duplicate_of": "dup_of"}


def parse_objective_list(text: str) -> tuple[str, ...]:
    """``"acc,params"`` -> ``("accuracy:max", "params:min")`` (aliases or ``column:dir`` items).

    Example:
        >>> parse_objective_list("acc, flops")
        ('accuracy:max', 'flops:min')
    """
    items = [part.strip() for part in str(text).split(",") if part.strip()]
    if not items:
        raise UserError(f"--objectives: {text!r} names no objective (e.g. --objectives acc,params)")
    parsed = []
    for item in items:
        if ":" in item:
            parsed.append(item)
        elif item.lower() in OBJECTIVE_ALIASES:
            parsed.append(OBJECTIVE_ALIASES[item.lower()])
        else:
            raise UserError(
                f"--objectives: {item!r} is not an objective; use {', '.join(sorted(OBJECTIVE_ALIASES))} "
                "or column:max / column:min (e.g. --objectives acc,params)"
            )
    return tuple(parsed)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``pareto`` command."""
    from igcnas.cli._common import count, format_parent, storage_parent, study_parent

    parser = subparsers.add_parser("pareto", help="Pareto front of a study (table, CSV, JSON, plot)",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                                   parents=[study_parent(), storage_parent(), format_parent(("table", "csv", "json"))])
    parser.add_argument("--objectives", default="acc,params",
                        help="comma-separated objectives: acc, test_acc, params, flops, time or column:max/min "
                             "(default: acc,params)")
    parser.add_argument("--max-params", type=count, help="only trials with at most this many parameters, e.g. 0.2M")
    parser.add_argument("--max-flops", type=count, help="only trials with at most this many FLOPs, e.g. 30M")
    parser.add_argument("--plot", metavar="FILE", help="also draw the trials and the front to FILE "
                                                       "(.png, .svg, .pdf or a self-contained .html)")
    parser.add_argument("--zoo", action="store_true",
                        help="add the zoo's paper networks (parameter/FLOP counts at the study's input size) as "
                             "reference points")
    parser.add_argument("--baselines", action="store_true",
                        help="also show the study's baselines (zoo networks trained with its schedule, 'igcnas "
                             "search --baselines'), marked apart from the searched trials, and how the best "
                             "searched trial within the budget compares with the best baseline")
    parser.set_defaults(func=run)


def zoo_specs() -> list[tuple[str, ArchSpec]] | None:
    """(name, spec) of every zoo network via ``igcnas.zoo.get_zoo``, or None when the zoo is not available.

    ``get_zoo()`` may return a mapping name -> spec (or entry with a ``spec``) or an iterable of entries; when it
    needs a name, the names come from ``zoo_names()`` / ``list_zoo()``.
    """
    from igcnas.arch.spec import ArchSpec

    try:
        module = importlib.import_module("igcnas.zoo")
    except ImportError:
        return None
    get_zoo = getattr(module, "get_zoo", None)
    if not callable(get_zoo):
        return None
    entries: Any
    try:
        entries = get_zoo()
    except TypeError:
        lister = getattr(module, "zoo_names", None) or getattr(module, "list_zoo", None)
        if not callable(lister):
            return None
        names = [n if isinstance(n, str) else str(getattr(n, "name", n)) for n in lister()]
        entries = {name: get_zoo(name) for name in names}
    items = list(entries.items()) if isinstance(entries, Mapping) else [(getattr(e, "name", ""), e) for e in entries]
    specs = []
    for name, entry in items:
        spec = entry if isinstance(entry, ArchSpec) else getattr(entry, "spec", None)
        if isinstance(spec, ArchSpec):
            specs.append((str(name or spec.name), spec))
    return specs


def zoo_reference_points(*, input_shape: tuple[int, int, int] | None = None,
                         num_classes: int | None = None) -> pd.DataFrame | None:
    """Zoo networks as reference points (columns name, params, flops), or None when the zoo is not available.

    With ``input_shape``/``num_classes`` the zoo specs are re-counted at the study's input size and classes
    (a spec that does not fit that input is left out).
    """
    import pandas as pd

    from igcnas.cost import count

    specs = zoo_specs()
    if specs is None:
        return None
    rows = []
    for name, spec in specs:
        if input_shape is not None and num_classes is not None:
            try:
                spec = replace(spec, input_shape=input_shape, num_classes=num_classes)
            except UserError:
                continue
        cost = count(spec)
        rows.append({"name": name, "params": cost.params, "flops": cost.flops})
    return pd.DataFrame(rows, columns=["name", "params", "flops"]) if rows else None


def _study_input(frame: pd.DataFrame) -> tuple[tuple[int, int, int], int] | None:
    """Input shape and class count of the study's architectures (read from one arch.json)."""
    from igcnas.arch.spec import load_spec

    for path in frame["arch_path"].astype(str):
        if path and Path(path).is_file():
            try:
                spec = load_spec(path)
            except UserError:
                continue
            return spec.input_shape, spec.num_classes
    return None


def _in_range(reference: pd.DataFrame, frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Zoo rows within a factor of 10 of the study's range on ``column`` (the plot stays readable)."""
    import pandas as pd

    values = pd.to_numeric(frame[column], errors="coerce").dropna()
    if values.empty or column not in reference.columns:
        return reference
    low, high = float(values.min()) / 10.0, float(values.max()) * 10.0
    return reference.loc[(reference[column] >= low) & (reference[column] <= high)]


def _reference(frame: pd.DataFrame, objectives: tuple[str, ...], max_params: int | None,
               max_flops: int | None) -> dict[str, float]:
    """Hypervolume reference: default worst values, with the budgets for params/FLOPs when given."""
    from igcnas.analysis import default_reference, parse_objectives

    if frame.empty:
        return {}
    try:
        reference = default_reference(frame, objectives)
    except UserError:
        return {}
    for objective in parse_objectives(objectives):
        if objective.column == "params" and max_params is not None and objective.direction == "min":
            reference["params"] = float(max_params)
        if objective.column == "flops" and max_flops is not None and objective.direction == "min":
            reference["flops"] = float(max_flops)
    return reference


def _cell(column: str, value: Any) -> Any:
    """Human cell for the table."""
    import pandas as pd

    from igcnas.units import format_count

    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if column in ("accuracy", "test_accuracy"):
        return f"{float(value):.2%}"
    if column in ("params", "flops"):
        return format_count(float(value))
    if column in ("trial", "epochs", "duplicate_of"):
        return int(value)
    return str(value) if str(value) else None


def _records(front: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe records of the front."""
    from igcnas.store import json_safe

    return [json_safe(record) for record in front.astype(object).to_dict("records")]


def run(args: argparse.Namespace) -> int:
    """Execute ``igcnas pareto``."""
    import pandas as pd

    from igcnas._table import render_table
    from igcnas.analysis import filter_budget, front_hypervolume, pareto_front, parse_objectives, plot_front
    from igcnas.search.results import open_study
    from igcnas.units import format_count

    objectives = parse_objective_list(args.objectives)
    study = open_study(args.study, storage=args.storage, trials_dir=args.trials_dir,
                       artifacts=args.artifacts)
    baselines = comparison = None
    if args.baselines:
        from igcnas.analysis.baselines import baseline_mask, compare_with_baselines
        from igcnas.search.results import load_study

        both = load_study(args.study, storage=args.storage, trials_dir=args.trials_dir, artifacts=args.artifacts,
                          baselines=True)
        baselines = both[baseline_mask(both)].copy()
        comparison = compare_with_baselines(
            both, max_params=args.max_params if args.max_params is not None else study.settings.get("max_params"),
            max_flops=args.max_flops if args.max_flops is not None else study.settings.get("max_flops"))
    parsed = parse_objectives(objectives, columns=study.frame.columns)
    frame = filter_budget(study.frame, max_params=args.max_params, max_flops=args.max_flops)
    front = pareto_front(frame, parsed)
    settings = study.settings or {}
    # the hypervolume's reference point: the given budget, else the study's own budget (as `igcnas search` prints)
    reference = _reference(frame, objectives,
                           args.max_params if args.max_params is not None else settings.get("max_params"),
                           args.max_flops if args.max_flops is not None else settings.get("max_flops"))
    hv = front_hypervolume(frame, parsed, reference) if reference and len(front) else 0.0

    zoo: pd.DataFrame | None = None
    if args.zoo:
        shape = _study_input(study.frame)
        zoo = zoo_reference_points(input_shape=shape[0] if shape else None,
                                   num_classes=shape[1] if shape else None)
        if zoo is None:
            print("igcnas: note: the zoo is not available in this installation; --zoo ignored", file=sys.stderr)
    if args.plot:
        points = None
        if zoo is not None and len(parsed) == 2 and parsed[1].column in zoo.columns:
            points = _in_range(zoo, study.frame, parsed[1].column)
            points = points if len(points) else None
        if baselines is not None and len(baselines) and len(parsed) == 2:
            marked = baselines.rename(columns={"baseline": "name"})
            marked = marked[marked["state"].astype(str) == "complete"]
            marked = marked[["name", parsed[1].column, parsed[0].column]].copy()
            marked["name"] = "baseline " + marked["name"].astype(str)
            points = marked if points is None else pd.concat([points, marked], ignore_index=True)
        plot_front(frame, parsed, path=args.plot, reference_points=points)

    states = study.frame["state"].astype(str).value_counts()
    counts = ", ".join(f"{n} {s}" for s, n in states.items() if n) or "no trials"
    budget = [f"params <= {format_count(args.max_params)}" if args.max_params is not None else "",
              f"FLOPs <= {format_count(args.max_flops)}" if args.max_flops is not None else ""]
    budget_text = " and ".join(b for b in budget if b)
    if args.format == "json":
        payload = {
            "study": args.study,
            "objectives": [str(o) for o in parsed],
            "budget": {"max_params": args.max_params, "max_flops": args.max_flops},
            "trials": int(len(study.frame)),
            "within_budget": int(len(frame)),
            "hypervolume": hv,
            "reference": reference,
            "front": _records(front),
            "plot": str(args.plot) if args.plot else None,
            "zoo": _records(zoo) if zoo is not None else None,
        }
        if baselines is not None:
            payload["baselines"] = _records(baselines)
            payload["comparison"] = comparison
            payload["retrained"] = retrained_rows(study.folder)
        print(json.dumps(payload, indent=2))
        return 0
    if args.format == "csv":
        sys.stdout.write(front.to_csv(index=False))
        return 0
    print(f"study {args.study}: {len(study.frame)} trials ({counts})"
          + (f"; {len(frame)} within {budget_text}" if budget_text else ""))
    if front.empty:
        print("no completed, fully trained trial" + (f" within {budget_text}" if budget_text else "")
              + " yet: the front is empty")
    else:
        columns = [c for c in _TABLE_COLUMNS if c in front.columns
                   and (c not in ("test_accuracy", "duplicate_of", "spec_id") or front[c].notna().any())]
        if "test_accuracy" in columns and pd.to_numeric(front["test_accuracy"], errors="coerce").isna().all():
            columns.remove("test_accuracy")
        rows = [{_HEADINGS.get(c, c): _cell(c, record[c]) for c in columns}
                for record in front.to_dict("records")]
        print(render_table(rows, [_HEADINGS.get(c, c) for c in columns],
                           title=f"Pareto front ({', '.join(map(str, parsed))}): {len(front)} trials"))
        ref_text = ", ".join(f"{k} {format_count(v) if k in ('params', 'flops') else f'{v:g}'}"
                             for k, v in reference.items())
        print(f"hypervolume {hv:.6g} (reference: {ref_text})")
    if baselines is not None:
        _print_baselines(baselines, comparison, retrained_rows(study.folder))
    if zoo is not None:
        print(render_table([{"zoo network": r["name"], "params": format_count(r["params"]),
                             "flops": format_count(r["flops"])} for r in zoo.to_dict("records")],
                           title="zoo reference networks (counted at the study's input size)"))
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0


def retrained_rows(study_folder: Path) -> list[dict[str, Any]]:
    """The study's retrained comparison (``igcnas retrain``), one row per architecture; [] before any."""
    from igcnas.store import read_retrained

    return read_retrained(study_folder)


def _print_baselines(baselines: pd.DataFrame, comparison: dict[str, Any] | None,
                     retrained: list[dict[str, Any]]) -> None:
    """The baselines table, the comparison line and the retrained comparison."""
    from igcnas._table import render_table
    from igcnas.units import format_count

    if baselines.empty:
        print("baselines: none in this study (igcnas search --baselines auto|NAME,...)")
        return
    rows = [{"baseline": r["baseline"], "trial": int(r["trial"]), "state": str(r["state"]),
             "val_acc": _cell("accuracy", r["accuracy"]), "params": _cell("params", r["params"]),
             "flops": _cell("flops", r["flops"]), "epochs": _cell("epochs", r["epochs"])}
            for r in baselines.to_dict("records")]
    print(render_table(rows, title="baselines (zoo networks, the study's schedule; not search trials):"))
    if comparison is not None and comparison["found_trial"] is not None:
        print(f"best searched trial {comparison['found_trial']} ({comparison['found_accuracy']:.2%}, "
              f"{format_count(comparison['found_params'])} params) vs best baseline {comparison['baseline']} "
              f"({comparison['baseline_accuracy']:.2%}, {format_count(comparison['baseline_params'])} params): "
              f"{comparison['delta_points']:+.2f} points, {comparison['delta_params']:+,} params")
    if retrained:
        table = [{"name": r["name"], "role": r["role"], "trial": r["trial"], "params": format_count(r["params"]),
                  "epochs": r["epochs"], "seeds": len(r["seeds"]),
                  "test_acc": f"{100 * r['test_accuracy_mean']:.2f} ± {100 * r['test_accuracy_std']:.2f}"}
                 for r in retrained]
        print(render_table(table, title="retrained from scratch (igcnas retrain; test accuracy, mean ± std):"))
