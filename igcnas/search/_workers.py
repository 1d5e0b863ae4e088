"""``--workers N``: several trials at once on one machine, as worker processes on the same Optuna storage.

The parent starts N copies of itself (``python -m igcnas.search._workers``), each running the Optuna backend on
the study's storage with one :class:`WorkerSlot`: its index (which offsets the sampler's seed, so the workers do
not sample alike) and the run's id. Every trial of the run is tagged with that id, and the workers stop together
once the run has trained ``--trials`` trials (counted in the storage, in-flight trials included, so the total is
exact). Each worker's progress lines carry its label (``w1/2``) and reach the parent's stderr.

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

__all__ = ["WorkerSlot", "RunLock", "physical_cores", "default_workers", "resolve_workers", "worker_env", "run_workers"]


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

    def lock(self, trials_dir: str | Path) -> RunLock:
        """The run's lock (a no-op for a lone worker): held while a worker counts the run's trials and starts one."""
        return RunLock(self.lock_path(trials_dir) if self.count > 1 else None)

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


class RunLock:
    """An exclusive ``flock`` on the run's lock file, released at most once per acquire (``path`` None: no-op)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._handle: Any = None

    def acquire(self) -> None:
        """Wait for the lock."""
        if self.path is None or self._handle is not None:
            return
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a+b")  # noqa: SIM115 - held across calls, closed by release()
        fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX)

    def release(self) -> None:
        """Give the lock back (nothing when not held)."""
        if self._handle is None:
            return
        import fcntl

        fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None


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


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux: the children end when their pipes close
        pass


def run_workers(config: SearchConfig, space: Any, count: int) -> str:
    """Run the search as ``count`` worker processes on the study's storage; returns the study name."""
    from igcnas.search.config import default_storage

    name = config.study_name(space.name)
    storage = config.storage or default_storage(config.trials_dir)
    run_id = uuid.uuid4().hex[:12]
    space_file = str(space.path) if space.path and Path(str(space.path)).is_file() else config.space
    child = config.replace(workers=1, storage=storage, space=space_file,
                           trials_dir=str(Path(config.trials_dir).resolve()))
    gpus = _gpus(config)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    procs = []
    for index in range(count):
        payload = json.dumps({"config": asdict(child), "slot": asdict(WorkerSlot(index, count, run_id))})
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "igcnas.search._workers", payload],
            env=worker_env(index, gpus=gpus, visible=visible, num_threads=config.num_threads),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent))
    errors: list[list[str]] = [[] for _ in procs]
    relays = [threading.Thread(target=_relay, args=(proc, errors[i]), daemon=True) for i, proc in enumerate(procs)]
    for relay in relays:
        relay.start()
    try:
        codes = [proc.wait() for proc in procs]
    except BaseException:
        for proc in procs:
            proc.kill()
        raise
    finally:
        WorkerSlot(0, count, run_id).lock_path(child.trials_dir).unlink(missing_ok=True)
    for relay in relays:
        relay.join(timeout=5)
    failed = [(i, code) for i, code in enumerate(codes) if code != 0]
    if failed:
        index, code = failed[0]
        last = next((line for line in reversed(errors[index]) if line.strip()), f"exit status {code}")
        if last.startswith("igcnas: error: "):
            raise UserError(last[len("igcnas: error: "):])
        raise RuntimeError(f"search worker {index + 1}/{count} failed (exit status {code}): {last}")
    return name


def _relay(proc: subprocess.Popen[str], tail: list[str]) -> None:
    """Copy a worker's stderr to ours line by line, keeping its last lines for an error message."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if not line.startswith("igcnas: error: "):  # the parent reports a worker's error once, itself
            sys.stderr.write(line)
            sys.stderr.flush()
        tail.append(line.rstrip("\n"))
        del tail[:-20]


def _main(argv: list[str]) -> int:
    """A worker process: run the Optuna backend in the slot given as JSON."""
    from igcnas.search.optuna_backend import run_optuna
    from igcnas.search.search_space import load_space

    payload = json.loads(argv[0])
    settings = payload["config"]
    settings["objectives"] = tuple(settings["objectives"])
    config = SearchConfig(**settings)
    slot = WorkerSlot(**payload["slot"])
    try:
        run_optuna(config, load_space(config.space), slot=slot)
    except UserError as error:
        print(f"igcnas: error: {error}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
