"""Benchmark: naive vs fast sparse-kernel blocks, training step and inference throughput side by side.

Three reference blocks are built from :func:`igcnas.nn.ops.sparse_conv` + ``BatchNorm2d`` + ``ReLU``; the naive
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
live); inputs are NCHW with ``requires_grad`` so the training step includes the input gradient, as for a block
inside a network. Run ``python -m igcnas.bench.ops`` (``--help``).

Example:
    >>> rows = bench_blocks(batch=2, size=8, repeats=1)  # doctest: +SKIP
    >>> print(format_table(rows))  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from igcnas._table import render_table
from igcnas.errors import UserError
from igcnas.nn.ops import Impl, sparse_conv

__all__ = [
    "BlockCase",
    "BLOCKS",
    "igc_l24m2_block",
    "igcv2_star_c416_block",
    "igcv3_d_block",
    "bench_pair",
    "bench_blocks",
    "format_table",
    "main",
]


def igc_l24m2_block(*, impl: Impl = "auto", channels: int = 48, secondary: int = 2) -> nn.Sequential:
    """IGCV1 block L x (3x3, M) -> interleave -> M x (1x1, L) -> BN -> ReLU (default L=24, M=2, C=48).

    Example:
        >>> igc_l24m2_block(impl="naive")(torch.randn(1, 48, 4, 4)).shape
        torch.Size([1, 48, 4, 4])
    """
    primary = channels // secondary
    return nn.Sequential(
        sparse_conv(channels, channels, 3, groups=primary, shuffle_groups=secondary, impl=impl),
        sparse_conv(channels, channels, 1, groups=secondary, shuffle_groups=primary, impl=impl),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
    )


def igcv2_star_c416_block(*, impl: Impl = "auto", channels: int = 416, branch: int = 8) -> nn.Sequential:
    """IGC-V2* block: channel-wise 3x3, then L*-1 group 1x1 convs of ``branch`` channels each, BN, ReLU.

    ``L* = ceil(log_branch(channels)) + 1`` (IGCV2 Table 1); each 1x1 conv is preceded by the interleave of
    the previous conv's ``channels // branch`` branches.

    Example:
        >>> len(igcv2_star_c416_block(impl="naive"))  # DW + 3 PWG + BN + ReLU
        6
    """
    groups = channels // branch
    n_group_convs = math.ceil(math.log(channels, branch) - 1e-9)  # = L* - 1
    layers: list[nn.Module] = [sparse_conv(channels, channels, 3, groups=channels, impl=impl)]
    layers += [
        sparse_conv(channels, channels, 1, groups=groups, shuffle_groups=groups, impl=impl)
        for _ in range(n_group_convs)
    ]
    layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class _InvertedResidual(nn.Module):
    """``x + body(x)`` (IGCV3 keeps the identity when stride 1 and in == out)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def igcv3_d_block(*, impl: Impl = "auto", channels: int = 32, expansion: int = 6, groups: int = 2) -> nn.Module:
    """IGCV3-D inverted block: PWG expand -> BN -> DW 3x3 -> BN -> ReLU -> interleave + PWG reduce -> BN, + x.

    Example:
        >>> igcv3_d_block(impl="naive")(torch.randn(1, 32, 4, 4)).shape
        torch.Size([1, 32, 4, 4])
    """
    mid = channels * expansion
    return _InvertedResidual(
        nn.Sequential(
            sparse_conv(channels, mid, 1, groups=groups, impl=impl),
            nn.BatchNorm2d(mid),
            sparse_conv(mid, mid, 3, groups=mid, impl=impl),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            sparse_conv(mid, channels, 1, groups=groups, shuffle_groups=groups, impl=impl),
            nn.BatchNorm2d(channels),
        )
    )


@dataclass(frozen=True)
class BlockCase:
    """A benchmarked block: ``build(impl)`` returns the module, ``channels`` its input channels."""

    name: str
    channels: int
    build: Callable[[Impl], nn.Module]
    note: str = ""


BLOCKS: tuple[BlockCase, ...] = (
    BlockCase("IGC-L24M2", 48, lambda impl: igc_l24m2_block(impl=impl), "IGCV1 CIFAR, C=48"),
    BlockCase("IGCV2*-C416", 416, lambda impl: igcv2_star_c416_block(impl=impl), "IGCV2 stage 1, C=416, L*=4"),
    BlockCase("IGCV3-D", 32, lambda impl: igcv3_d_block(impl=impl), "IGCV3 G1=G2=2, 32->192->32"),
)


def _sync(device: torch.device) -> None:
    """Wait for queued device work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_step(model: nn.Module, x: Tensor) -> None:
    """One forward + backward (loss = mean output), gradients cleared first."""
    model.zero_grad(set_to_none=True)
    x.grad = None
    model(x).float().mean().backward()


def _eval_step(model: nn.Module, x: Tensor) -> None:
    """One inference forward."""
    with torch.no_grad():
        model(x)


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    """Seconds of one call, device-synchronized."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _macs(model: nn.Module, x: Tensor) -> int:
    """fvcore multiply-adds of one eval forward of ``model`` on ``x[:1]`` (BN/ReLU/add count 0)."""
    import logging

    from fvcore.nn import FlopCountAnalysis

    logger = logging.getLogger("fvcore")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        analysis = FlopCountAnalysis(model.eval(), x[:1].detach())
        analysis.set_op_handle(**dict.fromkeys(("aten::batch_norm", "aten::relu_", "aten::relu", "aten::add")))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        return int(analysis.total())
    finally:
        logger.setLevel(level)


def bench_pair(
    name: str,
    build: Callable[[Impl], nn.Module],
    *,
    channels: int,
    batch: int = 64,
    size: int = 32,
    repeats: int = 5,
    warmup: int = 2,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """Time ``build("naive")`` against ``build("fast")`` (same weights, same input), interleaved.

    Returns one row: images/s of the training step (forward + backward) and of inference (no_grad forward) for
    both, the speed-up ratios fast/naive, the max output difference and the block's params and fvcore MACs.

    Example:
        >>> from igcnas.bench.ops import igc_l24m2_block
        >>> row = bench_pair("igc", lambda i: igc_l24m2_block(impl=i), channels=48, batch=2, size=8, repeats=1)
        >>> row["block"], row["max_abs_diff"] < 1e-4
        ('igc', True)
    """
    for field, value in (("batch", batch), ("size", size), ("repeats", repeats)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"bench: {field}={value!r} is not a positive integer (e.g. {field}=5)")
    dev = torch.device(device)
    torch.manual_seed(seed)
    naive = build("naive").to(dev)
    fast = build("fast").to(dev)
    fast.load_state_dict(naive.state_dict())
    x = torch.randn(batch, channels, size, size, device=dev, requires_grad=True)

    models = {"naive": naive, "fast": fast}
    times: dict[tuple[str, str], list[float]] = {(i, m): [] for i in models for m in ("train", "eval")}
    for model in models.values():
        model.train()
        for _ in range(warmup):
            _train_step(model, x)
        model.eval()
        for _ in range(warmup):
            _eval_step(model, x)
    for round_index in range(repeats):
        order = ("naive", "fast") if round_index % 2 == 0 else ("fast", "naive")
        for impl in order:
            models[impl].train()
            times[(impl, "train")].append(_timed(lambda m=models[impl]: _train_step(m, x), dev))
        for impl in order:
            models[impl].eval()
            times[(impl, "eval")].append(_timed(lambda m=models[impl]: _eval_step(m, x), dev))

    with torch.no_grad():
        ref, out = naive.eval()(x), fast.eval()(x)
        max_diff = float((ref - out).abs().max())
    ips = {key: batch / statistics.median(values) for key, values in times.items()}
    return {
        "block": name,
        "channels": channels,
        "size": size,
        "batch": batch,
        "params": sum(p.numel() for p in naive.parameters()),
        "macs": _macs(naive, x),
        "naive_train_ips": round(ips[("naive", "train")], 1),
        "fast_train_ips": round(ips[("fast", "train")], 1),
        "train_speedup": round(ips[("fast", "train")] / ips[("naive", "train")], 2),
        "naive_eval_ips": round(ips[("naive", "eval")], 1),
        "fast_eval_ips": round(ips[("fast", "eval")], 1),
        "eval_speedup": round(ips[("fast", "eval")] / ips[("naive", "eval")], 2),
        "max_abs_diff": max_diff,
        "device": str(dev),
        "threads": torch.get_num_threads(),
    }


def bench_blocks(
    *, batch: int = 64, size: int = 32, repeats: int = 5, device: str | torch.device = "cpu"
) -> list[dict[str, Any]]:
    """Benchmark the IGC-L24M2, IGCV2*-C416 and IGCV3-D blocks, naive vs fast (one row each).

    Example:
        >>> rows = bench_blocks(batch=2, size=8, repeats=1)
        >>> [r["block"] for r in rows]
        ['IGC-L24M2', 'IGCV2*-C416', 'IGCV3-D']
    """
    return [
        bench_pair(case.name, case.build, channels=case.channels, batch=batch, size=size, repeats=repeats, device=device)
        for case in BLOCKS
    ]


_COLUMNS = (
    "block", "size", "batch", "naive_train_ips", "fast_train_ips", "train_speedup",
    "naive_eval_ips", "fast_eval_ips", "eval_speedup", "max_abs_diff",
)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Text table of :func:`bench_blocks` rows (images/s; speed-up = fast / naive)."""
    shown = [{**row, "max_abs_diff": f"{row['max_abs_diff']:.1e}"} for row in rows]
    return render_table(shown, _COLUMNS)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m igcnas.bench.ops [--batch 64] [--size 32] [--repeats 5] [--device cpu] [--threads 2]``."""
    parser = argparse.ArgumentParser(prog="python -m igcnas.bench.ops", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.threads < 1:
        raise UserError(f"--threads: {args.threads} is not a positive integer (e.g. --threads 2)")
    torch.set_num_threads(args.threads)
    rows = bench_blocks(batch=args.batch, size=args.size, repeats=args.repeats, device=args.device)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
