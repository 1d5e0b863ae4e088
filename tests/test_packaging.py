"""Packaging: the wheel holds every package and the shipped spaces, installs in a fresh venv and runs the main job
from a folder outside the repository; no tracked file names a path of a development machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from igcnas.nn import _native

REPO = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package_of_the_source_tree() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "igcnas").rglob("__init__.py")}
    assert set(config["packages"]) == found | {"igcnas.search_spaces"}
    assert config["package-dir"] == {"igcnas.search_spaces": "search_spaces"}


# A path that only exists on some developer's machine: a home or work folder, a mount, a build farm, Windows users.
_MACHINE_PATH = re.compile(
    r"(?<![\w.~-])/(?:work|farm|home|Users|root|mnt|scratch|workspace)/[\w.-]+"
    r"|(?<![\w.~-])/op[t]/pypi|\b[A-Z]:\\\\?Users\\"
)


def _tracked_files() -> list[Path]:
    """Every file git tracks (or every file under the repository outside .git and .venv without git)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "build", "dist", "trials"}
        names = [str(p.relative_to(REPO)) for p in REPO.rglob("*")
                 if p.is_file() and not skip & set(p.relative_to(REPO).parts)]
    return [REPO / n for n in names if (REPO / n).is_file()]


def test_the_path_pattern_finds_machine_paths() -> None:
    root = "/"  # the examples are assembled so that this file does not match itself
    for text in (f"see {root}work/notes/x.md", f'Path("{root}home/alice/data")', f"{root}Users/bob/x",
                 "C:" + "\\Users\\bob", f"{root}mnt/nfs/trials", f"({root}root/.cache)", f"{root}opt/pypi/simple"):
        assert _MACHINE_PATH.search(text), text
    for text in ("../shared/datasets/cifar10", "~/.ray/auth_token", "trials/igcnas.db", "a/work/b", "https://x/home/y",
                 "/tmp/x", "sqlite:///trials/igcnas.db", "/usr/bin/env"):
        assert not _MACHINE_PATH.search(text), text


def test_no_tracked_file_names_a_path_of_a_development_machine() -> None:
    hits = []
    for path in _tracked_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary files
        for number, line in enumerate(text.splitlines(), 1):
            match = _MACHINE_PATH.search(line)
            if match:
                hits.append(f"{path.relative_to(REPO)}:{number}: {match.group(0)}")
    assert not hits, "machine paths in tracked files (use paths relative to the repository, ../shared for data):\n" \
        + "\n".join(hits)


@pytest.mark.slow
def test_the_wheel_installs_in_a_fresh_venv_and_runs_the_main_job_elsewhere(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "-q", str(REPO), "--no-deps", "--no-build-isolation", "-w", str(wheels)],
                   check=True, cwd=tmp_path, capture_output=True)
    (wheel,) = wheels.glob("igcnas-*.whl")
    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True)
    python = fresh / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # The dependencies come from this environment (a path entry, not a site dir: its editable igcnas is not seen);
    # igcnas itself only from the wheel. `pip check` then holds the wheel's bounds against those versions.
    Path(purelib, "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([*pip, "--python", str(python), "install", "-q", "--no-index", "--no-deps", str(wheel)],
                   check=True, capture_output=True)
    check = subprocess.run([*pip, "--python", str(python), "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run([str(python), "-c", "import igcnas, igcnas.search_spaces as s; print(igcnas.__file__)"],
                           cwd=elsewhere, env=env, check=True, capture_output=True, text=True).stdout
    assert Path(where.strip()).is_relative_to(fresh)
    if _native.native_available():  # where this checkout builds the kernels, the wheel's files build them too
        status = subprocess.run([str(python), "-c", "from igcnas.nn._native import native_status; print(native_status())"],
                                cwd=elsewhere, env={**env, "IGCNAS_CACHE_DIR": str(tmp_path / "cache")}, check=True,
                                capture_output=True, text=True).stdout
        assert status.strip() == "available", status
    main_job = subprocess.run([str(fresh / "bin" / "igcnas"), "search"], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=600)
    assert main_job.returncode == 0, main_job.stderr[-2000:]
    assert "Pareto front (accuracy:max, params:min):" in main_job.stdout and "hypervolume" in main_job.stdout
    assert (elsewhere / "trials" / "igc_cifar-digits" / "study.json").is_file()
