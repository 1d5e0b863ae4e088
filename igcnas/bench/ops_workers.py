"""Side by side under two malloc runtimes: one spawned worker process each, rounds alternating between them.

:func:`bench_cases` starts a worker per :data:`RUNTIMES` entry (the system malloc and igcnas's tuned malloc:
malloc settings are process-wide and cannot be undone), has each build the ``_PairTimer`` of
:mod:`igcnas.bench.ops_timing` for a case (for every case at once when interleaved), alternates the timed rounds
between the workers (and between the cases) and reduces them to one row per case. Off CPU it times in this
process (:func:`~igcnas.bench.ops_timing.bench_pair`).
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Sequence
from typing import Any, Literal

import torch

from igcnas.bench.ops_blocks import CaseRef
from igcnas.bench.ops_timing import (
    InputFormat,
    _check_options,
    _impl_mode,
    _PairTimer,
    _ratio_fields,
    _row,
    bench_pair,
)
from igcnas.errors import UserError

__all__ = ["Runtime", "RUNTIMES", "bench_cases", "rotated"]

#: ``system``: malloc as the C library sets it (what a plain PyTorch script gets); ``tuned``: the malloc tuning
#: igcnas's CPU training applies (:mod:`igcnas._allocator`)
Runtime = Literal["system", "tuned"]
RUNTIMES: tuple[Runtime, ...] = ("system", "tuned")


def _runtime_worker(conn: Any, runtime: Runtime, threads: int) -> None:
    """Worker process: set up ``runtime``, then serve setup/round/summary requests until told to stop."""
    import signal

    from igcnas._allocator import allocator_status, tune_cpu_allocator

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops the workers
    if runtime == "tuned":
        tune_cpu_allocator()
    torch.set_num_threads(threads)
    timers: dict[str, _PairTimer] = {}  # by case name: the cases timed in the current group
    while True:
        command, argument = conn.recv()
        if command == "stop":
            break
        try:
            if command == "reset":
                timers.clear()  # free the previous group's tensors before building the next one
                reply: Any = None
            elif command == "setup":
                case, options = argument
                channels, size = case.input_shape(options.pop("size"))
                timers[case.name] = _PairTimer(case.build, channels=channels, size=size, **options)
                reply = allocator_status() if runtime == "tuned" else "system"
            elif command == "round":
                name, index = argument
                reply = timers[name].round(index)
            else:
                reply = timers[argument].summary()
            conn.send(("ok", reply))
        except Exception as error:  # reported to the parent, which raises it there
            conn.send(("user-error" if isinstance(error, UserError) else "error", f"{type(error).__name__}: {error}"))


class _Workers:
    """One spawned worker process per runtime (torch threads as in the parent)."""

    def __init__(self, runtimes: Sequence[Runtime]) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.pipes: dict[str, Any] = {}
        self.processes: list[Any] = []
        try:
            for runtime in runtimes:
                parent, child = context.Pipe()
                process = context.Process(
                    target=_runtime_worker, args=(child, runtime, torch.get_num_threads()), daemon=True
                )
                process.start()
                child.close()
                self.pipes[runtime] = parent
                self.processes.append(process)
        except BaseException:
            self.close()  # the workers already started
            raise

    def ask(self, runtime: str, command: str, argument: Any = None) -> Any:
        """Send one request to ``runtime``'s worker and return its reply (RuntimeError if it failed or died)."""
        pipe = self.pipes[runtime]
        try:
            pipe.send((command, argument))
            status, reply = pipe.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError) as error:
            raise RuntimeError(f"bench: the {runtime} worker process died ({error!r}); out of memory?") from error
        if status == "user-error":  # a bad argument: the same one-line error as in-process
            raise UserError(str(reply).split(": ", 1)[1])
        if status != "ok":
            raise RuntimeError(f"bench: the {runtime} worker failed: {reply}")
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


def rotated(group: Sequence[CaseRef], index: int) -> list[CaseRef]:
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
    between the impls. With ``interleave`` every case is built first and each round times every case, in an
    order that rotates from round to round, so that the rows compare with each other as well (one network's
    images/s against another's: this machine's speed drifts over minutes); else one case after the other, each
    freed before the next is built. Per case the row gives images/s for every (runtime, impl, mode) and:

    * ``naive_*_ips``: the naive reference under the system malloc (a plain PyTorch script);
    * ``fast_*_ips``: igcnas's fast ops under the tuned malloc (what ``igcnas train``/``search`` run);
    * ``*_speedup``: fast / naive of those two: the training engine against the reference;
    * ``*_ops_speedup``: fast / naive both under the tuned malloc: the ops alone.

    On a non-CPU device there is one runtime (the parent process) and both speed-ups are the ops'.

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
    _check_options(input_format, batch=batch, size=size, repeats=repeats, warmup=warmup + 1)
    dev = torch.device(device)
    if dev.type != "cpu":
        rows = []
        for case in cases:
            channels, case_size = case.input_shape(size)
            row = bench_pair(case.name, case.build, channels=channels, batch=batch, size=case_size,
                             repeats=repeats, warmup=warmup, device=dev, input_format=input_format, seed=seed)
            rows.append(row)
        return rows
    names = [case.name for case in cases]
    if interleave and len(set(names)) != len(names):
        raise UserError(f"bench: interleaved cases need distinct names, got {names}")
    options = {"batch": batch, "size": size, "warmup": warmup, "device": "cpu", "input_format": input_format,
               "seed": seed}
    workers = _Workers(RUNTIMES)
    rows = []
    try:
        for group in [list(cases)] if interleave else [[case] for case in cases]:
            for runtime in RUNTIMES:
                workers.ask(runtime, "reset")
            allocator = {case.name: {runtime: workers.ask(runtime, "setup", (case, dict(options)))
                                     for runtime in RUNTIMES} for case in group}
            samples: dict[str, dict[tuple[str, str, str], list[float]]] = {case.name: {} for case in group}
            for index in range(repeats):
                for case in rotated(group, index):
                    for runtime in RUNTIMES if index % 2 == 0 else RUNTIMES[::-1]:
                        for key, seconds in workers.ask(runtime, "round", (case.name, index)).items():
                            samples[case.name].setdefault((runtime, *_impl_mode(key)), []).append(seconds)
            for case in group:
                ips = {key: batch / statistics.median(times) for key, times in samples[case.name].items()}
                channels, case_size = case.input_shape(size)
                label = f"naive: system malloc, fast: {allocator[case.name]['tuned']} malloc"
                rows.append(_row(case.name, channels, case_size, batch, workers.ask("tuned", "summary", case.name),
                                 _ratio_fields(ips, RUNTIMES), label, input_format, "cpu"))
    finally:
        workers.close()
    return rows
