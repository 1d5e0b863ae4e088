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

Example:
    >>> rows = bench_blocks(batch=2, size=8, repeats=1)  # doctest: +SKIP
    >>> print(format_table(rows))  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from igcnas._table import render_table
from igcnas.errors import UserError
from igcnas.nn.chain_ops import FusedSequential
from igcnas.nn.norm import batch_norm_act
from igcnas.nn.ops import Impl, sparse_conv

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
    "bench_blocks",
    "bench_networks",
    "NETWORKS",
    "format_table",
    "main",
]


def _bn_relu(channels: int, impl: Impl) -> list[nn.Module]:
    """BN + ReLU as a network of ``impl`` has them (fused unless naive), always two Sequential slots.

    The fused form fills the ReLU's slot with an ``nn.Identity`` so both impls have the same state_dict keys.
    """
    modules = [module for _, module in batch_norm_act(channels, relu=True, impl=impl)]
    return modules + [nn.Identity()] * (2 - len(modules))


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
        *_bn_relu(channels, impl),
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
    layers += _bn_relu(channels, impl)
    if impl == "naive":
        return nn.Sequential(*layers)
    return FusedSequential(*layers)  # the 1x1 convs as one native op; same children, same state_dict keys


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
            *_bn_relu(mid, impl),
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
#: ``system``: malloc as the C library sets it (what a plain PyTorch script gets); ``tuned``: the malloc tuning
#: igcnas's CPU training applies (:mod:`igcnas._allocator`)
Runtime = Literal["system", "tuned"]
RUNTIMES: tuple[Runtime, ...] = ("system", "tuned")
_IMPLS = ("naive", "fast")
_MODES = ("train", "eval")


def _input_format(impl: str, input_format: InputFormat, device: torch.device) -> torch.memory_format:
    """Memory format of the block input for ``impl`` (native: what a network of such blocks carries)."""
    if input_format == "channels_last" or (
        input_format == "native" and impl != "naive" and device.type == "cpu"
    ):
        return torch.channels_last
    return torch.contiguous_format


def _check_options(input_format: str, **values: int) -> None:
    """Raise a UserError naming the first argument that is not a positive integer, or a bad input format."""
    if input_format not in get_args(InputFormat):
        raise UserError(f"bench: input_format={input_format!r} is not one of {get_args(InputFormat)}")
    for field, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"bench: {field}={value!r} is not a positive integer (e.g. {field}=5)")


class _PairTimer:
    """The naive and the fast copy of one module, same weights and input values, ready to be timed in rounds."""

    def __init__(
        self,
        build: Callable[[Impl], nn.Module],
        *,
        channels: int,
        batch: int,
        size: int,
        warmup: int,
        device: str | torch.device,
        input_format: InputFormat,
        seed: int,
    ) -> None:
        self.device = dev = torch.device(device)
        self.batch = batch
        torch.manual_seed(seed)
        self.models: dict[str, nn.Module] = {"naive": build("naive").to(dev), "fast": build("fast").to(dev)}
        self.models["fast"].load_state_dict(self.models["naive"].state_dict())
        values = torch.randn(batch, channels, size, size, device=dev)
        self.inputs = {
            impl: values.contiguous(memory_format=_input_format(impl, input_format, dev)).requires_grad_(True)
            for impl in self.models
        }
        self.grads: dict[str, Tensor] = {}
        for impl, model in self.models.items():
            model.train()
            out = _train_step(model, self.inputs[impl])
            self.grads[impl] = torch.randn_like(out)  # same layout as the output
            for _ in range(warmup):
                _train_step(model, self.inputs[impl], self.grads[impl])
            model.eval()
            for _ in range(warmup):
                _eval_step(model, self.inputs[impl])

    def round(self, index: int) -> dict[str, float]:
        """Seconds of one training step and one inference of each impl (order alternates with ``index``)."""
        order = _IMPLS if index % 2 == 0 else _IMPLS[::-1]
        seconds: dict[str, float] = {}
        for impl in order:
            step = functools.partial(_train_step, self.models[impl].train(), self.inputs[impl], self.grads[impl])
            seconds[f"{impl}_train"] = _timed(step, self.device)
        for impl in order:
            infer = functools.partial(_eval_step, self.models[impl].eval(), self.inputs[impl])
            seconds[f"{impl}_eval"] = _timed(infer, self.device)
        return seconds

    def summary(self) -> dict[str, Any]:
        """Max output difference fast vs naive, and the module's params and fvcore MACs per image."""
        with torch.no_grad():
            diff = self.models["naive"](self.inputs["naive"]) - self.models["fast"](self.inputs["fast"])
        return {
            "params": sum(p.numel() for p in self.models["naive"].parameters()),
            "macs": _macs(self.models["naive"], self.inputs["naive"]),
            "max_abs_diff": float(diff.abs().max()),
        }


def _ratio_fields(ips: dict[tuple[str, str, str], float], runtimes: Sequence[str]) -> dict[str, float]:
    """Headline images/s and speed-ups from per-(runtime, impl, mode) images/s (see :func:`bench_cases`)."""
    engine = runtimes[-1]
    row: dict[str, float] = {}
    for mode in _MODES:
        row[f"naive_{mode}_ips"] = ips[(runtimes[0], "naive", mode)]
        row[f"fast_{mode}_ips"] = ips[(engine, "fast", mode)]
        row[f"{mode}_speedup"] = row[f"fast_{mode}_ips"] / row[f"naive_{mode}_ips"]
        row[f"{mode}_ops_speedup"] = ips[(engine, "fast", mode)] / ips[(engine, "naive", mode)]
        for runtime in runtimes:
            for impl in _IMPLS:
                row[f"{impl}_{mode}_ips_{runtime}"] = ips[(runtime, impl, mode)]
    return row


def _impl_mode(key: str) -> tuple[str, str]:
    """``"naive_train"`` -> ``("naive", "train")`` (the keys of :meth:`_PairTimer.round`)."""
    impl, mode = key.split("_")
    return impl, mode


def _row(
    name: str,
    channels: int,
    size: int,
    batch: int,
    summary: dict[str, Any],
    ratios: dict[str, float],
    runtime: str,
    input_format: str,
    device: str,
) -> dict[str, Any]:
    """One benchmark row (the schema :func:`bench_pair` and :func:`bench_cases` share)."""
    return {
        "block": name,
        "channels": channels,
        "size": size,
        "batch": batch,
        **summary,
        **ratios,
        "runtime": runtime,
        "input_format": input_format,
        "device": device,
        "threads": torch.get_num_threads(),
    }


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
    """Time ``build("naive")`` against ``build("fast")`` (same weights, same input values), interleaved, here.

    Runs in the calling process, under whatever malloc it has (``runtime: "current"``), so the speed-ups are
    the ops' alone; :func:`bench_cases` also compares runtimes. The training step is forward + backward of a
    fixed output gradient (as if it came from the rest of the network, in the output's memory format)
    including the input gradient; eval is a ``no_grad`` forward in eval mode. ``input_format="native"`` gives
    each impl the layout a network built from it carries between blocks (NCHW for naive, channels_last for
    fast on CPU, where the fast forms produce channels_last); ``"nchw"`` or ``"channels_last"`` force one
    layout on both (then the fast block pays the conversion).

    Returns one row: images/s of the training step and of inference for both, the speed-up ratios
    fast/naive, the max output difference and the block's params and fvcore MACs (per image).

    Example:
        >>> from igcnas.bench.ops import igc_l24m2_block
        >>> row = bench_pair("igc", lambda i: igc_l24m2_block(impl=i), channels=48, batch=2, size=8, repeats=1)
        >>> row["block"], row["max_abs_diff"] < 1e-4
        ('igc', True)
    """
    _check_options(input_format, batch=batch, size=size, repeats=repeats, warmup=warmup + 1)
    timer = _PairTimer(build, channels=channels, batch=batch, size=size, warmup=warmup, device=device,
                       input_format=input_format, seed=seed)
    samples: dict[str, list[float]] = {}
    for index in range(repeats):
        for key, seconds in timer.round(index).items():
            samples.setdefault(key, []).append(seconds)
    ips = {("current", *_impl_mode(key)): batch / statistics.median(times) for key, times in samples.items()}
    return _row(name, channels, size, batch, timer.summary(), _ratio_fields(ips, ["current"]), "current",
                input_format, str(timer.device))


# ---------------------------------------------------------------------------------------------------------------
# Side by side under two malloc runtimes: one worker process each, rounds alternating between them


@dataclass(frozen=True)
class CaseRef:
    """A picklable benchmark case: a reference block (``kind="block"``, a :data:`BLOCKS` name) or a zoo network."""

    kind: Literal["block", "zoo"]
    name: str

    def build(self, impl: Impl) -> nn.Module:
        """The module of this case for ``impl``."""
        if self.kind == "block":
            return _block_case(self.name).build(impl)
        from igcnas.nn.network import build
        from igcnas.zoo import get_zoo

        return build(get_zoo(self.name).spec, impl=impl)

    def input_shape(self, size: int) -> tuple[int, int]:
        """(channels, spatial size) of the input (a zoo network's own; a block's at ``size``)."""
        if self.kind == "block":
            return _block_case(self.name).channels, size
        from igcnas.zoo import get_zoo

        shape = get_zoo(self.name).spec.input_shape
        return shape[0], shape[1]


def _block_case(name: str) -> BlockCase:
    """The :data:`BLOCKS` entry called ``name`` (UserError listing the known ones)."""
    for case in BLOCKS:
        if case.name == name:
            return case
    raise UserError(f"bench: unknown block {name!r}; known: {', '.join(c.name for c in BLOCKS)}")


def _runtime_worker(conn: Any, runtime: Runtime, threads: int) -> None:
    """Worker process: set up ``runtime``, then serve setup/round/summary requests until told to stop."""
    import signal

    from igcnas._allocator import allocator_status, tune_cpu_allocator

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops the workers
    if runtime == "tuned":
        tune_cpu_allocator()
    torch.set_num_threads(threads)
    timer: _PairTimer | None = None
    while True:
        command, argument = conn.recv()
        if command == "stop":
            break
        try:
            if command == "setup":
                timer = None  # free the previous case's tensors before building the next one
                case, options = argument
                channels, size = case.input_shape(options.pop("size"))
                timer = _PairTimer(case.build, channels=channels, size=size, **options)
                reply: Any = allocator_status() if runtime == "tuned" else "system"
            elif command == "round":
                assert timer is not None
                reply = timer.round(argument)
            else:
                assert timer is not None
                reply = timer.summary()
            conn.send(("ok", reply))
        except Exception as error:  # reported to the parent, which raises it there
            conn.send(("user-error" if isinstance(error, UserError) else "error", f"{type(error).__name__}: {error}"))


class _Workers:
    """One spawned worker process per runtime (torch threads as in the parent)."""

    def __init__(self, runtimes: Sequence[Runtime]) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.pipes: dict[str, Any] = {}
        self.processes: list[Any] = []
        try:
            for runtime in runtimes:
                parent, child = context.Pipe()
                process = context.Process(
                    target=_runtime_worker, args=(child, runtime, torch.get_num_threads()), daemon=True
                )
                process.start()
                child.close()
                self.pipes[runtime] = parent
                self.processes.append(process)
        except BaseException:
            self.close()  # the workers already started
            raise

    def ask(self, runtime: str, command: str, argument: Any = None) -> Any:
        """Send one request to ``runtime``'s worker and return its reply (RuntimeError if it failed or died)."""
        pipe = self.pipes[runtime]
        try:
            pipe.send((command, argument))
            status, reply = pipe.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError) as error:
            raise RuntimeError(f"bench: the {runtime} worker process died ({error!r}); out of memory?") from error
        if status == "user-error":  # a bad argument: the same one-line error as in-process
            raise UserError(str(reply).split(": ", 1)[1])
        if status != "ok":
            raise RuntimeError(f"bench: the {runtime} worker failed: {reply}")
        return reply

    def close(self) -> None:
        """Stop the workers."""
        for pipe in self.pipes.values():
            with contextlib.suppress(OSError, BrokenPipeError):
                pipe.send(("stop", None))
        for process in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()


def bench_cases(
    cases: Sequence[CaseRef],
    *,
    batch: int = 64,
    size: int = 32,
    repeats: int = 5,
    warmup: int = 2,
    device: str | torch.device = "cpu",
    input_format: InputFormat = "native",
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Naive vs fast for each case, under the system malloc and igcnas's tuned malloc, side by side (CPU).

    Two worker processes, one per runtime (malloc settings are process-wide and cannot be undone), each
    holding the naive and the fast copy; the rounds alternate between the workers and, inside a worker,
    between the impls. Per case the row gives images/s for every (runtime, impl, mode) and:

    * ``naive_*_ips``: the naive reference under the system malloc (a plain PyTorch script);
    * ``fast_*_ips``: igcnas's fast ops under the tuned malloc (what ``igcnas train``/``search`` run);
    * ``*_speedup``: fast / naive of those two: the training engine against the reference;
    * ``*_ops_speedup``: fast / naive both under the tuned malloc: the ops alone.

    On a non-CPU device there is one runtime (the parent process) and both speed-ups are the ops'.

    The workers are started with ``spawn``: a script that calls this must guard its entry point with
    ``if __name__ == "__main__":`` (the command line tools do).

    Example:
        >>> rows = bench_cases([CaseRef("block", "IGC-L24M2")], batch=2, size=8, repeats=1)  # doctest: +SKIP
    """
    _check_options(input_format, batch=batch, size=size, repeats=repeats, warmup=warmup + 1)
    dev = torch.device(device)
    if dev.type != "cpu":
        rows = []
        for case in cases:
            channels, case_size = case.input_shape(size)
            row = bench_pair(case.name, case.build, channels=channels, batch=batch, size=case_size,
                             repeats=repeats, warmup=warmup, device=dev, input_format=input_format, seed=seed)
            rows.append(row)
        return rows
    workers = _Workers(RUNTIMES)
    rows = []
    try:
        for case in cases:
            options = {"batch": batch, "size": size, "warmup": warmup, "device": "cpu",
                       "input_format": input_format, "seed": seed}
            allocator = {runtime: workers.ask(runtime, "setup", (case, dict(options))) for runtime in RUNTIMES}
            samples: dict[tuple[str, str, str], list[float]] = {}
            for index in range(repeats):
                for runtime in RUNTIMES if index % 2 == 0 else RUNTIMES[::-1]:
                    for key, seconds in workers.ask(runtime, "round", index).items():
                        samples.setdefault((runtime, *_impl_mode(key)), []).append(seconds)
            ips = {key: batch / statistics.median(times) for key, times in samples.items()}
            channels, case_size = case.input_shape(size)
            label = f"naive: system malloc, fast: {allocator['tuned']} malloc"
            rows.append(_row(case.name, channels, case_size, batch, workers.ask("tuned", "summary"),
                             _ratio_fields(ips, RUNTIMES), label, input_format, "cpu"))
    finally:
        workers.close()
    return rows


def bench_blocks(
    *,
    batch: int = 64,
    size: int = 32,
    repeats: int = 5,
    device: str | torch.device = "cpu",
    input_format: InputFormat = "native",
) -> list[dict[str, Any]]:
    """Benchmark the IGC-L24M2, IGCV2*-C416 and IGCV3-D blocks, naive vs fast (one row each, :func:`bench_cases`).

    Example:
        >>> rows = bench_blocks(batch=2, size=8, repeats=1)  # doctest: +SKIP
        >>> [r["block"] for r in rows]  # doctest: +SKIP
        ['IGC-L24M2', 'IGCV2*-C416', 'IGCV3-D']
    """
    return bench_cases([CaseRef("block", case.name) for case in BLOCKS], batch=batch, size=size,
                       repeats=repeats, device=device, input_format=input_format)


NETWORKS: tuple[str, ...] = ("IGC-L24M2-D20", "IGCV2-C64-D20", "IGCV3-D-CIFAR")


def bench_networks(
    names: Sequence[str] = NETWORKS,
    *,
    batch: int = 32,
    repeats: int = 3,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Whole zoo networks, ``build(spec, impl="naive")`` vs the default build, one row each (:func:`bench_cases`).

    The input is an NCHW image batch for both (the fast network converts it in its first layer).

    Example:
        >>> rows = bench_networks(["IGC-L24M2-D20"], batch=2, repeats=1)  # doctest: +SKIP
    """
    return bench_cases([CaseRef("zoo", name) for name in names], batch=batch, repeats=repeats, device=device,
                       input_format="nchw")


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
    return render_table(shown, TABLE_COLUMNS) + "\n" + LEGEND


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
