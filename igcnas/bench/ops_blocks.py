"""The cases of the ops benchmark (:mod:`igcnas.bench.ops`): the three reference blocks and zoo networks.

:func:`igc_l24m2_block`, :func:`igcv2_star_c416_block` and :func:`igcv3_d_block` build the IGCV1/IGCV2/IGCV3
blocks from :func:`~igcnas.nn.ops.sparse_conv` + BN + ReLU for one ``impl`` (see :mod:`igcnas.bench.ops` for
what each is); :data:`BLOCKS` lists them and :class:`CaseRef` names a block or a zoo network picklably, for the
worker processes of :mod:`igcnas.bench.ops_workers`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from igcnas.errors import UserError
from igcnas.nn.chain_ops import FusedSequential, fuse_chains
from igcnas.nn.network import closing_takes_the_sum, sum_in_closing_bn
from igcnas.nn.norm import batch_norm_act
from igcnas.nn.ops import Impl, sparse_conv

__all__ = [
    "BlockCase",
    "BLOCKS",
    "CaseRef",
    "NETWORKS",
    "igc_l24m2_block",
    "igcv2_star_c416_block",
    "igcv3_d_block",
    "network_cases",
]


def _bn_relu(channels: int, impl: Impl) -> list[nn.Module]:
    """BN + ReLU as a network of ``impl`` has them (fused unless naive), always two Sequential slots.

    The fused form fills the ReLU's slot with an ``nn.Identity`` so both impls have the same state_dict keys.
    """
    modules = [module for _, module in batch_norm_act(channels, relu=True, impl=impl)]
    return modules + [nn.Identity()] * (2 - len(modules))


def _bn(channels: int, impl: Impl) -> nn.Module:
    """BN alone as a network of ``impl`` has it (its training form measured on the machine unless naive)."""
    ((_, module),) = batch_norm_act(channels, relu=False, impl=impl)
    return module


def igc_l24m2_block(*, impl: Impl = "auto", channels: int = 48, secondary: int = 2) -> nn.Sequential:
    """IGCV1 block L x (3x3, M) -> interleave -> M x (1x1, L) -> BN -> ReLU (default L=24, M=2, C=48).

    Example:
        >>> import torch
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
    """``x + body(x)`` (IGCV3 keeps the identity when stride 1 and in == out); in the fast build the body's
    closing BatchNorm takes the sum, as a network's :class:`~igcnas.nn.network.Block` does."""

    def __init__(self, body: nn.Sequential) -> None:
        super().__init__()
        self.body = body
        self.add_in_bn = closing_takes_the_sum(body)

    def forward(self, x: Tensor) -> Tensor:
        if self.add_in_bn and not torch.jit.is_scripting():
            return self._sum_in_closing_bn(x)
        return x + self.body(x)

    @torch.jit.unused
    def _sum_in_closing_bn(self, x: Tensor) -> Tensor:
        """The body with the identity sum in its closing BN (the plain sum where that does not hold now)."""
        if not closing_takes_the_sum(self.body):
            return x + self.body(x)
        return sum_in_closing_bn(self.body, x, x, relu=False)


def igcv3_d_block(
    *, impl: Impl = "auto", channels: int = 32, expansion: int = 6, groups: int = 2
) -> nn.Module:
    """IGCV3-D inverted block: PWG expand -> BN -> DW 3x3 -> BN -> ReLU -> interleave + PWG reduce -> BN, + x.

    Example:
        >>> import torch
        >>> igcv3_d_block(impl="naive")(torch.randn(1, 32, 4, 4)).shape
        torch.Size([1, 32, 4, 4])
    """
    mid = channels * expansion
    body = nn.Sequential(
        sparse_conv(channels, mid, 1, groups=groups, impl=impl),
        _bn(mid, impl),
        sparse_conv(mid, mid, 3, groups=mid, impl=impl),
        *_bn_relu(mid, impl),
        sparse_conv(mid, channels, 1, groups=groups, shuffle_groups=groups, impl=impl),
        _bn(channels, impl),
    )
    return _InvertedResidual(body if impl == "naive" else fuse_chains(body))  # the BN that can fold: as a network


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

#: the zoo networks :func:`~igcnas.bench.ops.bench_networks` times by default
NETWORKS: tuple[str, ...] = ("IGC-L24M2-D20", "IGCV2-C64-D20", "IGCV3-D-CIFAR", "RegConv-W16-D20")


@dataclass(frozen=True)
class CaseRef:
    """A picklable benchmark case: a reference block (``kind="block"``, a :data:`BLOCKS` name), a network
    (``"zoo"``: a zoo name or an arch.json, :func:`~igcnas.zoo.resolve_network`) or one part of a network
    (``"part"``, named ``NETWORK:PART`` with a part of :func:`~igcnas.nn.network.network_parts`, run as
    :class:`~igcnas.nn.network.NetworkPart` runs it)."""

    kind: Literal["block", "zoo", "part"]
    name: str

    def __post_init__(self) -> None:
        if self.kind not in ("block", "zoo", "part"):
            raise UserError(f"bench: case kind {self.kind!r} is not one of block, zoo, part (e.g. CaseRef(\"zoo\", "
                            f"{self.name!r}) for a network)")

    def build(self, impl: Impl) -> nn.Module:
        """The module of this case for ``impl``."""
        if self.kind == "block":
            return _block_case(self.name).build(impl)
        from igcnas.nn.network import NetworkPart, build
        from igcnas.zoo import resolve_network

        network, part = self._network_part()
        built = build(resolve_network(network)[0], impl=impl)
        return built if self.kind == "zoo" else NetworkPart(built, part)

    def input_shape(self, size: int) -> tuple[int, int]:
        """(channels, spatial size) of the input (a zoo network's own, or what its part gets in the network; a
        block's at ``size``)."""
        if self.kind == "block":
            return _block_case(self.name).channels, size
        network, part = self._network_part()
        if self.kind == "zoo":
            from igcnas.zoo import resolve_network

            shape = resolve_network(network)[0].input_shape
            return shape[0], shape[1]
        inputs = _part_inputs(network)
        if part not in inputs:
            raise UserError(f"bench: {network} has no part {part!r}; its parts: {', '.join(inputs)}")
        return inputs[part]

    def input_grad(self) -> bool:
        """Whether the training step computes the input's gradient: for a block or a network's stage or head, as
        inside the network; not for a network's input or its stem's (the images), as in training."""
        return self.kind == "block" or (self.kind == "part" and self._network_part()[1] != "stem")

    def _network_part(self) -> tuple[str, str]:
        """(network, part) of a network or part case (part '' for a whole network; a path may hold ':')."""
        if self.kind == "zoo":
            return self.name, ""
        network, _, part = self.name.rpartition(":")
        return network, part


@functools.lru_cache(maxsize=16)
def _part_inputs(network: str) -> dict[str, tuple[int, int]]:
    """(channels, size) of the input each part of the network ``network`` gets, by part in forward order: one
    batch-1 forward of its naive build (not to be mutated: cached)."""
    from igcnas.nn.network import NetworkPart, build, network_parts
    from igcnas.zoo import resolve_network

    spec = resolve_network(network)[0]
    built = build(spec, impl="naive").eval()
    inputs: dict[str, tuple[int, int]] = {}
    x = torch.zeros(1, *spec.input_shape)
    with torch.no_grad():
        for name in network_parts(built):
            inputs[name] = (int(x.shape[1]), int(x.shape[2]))
            x = NetworkPart(built, name)(x)
    return inputs


def network_cases(name: str) -> list[CaseRef]:
    """The :class:`CaseRef` of every part of the network ``name`` (a zoo name or an arch.json), in forward order
    (UserError listing the zoo for an unknown name).

    Example:
        >>> [case.name for case in network_cases("IGC-L24M2-D20")][:2]
        ['IGC-L24M2-D20:stem', 'IGC-L24M2-D20:stages.0']
    """
    return [CaseRef("part", f"{name}:{part}") for part in _part_inputs(name)]  # the zoo's error for an unknown name


def _block_case(name: str) -> BlockCase:
    """The :data:`BLOCKS` entry called ``name`` (UserError listing the known ones)."""
    for case in BLOCKS:
        if case.name == name:
            return case
    raise UserError(f"bench: unknown block {name!r}; known: {', '.join(c.name for c in BLOCKS)}")
