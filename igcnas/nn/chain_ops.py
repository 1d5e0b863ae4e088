"""Chains of grouped 1x1 convs (the IGCV2 pattern) run as one native op, without renaming any parameter.

IGCV2 stacks ``L - 1`` grouped 1x1 convs, each behind the interleave of the previous one, with no BN or ReLU in
between. Run one after the other, each conv reads and writes the whole activation (3 reads + 3 writes of 109 MB
for IGCV2*-C416 at batch 64, 32 x 32). :class:`FusedSequential` is an ``nn.Sequential`` (same children, names,
parameters, state_dict keys and ``named_modules``) whose forward finds the maximal runs of at least two
consecutive :class:`~igcnas.nn.ops.FastSparseConv2d` 1x1 convs that the decision table would run natively (stride
1, grouped, ``in / groups * out / groups <= NATIVE_MAX_GROUP_WEIGHTS``) and computes each run with
:func:`igcnas.nn._native.pointwise_chain`: per tile of pixels (16 with AVX-512, else 8) the input is gathered
through the first shuffle and the intermediates stay in cache, so the forward reads the input once and writes the
output once, and the
backward saves only the chain's input, recomputes the intermediates per tile and writes only the input gradient
(weight gradients summed per thread in a fixed order: deterministic for a given thread count).

A run right behind a stride-1 depthwise conv (IGCV2's channel-wise 3x3, :func:`chain_prefixes`) can take that conv
inside: the kernel computes its output per span of tiles into a buffer and never writes it, and the backward
recomputes it the same way (then the depthwise conv's gradients from the chain's input gradient). That saves a
write and a read of an activation in the forward and costs the recompute in the backward, so
:func:`prefix_form` times it against the conv alone once per signature, as the chain itself is timed.

Everything else runs the modules one after the other exactly as ``nn.Sequential`` does: scripting, tracing
(fvcore, ONNX), ``torch.export``, non-float32 or non-CPU tensors, autocast, the native kernels unavailable
(``IGCNAS_NATIVE=0``, no compiler), a member with forward hooks, or a run that :func:`chain_form` measured faster
unfused on this machine (with tuning off: one whose first conv's plan is not ``native``, e.g. an ``impl="auto"``
NCHW input). Numerically the fused op equals the sequence up to float32 rounding.

Measured (batch 64, 416 channels, 52 groups, shuffle 52, 32 x 32, 2 threads, channels_last): see
``python -m igcnas.bench.ops`` for the IGCV2*-C416 block.

Example:
    >>> import torch
    >>> from igcnas.nn.ops import sparse_conv
    >>> convs = [sparse_conv(64, 64, 1, groups=8, shuffle_groups=8) for _ in range(3)]
    >>> seq = FusedSequential(*convs)
    >>> [len(run) for run in chain_runs(list(seq))]
    [3]
    >>> ref = torch.nn.Sequential(*[sparse_conv(64, 64, 1, groups=8, shuffle_groups=8, impl="naive") for _ in range(3)])
    >>> _ = ref.load_state_dict(seq.state_dict())
    >>> x = torch.randn(2, 64, 5, 5)
    >>> torch.allclose(seq(x), ref(x), atol=1e-4)
    True
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules import module as _module_globals

from igcnas.nn import _native, tune
from igcnas.nn.fold import fold_form, foldable, group_member, normed, pair_member
from igcnas.nn.norm import BatchNormAct2d
from igcnas.nn.ops import FastSparseConv2d
from igcnas.nn.plan import ConvPlan, native_candidate, native_kernels_usable

__all__ = ["FusedSequential", "chain_form", "chain_member", "chain_prefixes", "chain_runs", "chain_signature",
           "fuse_chains", "hooked", "prefix_form", "prefix_member", "run_chain", "run_modules"]


def chain_member(module: nn.Module) -> bool:
    """Whether ``module`` can be part of a fused chain: a fast stride-1 grouped 1x1 conv the table runs natively."""
    if not isinstance(module, FastSparseConv2d):
        return False
    spec = module.spec
    return spec.kind == "PWG" and spec.stride == 1 and native_candidate(spec, "cpu", module.impl)


def prefix_member(module: nn.Module) -> bool:
    """Whether ``module`` can run fused in front of a chain: a fast stride-1 depthwise conv without a shuffle, of a
    kernel size the native kernel has (3, 5 or 7)."""
    if not isinstance(module, FastSparseConv2d) or module.impl == "naive":
        return False
    spec = module.spec
    return (spec.kind == "DW" and spec.stride == 1 and not spec.has_shuffle and spec.in_channels == spec.out_channels
            and spec.kernel_size in (3, 5, 7))


def chain_prefixes(modules: Sequence[nn.Module]) -> list[tuple[FastSparseConv2d, list[FastSparseConv2d]]]:
    """``(depthwise conv, run)`` for each of the :func:`chain_runs` whose preceding module is a
    :func:`prefix_member` with the run's input channels.

    Example:
        >>> from igcnas.nn.ops import sparse_conv
        >>> seq = [sparse_conv(16, 16, 3, groups=16), sparse_conv(16, 16, 1, groups=4), sparse_conv(16, 16, 1, groups=4)]
        >>> [(dw.spec.kind, len(run)) for dw, run in chain_prefixes(seq)]
        [('DW', 2)]
    """
    index = {id(module): position for position, module in enumerate(modules)}
    found: list[tuple[FastSparseConv2d, list[FastSparseConv2d]]] = []
    for run in chain_runs(modules):
        position = index[id(run[0])]
        before = modules[position - 1] if position > 0 else None
        if isinstance(before, FastSparseConv2d) and prefix_member(before) and (
                before.spec.out_channels == run[0].spec.in_channels):
            found.append((before, run))
    return found


def chain_runs(modules: Sequence[nn.Module]) -> list[list[FastSparseConv2d]]:
    """The maximal runs of at least two consecutive :func:`chain_member` modules whose channels connect.

    Example:
        >>> from igcnas.nn.ops import sparse_conv
        >>> chain_runs([sparse_conv(16, 16, 1, groups=4), sparse_conv(16, 16, 3, groups=4)])
        []
    """
    runs: list[list[FastSparseConv2d]] = []
    current: list[FastSparseConv2d] = []
    for module in modules:
        if chain_member(module) and (
            not current or current[-1].spec.out_channels == module.spec.in_channels  # type: ignore[union-attr]
        ):
            current.append(module)  # type: ignore[arg-type]
            continue
        if len(current) >= 2:
            runs.append(current)
        current = [module] if chain_member(module) else []  # type: ignore[list-item]
    if len(current) >= 2:
        runs.append(current)
    return runs


def hooked(module: nn.Module) -> bool:
    """Whether forward or backward (pre-)hooks would see ``module`` run alone (a fused path would skip them)."""
    local = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    hooks = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
             "_global_backward_pre_hooks")
    return any(getattr(module, name, None) for name in local) or any(
        getattr(_module_globals, name, None) for name in hooks
    )


def _fusable_now(x: Tensor, convs: Sequence[FastSparseConv2d]) -> bool:
    """Whether this input can take the fused native path (see the module docstring for when it does not)."""
    if x.dim() != 4 or x.device.type != "cpu" or x.dtype != torch.float32 or x.shape[1] != convs[0].in_channels:
        return False
    for conv in convs:
        weight = conv.weight
        if weight.device.type != "cpu" or weight.dtype != torch.float32 or hooked(conv):
            return False
    if not native_kernels_usable():
        return False
    return chain_form(x, convs) == "native"


def chain_form(x: Tensor, convs: Sequence[FastSparseConv2d]) -> str:
    """``native`` (the fused kernel) or ``reference`` (each conv in its own form) for this run on input ``x``.

    On the CPU with tuning on (:mod:`igcnas.nn.tune`), the two are timed against each other once per signature
    (``CHAIN 64->64->64 g8,8 sh8,8 8x8 float32 t2 train cl``) and the choice cached with the convs' own; the
    prior, kept unless the other is faster by :data:`~igcnas.nn.tune.MARGIN`, is the first conv's form. A conv
    whose own form is not native can still be worth fusing: the chain writes one output instead of one per conv.
    Memoised per run and input signature.
    """
    grad = torch.is_grad_enabled() and (x.requires_grad or any(c.weight.requires_grad for c in convs))
    cl = x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1
    threads = torch.get_num_threads()
    key = (len(convs), tuple(x.shape), x.dtype, grad, cl, threads)
    found: ConvPlan | None = tune.memo_lookup(convs[0], "_chain_memo", key)
    mode = "train" if grad else "eval"
    if found is not None:
        _note(convs, mode, found)
        return found.form
    first = convs[0].plan_for(x)
    prior = (ConvPlan("native", True, "table: the first conv's form") if first.form == "native"
             else ConvPlan("reference", True, "table: the first conv's form"))
    if x.device.type != "cpu" or tune.tune_mode() == "off":
        return prior.form
    plans = [first]  # each conv's own form for its input, settled before the chain is timed
    n, _, h, w = x.shape
    layout = torch.channels_last if cl else torch.contiguous_format
    for conv in convs[1:]:  # an input of the conv's shape and layout, never written or read (no copy, no pages)
        probe = torch.empty((n, conv.spec.in_channels, h, w), dtype=x.dtype, memory_format=layout)
        plans.append(conv.plan_for(probe.requires_grad_(grad)))
    text = f"CHAIN {chain_signature(x, convs, grad=grad, channels_last=cl, threads=threads)}"

    def candidates() -> list[ConvPlan]:
        return [ConvPlan("reference", cl, "measured: each conv in its own form"),
                ConvPlan("native", True, "measured: the fused native chain")]

    def seconds(forms: list[ConvPlan]) -> dict[str, float]:
        return _time_chain(tuple(x.shape), convs, plans, grad=grad, channels_last=cl,
                           forms=[tune.label(p) for p in forms])

    chosen = tune.decide(text, threads=threads, prior=prior, plans=candidates, seconds=seconds)
    tune.memo_store(convs[0], "_chain_memo", key, chosen)  # under the settings as they are after deciding
    _note(convs, mode, chosen)
    return chosen.form


def chain_signature(x: Tensor, convs: Sequence[FastSparseConv2d], *, grad: bool, channels_last: bool,
                    threads: int) -> str:
    """``64->64->64 g8,8 sh1,8 32x32 float32 t2 train cl``: what a chain's timing depends on, for the tune cache."""
    chans = "->".join(str(c) for c in [convs[0].spec.in_channels, *(c.spec.out_channels for c in convs)])
    return (f"{chans} g{','.join(str(c.spec.groups) for c in convs)} "
            f"sh{','.join(str(c.spec.shuffle_groups) for c in convs)} {x.shape[2]}x{x.shape[3]} "
            f"{str(x.dtype).replace('torch.', '')} t{threads} {'train' if grad else 'infer'} "
            f"{'cl' if channels_last else 'nchw'}")


def prefix_form(x: Tensor, depthwise: FastSparseConv2d, convs: Sequence[FastSparseConv2d]) -> str:
    """``native`` (the depthwise conv computed inside the fused chain, its output never written) or ``reference``
    (it runs alone in its own form, then the fused chain) for input ``x``; call it where the chain itself is fused.

    Timed against each other once per signature (``DWCHAIN k3 64->64->64 g8,8 sh1,8 32x32 float32 t2 train cl``)
    and cached with the convs' forms; the prior, kept unless the other is faster by :data:`~igcnas.nn.tune.MARGIN`
    (and with tuning off), is ``reference``: a training step pays for the fused forward's saving by recomputing
    the depthwise conv in its backward. Memoised per depthwise conv and input signature.
    """
    grad = torch.is_grad_enabled() and (x.requires_grad or depthwise.weight.requires_grad
                                        or any(c.weight.requires_grad for c in convs))
    cl = x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1
    threads = torch.get_num_threads()
    key = (len(convs), tuple(x.shape), x.dtype, grad, cl, threads)
    mode = "train" if grad else "eval"
    found: ConvPlan | None = tune.memo_lookup(depthwise, "_prefix_memo", key)
    if found is None:
        prior = ConvPlan("reference", True, "table: the depthwise conv runs alone")
        if tune.tune_mode() == "off":
            return prior.form
        own = depthwise.plan_for(x)
        text = (f"DWCHAIN k{depthwise.spec.kernel_size} "
                f"{chain_signature(x, convs, grad=grad, channels_last=cl, threads=threads)}")

        def candidates() -> list[ConvPlan]:
            return [ConvPlan("reference", cl, "measured: the depthwise conv alone, then the chain"),
                    ConvPlan("native", True, "measured: the depthwise conv inside the fused chain")]

        def seconds(forms: list[ConvPlan]) -> dict[str, float]:
            return _time_prefix(tuple(x.shape), depthwise, own, convs, grad=grad, channels_last=cl,
                                forms=[tune.label(p) for p in forms])

        found = tune.decide(text, threads=threads, prior=prior, plans=candidates, seconds=seconds)
        tune.memo_store(depthwise, "_prefix_memo", key, found)
    if found.form == "native":
        tune.note_form(depthwise, mode=mode, kind="DW+PWG chain", plan=found)
    return found.form


def _note(convs: Sequence[FastSparseConv2d], mode: str, plan: ConvPlan) -> None:
    """Record a fused run for ``igcnas bench ops``' forms listing (``PWG chain native``); unfused, each conv
    records its own form when it runs."""
    if plan.form == "native":
        tune.note_form(convs[0], mode=mode, kind="PWG chain", plan=plan)


def _fused(x: Tensor, convs: Sequence[FastSparseConv2d], depthwise: FastSparseConv2d | None = None) -> Tensor:
    """The native chain kernel on ``x`` for ``convs`` (behind ``depthwise`` when given)."""
    return _native.pointwise_chain(x, [c.weight for c in convs], [c.spec.groups for c in convs],
                                   [c.spec.shuffle_groups for c in convs],
                                   depthwise=None if depthwise is None else depthwise.weight)


def _time_chain(shape: tuple[int, ...], convs: Sequence[FastSparseConv2d], plans: Sequence[ConvPlan], *, grad: bool,
                channels_last: bool, forms: list[str]) -> dict[str, float]:
    """Median seconds of the fused chain (``native``) and of the convs one by one in ``plans`` (``reference``),
    forward (+ backward with ``grad``), on copies of the convs and a random input of ``shape``."""
    copies = [FastSparseConv2d(conv.spec, impl="fast") for conv in convs]

    def separate(x: Tensor) -> Tensor:
        for copy, plan in zip(copies, plans, strict=True):
            x = copy.run_plan(x, plan)
        return x

    steps: dict[str, Callable[[Tensor], Tensor]] = {"native": functools.partial(_fused, convs=copies),
                                                    "reference": separate}
    return tune.time_steps(shape, {form: steps[form] for form in forms}, grad=grad, channels_last=channels_last,
                           params=[c.weight for c in copies])


def _time_prefix(shape: tuple[int, ...], depthwise: FastSparseConv2d, own: ConvPlan,
                 convs: Sequence[FastSparseConv2d], *, grad: bool, channels_last: bool,
                 forms: list[str]) -> dict[str, float]:
    """Median seconds of the fused chain with the depthwise conv inside (``native``) and of the depthwise conv in
    its own form ``own`` followed by the fused chain (``reference``), on copies and a random input of ``shape``."""
    dw = FastSparseConv2d(depthwise.spec, impl="fast")
    copies = [FastSparseConv2d(conv.spec, impl="fast") for conv in convs]
    steps: dict[str, Callable[[Tensor], Tensor]] = {
        "native": lambda x: _fused(x, copies, dw), "reference": lambda x: _fused(dw.run_plan(x, own), copies)}
    return tune.time_steps(shape, {form: steps[form] for form in forms}, grad=grad, channels_last=channels_last,
                           params=[m.weight for m in (dw, *copies)])


def _prefix_now(x: Tensor, depthwise: FastSparseConv2d, convs: Sequence[FastSparseConv2d]) -> bool:
    """Whether this input can take the fused path with ``depthwise`` inside: the chain is fused for an input of
    ``x``'s shape (the depthwise conv keeps it), the depthwise weight is float32 on the CPU and unhooked, and
    :func:`prefix_form` measured it faster."""
    weight = depthwise.weight
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or hooked(depthwise):
        return False
    return _fusable_now(x, convs) and prefix_form(x, depthwise, convs) == "native"


def _fold_now(x: Tensor, bn: BatchNormAct2d, depthwise: FastSparseConv2d | None,
              chain: Sequence[FastSparseConv2d], conv: FastSparseConv2d | None = None) -> bool:
    """Whether ``bn`` folds into ``depthwise`` and/or ``chain`` (or the grouped ``conv``, with ``chain`` after it
    when given) for this input: ``bn``
    would take its native training path on it, the convs' weights are float32 on the CPU, and
    :func:`~igcnas.nn.fold.fold_form` measured the fold faster."""
    convs = ([] if depthwise is None else [depthwise]) + list(chain) + ([] if conv is None else [conv])
    weights = [c.weight for c in convs]
    if not (not torch.is_inference_mode_enabled() and bn.native_usable(x) and not any(hooked(c) for c in convs)
            and all(w.device.type == "cpu" and w.dtype == torch.float32 for w in weights)):
        return False
    return fold_form(x, bn, depthwise, chain, conv) == "native"


def run_chain(x: Tensor, convs: Sequence[FastSparseConv2d]) -> Tensor:
    """``convs[-1](... convs[0](x))``: fused natively where possible, else the modules one after the other.

    Example:
        >>> from igcnas.nn.ops import sparse_conv
        >>> convs = [sparse_conv(16, 16, 1, groups=4, shuffle_groups=4) for _ in range(2)]
        >>> run_chain(torch.randn(1, 16, 3, 3), convs).shape
        torch.Size([1, 16, 3, 3])
    """
    if len(convs) >= 2 and _fusable_now(x, convs):
        return _fused(x, convs)
    for conv in convs:
        x = conv(x)
    return x


class FusedSequential(nn.Sequential):
    """An ``nn.Sequential`` whose runs of fusable grouped 1x1 convs run as one native op, with the depthwise conv
    before them inside it, and whose training BatchNorms fold into the native conv after them, each where measured
    faster (module docstring, :mod:`igcnas.nn.fold`).

    Same children under the same names as the plain ``nn.Sequential`` (state_dicts interchangeable with the naive
    build); scripting, tracing and export see the plain sequence.

    Example:
        >>> from igcnas.nn.ops import sparse_conv
        >>> seq = FusedSequential(sparse_conv(16, 16, 1, groups=4), sparse_conv(16, 16, 1, groups=4, shuffle_groups=4))
        >>> list(seq.state_dict())
        ['0.weight', '1.weight']
    """

    def forward(self, input: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            for module in self:
                input = module(input)
            return input
        return self._fused_forward(input)

    @torch.jit.unused
    def _fused_forward(self, x: Tensor, stop: int | None = None, *, fold: bool = True) -> Tensor:
        """The modules in order (the first ``stop`` of them, default all), through :func:`run_modules`."""
        return run_modules(list(self._modules.values())[:stop], x, fold=fold)


def run_modules(modules: Sequence[nn.Module], x: Tensor, *, fold: bool = True, pair_folds: bool = True) -> Tensor:
    """``modules`` applied in order to ``x``: a BatchNorm folded into the conv after it where measured faster (not
    with ``fold`` False; into a grouped 3x3 conv together with the 1x1 convs after it, IGCV1's pair, unless
    ``pair_folds`` is False), each fusable run through :func:`run_chain`, with the depthwise conv before it where
    measured faster (what :class:`FusedSequential` runs; a network also runs whole stages of plain blocks through
    it, so that a block's closing BatchNorm folds into the next block's first conv)."""
    usable = native_kernels_usable()
    runs = {} if not usable else {id(run[0]): run for run in chain_runs(modules)}
    prefixes = {} if not usable else {id(dw): run for dw, run in chain_prefixes(modules)}
    index = 0
    while index < len(modules):
        following = _past_identities(modules, index + 1)
        if fold and usable and following < len(modules) and foldable(modules[index], modules[following]):
            folded = _folded(modules, index, following, x, runs, prefixes, pair_folds=pair_folds)
            if folded is not None:
                x, index = folded
                continue
        run = prefixes.get(id(modules[index]))
        if run is not None and _prefix_now(x, modules[index], run):  # type: ignore[arg-type]
            x = _fused(x, run, modules[index])  # type: ignore[arg-type]
            index += 1 + len(run)
            continue
        run = runs.get(id(modules[index]))
        if run is not None:
            x = run_chain(x, run)
            index += len(run)
        else:
            module = modules[index]
            assert module is not None
            x = module(x)
            index += 1
    return x


def _folded(modules: Sequence[nn.Module], index: int, following: int, x: Tensor,
            runs: dict[int, list[FastSparseConv2d]], prefixes: dict[int, list[FastSparseConv2d]], *,
            pair_folds: bool = True) -> tuple[Tensor, int] | None:
    """The output of the BatchNorm ``modules[index]`` folded into the conv ``modules[following]`` (the depthwise
    conv with the chain after it where fused, the run of 1x1 convs, or the grouped k x k conv, with the 1x1 convs
    after it where measured faster) and the index of the module after them, or None where the fold does not run
    for this input."""
    bn, after = modules[index], modules[following]
    assert isinstance(bn, BatchNormAct2d) and isinstance(after, FastSparseConv2d)
    if group_member(after):
        pair = _pair_chain(modules, following, runs) if pair_folds else []
        if pair and _fold_now(x, bn, None, pair, after):
            return normed(x, bn, chain=pair, conv=after), following + 1 + len(pair)
        if not _fold_now(x, bn, None, [], after):
            return None
        return normed(x, bn, depthwise=None, chain=[], conv=after), following + 1
    dw = after if prefix_member(after) else None
    if dw is not None:  # the depthwise conv, with the chain after it where that is fused
        chain = prefixes.get(id(dw), [])
        if chain and not _fusable_now(x, chain):
            chain = []
    else:  # the run of 1x1 convs, or the one
        chain = runs.get(id(after), [after])
    if not _fold_now(x, bn, dw, chain):
        return None
    out = normed(x, bn, depthwise=None if dw is None else dw.weight, chain=chain)
    return out, following + (dw is not None) + len(chain)


def _pair_chain(modules: Sequence[nn.Module], position: int,
                runs: dict[int, list[FastSparseConv2d]]) -> list[FastSparseConv2d]:
    """The 1x1 convs the grouped conv ``modules[position]`` can run in front of inside the chain kernel (IGCV1's
    GC -> PWG pair): the fusable run right after it, or the one 1x1 conv there; [] if none, or if the chain
    kernel cannot compute that grouped conv (:func:`~igcnas.nn.fold.pair_member`)."""
    conv = modules[position]
    if position + 1 >= len(modules) or not isinstance(conv, FastSparseConv2d):
        return []
    following = modules[position + 1]
    chain = runs.get(id(following)) or (
        [following] if isinstance(following, FastSparseConv2d) and chain_member(following) else [])
    if not chain or chain[0].spec.in_channels != conv.spec.out_channels or not pair_member(conv):
        return []
    return chain


def _past_identities(modules: Sequence[nn.Module], index: int) -> int:
    """The index of the first module from ``index`` on that is not an unhooked ``nn.Identity`` (a placeholder,
    e.g. the ReLU slot of a fused BN + ReLU), ``len(modules)`` if none."""
    while index < len(modules) and type(modules[index]) is nn.Identity and not hooked(modules[index]):
        index += 1
    return index


def fuse_chains(sequential: nn.Sequential) -> nn.Sequential:
    """``sequential`` as a :class:`FusedSequential` (same children and names) if it has a fusable run or a
    BatchNorm that can fold into the depthwise conv after it (:func:`~igcnas.nn.fold.foldable`), else itself.

    Example:
        >>> from igcnas.nn.ops import sparse_conv
        >>> type(fuse_chains(nn.Sequential(sparse_conv(16, 16, 1, groups=4), sparse_conv(16, 16, 1, groups=4))))
        <class 'igcnas.nn.chain_ops.FusedSequential'>
    """
    modules = list(sequential)
    after = [_past_identities(modules, index + 1) for index in range(len(modules))]
    folds = any(following < len(modules) and foldable(module, modules[following])
                for module, following in zip(modules, after, strict=True))
    if isinstance(sequential, FusedSequential) or not (chain_runs(modules) or folds):
        return sequential
    return FusedSequential(OrderedDict(sequential._modules))
