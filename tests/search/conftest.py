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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
