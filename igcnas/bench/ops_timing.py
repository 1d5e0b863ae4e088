"""Measurement of the ops benchmark: naive vs fast copies of one module timed interleaved.

:class:`_PairTimer` holds the naive and the fast copy of a module (same weights, same input values, warmed up)
and times one training step and one inference of each per round, device-synchronized; :func:`_row` and
:func:`_ratio_fields` build the row :mod:`igcnas.bench.ops_workers` returns from those rounds, with the module's
params and fvcore MACs.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from igcnas.errors import UserError
from igcnas.nn.ops import Impl

__all__ = ["InputFormat"]


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


#: block input layout: ``native`` (what a network of the impl's blocks carries), ``nchw`` or ``channels_last``
InputFormat = Literal["native", "nchw", "channels_last"]
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
    """The naive and the fast copy of one module, same weights and input values, ready to be timed in rounds.

    The training step computes the input's gradient too with ``input_grad`` (a block or a stage inside a network);
    not for a network's own input (the images), as in training."""

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
        input_grad: bool = True,
    ) -> None:
        self.device = dev = torch.device(device)
        self.batch = batch
        torch.manual_seed(seed)
        self.models: dict[str, nn.Module] = {"naive": build("naive").to(dev), "fast": build("fast").to(dev)}
        self.models["fast"].load_state_dict(self.models["naive"].state_dict())
        values = torch.randn(batch, channels, size, size, device=dev)
        self.inputs = {
            impl: values.contiguous(memory_format=_input_format(impl, input_format, dev)).requires_grad_(input_grad)
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
        """Seconds of one training step and one inference of each impl (order alternates with ``index``), after
        one untimed inference of the impl timed first: a round starts after other processes' rounds, with this
        one's caches cold and its threads asleep, and that cost would fall on the first impl alone (the naive one
        in most rounds of an odd count). An inference, not a training step, so that both copies' BatchNorm
        statistics stay equal."""
        order = _IMPLS if index % 2 == 0 else _IMPLS[::-1]
        _eval_step(self.models[order[0]].eval(), self.inputs[order[0]])
        _sync(self.device)
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
        from igcnas.nn.tune import last_forms

        used = last_forms(self.models["fast"])  # sparse convs per mode; BatchNorms in training only
        forms = "; ".join(f"{mode} " + ", ".join(f"{kind} {form}" for kind, form in sorted(kinds.items()))
                          for mode, kinds in sorted(used.items(), key=lambda kv: kv[0] != "train"))
        return {
            "forms": forms,
            "params": sum(p.numel() for p in self.models["naive"].parameters()),
            "macs": _macs(self.models["naive"], self.inputs["naive"]),
            "max_abs_diff": float(diff.abs().max()),
        }


def _ratio_fields(ips: dict[tuple[str, str, str], float], runtimes: Sequence[str]) -> dict[str, float]:
    """Headline images/s and speed-ups from per-(runtime, impl, mode) images/s (see ``bench_cases``)."""
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
    """One benchmark row (``ops_workers.bench_cases``; ``bench_pair`` returns the same)."""
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

