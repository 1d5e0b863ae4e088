"""A real two-node Ray cluster started with ``ray start``: a head with no CPUs, and a worker node in a private mount
namespace with a tmpfs over the driver's trials folder, so it cannot see the driver's files (as on separate
machines without NFS). Token authentication is on, as ``ray start`` does by default since Ray 2.60.

Every process of the cluster carries a marker in its environment; teardown stops exactly those processes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

_MARK = "IGCNAS_TEST_CLUSTER"


@dataclass(frozen=True)
class RayCluster:
    """A running test cluster: its address, the environment every joining process needs, the hidden folder."""

    address: str
    env: dict[str, str]
    trials_dir: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _marked(mark: str) -> list[int]:
    """The processes whose environment carries ``mark`` (those this fixture started, and their children)."""
    needle = f"{_MARK}={mark}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle in handle.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


@pytest.fixture
def marked_processes() -> Callable[[str], list[int]]:
    """``find(mark)``: the processes whose environment carries ``IGCNAS_TEST_CLUSTER=mark``."""
    return _marked


def stop_marked(mark: str, *, grace_s: float = 10.0) -> None:
    """SIGTERM every process carrying ``mark``, then SIGKILL what is left after ``grace_s``."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        pids = _marked(mark)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while _marked(mark) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _marked(mark):
            return


def _can_isolate() -> str:
    """'' when this process may create a mount namespace with a tmpfs, else why not."""
    if not shutil.which("unshare"):
        return "no 'unshare' command"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs tmpfs /mnt 2>/dev/null || mount -t tmpfs tmpfs /tmp"],
                           capture_output=True, text=True)
    return "" if probe.returncode == 0 else f"cannot mount a tmpfs in a private mount namespace ({probe.stderr.strip()})"


def _wait_for_nodes(env: dict[str, str], address: str, count: int, *, timeout_s: float = 90.0) -> None:
    script = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
              "print(sum(1 for n in ray.nodes() if n['Alive'] and n['Resources'].get('CPU')))")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = subprocess.run([sys.executable, "-c", script, address], env=env, capture_output=True, text=True,
                              timeout=60)
        if done.returncode == 0 and done.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(1.0)
    pytest.fail(f"the Ray cluster at {address} did not get {count} worker node(s) in {timeout_s:.0f} s")


@pytest.fixture
def ray_cluster(tmp_path: Path) -> Iterator[RayCluster]:
    """Head (0 CPUs) + one 2-CPU worker node that sees a private tmpfs at ``trials_dir``."""
    why = _can_isolate()
    if why:
        pytest.skip(f"needs a private mount namespace for the worker node: {why}")
    ray = Path(sys.executable).with_name("ray")
    mark = secrets.token_hex(8)
    env = {**os.environ, _MARK: mark, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0"}
    trials = tmp_path / "trials"
    trials.mkdir()
    port = _free_port()
    address = f"127.0.0.1:{port}"
    logs = tmp_path / "cluster-logs"
    logs.mkdir()
    try:
        with (logs / "head.log").open("wb") as out:
            subprocess.run([str(ray), "start", "--head", "--num-cpus=0", f"--port={port}",
                            "--include-dashboard=false", "--disable-usage-stats"],
                           env=env, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=120)
        hidden = ('mount -t tmpfs tmpfs "$0" && exec "$1" start --address="$2" --num-cpus=2 '
                  "--disable-usage-stats")
        with (logs / "worker.log").open("wb") as out:
            subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", hidden, str(trials),
                            str(ray), address], env=env, stdout=out, stderr=subprocess.STDOUT, check=True,
                           timeout=120)
        _wait_for_nodes(env, address, 1)
        yield RayCluster(address=address, env=env, trials_dir=trials)
    finally:
        stop_marked(mark)


# -- a real PostgreSQL server ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PostgresServer:
    """A PostgreSQL server on 127.0.0.1 in a temporary folder; :meth:`new_database` gives each test its own."""

    host: str
    port: int
    process: subprocess.Popen[bytes]

    def new_database(self, name: str) -> str:
        """Create database ``name`` and return its SQLAlchemy URL (a plain ``postgresql://`` URL, as users give)."""
        import psycopg

        with psycopg.connect(host=self.host, port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@{self.host}:{self.port}/{name}"


def _postgres_binaries() -> tuple[str, str] | None:
    """``initdb`` and ``postgres`` from PATH or a Debian PostgreSQL install, or None."""
    import glob

    for folder in [None, *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]:
        initdb = shutil.which("initdb", path=folder)
        server = shutil.which("postgres", path=folder)
        if initdb and server:
            return initdb, server
    return None


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """Start a PostgreSQL server as an unprivileged user (``nobody`` when running as root); stop exactly it.

    Skips, with the reason, where no server binaries or no psycopg are installed.
    """
    binaries = _postgres_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL server binaries (initdb, postgres) on PATH or in /usr/lib/postgresql/*/bin")
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'igcnas[postgres]')")
    initdb, server = binaries
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="igcnas-pg-"))
    user: dict[str, int] = {}
    if os.geteuid() == 0:  # the server refuses to run as root
        import pwd

        entry = pwd.getpwnam("nobody")
        user = {"user": entry.pw_uid, "group": entry.pw_gid}
        os.chown(root, entry.pw_uid, entry.pw_gid)
    data, log = root / "data", root / "server.log"
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    subprocess.run([initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True, env=env, cwd=root, **user)  # type: ignore[call-overload]
    port = _free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [server, "-D", str(data), "-p", str(port), "-k", str(root), "-c", "listen_addresses=127.0.0.1",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "max_connections=200"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root, **user)  # type: ignore[call-overload]
    deadline = time.time() + 60
    try:
        while True:
            try:
                psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres").close()
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        yield PostgresServer(host="127.0.0.1", port=port, process=proc)
    finally:
        proc.send_signal(signal.SIGINT)  # fast shutdown of exactly this server (its children exit with it)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def digits400() -> Any:
    """The embedded digits data, a stratified 400-image training subset (one load per test module)."""
    from igcnas.data import load_data

    return load_data("digits", train_subset=400, seed=0)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one thread for the test (small models train fastest so), restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class FlatTrain:
    """Stands in for ``igcnas.train.train``: a flat learning curve at ``accuracy``, no real training; it records the
    architectures it was asked to train."""

    def __init__(self, accuracy: float = 0.8) -> None:
        self.accuracy = accuracy
        self.archs: list[dict[str, Any]] = []

    def __call__(self, model: Any, data: Any, config: Any, *, on_epoch: Any, checkpoint_dir: Any, arch: Any,
                 progress: bool) -> Any:
        from igcnas.testing import replay_curve

        self.archs.append(arch)
        return replay_curve([self.accuracy] * config.epochs, on_epoch=on_epoch, checkpoint_dir=checkpoint_dir,
                            obey_pruner=False)


@pytest.fixture
def flat_train() -> FlatTrain:
    """A fresh :class:`FlatTrain` at accuracy 0.8 for the test."""
    return FlatTrain()
