"""``--workers N``: several trials at once on one machine, as worker processes on the same Optuna storage.

The parent is worker 1 and starts N - 1 more processes (forked on CPU; ``python -m igcnas.search._workers`` on a
GPU machine), each running the Optuna backend on the study's storage with one :class:`WorkerSlot`: its index and
the run's id. Every trial of the run is tagged with that id, and the workers stop together once the run has trained
``--trials`` trials (counted in the storage, in-flight trials included, so the total is exact). The samplers seed
each trial's draws by its number, so the workers do not sample alike, and a random search trains the same candidates
whatever the number of workers. Each worker's progress lines carry its label (``w1/2``) and reach the parent's stderr.

Defaults (``workers=None``, the CLI's ``--workers auto``): one worker per GPU when the device is CUDA (each sees
its own GPU through ``CUDA_VISIBLE_DEVICES``), else physical cores ÷ ``--num-threads``. A killed parent
(even ``kill -9``) takes its workers with it (``PR_SET_PDEATHSIG``), and the same command resumes the study: the
heartbeats fail the interrupted trials and they are retried once.

Example:
    >>> default_workers(cores=8, num_threads=2, gpus=0), default_workers(cores=8, num_threads=1, gpus=4)
    (4, 4)
    >>> worker_env(1, gpus=2, visible="4,5")["CUDA_VISIBLE_DEVICES"]
    '5'
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from igcnas.errors import UserError
from igcnas.search.config import SearchConfig
from igcnas.store import FileLock

__all__ = ["WorkerSlot", "physical_cores", "default_workers", "resolve_workers", "worker_env", "run_workers"]


@dataclass(frozen=True)
class WorkerSlot:
    """One worker of a run: ``index`` of ``count``, and the run's id (the tag of its trials)."""

    index: int
    count: int
    run_id: str

    @property
    def label(self) -> str:
        """``w1/2``: how its progress lines are marked (empty for a lone worker)."""
        return f"w{self.index + 1}/{self.count}" if self.count > 1 else ""

    def lock_path(self, trials_dir: str | Path) -> Path:
        """The run's lock file: its workers start trials one at a time, so the run trains exactly --trials."""
        return Path(trials_dir) / f".run-{self.run_id}.lock"

    def lock(self, trials_dir: str | Path) -> FileLock:
        """The run's lock (a no-op for a lone worker): held while a worker counts the run's trials and starts one."""
        return FileLock(self.lock_path(trials_dir) if self.count > 1 else None)

    def describe(self, config: SearchConfig) -> str:
        """``2 workers on 2 physical cores, 1 thread each`` (empty for a lone worker)."""
        if self.count == 1:
            return ""
        gpus = _gpus(config)
        where = f"{gpus} GPU(s)" if gpus else f"{physical_cores()} physical core(s), {config.num_threads} thread(s) each"
        return f"{self.count} workers on {where}"

    @staticmethod
    def single() -> WorkerSlot:
        """The slot of a search that runs in this process alone."""
        return WorkerSlot(index=0, count=1, run_id=uuid.uuid4().hex[:12])


def physical_cores() -> int:
    """Physical cores among the CPUs this process may use (SMT siblings counted once)."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in allowed:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def default_workers(*, cores: int, num_threads: int, gpus: int) -> int:
    """One worker per GPU when there are GPUs, else ``cores // num_threads`` (at least 1)."""
    return gpus if gpus > 0 else max(1, cores // max(1, num_threads))


def _gpus(config: SearchConfig) -> int:
    """How many GPUs the search trains on (0 for a CPU search)."""
    if config.device == "cpu" or config.device.startswith("cpu"):
        return 0
    import torch

    if not torch.cuda.is_available():
        return 0
    if ":" in config.device:  # one named GPU
        return 1
    return int(torch.cuda.device_count())


def resolve_workers(config: SearchConfig) -> int:
    """The number of workers of a search: ``config.workers``, or the default for this machine."""
    if config.workers is not None:
        return config.workers
    return default_workers(cores=physical_cores(), num_threads=config.num_threads, gpus=_gpus(config))


def worker_env(index: int, *, gpus: int, visible: str | None, num_threads: int = 1) -> dict[str, str]:
    """The environment of worker ``index``: its thread count and, on a GPU machine, its own GPU."""
    env = {**os.environ, "OMP_NUM_THREADS": str(num_threads), "MKL_NUM_THREADS": str(num_threads)}
    if gpus > 0:
        ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else [str(i) for i in range(gpus)]
        env["CUDA_VISIBLE_DEVICES"] = ids[index % len(ids)]
    return env


def _visible_for(device: str, visible: str | None) -> str | None:
    """The GPUs a spawned worker may take, as ``CUDA_VISIBLE_DEVICES`` ids, from this process's ``visible`` ones
    (None: all): all of them, or only the one ``cuda:N`` names.

    Example:
        >>> _visible_for("cuda:1", "4,5"), _visible_for("cuda", "4,5"), _visible_for("cuda:2", None)
        ('5', '4,5', '2')
    """
    if ":" not in device:
        return visible
    index = int(device.split(":", 1)[1])
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    return ids[index] if index < len(ids) else str(index)


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux: the children end when their pipes close
        pass


def run_workers(config: SearchConfig, space: Any, count: int) -> str:
    """Run the search as ``count`` worker processes on the study's storage; returns the study name.

    This process is worker 1. On CPU the others are forked from it once it has imported what training needs (no
    second start-up: no interpreter, no torch import); on a GPU machine they are started afresh, each with its
    own ``CUDA_VISIBLE_DEVICES`` (CUDA does not survive a fork).
    """
    from igcnas.search.config import default_storage

    name = config.study_name(space.name)
    storage = config.storage or default_storage(config.trials_dir)
    run_id = uuid.uuid4().hex[:12]
    gpus = _gpus(config)
    base = config.replace(workers=1, storage=storage, trials_dir=str(Path(config.trials_dir).resolve()))
    data = _preload(base) if gpus == 0 else None
    workers: list[_Forked | _Spawned] = []
    for index in range(1, count):
        slot = WorkerSlot(index, count, run_id)
        workers.append(_Forked(base, space, slot, data) if gpus == 0 else _Spawned(base, space, slot, gpus=gpus))
    # worker 1 keeps this process's view of the GPUs (CUDA may be initialised here already): it takes the first
    own = base.replace(device="cuda:0" if gpus and ":" not in config.device else config.device)
    try:
        from igcnas.search.optuna_backend import run_optuna

        run_optuna(own, space, data=data, slot=WorkerSlot(0, count, run_id))
        outcomes = [worker.wait() for worker in workers]
    except BaseException:
        for worker in workers:
            worker.kill()
        raise
    finally:
        WorkerSlot(0, count, run_id).lock_path(base.trials_dir).unlink(missing_ok=True)
    for index, (code, message) in enumerate(outcomes):
        if code == 2 and message:
            raise UserError(message)
        if code != 0:
            raise RuntimeError(f"search worker {index + 2}/{count} failed (exit status {code}): {message or '-'}")
    return name


def _preload(config: SearchConfig) -> Any:
    """Before forking: load the dataset once (the workers share it) and import what the first training step
    imports lazily (torch._dynamo, through the optimizer). One thread meanwhile, so no OpenMP thread pool exists
    at the fork (a forked child could not use it)."""
    import torch
    import torch._dynamo  # noqa: F401

    from igcnas.data import load_data

    torch.set_num_threads(1)
    return load_data(config.dataset, data_dir=config.data_dir, train_subset=config.train_subset, seed=config.seed)


class _Forked:
    """A worker forked from this process (CPU): it runs its slot and reports a UserError through a pipe."""

    def __init__(self, config: SearchConfig, space: Any, slot: WorkerSlot, data: Any) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        read, write = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(read)
            code = 1
            try:
                _die_with_parent()
                if os.getppid() != parent:  # the parent died before the line above took effect
                    os._exit(1)
                code = _run_slot(config, space, slot, data=data,
                                 report=lambda text: os.write(write, text.encode()[:4000]))
            except BaseException:  # noqa: BLE001 - a bug: its traceback, then exit 1
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(write)
        self.pid, self._read = pid, read

    def wait(self) -> tuple[int, str]:
        """Its exit status and its error message ('' when none)."""
        _, status = os.waitpid(self.pid, 0)
        chunks = []
        while chunk := os.read(self._read, 4096):
            chunks.append(chunk)
        os.close(self._read)
        return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL it and reap it."""
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


class _Spawned:
    """A worker started afresh (GPU machines): ``python -m igcnas.search._workers`` with its own GPU."""

    def __init__(self, config: SearchConfig, space: Any, slot: WorkerSlot, *, gpus: int) -> None:
        space_file = str(space.path) if space.path and Path(str(space.path)).is_file() else config.space
        # it sees one GPU (its CUDA_VISIBLE_DEVICES), which is cuda:0 there whatever its number here
        payload = json.dumps({"config": asdict(config.replace(space=space_file, device="cuda:0")),
                              "slot": asdict(slot)})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "igcnas.search._workers", payload],
            env=worker_env(slot.index, gpus=gpus,
                           visible=_visible_for(config.device, os.environ.get("CUDA_VISIBLE_DEVICES")),
                           num_threads=config.num_threads),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
        self.tail: list[str] = []
        self.relay = threading.Thread(target=_relay, args=(self.proc, self.tail), daemon=True)
        self.relay.start()

    def wait(self) -> tuple[int, str]:
        """Its exit status and its error message (its last line of error output)."""
        code = self.proc.wait()
        self.relay.join(timeout=5)
        last = next((line for line in reversed(self.tail) if line.strip()), "")
        return code, last[len("igcnas: error: "):] if last.startswith("igcnas: error: ") else last

    def kill(self) -> None:
        """SIGKILL it and reap it."""
        self.proc.kill()
        self.proc.wait()


def _relay(proc: subprocess.Popen[str], tail: list[str]) -> None:
    """Copy a worker's stderr to ours line by line, keeping its last lines for an error message."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if not line.startswith("igcnas: error: "):  # the parent reports a worker's error once, itself
            sys.stderr.write(line)
            sys.stderr.flush()
        tail.append(line.rstrip("\n"))
        del tail[:-20]


def _run_slot(config: SearchConfig, space: Any, slot: WorkerSlot, *, report: Any, data: Any = None) -> int:
    """Run one worker's share of the search; a UserError goes to ``report`` and gives exit status 2."""
    from igcnas.search.optuna_backend import run_optuna

    try:
        run_optuna(config, space, data=data, slot=slot)
    except UserError as error:
        report(str(error))
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _main(argv: list[str]) -> int:
    """A worker process started afresh: run the Optuna backend in the slot given as JSON."""
    from igcnas.search.search_space import load_space

    payload = json.loads(argv[0])
    settings = payload["config"]
    settings["objectives"] = tuple(settings["objectives"])
    config = SearchConfig(**settings)

    def report(text: str) -> None:
        print(f"igcnas: error: {text}", file=sys.stderr, flush=True)

    return _run_slot(config, load_space(config.space), WorkerSlot(**payload["slot"]), report=report)


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
