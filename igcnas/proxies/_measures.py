"""The model-based proxies (NASWOT, synflow, snip, grad_norm, jacob_cov) on a network built from a spec.

Each function takes a freshly built model (:func:`seeded_model`) and may change it (hooks, BatchNorm removed,
weights made positive): callers build one per proxy and drop it afterwards.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from igcnas.arch.spec import ArchSpec
from igcnas.nn import _native
from igcnas.nn.network import Block, Network, build
from igcnas.nn.norm import BatchNormAct2d

__all__ = [
    "JACOB_K",
    "seeded_model",
    "relu_sites",
    "weights",
    "naswot",
    "synflow",
    "loss_gradient_scores",
    "jacob_cov",
]

JACOB_K = 1e-5
"""The regulariser k of jacob_cov's eigenvalue score (Mellor et al. 2020, v1)."""

_EXACT_COLUMNS = 2**23
"""Columns of 0/1 codes one float32 matmul sums exactly (every partial sum is an integer below 2**24)."""


def seeded_model(spec: ArchSpec, *, seed: int, device: torch.device, impl: str = "auto") -> Network:
    """``build(spec)`` with the CPU generator seeded by ``seed`` (its state restored), in train mode, no dropout."""
    with torch.random.fork_rng(devices=[]):
        # the CPU generator only: torch.manual_seed would also queue a seed for CUDA, which cannot be undone
        torch.default_generator.manual_seed(seed)
        model = build(spec, impl=impl)
    model.train()
    for module in model.modules():
        if isinstance(module, _DropoutNd):
            module.eval()  # dropout off: a score is a function of (spec, batch, seed) alone
    return model.to(device)


def relu_sites(model: nn.Module) -> list[nn.Module]:
    """Every module whose output is a ReLU's: ``nn.ReLU``, a fused ``BatchNormAct2d(relu=True)``, a post-ReLU block.

    These are all the ReLUs of :class:`igcnas.nn.network.Network`: the stem's and the head's ``nn.ReLU``, the
    ReLUs inside a block (``nn.ReLU`` in the naive build, fused into the BN before them otherwise) and the ReLU a
    :class:`~igcnas.nn.network.Block` applies functionally to its output (after the residual sum).
    """
    sites: list[nn.Module] = []
    for module in model.modules():
        if (
            isinstance(module, nn.ReLU)
            or (isinstance(module, BatchNormAct2d) and module.relu)
            or (isinstance(module, Block) and module.post_relu)
        ):
            sites.append(module)
    return sites


def weights(model: nn.Module) -> list[Tensor]:
    """The weights the gradient proxies sum over: every conv's and linear layer's ``weight`` (as the references)."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _codes(output: Tensor) -> Tensor:
    """The 0/1 float32 code (unit > 0) of every image, units in memory order (their order does not matter)."""
    if output.dim() == 4 and output.is_contiguous(memory_format=torch.channels_last):
        output = output.permute(0, 2, 3, 1)  # a view: no copy of a channels_last activation
    return torch.sign(output.detach().flatten(1)).clamp_min_(0.0)


def _agreements(codes: Tensor) -> Tensor:
    """``N_A - d_H`` for every pair of rows of a 0/1 (N, N_A) code matrix, in float64 (exact counts)."""
    n, units = codes.shape
    total = torch.zeros(n, n, dtype=torch.float64, device=codes.device)
    for start in range(0, units, _EXACT_COLUMNS):
        part = codes[:, start : start + _EXACT_COLUMNS]
        both = (part @ part.T).double()  # units active in both images; its diagonal: the units active in each
        ones = both.diagonal()
        # agreements = both active + both inactive = both + (D - ones_i - ones_j + both)
        total += 2 * both - ones[:, None] - ones[None, :] + part.shape[1]
    return total


def _add_agreements(kernel: Tensor, output: Tensor) -> None:
    """``kernel += N_A - d_H`` over the units of one ReLU's output: the native popcount kernel for a float32 CPU
    output where the kernels are built, else the matmul of the 0/1 codes (both exact counts)."""
    if output.device.type == "cpu" and output.dtype == torch.float32 and _native.native_available():
        _native.code_agreements(output, kernel)
    else:
        kernel.add_(_agreements(_codes(output)))


def naswot(model: nn.Module, images: Tensor) -> float:
    """log|det K| of the Hamming kernel of the binary ReLU codes over the batch (Mellor et al. 2021)."""
    n = images.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64, device=images.device)

    def record(_module: nn.Module, _inputs: object, output: Tensor) -> None:
        _add_agreements(kernel, output.detach())

    handles = [site.register_forward_hook(record) for site in relu_sites(model)]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if float(sign) > 0 else -math.inf


def _drop_batch_norm(model: nn.Module) -> None:
    """Replace every BatchNorm by the identity (a fused BN+ReLU by its ReLU), as synflow's reference code does."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, BatchNormAct2d) and child.relu:
                setattr(parent, name, nn.ReLU())
            elif isinstance(child, _BatchNorm):
                setattr(parent, name, nn.Identity())


def synflow(model: nn.Module, input_shape: tuple[int, int, int]) -> float:
    """Sum over the weights of |theta * dR/dtheta|, R the output sum of the linearised net on ones (Tanaka 2020)."""
    _drop_batch_norm(model)
    model.double().eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.abs_()
    theta = weights(model)
    ones = torch.ones(1, *input_shape, dtype=torch.float64, device=device)
    with torch.enable_grad():
        output = model(ones)
        grads = torch.autograd.grad(output.sum(), theta, allow_unused=True)
    total = torch.zeros((), dtype=torch.float64, device=device)
    with torch.no_grad():
        for weight, grad in zip(theta, grads, strict=True):
            if grad is not None:
                total += (weight * grad).abs().sum()
    return float(total)


def loss_gradient_scores(model: nn.Module, images: Tensor, labels: Tensor) -> tuple[float, float]:
    """(snip, grad_norm) of the cross-entropy gradient on the batch: sum |g * w| and the L2 norm of g."""
    theta = weights(model)
    with torch.enable_grad():
        loss = F.cross_entropy(model(images), labels)
        grads = torch.autograd.grad(loss, theta, allow_unused=True)
    snip = torch.zeros((), dtype=torch.float64, device=images.device)
    squares = torch.zeros((), dtype=torch.float64, device=images.device)
    for weight, grad in zip(theta, grads, strict=True):
        if grad is not None:
            snip += (grad.double() * weight.detach().double()).abs().sum()
            squares += grad.double().square().sum()
    return float(snip), math.sqrt(float(squares))


def jacob_cov(model: nn.Module, images: Tensor) -> float:
    """-sum(log(v + k) + 1/(v + k)) of the eigenvalues v of the input Jacobians' correlation (Mellor 2020, v1)."""
    model.requires_grad_(False)  # only the input gradient is needed: the backward skips every weight gradient
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        output = model(x)
        (grad,) = torch.autograd.grad(output.sum(), x)
    corr = torch.corrcoef(grad.flatten(1).double())
    if not bool(torch.isfinite(corr).all()):
        return -math.inf  # an image whose Jacobian is constant: the correlation is undefined (reference: NaN)
    eig = torch.linalg.eigvalsh(corr).clamp_min(0.0)  # a correlation matrix is PSD; clamp rounding below 0
    return float(-(torch.log(eig + JACOB_K) + 1.0 / (eig + JACOB_K)).sum())
