"""Forms chosen by measurement on the machine that runs: the decision table of :mod:`igcnas.nn.plan` is the prior.

The first time a :class:`~igcnas.nn.ops.FastSparseConv2d` runs an op signature on the CPU (its
:class:`~igcnas.nn.plan.ConvSpec`, input size, dtype, thread count, training or inference, memory format), every
form that can compute it (the reference conv, grouped with merged groups, dense, the native kernel) is timed side
by side on a random input of that shape, forward + backward for training; the fastest is used from then on, and
the table's choice is kept unless another form beats it by more than :data:`MARGIN`. A form that beats it by less
than :data:`NEAR` is first timed against it alone twice more (single timings on a shared machine swing by that
much). The reference is always a candidate, so a fast op is never slower than the naive one within the noise of
the measurement.

Choices are cached per machine (:mod:`igcnas.nn._tune_cache`: CPU model, ISA flags, library versions, threads,
malloc regime), so they are measured once per machine and remeasured when any of those changes. The malloc regime
counts because under the system malloc every large allocation is page-faulted afresh, by an amount that varies
from call to call: timings there are slower and noisy, and their choices do not hold under the malloc tuning that
igcnas's training, proxies and ``igcnas tune`` run with (:mod:`igcnas._allocator`). ``IGCNAS_TUNE`` sets the mode:
``auto`` (default: measure unknown signatures at first use), ``cache`` (use what is cached, else the table) or
``off`` (the table only). ``igcnas tune`` measures a network's signatures ahead of time.

Example:
    >>> from igcnas.nn.plan import ConvSpec
    >>> key = TuneKey.of(ConvSpec(48, 48, 1, groups=2, shuffle_groups=24), (8, 48, 16, 16), dtype=torch.float32,
    ...                  grad=True, channels_last=True, threads=1)
    >>> key.text()
    'PWG 48->48 k1 s1 g2 sh24 16x16 float32 t1 train cl'
    >>> sorted(label(p) for p in candidate_plans(key.spec, native=False))
    ['dense', 'grouped', 'reference']
"""

from __future__ import annotations

import functools
import os
import statistics
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from igcnas.errors import UserError
from igcnas.nn import _tune_cache
from igcnas.nn.plan import ConvPlan, ConvSpec, native_measurable

__all__ = ["MODES", "MARGIN", "NEAR", "CONFIRMATIONS", "TuneKey", "tune_mode", "candidate_plans", "label",
           "measure", "tuned_plan", "decide", "round_robin", "timing_input", "choices", "note_form", "last_forms", "MEMO_SIZE",
           "memo_lookup", "memo_store", "plan_token"]

MODES: tuple[str, ...] = ("auto", "cache", "off")
MARGIN = 0.03
"""Another form replaces the table's choice only when its median time is this much lower (a fraction)."""
NEAR = 0.15
"""A form that beats the table's choice by less than this (a fraction of the choice's time) is timed against it
:data:`CONFIRMATIONS` more times before it replaces it: single timings of a few milliseconds swing by that much."""
CONFIRMATIONS = 2
"""How many more times a near win is timed against the table's choice (see :data:`NEAR`)."""
_MAX_BATCH = 32
"""Signatures are timed at a batch of at most this many images (the time per image barely depends on it)."""
_MERGED_MAX = 16
"""Grouped candidates merge adjacent groups up to this many channels wide."""

# reentrant: timing a fused op runs its unfused modules, which decide their own forms (settled in the warm-up)
_lock = threading.RLock()
_memory: dict[str, ConvPlan] = {}
_busy = threading.local()
_generation = 0
"""Bumped by :func:`_forget`: the modules' memos of their plans (:func:`plan_token`) are then stale."""


_memory_regime = ""
"""The malloc regime (:func:`igcnas.nn._tune_cache.malloc_regime`) the choices in ``_memory`` were made under."""


def plan_token() -> tuple[str, str, str, int] | None:
    """What a module's memo of its plans depends on besides its input (the tuning and native-kernel settings, the
    malloc regime and the choices' generation), or None while a measurement runs (its plans must not be
    memoised)."""
    if getattr(_busy, "active", False):
        return None
    return os.environ.get("IGCNAS_TUNE", ""), os.environ.get("IGCNAS_NATIVE", ""), _tune_cache.malloc_regime(), _generation


MEMO_SIZE = 64
"""Choices one module memoises (one per input signature) before it clears its memo."""


def memo_lookup(owner: Any, attr: str, key: Hashable) -> Any:
    """What :func:`memo_store` kept on ``owner`` (in its attribute ``attr``) for ``key`` under the settings and
    choices as they are now (:func:`plan_token`); else None (also while a measurement runs)."""
    token = plan_token()
    return None if token is None else owner.__dict__.get(attr, {}).get((key, token))


def memo_store(owner: Any, attr: str, key: Hashable, value: Any) -> None:
    """Memoise ``value`` on ``owner`` for ``key`` under the current :func:`plan_token` (nothing while a
    measurement runs); a memo of :data:`MEMO_SIZE` entries (e.g. variable image sizes) is cleared rather than
    grown."""
    token = plan_token()
    if token is None:
        return
    memo = owner.__dict__.setdefault(attr, {})
    if len(memo) >= MEMO_SIZE:
        memo.clear()
    memo[(key, token)] = value


def tune_mode() -> str:
    """``IGCNAS_TUNE``: auto (default), cache or off."""
    mode = os.environ.get("IGCNAS_TUNE", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise UserError(f"IGCNAS_TUNE={mode!r} is not one of {', '.join(MODES)}; unset it for auto")
    return mode


@dataclass(frozen=True)
class TuneKey:
    """One op signature: what a measured choice depends on (the batch does not count)."""

    spec: ConvSpec
    height: int
    width: int
    dtype: str
    threads: int
    grad: bool
    channels_last: bool

    @classmethod
    def of(cls, spec: ConvSpec, shape: tuple[int, ...], *, dtype: torch.dtype, grad: bool, channels_last: bool,
           threads: int | None = None) -> TuneKey:
        """The key of an input of ``shape`` (N, C, H, W)."""
        return cls(spec, int(shape[2]), int(shape[3]), str(dtype).replace("torch.", ""),
                   int(threads if threads is not None else torch.get_num_threads()), bool(grad), bool(channels_last))

    def text(self) -> str:
        """A readable, stable key (the cache file's)."""
        s = self.spec
        return (f"{s.kind} {s.in_channels}->{s.out_channels} k{s.kernel_size} s{s.stride} g{s.groups} "
                f"sh{s.shuffle_groups} {self.height}x{self.width} {self.dtype} t{self.threads} "
                f"{'train' if self.grad else 'infer'} {'cl' if self.channels_last else 'nchw'}")


def label(plan: ConvPlan) -> str:
    """``reference``, ``dense``, ``native``, ``native/direct`` (a PWG's direct kernel), ``grouped`` or
    ``grouped/m4`` (4 groups merged)."""
    if plan.form == "grouped" and plan.merge > 1:
        return f"grouped/m{plan.merge}"
    return "native/direct" if plan.form == "native" and plan.kernel == "direct" else plan.form


def candidate_plans(spec: ConvSpec, *, native: bool) -> list[ConvPlan]:
    """Every form that can compute ``spec`` on the CPU (``native``: the C kernels are usable here)."""
    plans = [ConvPlan("reference", False, "measured: reference conv")]
    if spec.groups == 1:
        return plans + [ConvPlan("dense", True, "measured: channels_last conv, shuffle folded")]
    width = max(spec.in_channels, spec.out_channels) // spec.groups
    merges = [m for m in range(1, spec.groups + 1) if spec.groups % m == 0 and m * width <= _MERGED_MAX]
    for m in (merges or [1])[-3:] if spec.kind != "DW" else [1]:
        if m < spec.groups:
            plans.append(ConvPlan("grouped", True, f"measured: channels_last grouped conv, {m} merged", merge=m))
    if spec.kind != "DW" and (spec.kind == "PWG" or spec.groups in merges):
        plans.append(ConvPlan("dense", True, "measured: one dense conv"))
    if native and native_measurable(spec):
        plans.append(ConvPlan("native", True, "measured: native kernel"))
        if spec.kind == "PWG":
            plans.append(ConvPlan("native", True, "measured: native direct kernel", kernel="direct"))
    return plans


def measure(spec: ConvSpec, shape: tuple[int, ...], plans: list[ConvPlan], *, grad: bool, channels_last: bool,
            dtype: torch.dtype = torch.float32, repeats: int = 5) -> dict[str, float]:
    """Median seconds of each plan on a random input of ``shape`` (forward, + backward when ``grad``), timed
    round-robin so that every plan sees the same machine load."""
    from igcnas.nn.ops import FastSparseConv2d

    _busy.active = True
    try:
        conv = FastSparseConv2d(spec, impl="fast").to(dtype)
        steps = {label(p): functools.partial(conv.run_plan, plan=p) for p in plans}
        return time_steps(shape, steps, grad=grad, channels_last=channels_last, params=[conv.weight], dtype=dtype,
                          repeats=repeats)
    finally:
        _busy.active = False


def time_steps(shape: tuple[int, ...], steps: Mapping[str, Callable[[torch.Tensor], torch.Tensor]], *, grad: bool,
               channels_last: bool, params: Iterable[torch.Tensor], dtype: torch.dtype = torch.float32,
               repeats: int = 5) -> dict[str, float]:
    """Median seconds of each ``steps[name](x)`` on one random input ``x`` of ``shape`` (:func:`timing_input`):
    the forward, and with ``grad`` a backward of ones after which the gradients of ``x`` and ``params`` are
    cleared; timed by :func:`round_robin`. The one timing loop of every measured choice (convs, chains, folds,
    BatchNorm forms)."""
    x = timing_input(shape, channels_last=channels_last, grad=grad, dtype=dtype)
    cleared = list(params)

    def run(step: Callable[[torch.Tensor], torch.Tensor]) -> None:
        out = step(x)
        if grad:
            out.backward(torch.ones_like(out))
            x.grad = None
            for tensor in cleared:
                tensor.grad = None

    with torch.enable_grad() if grad else torch.no_grad():
        return round_robin({name: functools.partial(run, step) for name, step in steps.items()}, repeats=repeats)


def timing_input(shape: tuple[int, ...], *, channels_last: bool, grad: bool,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A random input of ``shape`` to time forms on, at a batch of at most :data:`_MAX_BATCH` images."""
    x = torch.randn(max(1, min(int(shape[0]), _MAX_BATCH)), *shape[1:], dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(grad)


def round_robin(steps: dict[str, Callable[[], None]], *, repeats: int = 5) -> dict[str, float]:
    """Median seconds of each step, after one warm-up call each, timed in rotating order so that every step sees
    the same machine load."""
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm-up: first-call allocations and library set-up
        steps[name]()
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def tuned_plan(spec: ConvSpec, x: torch.Tensor, *, grad: bool, prior: ConvPlan) -> ConvPlan:
    """The measured form for ``spec`` on input ``x`` (CPU), measuring it now if needed and allowed; ``prior`` (the
    table's plan) when tuning is off, the input is not a CPU tensor, or a measurement is already running."""
    if x.device.type != "cpu" or getattr(_busy, "active", False):
        return prior
    mode = tune_mode()
    if mode == "off":
        return prior
    key = TuneKey.of(spec, tuple(x.shape), dtype=x.dtype, grad=grad,
                     channels_last=x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1)
    from igcnas.nn.plan import native_kernels_usable

    def plans() -> list[ConvPlan]:
        return candidate_plans(spec, native=native_kernels_usable() and x.dtype == torch.float32)

    def seconds(candidates: list[ConvPlan]) -> dict[str, float]:
        return measure(spec, tuple(x.shape), candidates, grad=grad, channels_last=key.channels_last, dtype=x.dtype)

    return decide(key.text(), threads=key.threads, prior=prior, plans=plans, seconds=seconds, mode=mode)


def decide(text: str, *, threads: int, prior: ConvPlan, plans: Callable[[], list[ConvPlan]],
           seconds: Callable[[list[ConvPlan]], dict[str, float]], mode: str | None = None) -> ConvPlan:
    """The choice for signature ``text``: this process's, else the cache's, else measured now (``seconds`` of the
    candidate ``plans`` and the ``prior``, keyed by :func:`label`) and cached; ``prior`` is kept unless another is
    faster by :data:`MARGIN`, and returned untimed in mode ``cache`` (or ``off``) when nothing is cached. A
    fastest form within :data:`NEAR` of the prior is timed against it alone :data:`CONFIRMATIONS` more times, and
    the two are compared by the median of their timings (the other forms keep their one timing: a form it did not
    confirm is not tried in its place, and the prior stays)."""
    global _memory_regime
    mode = mode if mode is not None else tune_mode()
    if mode == "off":
        return prior
    regime = _tune_cache.malloc_regime()
    if regime != _memory_regime:  # the process tuned malloc since: its choices are another regime's
        _forget()
        _memory_regime = regime
    found = _memory.get(text)
    if found is not None:
        return found
    with _lock:
        cached = _tune_cache.lookup(text, threads=threads)
        if cached is not None:
            _memory[text] = cached
            return cached
        if mode == "cache":
            return prior
        candidates = plans()
        if not any(label(p) == label(prior) for p in candidates):
            candidates.append(prior)
        timed = seconds(candidates)
        best = min(candidates, key=lambda p: timed[label(p)])
        pair = [p for p in candidates if label(p) in (label(best), label(prior))]
        timed = _confirmed(timed, best=label(best), prior=label(prior), again=lambda: seconds(pair))
        if timed[label(best)] > (1 - MARGIN) * timed[label(prior)]:
            best = prior
        chosen = replace(best, reason=f"measured here ({label(best)} fastest of {len(candidates)}; "
                                       f"table: {label(prior)})")
        _memory[text] = chosen
        _tune_cache.store(text, chosen, timed, threads=threads, name=label(best))
        return chosen


def _confirmed(timed: dict[str, float], *, best: str, prior: str,
               again: Callable[[], dict[str, float]]) -> dict[str, float]:
    """``timed`` with the times of ``best`` and ``prior`` replaced by the medians over it and
    :data:`CONFIRMATIONS` more timings of the two (``again``) when ``best`` beats ``prior`` by less than
    :data:`NEAR`; else ``timed`` as it is.

    Example:
        >>> rounds = iter([{"a": 1.0, "b": 0.8}, {"a": 1.0, "b": 1.1}])
        >>> _confirmed({"a": 1.0, "b": 0.9, "c": 2.0}, best="b", prior="a", again=lambda: next(rounds))
        {'a': 1.0, 'b': 0.9, 'c': 2.0}
        >>> _confirmed({"a": 1.0, "b": 0.5}, best="b", prior="a", again=lambda: {})  # clear: not timed again
        {'a': 1.0, 'b': 0.5}
    """
    if not (1 - NEAR) * timed[prior] < timed[best] < timed[prior]:
        return timed
    rounds = [timed] + [again() for _ in range(CONFIRMATIONS)]
    return {**timed, **{name: statistics.median(r[name] for r in rounds) for name in (best, prior)}}


def choices() -> dict[str, ConvPlan]:
    """The choices this process has made or read (signature text -> plan)."""
    return dict(_memory)


_LAST_FORMS: weakref.WeakKeyDictionary[Any, dict[str, tuple[str, ConvPlan]]] = weakref.WeakKeyDictionary()
"""The form each fast op (sparse conv, BatchNorm) last ran, per mode, with its layer kind (for ``igcnas bench ops``)."""


def note_form(module: Any, *, mode: str, kind: str, plan: ConvPlan) -> None:
    """Record that ``module`` (a layer of ``kind``: ``PWG``, ``BN+ReLU``...) just ran ``plan`` in ``mode``
    (``train`` or ``eval``), for :func:`last_forms`."""
    _LAST_FORMS.setdefault(module, {})[mode] = (kind, plan)


def last_forms(module: Any) -> dict[str, dict[str, str]]:
    """``{"train"|"eval": {kind: form label}}`` of the fast ops inside ``module`` that have run (one form per
    kind: the last seen).

    Example:
        >>> from igcnas.nn.ops import FastSparseConv2d
        >>> from igcnas.nn.tune import last_forms  # the module the ops record into (a doctest run may hold a copy)
        >>> conv = FastSparseConv2d(ConvSpec(8, 8, 1, groups=2))
        >>> _ = conv(torch.randn(1, 8, 4, 4))
        >>> sorted(last_forms(conv)["train"])
        ['PWG']
    """
    out: dict[str, dict[str, str]] = {}
    for child in module.modules():
        for mode, (kind, plan) in _LAST_FORMS.get(child, {}).items():
            out.setdefault(mode, {})[kind] = label(plan)
    return out


def _forget() -> None:
    """Drop the in-memory choices and the modules' memos of them (tests; the cache file stays)."""
    global _generation
    _memory.clear()
    _generation += 1


def tune_network(spec: Any, *, batch: int = 64, threads: int = 1, inference: bool = True) -> list[dict[str, Any]]:
    """Measure (or read) the form of every op signature of a network ahead of time; one row per signature.

    Runs one training step (and, with ``inference``, one forward without autograd) of the network built from
    ``spec`` on a random batch, as :func:`igcnas.train.train` feeds it (NCHW on the CPU, malloc tuned), with tuning
    on.

    Example:
        >>> from igcnas.zoo import get_zoo
        >>> rows = tune_network(get_zoo("IGC-L24M2-D20").spec, batch=2)  # doctest: +SKIP
        >>> rows[0]["signature"], rows[0]["form"]  # doctest: +SKIP
    """
    from igcnas._allocator import tune_cpu_allocator
    from igcnas.nn.network import build

    if tune_mode() == "off":
        raise UserError("IGCNAS_TUNE=off: unset it (or set auto) to measure forms")
    tune_cpu_allocator()  # the regime training measures and runs its forms under
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        before = set(_memory)
        model = build(spec)
        x = torch.randn(batch, *spec.input_shape)
        model.train()
        model(x).sum().backward()
        if inference:
            model.eval()
            with torch.no_grad():
                model(x)
        cached = _tune_cache.entries(threads=threads)
        rows = []
        for text, plan in _memory.items():
            if f" t{threads} " not in text:
                continue
            entry = cached.get(text, {})
            rows.append({"signature": text, "form": label(plan), "measured_now": text not in before
                         and "cached" not in plan.reason, "table": plan.reason.rsplit("table: ", 1)[-1].rstrip(")")
                         if "table: " in plan.reason else "", "ms": entry.get("ms", {})})
        return rows
    finally:
        torch.set_num_threads(previous)
