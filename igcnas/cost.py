"""Parameter and FLOP budgets: closed-form counts, confirmed by fvcore.

What the budget counts (one convention everywhere, see :mod:`igcnas.nn.network`):
  * **params** — every trainable parameter: conv weights, BatchNorm weight and bias, classifier weight and bias.
  * **FLOPs** — multiply-adds of convolutions and the classifier (fvcore's convention: one multiply-add = one
    FLOP), on an eval-mode model with one input image. BatchNorm, ReLU, pooling, channel shuffles and residual
    additions count 0: BN folds into the preceding conv at inference and the papers count convolutions only.

fvcore is told to ignore exactly those skipped ops (no per-op warnings); any *other* op it cannot count makes
:func:`fvcore_cost` raise, so a new layer type can never slip through a budget uncounted.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections import OrderedDict

import torch

from igcnas.arch.spec import ArchSpec
from igcnas.nn.network import Cost, LayerCost, build, layer_costs, network_cost

__all__ = [
    "Cost",
    "LayerCost",
    "count",
    "count_convention",
    "fvcore_cost",
    "layer_costs",
    "COUNTED_OPS",
    "SKIPPED_OPS",
    "clear_cache",
]

# ops whose multiply-adds the budget counts (fvcore's own handles)
COUNTED_OPS: tuple[str, ...] = (
    "aten::_convolution",
    "aten::linear",
    "aten::addmm",
    "aten::matmul",
    "aten::mm",
    "aten::bmm",
    "aten::einsum",
)
# ops the budget deliberately counts as 0 (see the module docstring)
SKIPPED_OPS: tuple[str, ...] = (
    "aten::batch_norm",
    "aten::adaptive_avg_pool2d",
    "aten::max_pool2d",
    "aten::avg_pool2d",
    "aten::relu",
    "aten::relu_",
    "aten::add",
    "aten::add_",
    "aten::sum",
    "aten::mean",
    "aten::dropout",
    "aten::feature_dropout",
)
# shape-only ops (no arithmetic) fvcore may list as unsupported; harmless
_SHAPE_OPS = {
    "aten::view", "aten::reshape", "aten::transpose", "aten::permute", "aten::contiguous", "aten::flatten",
    "aten::size", "aten::index_select", "aten::chunk", "aten::cat", "aten::unflatten", "aten::expand",
    "aten::clone", "aten::repeat", "aten::t", "aten::numpy_T", "aten::select", "aten::slice", "aten::unsqueeze", "aten::squeeze",
    "aten::pixel_shuffle", "aten::channel_shuffle", "aten::to", "aten::as_strided", "aten::detach",
}

_CACHE: OrderedDict[tuple[str, str], Cost] = OrderedDict()
_CACHE_SIZE = 4096
_LOCK = threading.Lock()


def _cached(key: tuple[str, str]) -> Cost | None:
    """Look up a cached count."""
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    return None


def _store(key: tuple[str, str], value: Cost) -> Cost:
    """Cache a count (LRU)."""
    with _LOCK:
        _CACHE[key] = value
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return value


def clear_cache() -> None:
    """Forget every cached count."""
    with _LOCK:
        _CACHE.clear()


def count(spec: ArchSpec) -> Cost:
    """Closed-form params/FLOPs of a spec (microseconds; cached by spec id).

    Example:
        >>> from igcnas.arch import ArchSpec
        >>> from igcnas.nn.network import build
        >>> spec = ArchSpec.simple("DW+PW", widths=(16, 32), depths=(1, 1))
        >>> count(spec)
        Cost(params=2586, flops=1151296)
        >>> count(spec).params == sum(p.numel() for p in build(spec).parameters())
        True
    """
    key = (spec.id, "closed")
    return _cached(key) or _store(key, network_cost(spec))


def fvcore_cost(spec: ArchSpec) -> Cost:
    """Params and FLOPs counted by fvcore on the eval-mode reference (naive) build; cached by spec id."""
    key = (spec.id, "fvcore")
    hit = _cached(key)
    if hit is not None:
        return hit
    from fvcore.nn import FlopCountAnalysis, parameter_count
    from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS

    model = build(spec, impl="naive").eval()
    inputs = torch.zeros(1, *spec.input_shape)
    logger = logging.getLogger("fvcore")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            analysis = FlopCountAnalysis(model, inputs).clear_op_handles()
            analysis.set_op_handle(**{name: _DEFAULT_SUPPORTED_OPS[name] for name in COUNTED_OPS})
            analysis.set_op_handle(**dict.fromkeys(SKIPPED_OPS))
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
            flops = int(analysis.total())
            unsupported = set(analysis.unsupported_ops()) - _SHAPE_OPS
    finally:
        logger.setLevel(previous)
    if unsupported:
        raise RuntimeError(
            f"fvcore met ops the budget convention does not cover: {sorted(unsupported)}; add them to "
            "igcnas.cost.SKIPPED_OPS (if free) or give them a flop handle"
        )
    params = int(parameter_count(model)[""])
    return _store(key, Cost(params, flops))


def count_convention(
    spec: ArchSpec,
    *,
    bn: bool,
    fc: bool,
    stem: bool,
    fc_bias: bool = True,
    fc_classes: int | None = None,
) -> Cost:
    """Params and FLOPs under a paper's counting convention, in closed form.

    Params: every conv weight (blocks, projection shortcuts, head conv; the stem only with ``stem``), plus BN
    gamma/beta with ``bn``, plus the classifier with ``fc`` (its bias with ``fc_bias``; ``fc_classes`` outputs
    instead of the spec's, e.g. IGCV2 counts a 10-class FC on CIFAR-100 nets). FLOPs: multiply-adds of every conv
    (stem included) and of the classifier with ``fc_classes`` outputs, as all four papers count; the flags only
    select what the parameter count includes. ``bn=True, fc=True, stem=True`` is :func:`count`.

    Example:
        >>> from igcnas.arch import ArchSpec
        >>> spec = ArchSpec.simple("DW+PW", widths=(16, 32), depths=(1, 1))
        >>> count_convention(spec, bn=True, fc=True, stem=True) == count(spec)
        True
    """
    classes = spec.num_classes if fc_classes is None else fc_classes
    params = flops = 0
    for row in layer_costs(spec):
        if row.role == "classifier":
            fc_weights = row.in_channels * classes
            flops += fc_weights
            if fc:
                params += fc_weights + (classes if fc_bias else 0)
            continue
        flops += row.flops
        if row.role == "stem" and not stem:
            continue
        params += row.weights + row.shortcut + (row.bn if bn else 0)
    return Cost(params, flops)
