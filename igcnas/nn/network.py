"""``build(spec) -> nn.Module`` and the closed-form cost of every block, beside the modules they describe.

Budget convention (also what :mod:`igcnas.cost` asks fvcore to count):
  * params: every trainable parameter — conv weights (no conv bias), BatchNorm weight and bias, the classifier's
    weight and bias. BN running statistics are buffers and are not counted.
  * FLOPs: multiply-adds of convolutions and the classifier (one multiply-add = one FLOP), as the papers count.
    BatchNorm (foldable into the conv at inference), ReLU, pooling, channel shuffles and residual additions are
    not counted.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace

import torch
from torch import nn

from igcnas.arch.plan import BlockPlan
from igcnas.arch.spec import ArchSpec, BlockSpec
from igcnas.nn.chain_ops import FusedSequential, fuse_chains, hooked, run_modules
from igcnas.nn.norm import BatchNormAct2d, batch_norm_act
from igcnas.nn.ops import sparse_conv
from igcnas.nn.plan import _is_exporting

__all__ = ["Cost", "LayerCost", "Block", "Network", "NetworkPart", "build", "block_cost", "layer_costs", "network_cost",
           "conv_out", "closing_takes_the_sum", "network_parts", "run_in_runs", "sum_in_closing_bn"]


@dataclass(frozen=True)
class Cost:
    """Parameters and FLOPs (multiply-adds) of a module."""

    params: int
    flops: int

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.flops + other.flops)


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


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Output size of a conv with padding k//2."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


class Block(nn.Module):
    """One block: the planned chain of sparse kernels with BN/ReLU, plus identity or projection shortcut."""

    def __init__(self, plan: BlockPlan, block: BlockSpec, *, impl: str = "auto") -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        widths = plan.chain.widths()
        last = len(plan.chain.kernels) - 1
        # without a shortcut or summation fusion, the block's ReLU directly follows its last BN: fuse the two
        fold_relu = (impl != "naive" and block.post_relu and not plan.identity and not plan.projection
                     and plan.fusion == 1 and block.bn_after(last) and last not in block.relu_after)
        for index, kernel in enumerate(plan.chain.kernels):
            stride = plan.stride if index == plan.stride_index else 1
            layers[f"conv{index}"] = sparse_conv(
                widths[index],
                widths[index + 1],
                kernel.size,
                stride=stride,
                groups=kernel.resolved_groups(widths[index]),
                shuffle_groups=kernel.shuffle_in,
                impl=impl,  # type: ignore[arg-type]
            )
            relu = index in block.relu_after or (fold_relu and index == last)
            if block.bn_after(index):  # BN (+ ReLU), fused into one module where that is faster
                for suffix, module in batch_norm_act(widths[index + 1], relu=relu, impl=impl):
                    layers[f"{suffix}{index}"] = module
            elif relu:
                layers[f"relu{index}"] = nn.ReLU(inplace=True)
        body = nn.Sequential(layers)
        # runs of grouped 1x1 convs (IGCV2) as one native op; same children and names (state_dict unchanged)
        self.body = body if impl == "naive" else fuse_chains(body)
        self.identity = plan.identity
        self.shortcut: nn.Module | None = None
        if plan.projection:
            self.shortcut = nn.Sequential(
                nn.Conv2d(plan.in_channels, plan.out_channels, 1, stride=plan.stride, groups=plan.projection_groups,
                          bias=False),
                nn.BatchNorm2d(plan.out_channels),
            )
        self.post_relu = block.post_relu and not fold_relu  # a folded ReLU runs in the last BN module
        self.fusion = plan.fusion
        # a shortcut after a closing BN: the BN, the sum and the ReLU after it run as one op (BatchNormAct2d; the
        # naive build's closing nn.BatchNorm2d never takes it)
        self.add_in_bn = (plan.fusion == 1 and (plan.identity or plan.projection)
                          and closing_takes_the_sum(self.body))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.add_in_bn and not torch.jit.is_scripting():
            return self._forward_add_in_bn(x)
        return self._forward_plain(x)

    @torch.jit.unused
    def plain(self) -> bool:
        """Whether the block is its body alone (no shortcut, summation fusion or ReLU after it) and no hook would
        see the block or its body run: then a network may run the body's modules in one list with its
        neighbours' (:meth:`Network.forward`)."""
        return (not self.identity and self.shortcut is None and self.fusion == 1 and not self.post_relu
                and not hooked(self) and not hooked(self.body))

    def _forward_plain(self, x: torch.Tensor) -> torch.Tensor:
        """Body, then the shortcut sum, then the block's ReLU (the naive build's graph; scripting takes it)."""
        if self.fusion > 1:  # summation fusion: the same input on every partition, partitions summed
            y = self.body(x.repeat(1, self.fusion, 1, 1))
            y = y.unflatten(1, (self.fusion, y.shape[1] // self.fusion)).sum(dim=1)
        else:
            y = self.body(x)
        if self.identity:
            y = y + x
        elif self.shortcut is not None:
            y = y + self.shortcut(x)
        return torch.relu(y) if self.post_relu else y

    @torch.jit.unused
    def _forward_add_in_bn(self, x: torch.Tensor) -> torch.Tensor:
        """The body up to its closing BN, then that BN with the shortcut sum and the block's ReLU in one op (the
        plain forward where :func:`closing_takes_the_sum` does not hold now)."""
        if not closing_takes_the_sum(self.body):
            return self._forward_plain(x)
        residual = x if self.shortcut is None else self.shortcut(x)
        return sum_in_closing_bn(self.body, x, residual, relu=self.post_relu)


def closing_takes_the_sum(body: nn.Sequential) -> bool:
    """Whether ``body``'s last module is (still) a BatchNormAct2d without ReLU and no hook would see the body or
    that module run alone: then :func:`sum_in_closing_bn` may run it with a residual (its hooks would be skipped).
    A module replaced after the build (synflow's BN removal, SyncBatchNorm conversion) or a hook keeps the plain
    path."""
    closing = body[-1]
    return isinstance(closing, BatchNormAct2d) and not closing.relu and not hooked(closing) and not hooked(body)


def sum_in_closing_bn(body: nn.Sequential, x: torch.Tensor, residual: torch.Tensor, *, relu: bool) -> torch.Tensor:
    """``act(body(x) + residual)`` with the sum and the ReLU (``relu``) in the closing BatchNormAct2d's op
    (:meth:`~igcnas.nn.norm.BatchNormAct2d.forward_add`); call it where :func:`closing_takes_the_sum` holds."""
    *layers, closing = list(body)
    if isinstance(body, FusedSequential):
        y = body._fused_forward(x, stop=len(layers))
    else:
        y = x
        for layer in layers:
            y = layer(y)
    assert isinstance(closing, BatchNormAct2d)
    return closing.forward_add(y, residual, relu=relu)


def block_cost(plan: BlockPlan, block: BlockSpec, height: int, width: int) -> tuple[LayerCost, int, int]:
    """Closed-form cost of one block at an input resolution; returns (its row, out height, out width)."""
    widths = plan.chain.widths()
    body = flops = bn = 0
    h, w = height, width
    for index, kernel in enumerate(plan.chain.kernels):
        stride = plan.stride if index == plan.stride_index else 1
        h, w = conv_out(h, kernel.size, stride), conv_out(w, kernel.size, stride)
        weights = kernel.params(widths[index])
        body += weights
        flops += weights * h * w
        if block.bn_after(index):
            bn += 2 * widths[index + 1]
    shortcut = 0
    if plan.projection:
        shortcut = plan.in_channels * plan.out_channels // plan.projection_groups
        flops += shortcut * conv_out(height, 1, plan.stride) * conv_out(width, 1, plan.stride)
        bn += 2 * plan.out_channels
    kind = "identity" if plan.identity else ("projection" if plan.projection else "none")
    row = LayerCost("", "block", plan.in_channels, plan.out_channels, plan.stride, (h, w), body, shortcut, bn, 0,
                    flops, f"{plan.chain.describe()}; shortcut {kind}")
    return row, h, w


class Network(nn.Module):
    """Stem, stages of blocks, head: the network an :class:`ArchSpec` describes."""

    def __init__(self, spec: ArchSpec, *, impl: str = "auto") -> None:
        super().__init__()
        channels = spec.input_shape[0]
        stem = spec.stem
        stem_layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv2d(channels, stem.width, stem.kernel_size, stride=stem.stride,
                           padding=stem.kernel_size // 2, bias=False),
        )
        stem_layers.update(batch_norm_act(stem.width, relu=True, impl=impl))
        if stem.pool:
            stem_layers["pool"] = nn.MaxPool2d(3, stride=2, padding=1)
        self.stem = nn.Sequential(stem_layers)
        stages: list[nn.Module] = []
        width = stem.width
        for index, stage in enumerate(spec.stages):
            blocks = []
            for block_index in range(stage.depth):
                blocks.append(Block(spec.block_plan(index, block_index), spec.block_of(index), impl=impl))
                width = stage.width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        head: OrderedDict[str, nn.Module] = OrderedDict()
        if spec.head.width is not None:
            head["conv"] = nn.Conv2d(width, spec.head.width, 1, bias=False)
            head.update(batch_norm_act(spec.head.width, relu=True, impl=impl))
            width = spec.head.width
        head["pool"] = nn.AdaptiveAvgPool2d(1)
        head["flatten"] = nn.Flatten()
        if spec.head.dropout > 0:
            head["dropout"] = nn.Dropout(spec.head.dropout)
        self.head = nn.Sequential(head)
        self.classifier = nn.Linear(width, spec.num_classes)
        self.spec_id = spec.id
        self.channels_last_input = impl != "naive"  # a fast build: also what runs blocks in one list (_in_runs)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            x = self._prepare(x)
            if self._in_runs():
                return self.classifier(self.head(self._body_in_runs(x)))
        return self.classifier(self.head(self.stages(self.stem(x))))

    @torch.jit.unused
    def _in_runs(self) -> bool:
        """Whether :meth:`_body_in_runs` may run the stem and stages: a fast build (``channels_last_input``), not
        tracing or exporting, no hook on the stages container that would not see it run, and the stem and every
        stage still ``nn.Sequential`` containers."""
        return (self.channels_last_input and not hooked(self.stages)
                and _runs_allowed([self.stem, *self.stages]))

    @torch.jit.unused
    def _body_in_runs(self, x: torch.Tensor) -> torch.Tensor:
        """The stem and the stages through :func:`run_in_runs`."""
        return run_in_runs(x, stem=self.stem, stages=list(self.stages))

    @torch.jit.unused
    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The fast build's CPU input in channels_last, so the stem's conv, BN and ReLU (and everything after them)
        run in it without a conversion inside the network; the input as it is when tracing or exporting."""
        if (not self.channels_last_input or x.dim() != 4 or x.device.type != "cpu" or torch.jit.is_tracing()
                or _is_exporting()):
            return x
        return x.contiguous(memory_format=torch.channels_last)


def _runs_allowed(containers: list[nn.Module]) -> bool:
    """Whether :func:`run_in_runs` may run ``containers``: not tracing or exporting, and each an ``nn.Sequential``
    (not replaced since the build)."""
    return (not (torch.jit.is_tracing() or _is_exporting())
            and all(isinstance(container, nn.Sequential) for container in containers))


def run_in_runs(x: torch.Tensor, *, stem: nn.Sequential | None, stages: list[nn.Module]) -> torch.Tensor:
    """``stages(stem(x))`` with the modules of the stem and of consecutive :meth:`Block.plain` blocks run as one
    list (:func:`~igcnas.nn.chain_ops.run_modules`), so that a BatchNorm closing one block folds into the first
    conv of the next (IGCV1's BN + ReLU into the next grouped 3x3 conv) where measured faster: the same modules in
    the same order. A hooked stem, stage or block runs as a unit. What a fast :class:`Network` runs (without
    ``stem``: a run of its stages, as :class:`NetworkPart` times one)."""
    pending: list[nn.Module] = []
    if stem is not None:
        if hooked(stem):
            x = stem(x)
        else:
            pending.extend(stem)
    for stage in stages:
        assert isinstance(stage, nn.Sequential)
        for block in [stage] if hooked(stage) else list(stage):
            if isinstance(block, Block) and block.plain():
                pending.extend(block.body)
                continue
            if pending:
                x, pending = run_modules(pending, x), []
            x = block(x)
    return run_modules(pending, x) if pending else x


def network_parts(network: Network) -> list[str]:
    """The names :class:`NetworkPart` takes for ``network``, in forward order: ``stem``, ``stages.0``, ...,
    ``head`` (the head with the classifier).

    Example:
        >>> from igcnas.zoo import get_zoo
        >>> network_parts(build(get_zoo("IGC-L24M2-D20").spec, impl="naive"))
        ['stem', 'stages.0', 'stages.1', 'stages.2', 'head']
    """
    return ["stem", *(f"stages.{index}" for index in range(len(network.stages))), "head"]


class NetworkPart(nn.Module):
    """One part of a built :class:`Network` (its stem, one stage, or its head with the classifier; see
    :func:`network_parts`), run as the whole network runs it: a fast build's stem takes an NCHW input to
    channels_last, and its stages run through :func:`run_in_runs`. Only the folds across the part's boundaries
    (a BatchNorm closing the part into the first conv after it) do not happen, since the part runs alone. Holds
    the network's own modules (no copy), so its parameters and state_dict are those of the part.

    Example:
        >>> from igcnas.zoo import get_zoo
        >>> net = build(get_zoo("IGC-L24M2-D20").spec, impl="naive")
        >>> NetworkPart(net, "stages.1")(torch.randn(2, 48, 32, 32)).shape
        torch.Size([2, 96, 16, 16])
    """

    def __init__(self, network: Network, part: str) -> None:
        super().__init__()
        names = network_parts(network)
        if part not in names:
            raise ValueError(f"NetworkPart: part {part!r} is not one of {', '.join(names)}")
        self.part = part
        self.channels_last_input = network.channels_last_input
        if part == "stem":
            self.body: nn.Module = network.stem
        elif part == "head":
            self.body = nn.Sequential(OrderedDict(head=network.head, classifier=network.classifier))
        else:
            self.body = network.stages[int(part.split(".")[1])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not self.channels_last_input or self.part == "head"
                or not (x.dim() == 4 and x.device.type == "cpu" and _runs_allowed([self.body]))):
            return self.body(x)
        x = x.contiguous(memory_format=torch.channels_last)  # the network's _prepare (a later part gets it so)
        if self.part == "stem":
            return run_in_runs(x, stem=self.body, stages=[])  # type: ignore[arg-type]
        return run_in_runs(x, stem=None, stages=[self.body])


def _init_weights(model: nn.Module) -> None:
    """He initialisation for convs, unit BN, small linear (as the papers' training recipes)."""
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.01)
            nn.init.zeros_(module.bias)
        elif isinstance(weight, nn.Parameter) and weight.dim() == 4:
            nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")


def build(spec: ArchSpec, *, impl: str = "auto") -> Network:
    """Build the network a spec describes (a pure function of the spec).

    Example:
        >>> from igcnas.arch import ArchSpec
        >>> model = build(ArchSpec.simple("DW+PW", widths=(16, 32), depths=(1, 1)))
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    return Network(spec, impl=impl)


def layer_costs(spec: ArchSpec) -> list[LayerCost]:
    """Closed-form cost of the stem, every block, the head conv and the classifier, in network order.

    Example:
        >>> from igcnas.arch import ArchSpec
        >>> spec = ArchSpec.simple("DW+PW", widths=(16, 32), depths=(1, 1))
        >>> sum(r.params for r in layer_costs(spec)) == network_cost(spec).params
        True
    """
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
            row, h, w = block_cost(spec.block_plan(index, block_index), block, h, w)
            rows.append(replace(row, name=f"stages.{index}.{block_index}"))
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


def network_cost(spec: ArchSpec) -> Cost:
    """Closed-form params/FLOPs of the whole network (equals fvcore under the convention above)."""
    rows = layer_costs(spec)
    return Cost(sum(r.params for r in rows), sum(r.flops for r in rows))
