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
live). By default each impl gets its input in the layout a network of its own blocks carries (NCHW for naive,
channels_last for fast on CPU: the fast forms output channels_last); ``--input-format nchw`` makes the fast block
pay the conversion too. The input requires grad and the backward starts from a fixed output gradient in the
output's layout, so the training step includes the input gradient, as for a block inside a network.
Run ``python -m igcnas.bench.ops`` (``--help``).

Measured on the project's 2-core AVX-512 Xeon (shared with other jobs, load 3-5; batch 64, 32x32, 2 threads,
median of 5; images/s naive -> fast): IGC-L24M2 train 104 -> 421 (4.06x), eval 665 -> 1044 (1.57x);
IGCV2*-C416 train 14.8 -> 26.9 (1.82x), eval 43.7 -> 74.5 (1.71x); IGCV3-D train 49.8 -> 70.1 (1.41x), eval
155 -> 239 (1.54x). The IGCV2/IGCV3 blocks are bound by work both impls share: BatchNorm, ReLU, the residual add
and (IGCV2) the DW conv and the three activation shuffles are memory-bound passes over 50-109 MB tensors that no
conv form removes (single-thread profile of the fast step: BN/ReLU/add are ~55% of IGCV3-D; BN/ReLU/shuffles
~37% of IGCV2*, whose DW conv is another ~15%), so even free convs would not give 3x there.

Example:
    >>> rows = bench_blocks(batch=2, size=8, repeats=1)  # doctest: +SKIP
    >>> print(format_table(rows))  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

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
    "bench_networks",
    "NETWORKS",
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


def igcv3_d_block(
    *, impl: Impl = "auto", channels: int = 32, expansion: int = 6, groups: int = 2
) -> nn.Module:
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
    BlockCase(
        "IGCV2*-C416", 416, lambda impl: igcv2_star_c416_block(impl=impl), "IGCV2 stage 1, C=416, L*=4"
    ),
    BlockCase("IGCV3-D", 32, lambda impl: igcv3_d_block(impl=impl), "IGCV3 G1=G2=2, 32->192->32"),
)


def _sync(device: torch.device) -> None:
    """Wait for queued device work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_step(model: nn.Module, x: Tensor, grad: Tensor | None = None) -> Tensor:
    """One forward + backward of ``grad`` (default: d(mean)/d(out)), gradients cleared first; returns the output."""
    model.zero_grad(set_to_none=True)
    x.grad = None
    out = model(x)
    if grad is None:
        out.float().mean().backward()
    else:
        out.backward(grad)
    return out


def _eval_step(model: nn.Module, x: Tensor) -> None:
    """One inference forward."""
    with torch.no_grad():
        model(x)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call, device-synchronized."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


_FREE_OPS = ("aten::batch_norm", "aten::relu_", "aten::relu", "aten::add", "aten::add_")


def _zero_flops(inputs: Any, outputs: Any) -> Counter[str]:
    """fvcore op handle counting nothing."""
    return Counter()


def _macs(model: nn.Module, x: Tensor) -> int:
    """fvcore multiply-adds of one eval forward of ``model`` on ``x[:1]`` (BN/ReLU/add count 0)."""
    import logging
    import warnings

    logger = logging.getLogger("fvcore")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from fvcore.nn import FlopCountAnalysis

            analysis = FlopCountAnalysis(model.eval(), x[:1].detach())
            # a None handle does not remove fvcore's default batch_norm handle; a zero handle does
            analysis.set_op_handle(**dict.fromkeys(_FREE_OPS, _zero_flops))
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
            return int(analysis.total())
    finally:
        logger.setLevel(level)


InputFormat = Literal["native", "nchw", "channels_last"]


def _input_format(impl: str, input_format: InputFormat, device: torch.device) -> torch.memory_format:
    """Memory format of the block input for ``impl`` (native: what a network of such blocks carries)."""
    if input_format == "channels_last" or (
        input_format == "native" and impl != "naive" and device.type == "cpu"
    ):
        return torch.channels_last
    return torch.contiguous_format


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
    input_format: InputFormat = "native",
    seed: int = 0,
) -> dict[str, Any]:
    """Time ``build("naive")`` against ``build("fast")`` (same weights, same input values), interleaved.

    The training step is forward + backward of a fixed output gradient (as if it came from the rest of the
    network, in the output's memory format) including the input gradient; eval is a ``no_grad`` forward in eval
    mode. ``input_format="native"`` gives each impl the layout a network built from it carries between blocks
    (NCHW for naive, channels_last for fast on CPU, where the fast forms produce channels_last); ``"nchw"`` or
    ``"channels_last"`` force one layout on both (then the fast block pays the conversion).

    Returns one row: images/s of the training step and of inference for both, the speed-up ratios
    fast/naive, the max output difference and the block's params and fvcore MACs (per image).

    Example:
        >>> from igcnas.bench.ops import igc_l24m2_block
        >>> row = bench_pair("igc", lambda i: igc_l24m2_block(impl=i), channels=48, batch=2, size=8, repeats=1)
        >>> row["block"], row["max_abs_diff"] < 1e-4
        ('igc', True)
    """
    for field, value in (("batch", batch), ("size", size), ("repeats", repeats), ("warmup", warmup + 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"bench: {field}={value!r} is not a positive integer (e.g. {field}=5)")
    if input_format not in get_args(InputFormat):
        raise UserError(f"bench: input_format={input_format!r} is not one of {get_args(InputFormat)}")
    dev = torch.device(device)
    torch.manual_seed(seed)
    models: dict[str, nn.Module] = {"naive": build("naive").to(dev), "fast": build("fast").to(dev)}
    models["fast"].load_state_dict(models["naive"].state_dict())
    values = torch.randn(batch, channels, size, size, device=dev)
    inputs = {
        impl: values.contiguous(memory_format=_input_format(impl, input_format, dev)).requires_grad_(True)
        for impl in models
    }
    grads: dict[str, Tensor] = {}
    for impl, model in models.items():
        model.train()
        out = _train_step(model, inputs[impl])
        grads[impl] = torch.randn_like(out)  # same layout as the output
        for _ in range(warmup):
            _train_step(model, inputs[impl], grads[impl])
        model.eval()
        for _ in range(warmup):
            _eval_step(model, inputs[impl])

    times: dict[tuple[str, str], list[float]] = {(i, m): [] for i in models for m in ("train", "eval")}
    for round_index in range(repeats):
        order = ("naive", "fast") if round_index % 2 == 0 else ("fast", "naive")
        for impl in order:
            times[(impl, "train")].append(
                _timed(functools.partial(_train_step, models[impl].train(), inputs[impl], grads[impl]), dev)
            )
        for impl in order:
            times[(impl, "eval")].append(
                _timed(functools.partial(_eval_step, models[impl].eval(), inputs[impl]), dev)
            )

    with torch.no_grad():
        max_diff = float((models["naive"](inputs["naive"]) - models["fast"](inputs["fast"])).abs().max())
    ips = {key: batch / statistics.median(samples) for key, samples in times.items()}
    return {
        "block": name,
        "channels": channels,
        "size": size,
        "batch": batch,
        "params": sum(p.numel() for p in models["naive"].parameters()),
        "macs": _macs(models["naive"], inputs["naive"]),
        "naive_train_ips": ips[("naive", "train")],
        "fast_train_ips": ips[("fast", "train")],
        "train_speedup": ips[("fast", "train")] / ips[("naive", "train")],
        "naive_eval_ips": ips[("naive", "eval")],
        "fast_eval_ips": ips[("fast", "eval")],
        "eval_speedup": ips[("fast", "eval")] / ips[("naive", "eval")],
        "max_abs_diff": max_diff,
        "input_format": input_format,
        "device": str(dev),
        "threads": torch.get_num_threads(),
    }


def bench_blocks(
    *,
    batch: int = 64,
    size: int = 32,
    repeats: int = 5,
    device: str | torch.device = "cpu",
    input_format: InputFormat = "native",
) -> list[dict[str, Any]]:
    """Benchmark the IGC-L24M2, IGCV2*-C416 and IGCV3-D blocks, naive vs fast (one row each).

    Example:
        >>> rows = bench_blocks(batch=2, size=8, repeats=1)
        >>> [r["block"] for r in rows]
        ['IGC-L24M2', 'IGCV2*-C416', 'IGCV3-D']
    """
    return [
        bench_pair(
            case.name,
            case.build,
            channels=case.channels,
            batch=batch,
            size=size,
            repeats=repeats,
            device=device,
            input_format=input_format,
        )
        for case in BLOCKS
    ]


NETWORKS: tuple[str, ...] = ("IGC-L24M2-D20", "IGCV2-C64-D20", "IGCV3-D-CIFAR")


def bench_networks(
    names: Sequence[str] = NETWORKS,
    *,
    batch: int = 32,
    repeats: int = 3,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Whole zoo networks, ``build(spec, impl="naive")`` vs the default build, one row each (as :func:`bench_pair`).

    Example:
        >>> rows = bench_networks(["IGC-L24M2-D20"], batch=2, repeats=1)  # doctest: +SKIP
    """
    from igcnas.nn.network import build
    from igcnas.zoo import get_zoo

    rows = []
    for name in names:
        spec = get_zoo(name).spec
        rows.append(
            bench_pair(
                name,
                lambda impl, spec=spec: build(spec, impl=impl),  # type: ignore[misc]
                channels=spec.input_shape[0],
                size=spec.input_shape[1],
                batch=batch,
                repeats=repeats,
                device=device,
                input_format="nchw",
            )
        )
    return rows


_COLUMNS = (
    "block",
    "size",
    "batch",
    "input_format",
    "naive_train_ips",
    "fast_train_ips",
    "train_speedup",
    "naive_eval_ips",
    "fast_eval_ips",
    "eval_speedup",
    "max_abs_diff",
)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Text table of :func:`bench_blocks` rows (images/s; speed-up = fast / naive)."""
    shown = [
        {
            **row,
            **{key: round(row[key], 1) for key in _COLUMNS if key.endswith("_ips")},
            "train_speedup": f"{row['train_speedup']:.2f}x",
            "eval_speedup": f"{row['eval_speedup']:.2f}x",
            "max_abs_diff": f"{row['max_abs_diff']:.1e}",
        }
        for row in rows
    ]
    return render_table(shown, _COLUMNS)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m igcnas.bench.ops [--batch 64] [--size 32] [--repeats 5] [--device cpu] [--threads 2]``."""
    parser = argparse.ArgumentParser(prog="python -m igcnas.bench.ops", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
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
    raise SystemExit(main())
