"""Benchmark: naive vs fast sparse-kernel blocks, training step and inference throughput side by side.

Three reference blocks are built from :func:`igcnas.nn.ops.sparse_conv` + BatchNorm + ReLU (fused into one
:class:`~igcnas.nn.norm.BatchNormAct2d` in the fast copy, as in networks); the naive
and the fast copy share one state_dict, see the same input and are timed interleaved (naive, fast, fast, naive,
... alternating the order each round, after warm-up rounds), and the median of ``repeats`` rounds is reported:

* ``IGC-L24M2`` (IGCV1, Table 2, CIFAR, first stage): C = 48 at ``size`` x ``size``:
  ``24 x (3x3, 2)`` primary GC -> interleave (``shuffle_groups=24``) -> ``2 x (1x1, 24)`` secondary PWG -> BN ->
  ReLU ("IGC + BN + ReLU", Sec. 5.2, no activation in between). The paper's permute-back ``P`` (Eq. 5) is applied
  at the start of the block, as the primary GC's input shuffle (``shuffle_groups=M=2``): for a stack of blocks
  this is the same network, and it charges the block with the copy a real network has to make.
* ``IGCV2*-C416`` (IGCV2, Table 1): the first stage of IGC-V2*(C416) has C = 416 channels at 32 x 32 (the
  16 x 16 and 8 x 8 stages have 832 and 1664); ``K = 8``, ``L* = ceil(log_8 416) + 1 = 4``: a channel-wise
  ``416 x (3x3, 1)`` DW conv then ``L* - 1 = 3`` group 1x1 convs with 8 channels per branch (52 groups), each
  preceded by the interleave of the previous 52 branches (``shuffle_groups=52``; the first one interleaves the
  previous block's last branches through the channel-wise DW/BN/ReLU), BN + ReLU after the block (IGCV1 setup).
* ``IGCV3-D`` (IGCV3, Fig. 2 / Table 6 "G1x1_Dw3x3_ReLU_G1x1", ``G1 = G2 = 2``, inverted, expansion 6): C = 32:
  ``1x1 PWG 32->192 (2 groups)`` -> BN -> ``3x3 DW`` -> BN -> ReLU -> ``1x1 PWG 192->32 (2 groups)`` -> BN,
  + identity. The interleave (``shuffle_groups=2``) sits on the input of the reducing PWG: DW, BN and ReLU act
  per channel, so this is the paper's / public code's "shuffle after the expanding conv" with their parameters
  permuted, and the fast path folds it into the weight (no copy).

All blocks run at ``size`` x ``size`` (default 32, the CIFAR first stage where IGC-L24M2 and IGC-V2*(C416)
live). By default each impl gets its input in the layout a network of its own blocks carries (NCHW for naive,
channels_last for fast on CPU: the fast forms output channels_last); ``--input-format nchw`` makes the fast block
pay the conversion too. The input requires grad and the backward starts from a fixed output gradient in the
output's layout, so the training step includes the input gradient, as for a block inside a network.

On CPU, :func:`bench_cases` measures in two worker processes, one under the system malloc and one under the
malloc tuning igcnas's CPU training applies (:mod:`igcnas._allocator`: large activations are no longer
re-faulted every step), with the rounds alternating between them. ``speedup`` compares what a plain PyTorch
script of the naive blocks gets (system malloc) with what igcnas runs (fast ops, tuned malloc);
``ops_speedup`` compares the two impls under the same (tuned) malloc: the ops alone.
Run ``python -m igcnas.bench.ops`` (``--help``).

Measured on the project's 2-core AVX-512 Xeon (``igcnas bench ops --repeats 7``, batch 64, 32x32, 2 threads;
images/s naive -> fast, speedup, ops_speedup): IGC-L24M2 train 719 -> 3308 (4.60x, ops 4.06x), eval 3288 ->
13280 (4.04x, ops 3.07x); IGCV2*-C416 train 37.1 -> 385 (10.4x, ops 2.99x), eval 127 -> 1442 (11.4x, ops
3.72x); IGCV3-D train 157 -> 644 (4.09x, ops 1.73x), eval 439 -> 2370 (5.40x, ops 1.64x). Under the system
malloc the naive IGCV2*/IGCV3-D steps spend more time in the kernel's page-fault handler than in arithmetic.
With the same malloc, the IGCV3-D block stays bound by work both impls share: BatchNorm, the depthwise conv and
the residual add are memory-bound passes over 50 MB tensors that only a whole-block kernel would remove.

This module holds the suites (:func:`bench_blocks`, :func:`bench_networks`), the table and the command line;
the blocks and cases are in :mod:`igcnas.bench.ops_blocks`, the timer of one case in
:mod:`igcnas.bench.ops_timing` and the rounds, in the two runtimes' worker processes (:func:`bench_cases`) or in
this process (:func:`bench_pair`), in :mod:`igcnas.bench.ops_workers`; all their public names are re-exported
here.

Example (not run as a doctest: two worker processes, several seconds; ``tests/bench`` runs this call):
    >>> rows = bench_blocks(batch=2, size=8, repeats=1)  # doctest: +SKIP
    >>> print(format_table(rows))  # doctest: +SKIP
    block        size  batch  input_format  naive_train_ips  fast_train_ips  train_speedup  ...
    -----------  ----  -----  ------------  ---------------  --------------  -------------  ...
    IGC-L24M2       8      2  native                  180.5            2265  12.55x         ...
    ...
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, get_args

import torch

from igcnas._table import render_table
from igcnas.bench.ops_blocks import (
    BLOCKS,
    NETWORKS,
    BlockCase,
    CaseRef,
    igc_l24m2_block,
    igcv2_star_c416_block,
    igcv3_d_block,
    network_cases,
)
from igcnas.bench.ops_timing import InputFormat
from igcnas.bench.ops_workers import RUNTIMES, Runtime, bench_cases, bench_pair, rotated
from igcnas.errors import UserError

__all__ = [
    "BlockCase",
    "BLOCKS",
    "CaseRef",
    "Runtime",
    "RUNTIMES",
    "bench_cases",
    "LEGEND",
    "TABLE_COLUMNS",
    "igc_l24m2_block",
    "igcv2_star_c416_block",
    "igcv3_d_block",
    "bench_pair",
    "rotated",
    "bench_blocks",
    "bench_networks",
    "bench_stages",
    "network_cases",
    "stage_table",
    "NETWORKS",
    "format_table",
    "forms_listing",
    "table_notes",
    "versus_regular",
    "traffic",
    "COPY_MIB",
    "copy_bandwidth",
    "bandwidth_note",
    "main",
]


def bench_blocks(
    *,
    batch: int = 64,
    size: int = 32,
    repeats: int = 5,
    device: str | torch.device = "cpu",
    input_format: InputFormat = "native",
) -> list[dict[str, Any]]:
    """Benchmark the IGC-L24M2, IGCV2*-C416 and IGCV3-D blocks, naive vs fast (one row each, :func:`bench_cases`).

    Example (not run as a doctest: two worker processes, several seconds; ``tests/bench`` runs this call):
        >>> rows = bench_blocks(batch=2, size=8, repeats=1)  # doctest: +SKIP
        >>> [r["block"] for r in rows], all(r["max_abs_diff"] < 1e-4 for r in rows)  # doctest: +SKIP
        (['IGC-L24M2', 'IGCV2*-C416', 'IGCV3-D'], True)
    """
    return bench_cases([CaseRef("block", case.name) for case in BLOCKS], batch=batch, size=size,
                       repeats=repeats, device=device, input_format=input_format)


def bench_networks(
    names: Sequence[str] = NETWORKS,
    *,
    batch: int = 32,
    repeats: int = 3,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Whole zoo networks, ``build(spec, impl="naive")`` vs the default build, one row each (:func:`bench_cases`).

    The input is an NCHW image batch for both (the fast network converts it in its first layer), without a
    gradient, as in training. The networks
    are timed interleaved: each round times every network, so their rows compare with each other as well as
    naive with fast (:func:`versus_regular`).

    Example (not run as a doctest: two worker processes, several seconds; ``tests/bench`` runs this case):
        >>> rows = bench_networks(["IGC-L24M2-D20"], batch=2, repeats=1)  # doctest: +SKIP
        >>> [(r["block"], r["size"], r["input_format"]) for r in rows], rows[0]["max_abs_diff"] < 1e-3  # doctest: +SKIP
        ([('IGC-L24M2-D20', 32, 'nchw')], True)
    """
    return bench_cases([CaseRef("zoo", name) for name in names], batch=batch, repeats=repeats, device=device,
                       input_format="nchw", interleave=True)


def bench_stages(
    name: str,
    *,
    batch: int = 32,
    repeats: int = 3,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Every part of the zoo network ``name`` (stem, each stage, head with classifier), naive vs fast, one row
    each (:func:`bench_cases`, interleaved as :func:`bench_networks` times networks): where a training step's time
    goes, and which parts the fast build speeds up. A part gets a random input of the shape it gets in the network,
    in the layout each build carries there; it runs as the whole network runs it, except that a BatchNorm closing
    it does not fold into the conv after it (:class:`~igcnas.nn.network.NetworkPart`). :func:`stage_table`
    prints the rows.

    Example (not run as a doctest: worker processes, several seconds; ``tests/bench`` runs this case):
        >>> rows = bench_stages("IGC-L24M2-D20", batch=2, repeats=1)  # doctest: +SKIP
        >>> [row["block"] for row in rows][:2]  # doctest: +SKIP
        ['IGC-L24M2-D20:stem', 'IGC-L24M2-D20:stages.0']
    """
    return bench_cases(network_cases(name), batch=batch, repeats=repeats, device=device, input_format="native",
                       interleave=True)


def stage_table(rows: Sequence[dict[str, Any]], *,
                display: bool = True) -> tuple[list[dict[str, Any]], str]:
    """The rows of :func:`bench_stages` as milliseconds per training step (both builds under the same malloc:
    the ops alone), each part's share of the sum over the parts, and the ops speed-ups; and the line summing
    the parts. With ``display`` False the shares are fractions and the speed-ups plain numbers (JSON).

    Example:
        >>> rows = [{"block": "N:stem", "channels": 3, "size": 32, "batch": 32, "naive_train_ips_tuned": 3200.0,
        ...          "fast_train_ips_tuned": 6400.0, "train_ops_speedup": 2.0, "eval_ops_speedup": 1.5},
        ...         {"block": "N:head", "channels": 64, "size": 8, "batch": 32, "naive_train_ips_tuned": 1600.0,
        ...          "fast_train_ips_tuned": 1600.0, "train_ops_speedup": 1.0, "eval_ops_speedup": 1.0}]
        >>> table, line = stage_table(rows)
        >>> [(r["part"], r["naive_train_ms"], r["fast_train_ms"], r["fast_share"]) for r in table]
        [('stem', 10.0, 5.0, '20%'), ('head', 20.0, 20.0, '80%')]
        >>> line
        'N: the parts sum to 30.0 ms per training step naive, 25.0 ms fast (1.20x; batch 32)'
    """
    if not rows:
        return [], ""
    engine = "tuned" if "naive_train_ips_tuned" in rows[0] else "current"
    naive = [1e3 * row["batch"] / row[f"naive_train_ips_{engine}"] for row in rows]
    fast = [1e3 * row["batch"] / row[f"fast_train_ips_{engine}"] for row in rows]
    table = []
    for row, n_ms, f_ms in zip(rows, naive, fast, strict=True):
        network, _, part = row["block"].rpartition(":")
        ratios = {"train_ops_speedup": row["train_ops_speedup"], "naive_share": n_ms / sum(naive),
                  "fast_share": f_ms / sum(fast), "eval_ops_speedup": row["eval_ops_speedup"]}
        shown = ({key: f"{value:.0%}" if key.endswith("share") else f"{value:.2f}x" for key, value in ratios.items()}
                 if display else {key: round(value, 3) for key, value in ratios.items()})
        table.append({"network": network, "part": part, "input": f"{row['channels']}x{row['size']}x{row['size']}",
                      "naive_train_ms": round(n_ms, 2), "fast_train_ms": round(f_ms, 2), **shown})
    network = rows[0]["block"].rpartition(":")[0]
    line = (f"{network}: the parts sum to {sum(naive):.1f} ms per training step naive, {sum(fast):.1f} ms fast "
            f"({sum(naive) / sum(fast):.2f}x; batch {rows[0]['batch']})")
    return table, line


TABLE_COLUMNS = (
    "block",
    "size",
    "batch",
    "input_format",
    "naive_train_ips",
    "fast_train_ips",
    "train_speedup",
    "train_ops_speedup",
    "naive_eval_ips",
    "fast_eval_ips",
    "eval_speedup",
    "eval_ops_speedup",
    "max_abs_diff",
)

LEGEND = """\
images/s; naive = channel shuffle + nn.Conv2d(groups=) under the system malloc (a plain PyTorch script),
fast = igcnas's ops under its tuned malloc (what igcnas train/search run on CPU);
speedup = fast / naive; ops_speedup = fast / naive with both under the tuned malloc (the ops alone)"""


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Text table of :func:`bench_cases` rows (images/s; speed-ups fast / naive), with its legend."""
    shown = [
        {
            **row,
            **{key: round(row[key], 1) for key in TABLE_COLUMNS if key.endswith("_ips")},
            **{key: f"{row[key]:.2f}x" for key in TABLE_COLUMNS if key.endswith("speedup")},
            "max_abs_diff": f"{row['max_abs_diff']:.1e}",
        }
        for row in rows
    ]
    notes = "\n".join(table_notes(rows))
    return render_table(shown, TABLE_COLUMNS) + "\n" + LEGEND + ("\n" + notes if notes else "")


def table_notes(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The lines printed under the table: :func:`versus_regular` and :func:`forms_listing`, those that apply."""
    return [note for note in (versus_regular(rows), forms_listing(rows)) if note]


def forms_listing(rows: Sequence[dict[str, Any]]) -> str:
    """The forms the fast build ran per layer kind, one line per row ('' when no row recorded them)."""
    forms = [f"  {row['block']}: {row['forms']}" for row in rows if row.get("forms")]
    return ("forms the fast build ran, per layer kind (measured on this machine, igcnas.nn.tune; table = the "
            "decision table's choice kept):\n" + "\n".join(forms)) if forms else ""


def versus_regular(rows: Sequence[dict[str, Any]], *, sparse: str = "IGC-L24M2-D20",
                   regular: str = "RegConv-W16-D20") -> str:
    """The sparse network's fast training images/s as a multiple of the regular-conv network's, both timed in this
    run ('' when either is missing), and, for zoo networks, a second line with their FLOPs and the bytes their
    layers write per image (:func:`traffic`): ``IGC-L24M2-D20`` has fewer FLOPs than ``RegConv-W16-D20`` but
    three times its width, so its layers write several times the bytes.

    Example:
        >>> print(versus_regular([{"block": "IGC-L24M2-D20", "fast_train_ips": 70.0},
        ...                       {"block": "RegConv-W16-D20", "fast_train_ips": 200.0}]))
        IGC-L24M2-D20 trains at 0.35x the images/s of RegConv-W16-D20 (70.0 vs 200.0, fast builds, this run)
          per image IGC-L24M2-D20 has 0.71x the FLOPs and 4.27x the bytes of layer outputs of RegConv-W16-D20 (6.93 vs 1.62 MB written by the naive build's forward)
    """
    ips = {row["block"]: float(row.get("fast_train_ips") or 0.0) for row in rows}
    a, b = ips.get(sparse, 0.0), ips.get(regular, 0.0)
    if not a or not b:
        return ""
    line = f"{sparse} trains at {a / b:.2f}x the images/s of {regular} ({a:.1f} vs {b:.1f}, fast builds, this run)"
    from igcnas.zoo import ZOO

    if sparse in ZOO and regular in ZOO:
        (f1, m1), (f2, m2) = traffic(ZOO[sparse].spec), traffic(ZOO[regular].spec)
        line += (f"\n  per image {sparse} has {f1 / f2:.2f}x the FLOPs and {m1 / m2:.2f}x the bytes of layer "
                 f"outputs of {regular} ({m1 / 1e6:.2f} vs {m2 / 1e6:.2f} MB written by the naive build's forward)")
    return line


def traffic(spec: Any) -> tuple[int, int]:
    """(FLOPs, bytes of every leaf module's output) of one image's forward pass through the naive build of
    ``spec``: what a layer-by-layer implementation computes and writes (the fast build fuses some of those writes).

    Example:
        >>> from igcnas.cost import count
        >>> from igcnas.zoo import ZOO
        >>> spec = ZOO["RegConv-W16-D20"].spec
        >>> flops, written = traffic(spec)
        >>> flops == count(spec).flops, written > 16 * 32 * 32 * 4  # more than the stem's output
        (True, True)
    """
    from igcnas.cost import count
    from igcnas.nn.network import build

    model = build(spec, impl="naive").eval()
    written = [0]

    def record(module: torch.nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and next(module.children(), None) is None:
            written[0] += output.numel() * output.element_size()

    handles = [module.register_forward_hook(record) for module in model.modules()]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *spec.input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return int(count(spec).flops), written[0]


COPY_MIB = 256
"""MiB :func:`copy_bandwidth` copies by default: more than the last-level caches of the machines measured so far."""


def copy_bandwidth(*, mib: int = COPY_MIB, repeats: int = 5) -> float:
    """GB/s of copying a ``mib`` MiB float32 tensor into another with torch's threads (bytes read + written, median
    of ``repeats``): the memory speed a run had. The figure drifts with the load of a shared host, so runs whose
    figures differ do not compare.

    Example:
        >>> copy_bandwidth(mib=1, repeats=1) > 0
        True
    """
    import statistics
    import time

    source = torch.ones(mib * (1 << 18))
    target = torch.empty_like(source)
    target.copy_(source)  # first touch of the pages
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        target.copy_(source)
        times.append(time.perf_counter() - start)
    return 2 * source.numel() * source.element_size() / statistics.median(times) / 1e9


def bandwidth_note(before: float, after: float, *, threads: int) -> str:
    """The line printed under the table: :func:`copy_bandwidth` (of :data:`COPY_MIB`) before and after the cases,
    with ``threads``.

    Example:
        >>> bandwidth_note(21.04, 20.51, threads=2)
        'memory: copying 256 MiB ran at 21.0 GB/s before the cases and 20.5 GB/s after (read + written, 2 threads); runs whose figures differ do not compare'
    """
    return (f"memory: copying {COPY_MIB} MiB ran at {before:.1f} GB/s before the cases and {after:.1f} GB/s after (read + "
            f"written, {threads} thread{'s' if threads != 1 else ''}); runs whose figures differ do not compare")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m igcnas.bench.ops [--batch 64] [--size 32] [--repeats 5] [--device cpu] [--threads 2]``."""
    parser = argparse.ArgumentParser(
        prog="python -m igcnas.bench.ops",
        description=__doc__.splitlines()[0],
        epilog=LEGEND,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--size", type=int, default=32, help="input height and width (default 32)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds, median reported (default 5)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument(
        "--input-format",
        default="native",
        choices=get_args(InputFormat),
        help="block input layout (default native)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.threads < 1:
        raise UserError(f"--threads: {args.threads} is not a positive integer (e.g. --threads 2)")
    torch.set_num_threads(args.threads)
    rows = bench_blocks(
        batch=args.batch,
        size=args.size,
        repeats=args.repeats,
        device=args.device,
        input_format=args.input_format,
    )
    print(format_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except UserError as error:  # a bad argument: one line, as the igcnas command prints it
        print(f"igcnas: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
