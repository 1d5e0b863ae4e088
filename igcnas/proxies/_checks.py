"""Checks of what a user passes to :func:`igcnas.proxies.score` and :func:`igcnas.proxies.vote`: one-line errors."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from igcnas.arch.spec import ArchSpec
from igcnas.errors import UserError

__all__ = ["PROXIES", "BATCH_PROXIES", "MODEL_PROXIES", "proxy_names", "check_seed", "check_budget", "check_batch"]

PROXIES: tuple[str, ...] = ("params", "flops", "width", "naswot", "synflow", "snip", "grad_norm", "jacob_cov")
"""Every proxy :func:`igcnas.proxies.score` computes, in its default order."""

BATCH_PROXIES: frozenset[str] = frozenset({"naswot", "snip", "grad_norm", "jacob_cov"})
"""The proxies that run the batch in train mode (batch statistics) or compare its images: they need 2 or more."""

MODEL_PROXIES: frozenset[str] = BATCH_PROXIES | {"synflow"}
"""The proxies that build and run the network (the others are closed forms of the spec)."""


def proxy_names(proxies: str | Iterable[str]) -> tuple[str, ...]:
    """The requested proxy names, checked and without repeats (a single string is one name)."""
    try:
        names = (proxies,) if isinstance(proxies, str) else tuple(proxies)
    except TypeError:
        raise UserError(
            f"proxies: {proxies!r} is not a list of proxy names; give some of {', '.join(PROXIES)}"
        ) from None
    if not names:
        raise UserError(f"proxies: none given; give at least one of {', '.join(PROXIES)}")
    for name in names:
        if name not in PROXIES:
            raise UserError(f"proxies: {name!r} is not a proxy; choose from {', '.join(PROXIES)}")
    return tuple(dict.fromkeys(names))


def check_seed(seed: object) -> int:
    """The seed, an integer torch's generator accepts."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**64:
        raise UserError(f"seed: {seed!r} is not an integer seed; give an int such as seed=0")
    return seed


def check_budget(budget_params: object) -> int | None:
    """The parameter budget: ``None`` or a positive integer."""
    if budget_params is None:
        return None
    if isinstance(budget_params, bool) or not isinstance(budget_params, int) or budget_params < 1:
        raise UserError(
            f"budget_params: {budget_params!r} is not a positive integer; give the budget in parameters "
            "(e.g. budget_params=1_000_000) or None"
        )
    return budget_params


def _describe(value: object) -> str:
    """Shape and dtype of a tensor, else the type of the value."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of dtype {str(value.dtype).removeprefix('torch.')} and shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def check_batch(spec: ArchSpec, images: object, labels: object, *, batch: bool) -> None:
    """Images (N, C, H, W) of the spec's input shape, finite; int64 labels (N,) of its classes; N >= 2 with ``batch``."""
    c, h, w = spec.input_shape
    want = f"a float tensor of shape (N, {c}, {h}, {w})"
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise UserError(f"images: got {_describe(images)}; give {want} (the spec's input_shape {spec.input_shape})")
    if images.dim() != 4 or tuple(images.shape[1:]) != spec.input_shape:
        raise UserError(
            f"images: shape {tuple(images.shape)} does not match the spec's input_shape {spec.input_shape}; "
            f"give {want}"
        )
    n = images.shape[0]
    if n < (2 if batch else 1):
        raise UserError(
            f"images: a batch of {n} image(s); give at least 2 (naswot, snip, grad_norm and jacob_cov use batch "
            "statistics, naswot and jacob_cov compare the images; e.g. a batch of 64)"
        )
    if not bool(torch.isfinite(images).all()):
        raise UserError("images: the batch holds NaN or infinite values; give finite (normalised) images")
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.dim() != 1:
        raise UserError(
            f"labels: got {_describe(labels)}; give an int64 tensor of shape ({n},), one class index per image "
            "(e.g. labels.long())"
        )
    if labels.shape[0] != n:
        raise UserError(f"labels: {labels.shape[0]} labels for {n} images; give one label per image, shape ({n},)")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= spec.num_classes:
        bad = low if low < 0 else high
        raise UserError(
            f"labels: class {bad} is outside 0..{spec.num_classes - 1} (the spec's num_classes is "
            f"{spec.num_classes}); give class indices of the spec's classes"
        )
