"""``igcnas describe``: per-layer cost, block conditions and paper figures of a zoo network or an arch.json."""

from __future__ import annotations

import argparse
import json
import textwrap
import warnings
from typing import Any

from igcnas._table import render_table
from igcnas.arch.spec import ArchSpec
from igcnas.cli._common import format_parent
from igcnas.units import format_count

__all__ = ["register", "run", "describe"]

HELP = """\
Describe a network: a zoo name (see 'igcnas zoo') or an arch.json file (or a folder holding one).
Prints one row per block (consecutive identical blocks merged) with its params and FLOPs in closed form
(FLOPs = multiply-adds per image; params = every trainable parameter, BN included), the totals, the block of
every stage with its information field and density / complementary check (the condition the papers claim, for a
zoo network), and the papers' figures beside ours under the paper's counting convention.

Example: igcnas describe IGC-L24M2-D20 --fvcore"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``describe`` command."""
    parser = subparsers.add_parser("describe", help="per-layer cost, block checks and paper figures of a network",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                                   parents=[format_parent()])
    parser.add_argument("arch", metavar="NAME|arch.json", help="zoo name (case-insensitive) or arch.json path")
    parser.add_argument("--fvcore", action="store_true",
                        help="also count with fvcore on the built model (seconds) and compare with the closed form")
    parser.set_defaults(func=run)


def _merged_layers(spec: ArchSpec) -> list[dict[str, Any]]:
    """Per-layer rows with consecutive identical blocks of a stage merged (``blocks`` counts them)."""
    from igcnas.cost import layer_costs

    rows: list[dict[str, Any]] = []
    previous: tuple[Any, ...] | None = None
    for layer in layer_costs(spec):
        stage = layer.name.split(".")[1] if layer.role == "block" else layer.name
        signature = (stage, layer.in_channels, layer.out_channels, layer.stride, layer.params, layer.flops, layer.detail)
        if layer.role == "block" and signature == previous:
            row = rows[-1]
            row["blocks"] += 1
            row["name"] = f"{row['name'].split('-')[0]}-{layer.name.rsplit('.', 1)[1]}"
            row["params"] += layer.params
            row["flops"] += layer.flops
            continue
        previous = signature
        rows.append({
            "name": layer.name,
            "blocks": 1,
            "in->out": f"{layer.in_channels}->{layer.out_channels}",
            "stride": layer.stride,
            "out": f"{layer.out_size[0]}x{layer.out_size[1]}",
            "params": layer.params,
            "flops": layer.flops,
            "detail": layer.detail,
        })
    return rows


def describe(spec: ArchSpec, entry: Any = None, *, fvcore: bool = False) -> dict[str, Any]:
    """Everything ``igcnas describe`` shows, as a JSON-safe dict."""
    from igcnas.cost import count, fvcore_cost, layer_costs
    from igcnas.zoo import compare_row, paper_row
    from igcnas.zoo.compare import block_checks, rows_for_spec

    cost = count(spec)
    if entry is not None:
        checks = block_checks(spec, claims=entry.claims, span=entry.claim_span)
        keys = list(entry.paper_keys)
    else:
        checks = block_checks(spec)
        keys = rows_for_spec(spec)
    payload: dict[str, Any] = {
        "name": entry.name if entry is not None else spec.name,
        "family": entry.family if entry is not None else None,
        "description": entry.description if entry is not None else "",
        "counting": entry.counting if entry is not None else "",
        "claims": entry.claims if entry is not None else "none",
        "design": spec.design,
        "spec_id": spec.id,
        "input_shape": list(spec.input_shape),
        "num_classes": spec.num_classes,
        "params": cost.params,
        "flops": cost.flops,
        "layers": [
            {**{k: getattr(layer, k) for k in ("name", "role", "in_channels", "out_channels", "stride", "weights",
                                                "shortcut", "bn", "bias", "flops", "detail")},
             "out_size": list(layer.out_size), "params": layer.params}
            for layer in layer_costs(spec)
        ],
        "blocks": [check.to_dict() for check in checks],
        "paper": [compare_row(paper_row(key), spec) for key in keys],
        "fvcore": None,
        "arch": spec.to_dict(),
    }
    if fvcore:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # fvcore scripts helpers with torch.jit at import
            measured = fvcore_cost(spec)
        payload["fvcore"] = {"params": measured.params, "flops": measured.flops,
                             "equal": measured.params == cost.params and measured.flops == cost.flops}
    return payload


def _pct(value: float | None) -> str | None:
    """Signed percentage or None."""
    return None if value is None else f"{value * 100:+.1f}%"


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def format_description(info: dict[str, Any], spec: ArchSpec) -> str:
    """The human-readable report."""
    c, h, w = info["input_shape"]
    title = info["name"] or "(unnamed arch.json)"
    family = f"{info['family']}, " if info["family"] else ""
    out = [f"{title} ({family}{spec.design}, input {c}x{h}x{w}, {info['num_classes']} classes, spec {info['spec_id']})"]
    if info["description"]:
        out.extend(textwrap.wrap(info["description"], width=110))
    out.append("")
    layers = _merged_layers(spec)
    shown = [{**row, "params": format_count(row["params"]), "flops": format_count(row["flops"])} for row in layers]
    shown.append({"name": "total", "params": format_count(info["params"]), "flops": format_count(info["flops"])})
    out.append(render_table(shown, ["name", "blocks", "in->out", "stride", "out", "params", "flops", "detail"],
                            title="Layers (closed form; params incl. BN, FLOPs = multiply-adds per image)"))
    out.append(f"total: {info['params']:,} params, {info['flops']:,} FLOPs")
    if info["fvcore"] is not None:
        fv = info["fvcore"]
        verdict = "equal to the closed form" if fv["equal"] else "DIFFERENT from the closed form"
        out.append(f"fvcore: {fv['params']:,} params, {fv['flops']:,} FLOPs ({verdict})")
    out.append("")
    claim = info["claims"]
    rows = [{
        "stage": b["stage"], "in->out": f"{b['in_channels']}->{b['out_channels']}", "block": b["chain"],
        "info field": b["info_field"], "dense": _yes(b["dense"]), "strict": _yes(b["strict"]),
        "uniform paths": _yes(b["uniform_paths"]), "claim": b["claim"],
        "holds": _yes(b["holds"]) if b["claim"] != "none" else "-",
    } for b in info["blocks"]]
    title = (f"Block of each stage (claimed: {claim}; strict = one path between every input and output channel, "
             "uniform = the same number of paths for every pair)")
    out.append(render_table(rows, title=title))
    out.append("")
    if info["paper"]:
        rows = [{
            "paper row": p["key"], "table": p["table"],
            "paper params": format_count(p["paper_params"]), "ours": format_count(p["params"]),
            "diff": _pct(p["params_diff"]),
            "paper FLOPs": format_count(p["paper_flops"]), "ours FLOPs": format_count(p["flops"]),
            "FLOPs diff": _pct(p["flops_diff"]), "status": p["status"],
        } for p in info["paper"]]
        out.append(render_table(rows, title="Paper figures (ours under each row's counting convention)"))
        for p in info["paper"]:
            line = f"  {p['key']}: counts {p['convention']}"
            if p["note"]:
                line += f"; differs: {p['note']}"
            out.extend(textwrap.wrap(line, width=110, subsequent_indent="    "))
        if info["counting"]:
            out.extend(textwrap.wrap(f"  counting: {info['counting']}", width=110, subsequent_indent="    "))
    else:
        out.append("Paper figures: none for this network")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    """Execute ``igcnas describe``."""
    from igcnas.zoo import resolve_network

    spec, entry = resolve_network(args.arch)
    info = describe(spec, entry, fvcore=args.fvcore)
    if args.format == "json":
        print(json.dumps(info, indent=2))
    else:
        print(format_description(info, spec))
    return 0
