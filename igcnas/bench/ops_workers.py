"""Side by side under two malloc runtimes: one spawned worker process each, rounds alternating between them.

:func:`bench_cases` starts a worker per :data:`RUNTIMES` entry (the system malloc and igcnas's tuned malloc:
malloc settings are process-wide and cannot be undone; a pair per case when the cases are interleaved), has each
build the ``_PairTimer`` of :mod:`igcnas.bench.ops_timing` for its case, alternates the timed rounds between the
workers (and between the cases) and reduces them to one row per case. Off CPU, and for
:func:`bench_pair`, the same requests are served in this process (one runtime, ``current``).
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import torch
from torch import nn

from igcnas.bench.ops_blocks import CaseRef
from igcnas.bench.ops_timing import InputFormat, _check_options, _impl_mode, _PairTimer, _ratio_fields, _row
from igcnas.errors import UserError
from igcnas.nn.ops import Impl

__all__ = ["Runtime", "RUNTIMES", "bench_cases", "bench_pair", "rotated"]

#: ``system``: malloc as the C library sets it (what a plain PyTorch script gets); ``tuned``: the malloc tuning
#: igcnas's CPU training applies (:mod:`igcnas._allocator`)
Runtime = Literal["system", "tuned"]
RUNTIMES: tuple[Runtime, ...] = ("system", "tuned")
_T = TypeVar("_T")


class _Case(Protocol):
    """What a benchmark case gives: a name, a module per impl and its input's (channels, size)."""

    @property
    def name(self) -> str: ...

    def build(self, impl: Impl) -> nn.Module: ...

    def input_shape(self, size: int) -> tuple[int, int]: ...

    def input_grad(self) -> bool: ...


class _Timers:
    """The cases one runtime has built, by name: the requests a worker process (or this process) serves."""

    def __init__(self, runtime: str) -> None:
        self.runtime = runtime
        self.timers: dict[str, _PairTimer] = {}

    def handle(self, command: str, argument: Any) -> Any:
        """``reset`` (free every case), ``setup`` ((case, options): build it; replies the malloc it runs
        under), ``round`` ((name, index): one round's seconds) or ``summary`` (name)."""
        if command == "reset":
            self.timers.clear()  # free the previous group's tensors before building the next one
            return None
        if command == "setup":
            from igcnas._allocator import allocator_status

            case, options = argument
            channels, size = case.input_shape(options.pop("size"))
            self.timers[case.name] = _PairTimer(case.build, channels=channels, size=size,
                                                input_grad=case.input_grad(), **options)
            return allocator_status() if self.runtime == "tuned" else self.runtime
        if command == "round":
            name, index = argument
            return self.timers[name].round(index)
        if command == "summary":
            return self.timers[argument].summary()
        raise ValueError(f"bench: unknown request {command!r} (reset, setup, round or summary)")


def _runtime_worker(conn: Any, runtime: Runtime, threads: int) -> None:
    """Worker process: set up ``runtime``, then serve :class:`_Timers` requests until told to stop."""
    import signal

    from igcnas._allocator import tune_cpu_allocator

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops the workers
    if runtime == "tuned":
        tune_cpu_allocator()
    torch.set_num_threads(threads)
    timers = _Timers(runtime)
    while True:
        command, argument = conn.recv()
        if command == "stop":
            break
        try:
            conn.send(("ok", timers.handle(command, argument)))
        except Exception as error:  # reported to the parent, which raises it there
            conn.send(("user-error" if isinstance(error, UserError) else "error", f"{type(error).__name__}: {error}"))


class _Here:
    """This process as the one runtime ``current`` (whatever malloc it has), asked as :class:`_Workers` are."""

    def __init__(self) -> None:
        self.timers = _Timers("current")

    def ask(self, runtime: str, command: str, argument: Any = None) -> Any:
        """Serve one request here (its errors raised as they are)."""
        return self.timers.handle(command, argument)

    def close(self) -> None:
        """Free the cases."""
        self.timers.handle("reset", None)


class _Workers:
    """Spawned worker processes (torch threads as in the parent), each under its runtime: ``slots`` maps a
    worker's name to its runtime."""

    def __init__(self, slots: dict[str, Runtime]) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.pipes: dict[str, Any] = {}
        self.processes: list[Any] = []
        try:
            for name, runtime in slots.items():
                parent, child = context.Pipe()
                process = context.Process(
                    target=_runtime_worker, args=(child, runtime, torch.get_num_threads()), daemon=True
                )
                process.start()
                child.close()
                self.pipes[name] = parent
                self.processes.append(process)
        except BaseException:
            self.close()  # the workers already started
            raise

    def ask(self, name: str, command: str, argument: Any = None) -> Any:
        """Send one request to worker ``name`` and return its reply (RuntimeError if it failed or died)."""
        pipe = self.pipes[name]
        try:
            pipe.send((command, argument))
            status, reply = pipe.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError) as error:
            raise RuntimeError(f"bench: the {name} worker process died ({error!r}); out of memory?") from error
        if status == "user-error":  # a bad argument: the same one-line error as in-process
            raise UserError(str(reply).split(": ", 1)[1])
        if status != "ok":
            raise RuntimeError(f"bench: the {name} worker failed: {reply}")
        return reply

    def close(self) -> None:
        """Stop the workers."""
        for pipe in self.pipes.values():
            with contextlib.suppress(OSError, BrokenPipeError):
                pipe.send(("stop", None))
        for process in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()


def rotated(group: Sequence[_T], index: int) -> list[_T]:
    """The order round ``index`` times an interleaved group in: each case leads in turn.

    Example:
        >>> [case.name for case in rotated([CaseRef("zoo", "A"), CaseRef("zoo", "B"), CaseRef("zoo", "C")], 4)]
        ['B', 'C', 'A']
    """
    shift = index % len(group)
    return [*group[shift:], *group[:shift]]


def bench_cases(
    cases: Sequence[CaseRef],
    *,
    batch: int = 64,
    size: int = 32,
    repeats: int = 5,
    warmup: int = 2,
    device: str | torch.device = "cpu",
    input_format: InputFormat = "native",
    seed: int = 0,
    interleave: bool = False,
) -> list[dict[str, Any]]:
    """Naive vs fast for each case, under the system malloc and igcnas's tuned malloc, side by side (CPU).

    Two worker processes, one per runtime (malloc settings are process-wide and cannot be undone), each
    holding the naive and the fast copy; the rounds alternate between the workers and, inside a worker,
    between the impls. With ``interleave`` every case is built first, in its own two workers, and each round
    times every case, in an order that rotates from round to round, so that the rows compare with each other as
    well (one network's images/s against another's: this machine's speed drifts over minutes); else one case
    after the other in the same two workers, each freed before the next is built. Per case the row gives images/s
    for every (runtime, impl, mode) and:

    * ``naive_*_ips``: the naive reference under the system malloc (a plain PyTorch script);
    * ``fast_*_ips``: igcnas's fast ops under the tuned malloc (what ``igcnas train``/``search`` run);
    * ``*_speedup``: fast / naive of those two: the training engine against the reference;
    * ``*_ops_speedup``: fast / naive both under the tuned malloc: the ops alone.

    On a non-CPU device there is one runtime (the parent process, which then holds every interleaved case) and
    both speed-ups are the ops'.

    The workers are started with ``spawn``: a script that calls this must guard its entry point with
    ``if __name__ == "__main__":`` (the command line tools do).

    Example:
        >>> rows = bench_cases([CaseRef("block", "IGC-L24M2")], batch=2, size=8, repeats=1)
        >>> row = rows[0]
        >>> row["block"], row["runtime"], row["max_abs_diff"] < 1e-4
        ('IGC-L24M2', 'naive: system malloc, fast: tuned malloc', True)
        >>> row["train_speedup"] == row["fast_train_ips_tuned"] / row["naive_train_ips_system"]
        True
        >>> row["train_ops_speedup"] == row["fast_train_ips_tuned"] / row["naive_train_ips_tuned"]
        True
    """
    return _bench(cases, batch=batch, size=size, repeats=repeats, warmup=warmup, device=device,
                  input_format=input_format, seed=seed, interleave=interleave, here=None)


def _bench(cases: Sequence[_Case], *, batch: int, size: int, repeats: int, warmup: int, device: str | torch.device,
           input_format: InputFormat, seed: int, interleave: bool, here: bool | None) -> list[dict[str, Any]]:
    """:func:`bench_cases`'s rounds, in the two runtimes' worker processes or (``here``; default: off CPU) in this
    process."""
    from igcnas.train import resolve_device

    _check_options(input_format, batch=batch, size=size, repeats=repeats, warmup=warmup + 1)
    dev = resolve_device(device)  # a one-line error for a device that is not one, or not on this machine
    here = dev.type != "cpu" if here is None else here
    if not cases:
        return []
    names = [case.name for case in cases]
    if interleave and len(set(names)) != len(names):
        raise UserError(f"bench: interleaved cases need distinct names, got {names}")
    options = {"batch": batch, "size": size, "warmup": warmup, "device": str(dev), "input_format": input_format,
               "seed": seed}
    runtimes: tuple[str, ...] = ("current",) if here else RUNTIMES
    # interleaved on CPU, each case has its own pair of workers: it runs in a process of its own, as when it
    # trains, with nothing another case left behind in that process's heap or libraries
    per_case = interleave and not here

    def worker(runtime: str, case: _Case) -> str:
        """The name of the worker that times ``case`` under ``runtime``."""
        return f"{runtime} {case.name}" if per_case else runtime

    workers: _Here | _Workers = (_Here() if here else _Workers(
        {worker(runtime, case): runtime for case in cases for runtime in RUNTIMES}))
    rows = []
    try:
        for group in [list(cases)] if interleave else [[case] for case in cases]:
            for name in {worker(runtime, case) for case in group for runtime in runtimes}:
                workers.ask(name, "reset")
            malloc = {case.name: {runtime: workers.ask(worker(runtime, case), "setup", (case, dict(options)))
                                  for runtime in runtimes} for case in group}
            samples: dict[str, dict[tuple[str, str, str], list[float]]] = {case.name: {} for case in group}
            for index in range(repeats):
                for case in rotated(group, index):
                    for runtime in runtimes if index % 2 == 0 else runtimes[::-1]:
                        for key, seconds in workers.ask(worker(runtime, case), "round", (case.name, index)).items():
                            samples[case.name].setdefault((runtime, *_impl_mode(key)), []).append(seconds)
            for case in group:
                ips = {key: batch / statistics.median(times) for key, times in samples[case.name].items()}
                channels, case_size = case.input_shape(size)
                label = "current" if here else f"naive: system malloc, fast: {malloc[case.name]['tuned']} malloc"
                rows.append(_row(case.name, channels, case_size, batch,
                                 workers.ask(worker(runtimes[-1], case), "summary", case.name),
                                 _ratio_fields(ips, runtimes), label, input_format, str(dev)))
    finally:
        workers.close()
    return rows


@dataclass(frozen=True)
class _Built:
    """A case from a build function (served in this process only: a lambda does not pickle)."""

    name: str
    builder: Callable[[Impl], nn.Module]
    channels: int

    def build(self, impl: Impl) -> nn.Module:
        """The module for ``impl``."""
        return self.builder(impl)

    def input_shape(self, size: int) -> tuple[int, int]:
        """(channels, size) of the input."""
        return self.channels, size

    def input_grad(self) -> bool:
        """True: a block's step computes its input's gradient, as inside a network."""
        return True


def bench_pair(
    name: str,
    build: Callable[[Impl], nn.Module],
    *,
    channels: int,
    batch: int = 64,
    size: int = 32,
    repeats: int = 5,
    warmup: int = 2,
    device: str | torch.device = "cpu",
    input_format: InputFormat = "native",
    seed: int = 0,
) -> dict[str, Any]:
    """Time ``build("naive")`` against ``build("fast")`` (same weights, same input values), interleaved, here.

    Runs in the calling process, under whatever malloc it has (``runtime: "current"``), so the speed-ups are
    the ops' alone; :func:`bench_cases` also compares runtimes. The training step is forward + backward of a
    fixed output gradient (as if it came from the rest of the network, in the output's memory format)
    including the input gradient; eval is a ``no_grad`` forward in eval mode. ``input_format="native"`` gives
    each impl the layout a network built from it carries between blocks (NCHW for naive, channels_last for
    fast on CPU, where the fast forms produce channels_last); ``"nchw"`` or ``"channels_last"`` force one
    layout on both (then the fast block pays the conversion).

    Returns one row: images/s of the training step and of inference for both, the speed-up ratios
    fast/naive, the max output difference and the block's params and fvcore MACs (per image).

    Example:
        >>> from igcnas.bench.ops import igc_l24m2_block
        >>> row = bench_pair("igc", lambda i: igc_l24m2_block(impl=i), channels=48, batch=2, size=8, repeats=1)
        >>> row["block"], row["runtime"], row["max_abs_diff"] < 1e-4
        ('igc', 'current', True)
    """
    (row,) = _bench([_Built(name, build, channels)], batch=batch, size=size, repeats=repeats, warmup=warmup,
                    device=device, input_format=input_format, seed=seed, interleave=False, here=True)
    return row
