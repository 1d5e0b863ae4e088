"""Training-free scores of an architecture: cost baselines and the zero-cost proxies, higher = predicted better.

:func:`score` computes, for an :class:`~igcnas.arch.ArchSpec` and one batch of real images, any of:

* ``params``, ``flops``: the closed-form budget counts of :func:`igcnas.cost.count` (raw counts: the literature
  reports both as strong baselines of the zero-cost proxies).
* ``width``: the information-field width of "Penetrating the Fog" (the paper's Width: the number of channels of
  the first stage, ``spec.stages[0].width``; at equal budget the wider network is the more accurate one). With
  ``budget_params`` it is the width the design would have at that budget, to first order:
  ``width * sqrt(budget_params / params)``, since the parameters of a fixed design and layout grow about with the
  square of the width; at the budget itself (every candidate fitted to it) this is the width.
* ``naswot`` (Mellor et al. 2021, "Neural Architecture Search without Training"): ``log|det K|`` with
  ``K[i, j] = N_A - d_H(c_i, c_j)``, ``c_i`` the binary code (unit > 0) of image i over every ReLU of the network
  (stem, inside the blocks, after every block's residual sum, head), in train mode (batch statistics).
  ``-inf`` when K is singular (e.g. two equal images).
* ``synflow`` (Tanaka et al. 2020, "Pruning neural networks without any data"): every parameter made positive,
  BatchNorm removed (as the reference code of Abdelfattah et al. does), float64, one all-ones input of the data's
  shape; ``sum |theta * dR/dtheta|`` over the conv and linear weights, ``R`` the sum of the outputs. It does not
  depend on the images' values.
* ``snip`` (Lee et al. 2019, as a proxy in Abdelfattah et al. 2021): ``sum |g * w|`` over the conv and linear
  weights, ``g`` the cross-entropy gradient on the batch (train mode).
* ``grad_norm``: the L2 norm of that gradient over the same weights.
* ``jacob_cov`` (Mellor et al. 2020, v1 of the NASWOT paper): the correlation matrix of the per-image input
  Jacobians of the output sum, ``-sum(log(v + k) + 1 / (v + k))`` over its eigenvalues v, ``k = 1e-5``
  (train mode); ``-inf`` when an image's Jacobian is constant (the correlation is undefined).

:func:`vote` combines rows of scores into the rank vote of Abdelfattah et al. 2021 ("Zero-Cost Proxies for
Lightweight NAS"). Every model is built with ``build(spec)`` after seeding torch's CPU generator with ``seed``
(its state restored afterwards), dropout off, so a score is a function of the spec, the batch and the seed;
torch's grad mode, thread count and random state are left as they were. On CPU, a proxy that runs the network
tunes glibc malloc for the process as training does (:func:`igcnas._allocator.tune_cpu_allocator`; opt out with
``IGCNAS_MALLOC=system``): its activations are as large as a training step's, and re-faulting them at every call
would cost more than the arithmetic on the widest networks.

Example:
    >>> import torch
    >>> from igcnas.arch import ArchSpec
    >>> spec = ArchSpec.simple("DW+PW", widths=(8, 16), depths=(1, 1), input_shape=(3, 8, 8))
    >>> images = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> labels = torch.arange(16) % 10
    >>> rows = [score(spec, images, labels, seed=s) for s in (0, 1)]
    >>> list(rows[0]) == list(PROXIES)
    True
    >>> len(vote(rows))
    2
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from igcnas._allocator import tune_cpu_allocator
from igcnas.arch.spec import ArchSpec
from igcnas.cost import count
from igcnas.errors import UserError
from igcnas.proxies._checks import (
    BATCH_PROXIES,
    MODEL_PROXIES,
    PROXIES,
    check_batch,
    check_budget,
    check_seed,
    proxy_names,
)
from igcnas.proxies._measures import jacob_cov, loss_gradient_scores, naswot, seeded_model, synflow

__all__ = ["PROXIES", "VOTE_PROXIES", "PROXY_BATCH", "proxy_batch", "score", "vote"]

VOTE_PROXIES: tuple[str, ...] = ("synflow", "jacob_cov", "snip")
"""The three proxies Abdelfattah et al. 2021 vote with."""

PROXY_BATCH = 64
"""Images of the batch the proxies are scored on (the tabular benchmark's and ``--prescreen``'s)."""


def proxy_batch(data: Any, *, size: int = PROXY_BATCH, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The scoring batch of a dataset bundle: ``size`` training images drawn with ``seed``, normalised, and labels."""
    from igcnas.data.augment import normalize

    pick = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))[:size]
    return normalize(data.train.images[pick], data.mean, data.std), data.train.labels[pick]


def score(
    spec: ArchSpec,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    proxies: str | Iterable[str] = PROXIES,
    seed: int = 0,
    budget_params: int | None = None,
) -> dict[str, float]:
    """Training-free scores of ``spec`` on one batch, proxy name -> value (higher = predicted better).

    ``images`` is a float batch (N, C, H, W) of the spec's ``input_shape`` (real, normalised images; N >= 2 for
    the proxies that run the model on it, e.g. 64), ``labels`` the int64 class of each (N,). ``proxies`` picks
    some of :data:`PROXIES` (the result keeps their order); each is defined in the module docstring. The network is
    built with its weights drawn after seeding torch's CPU generator with ``seed``, on the images' device, and
    computed in float32 (synflow in float64). ``budget_params`` only changes ``width`` (see the module
    docstring). A proxy's value does not depend on which other proxies are asked for.

    Wrong input raises :class:`~igcnas.errors.UserError` naming the field: an unknown proxy (listing the known
    ones), images of another shape than the spec's input, labels of another length or dtype.

    Example:
        >>> import torch
        >>> from igcnas.arch import ArchSpec
        >>> from igcnas.cost import count
        >>> spec = ArchSpec.simple("GC+PWG", widths=(8, 16), depths=(1, 1), input_shape=(3, 8, 8))
        >>> images = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
        >>> scores = score(spec, images, labels, proxies=("params", "width", "synflow", "naswot"))
        >>> scores["params"] == count(spec).params, scores["width"]
        (True, 8.0)
        >>> scores["synflow"] == score(spec, images.flip(0), labels, proxies="synflow")["synflow"]
        True
        >>> score(spec, images, labels, proxies=("zen",))
        Traceback (most recent call last):
        ...
        igcnas.errors.UserError: proxies: 'zen' is not a proxy; choose from params, flops, width, naswot, synflow, snip, grad_norm, jacob_cov
    """
    names = proxy_names(proxies)
    seed = check_seed(seed)
    budget = check_budget(budget_params)
    check_batch(spec, images, labels, batch=bool(BATCH_PROXIES.intersection(names)))
    cost = count(spec)
    if images.device.type == "cpu" and MODEL_PROXIES.intersection(names):
        tune_cpu_allocator()
    values: dict[str, float] = {}
    with torch.inference_mode(False), torch.random.fork_rng(devices=[]):
        # a copy made outside inference mode: autograd can use it even when the caller's batch is an inference tensor
        batch = images.detach().to(torch.float32).clone()
        targets = labels.detach().to(batch.device).clone()
        device = batch.device
        for name in names:
            if name in values:
                continue
            if name == "params":
                values[name] = float(cost.params)
            elif name == "flops":
                values[name] = float(cost.flops)
            elif name == "width":
                width = float(spec.stages[0].width)
                values[name] = width if budget is None else width * math.sqrt(budget / cost.params)
            elif name == "naswot":
                values[name] = naswot(seeded_model(spec, seed=seed, device=device), batch)
            elif name == "synflow":
                # the reference build: float64 runs there as plain torch ops (same weights as the default build)
                model = seeded_model(spec, seed=seed, device=device, impl="naive")
                values[name] = synflow(model, spec.input_shape)
            elif name in ("snip", "grad_norm"):
                snip, grad_norm = loss_gradient_scores(seeded_model(spec, seed=seed, device=device), batch, targets)
                values["snip"], values["grad_norm"] = snip, grad_norm
            else:  # jacob_cov
                values[name] = jacob_cov(seeded_model(spec, seed=seed, device=device), batch)
    return {name: values[name] for name in names}


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ascending ranks (the largest value ranks highest), ties averaged, NaN below everything."""
    order = sorted(range(len(values)), key=lambda i: (0, 0.0) if math.isnan(values[i]) else (1, values[i]))
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start + 1
        first = values[order[start]]
        while end < len(order) and _same(values[order[end]], first):
            end += 1
        for position in range(start, end):
            ranks[order[position]] = (start + 1 + end) / 2  # mean of the 1-based positions start+1 .. end
        start = end
    return ranks


def _same(a: float, b: float) -> bool:
    """Equal, NaN equal to NaN."""
    return a == b or (math.isnan(a) and math.isnan(b))


def vote(rows: Sequence[Mapping[str, float]], *, proxies: str | Iterable[str] = VOTE_PROXIES) -> list[float]:
    """The rank vote of Abdelfattah et al. 2021 over candidates: per candidate, the sum of its ranks by each proxy.

    ``rows`` holds one :func:`score` result per candidate. For every proxy of ``proxies`` the candidates are
    ranked 1 (lowest score) to n (highest), ties sharing their mean rank and NaN ranking lowest; a candidate's
    vote is the sum of its ranks, so the highest vote is the best candidate. Every row must hold every proxy
    (else :class:`~igcnas.errors.UserError` naming the row).

    Example:
        >>> rows = [{"synflow": 1.0, "jacob_cov": -5.0, "snip": 0.1},
        ...         {"synflow": 3.0, "jacob_cov": -1.0, "snip": 0.3},
        ...         {"synflow": 2.0, "jacob_cov": -3.0, "snip": 0.3}]
        >>> vote(rows)
        [3.0, 8.5, 6.5]
        >>> vote(rows, proxies=("synflow",))
        [1.0, 3.0, 2.0]
    """
    names = proxy_names(proxies)
    totals = [0.0] * len(rows)
    for name in names:
        column: list[float] = []
        for index, row in enumerate(rows):
            if not isinstance(row, Mapping) or name not in row:
                raise UserError(
                    f"rows[{index}]: no {name!r} score; score every candidate with proxies including {name!r}"
                )
            column.append(float(row[name]))
        for index, rank in enumerate(_ranks(column)):
            totals[index] += rank
    return totals
