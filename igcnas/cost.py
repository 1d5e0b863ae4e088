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
from dataclasses import dataclass

import torch

from igcnas.arch.spec import ArchSpec
from igcnas.nn.network import Cost, build, network_cost

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
    "aten::mean",
    "aten::dropout",
    "aten::feature_dropout",
)
# shape-only ops (no arithmetic) fvcore may list as unsupported; harmless
_SHAPE_OPS = {
    "aten::view", "aten::reshape", "aten::transpose", "aten::permute", "aten::contiguous", "aten::flatten",
    "aten::size", "aten::index_select", "aten::chunk", "aten::cat", "aten::unflatten", "aten::expand",
    "aten::clone", "aten::t", "aten::numpy_T", "aten::select", "aten::slice", "aten::unsqueeze", "aten::squeeze",
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
        >>> count(ArchSpec.simple("DW+PW", widths=(16, 32), depths=(1, 1))).params > 0
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


@dataclass(frozen=True)
class LayerCost:
    """Cost of one stage of a network (stem, one block, head conv, classifier), split by what it counts.

    ``weights``: conv/linear weights of the body (no bias); ``shortcut``: weights of a projection shortcut;
    ``bn``: BatchNorm gamma + beta; ``bias``: the classifier bias; ``flops``: multiply-adds per image.
    """

    name: str
    role: str  # "stem" | "block" | "head" | "classifier"
    in_channels: int
    out_channels: int
    stride: int
    out_size: tuple[int, int]
    weights: int
    shortcut: int
    bn: int
    bias: int
    flops: int
    detail: str = ""

    @property
    def params(self) -> int:
        """All trainable parameters of the layer (the budget convention)."""
        return self.weights + self.shortcut + self.bn + self.bias


def layer_costs(spec: ArchSpec) -> list[LayerCost]:
    """Closed-form cost of the stem, every block, the head conv and the classifier, in network order.

    The ``params``/``flops`` of the rows add up to :func:`count` exactly.

    Example:
        >>> from igcnas.arch import ArchSpec
        >>> spec = ArchSpec.simple("DW+PW", widths=(16, 32), depths=(1, 1))
        >>> sum(r.params for r in layer_costs(spec)) == count(spec).params
        True
    """
    from igcnas.arch.spec import plan_block
    from igcnas.nn.network import conv_out

    channels, h, w = spec.input_shape
    stem = spec.stem
    h, w = conv_out(h, stem.kernel_size, stem.stride), conv_out(w, stem.kernel_size, stem.stride)
    weights = stem.kernel_size**2 * channels * stem.width
    detail = f"CONV {stem.kernel_size}x{stem.kernel_size}/{stem.stride}" + (" + maxpool 3x3/2" if stem.pool else "")
    rows = [LayerCost("stem", "stem", channels, stem.width, stem.stride, (h, w), weights, 0, 2 * stem.width, 0,
                      weights * h * w, detail)]
    if stem.pool:
        h, w = conv_out(h, 3, 2), conv_out(w, 3, 2)
    width = stem.width
    for index, stage in enumerate(spec.stages):
        block = spec.block_of(index)
        for block_index in range(stage.depth):
            plan = plan_block(spec, index, width, first=block_index == 0)
            widths = plan.chain.widths()
            body = flops = bn = 0
            bh, bw = h, w
            for k, kernel in enumerate(plan.chain.kernels):
                stride = plan.stride if k == plan.stride_index else 1
                bh, bw = conv_out(bh, kernel.size, stride), conv_out(bw, kernel.size, stride)
                kernel_weights = kernel.params(widths[k])
                body += kernel_weights
                flops += kernel_weights * bh * bw
                if block.bn_after(k):
                    bn += 2 * widths[k + 1]
            shortcut = 0
            if plan.projection:
                shortcut = plan.in_channels * plan.out_channels // plan.projection_groups
                flops += shortcut * conv_out(h, 1, plan.stride) * conv_out(w, 1, plan.stride)
                bn += 2 * plan.out_channels
            kind = "identity" if plan.identity else ("projection" if plan.projection else "none")
            rows.append(LayerCost(
                f"stages.{index}.{block_index}", "block", plan.in_channels, plan.out_channels, plan.stride, (bh, bw),
                body, shortcut, bn, 0, flops, f"{plan.chain.describe()}; shortcut {kind}",
            ))
            h, w = bh, bw
            width = stage.width
    if spec.head.width is not None:
        weights = width * spec.head.width
        rows.append(LayerCost("head", "head", width, spec.head.width, 1, (h, w), weights, 0, 2 * spec.head.width, 0,
                              weights * h * w, "PW 1x1"))
        width = spec.head.width
    weights = width * spec.num_classes
    rows.append(LayerCost("classifier", "classifier", width, spec.num_classes, 1, (1, 1), weights, 0, 0,
                          spec.num_classes, weights, "global average pool + FC"))
    return rows


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
