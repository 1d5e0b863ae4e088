"""How long each training-free proxy takes on the zoo's CIFAR networks (``igcnas bench proxy-time``).

For every CIFAR-10 zoo network (3x32x32 input, 10 classes) with at most ``max_params`` parameters, the seconds
:func:`igcnas.proxies.score` takes for each proxy alone, on one batch of :data:`igcnas.proxies.PROXY_BATCH`
images (random normal values: no proxy's cost depends on them), with ``num_threads`` torch threads. Each
network is scored once with every proxy before timing, so the forms the fast ops measure at first use
(:mod:`igcnas.nn.tune`) are not charged to the first proxy; then each proxy is timed ``repeats`` times, median
reported. Rows are sorted by FLOPs: the cost of a proxy that runs the network is a forward (and backward) pass of
the batch, so it grows with FLOPs, not with params.

Each row also holds ``floor_s``, the arithmetic floor of snip and grad_norm, the proxies with the most arithmetic:
the multiply-adds of the forward pass, of every layer's weight gradient and of every input gradient but the
images', for the batch, at the rate of this machine's float32 matrix product on the same threads
(:func:`matmul_rate`, measured in the same run; ``matmul_gmacs``). The convs of a network run at or under that
rate, so no implementation computes those proxies faster here; where the floor is near a second, under a second
needs a smaller batch, more threads or another CPU.

Example:
    >>> rows = bench_proxy_time(names=["RegConv-W16-D8"], repeats=1, batch=4)
    >>> rows[0]["network"], sorted(rows[0]) == sorted(["network", "params", "flops", "slowest", "floor_s",
    ...                                                  "matmul_gmacs", *(f"{p}_s" for p in PROXIES)])
    ('RegConv-W16-D8', True)
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from typing import Any

from igcnas._table import render_table
from igcnas.arch.spec import ArchSpec
from igcnas.errors import UserError
from igcnas.proxies import PROXIES, PROXY_BATCH

__all__ = ["bench_proxy_time", "cifar_zoo", "gradient_macs", "matmul_rate", "render"]


def cifar_zoo(*, max_params: int) -> list[str]:
    """Names of the zoo's CIFAR-10 networks with at most ``max_params`` parameters."""
    from igcnas.cost import count
    from igcnas.zoo import get_zoo, zoo_names

    picked = []
    for name in zoo_names():
        spec = get_zoo(name).spec
        if spec.input_shape == (3, 32, 32) and spec.num_classes == 10 and count(spec).params <= max_params:
            picked.append(name)
    return picked


def matmul_rate(*, num_threads: int, size: int = 2048, repeats: int = 5) -> float:
    """Multiply-adds per second of this machine's fastest float32 op: a ``size``-square matrix product on
    ``num_threads`` torch threads, best of ``repeats`` after a warm-up (the caller's thread count restored)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        torch.mm(a, b)
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return size**3 / best


def gradient_macs(spec: ArchSpec, *, batch: int) -> int:
    """Multiply-adds of snip's and grad_norm's passes over a batch: the forward, every conv's and linear layer's
    weight gradient, and every input gradient but the images' (the stem's input needs none), each as many
    multiply-adds as the forward product (:func:`igcnas.nn.network.layer_costs`).

    Example:
        >>> from igcnas.arch import ArchSpec
        >>> spec = ArchSpec.simple("DW+PW", widths=(16, 32), depths=(1, 1))
        >>> from igcnas.cost import count
        >>> gradient_macs(spec, batch=2) < 3 * 2 * count(spec).flops
        True
    """
    from igcnas.nn.network import layer_costs

    rows = layer_costs(spec)
    total = sum(row.flops for row in rows)
    stem = sum(row.flops for row in rows if row.role == "stem")
    return batch * (3 * total - stem)


def bench_proxy_time(*, names: Sequence[str] | None = None, max_params: int = 1_000_000, repeats: int = 3,
                     num_threads: int = 1, batch: int = PROXY_BATCH, seed: int = 0) -> list[dict[str, Any]]:
    """Seconds per proxy per network (median of ``repeats``), one row per network, sorted by FLOPs.

    ``names``: zoo networks (default: every CIFAR-10 one with at most ``max_params`` params). A row holds
    ``network``, ``params``, ``flops`` (the network's counts), ``<proxy>_s`` for each proxy of
    :data:`igcnas.proxies.PROXIES`, ``slowest`` (the proxy that took longest), ``floor_s`` (snip's and grad_norm's
    :func:`gradient_macs` at ``matmul_gmacs``, the :func:`matmul_rate` measured before the first network).
    """
    import torch

    from igcnas.cost import count
    from igcnas.proxies import score
    from igcnas.zoo import get_zoo

    for value, option in ((repeats, "--repeats"), (num_threads, "--threads"), (batch, "batch")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{option}: {value!r} must be a positive integer")
    chosen = list(names) if names is not None else cifar_zoo(max_params=max_params)
    if not chosen:
        raise UserError(f"--max-params: no CIFAR-10 zoo network has at most {max_params:,} params; give a larger one")
    rate = matmul_rate(num_threads=num_threads)
    threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    rows: list[dict[str, Any]] = []
    try:
        for name in chosen:
            spec = get_zoo(name).spec
            generator = torch.Generator().manual_seed(seed)
            images = torch.randn(batch, *spec.input_shape, generator=generator)
            labels = torch.arange(batch) % spec.num_classes
            score(spec, images, labels, seed=seed)  # warm-up: forms measured at first use, caches filled
            cost = count(spec)
            row: dict[str, Any] = {"network": name, "params": cost.params, "flops": cost.flops}
            for proxy in PROXIES:
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    score(spec, images, labels, proxies=[proxy], seed=seed)
                    times.append(time.perf_counter() - start)
                row[f"{proxy}_s"] = round(statistics.median(times), 4)
            row["slowest"] = max(PROXIES, key=lambda p: row[f"{p}_s"])
            row["floor_s"] = round(gradient_macs(spec, batch=batch) / rate, 4)
            row["matmul_gmacs"] = round(rate / 1e9, 1)
            rows.append(row)
    finally:
        torch.set_num_threads(threads)
    return sorted(rows, key=lambda r: (r["flops"], r["network"]))


def render(rows: Sequence[dict[str, Any]], *, num_threads: int = 1, batch: int = PROXY_BATCH) -> str:
    """The seconds table, then how many networks every proxy scores in under a second."""
    under = [r for r in rows if all(r[f"{p}_s"] < 1.0 for p in PROXIES)]
    rate = rows[0]["matmul_gmacs"] if rows else 0.0
    lines = [f"seconds per proxy (median), batch of {batch} CIFAR-size images, {num_threads} thread(s), "
             "zoo networks sorted by FLOPs:", render_table([{k: v for k, v in r.items() if k != "matmul_gmacs"}
                                                            for r in rows]), "",
             f"floor_s: the multiply-adds of snip and grad_norm (forward, weight and input gradients) at this "
             f"machine's float32 matrix-product rate, {rate:.1f} GMAC/s on {num_threads} thread(s) in this run; "
             "nothing computes them faster here",
             f"every proxy under 1 s on {len(under)} of {len(rows)} networks"]
    slow = [r for r in rows if r not in under]
    if slow:
        lines.append("over 1 s: " + ", ".join(f"{r['network']} ({r['flops'] / 1e6:.0f}M FLOPs, {r['slowest']} "
                                             f"{r[r['slowest'] + '_s']:.2f} s, floor {r['floor_s']:.2f} s)"
                                             for r in slow))
    return "\n".join(lines)
