"""Build, cache and load the native kernel library (``_csrc/*.c``) for :mod:`igcnas.nn._native`.

The library is compiled on first use with the system C compiler (``$CC``, else ``cc`` / ``gcc``; ``-O3
-march=native -fopenmp``) into ``$IGCNAS_CACHE_DIR/native`` (default ``~/.cache/igcnas/native``; when that cannot
be written, a 0700 folder of this user under the temporary folder), named by a hash of the sources, flags,
compiler version and CPU, loaded with :mod:`ctypes` and its entry points declared (:func:`library`). The result
is kept per process (``_state``, guarded by ``_lock``; :func:`_reset` forgets it). Where it cannot be built (no
compiler, not Linux, a compile error) or ``IGCNAS_NATIVE=0`` is set, :func:`native_available` is False and
:func:`native_status` says why.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import errno
import functools
import hashlib
import logging
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["library", "native_available", "native_status"]

log = logging.getLogger("igcnas.nn._native")  # the logger name from before the split, kept for log filters

_CSRC = Path(__file__).resolve().parent / "_csrc"
_SOURCES = tuple(_CSRC / name for name in ("dw_conv.c", "group_pw.c", "group_direct.c", "pw_chain.c", "group_conv.c",
                                           "group_rot.c", "bn_act.c", "codes.c"))
"""The files compiled into the library (the slowest to compile first: they are compiled in parallel)."""
_HEADERS = (_CSRC / "native_common.h", _CSRC / "pw_tiles.h")
"""The header they include."""
_INPUTS = (*_SOURCES, *_HEADERS)
"""Every file a build (and the forms measured with it, :mod:`igcnas.nn._tune_cache`) depends on."""
_BASE_FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
_X86_FLAGS = ("-mprefer-vector-width=512",)

#: cached builds of other sources/flags older than this are deleted after a new build
_STALE_BUILD_S = 7 * 24 * 3600

_lock = threading.Lock()
_state: dict[str, Any] = {"lib": None, "status": None}


def _cache_dir() -> Path:
    """``$IGCNAS_CACHE_DIR/native``, else ``~/.cache/igcnas/native``."""
    root = os.environ.get("IGCNAS_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "igcnas"
    return base / "native"


def _compiler() -> str | None:
    """Path of the C compiler: ``$CC`` if set (and found), else ``cc``, else ``gcc``."""
    env = os.environ.get("CC")
    candidates = [env] if env else ["cc", "gcc"]
    for name in candidates:
        path = shutil.which(name)
        if path:
            return path
    return None


@functools.lru_cache(maxsize=1)
def cpuinfo_lines() -> tuple[tuple[str, str, str], ...]:
    """Every ``field : value`` line of ``/proc/cpuinfo`` as (field lowercased, value, the line stripped), in file
    order, every processor's; empty where there is no such file. Read once per process."""
    lines: list[tuple[str, str, str]] = []
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, sep, value = line.partition(":")
                if sep:
                    lines.append((key.strip().lower(), value.strip(), line.strip()))
    except OSError:
        pass
    return tuple(lines)


def _cpu_signature() -> str:
    """Model name and feature flags of this CPU (``-march=native`` code depends on them)."""
    keys = ("model name", "flags", "features", "cpu part")
    lines = {line for key, _, line in cpuinfo_lines() if key in keys}
    return platform.machine() + "\n" + "\n".join(sorted(lines))


MARCH_ENV = "IGCNAS_NATIVE_MARCH"
"""Environment variable: the ``-march`` the kernels are compiled for (default ``native``, this CPU). Another
value (``haswell``: AVX2 without AVX-512) builds the code another CPU would run, to measure it here."""

_MARCH_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def march_setting() -> str:
    """``$IGCNAS_NATIVE_MARCH`` as given, or ``native`` when unset (not checked: see :func:`_march`)."""
    return os.environ.get(MARCH_ENV, "").strip() or "native"


def _march() -> str:
    """:func:`march_setting`; RuntimeError (the build's reason) for a value gcc would not take."""
    value = march_setting()
    if not _MARCH_PATTERN.fullmatch(value):
        raise RuntimeError(f"{MARCH_ENV}={value!r} is not a -march value (e.g. native, haswell, x86-64-v3)")
    return value


def _flags() -> tuple[str, ...]:
    """Compiler flags (AVX-512 registers preferred on x86-64, where gcc otherwise sticks to 256 bits)."""
    base = tuple(f"-march={_march()}" if flag == "-march=native" else flag for flag in _BASE_FLAGS)
    if platform.machine().lower() in ("x86_64", "amd64"):
        return base + _X86_FLAGS
    return base


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Declare the argument types of the kernel entry points."""
    ptr, i64, cint = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.gpw_forward.argtypes = [ptr, i64, ptr, ptr, i64, ptr, ptr, i64, i64, cint]
    lib.gpw_forward.restype = cint
    lib.gpw_backward.argtypes = [ptr, i64, ptr, ptr, i64, ptr, ptr, ptr, i64, i64, cint]
    lib.gpw_backward.restype = cint
    lib.gpd_forward.argtypes = [ptr, i64, ptr, ptr, i64, ptr, i64, i64, cint]
    lib.gpd_forward.restype = cint
    lib.gpd_backward.argtypes = [ptr, i64, ptr, ptr, ptr, i64, ptr, ptr, ptr, i64, i64, cint]
    lib.gpd_backward.restype = cint
    lib.gpc_forward.argtypes = [ptr, ptr, ptr, i64, ptr, ptr, ptr, ptr, i64, cint]
    lib.gpc_forward.restype = cint
    lib.gpc_backward.argtypes = [ptr, ptr, ptr, ptr, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, i64, ptr, ptr, cint]
    lib.gpc_backward.restype = cint
    lib.dw_forward.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, i64, ptr, cint, cint]
    lib.dw_forward.restype = cint
    lib.dw_backward.argtypes = [ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i64, i64, ptr, cint, ptr, ptr, cint]
    lib.dw_backward.restype = cint
    lib.rot_handles.argtypes = [ptr, i64, i64, i64, i64, i64]
    lib.rot_handles.restype = cint
    lib.gc_forward.argtypes = [ptr, ptr, ptr, ptr, i64, i64, i64, i64, i64, i64, i64, i64, ptr, cint, cint]
    lib.gc_forward.restype = cint
    lib.gc_backward.argtypes = [ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i64, i64, i64, i64, i64, ptr, cint, ptr,
                                ptr, cint]
    lib.gc_backward.restype = cint
    lib.bna_stats.argtypes = [ptr, i64, i64, ptr, ptr, cint]
    lib.bna_stats.restype = cint
    lib.bna_apply_add.argtypes = [ptr, ptr, i64, i64, ptr, ptr, cint, ptr, cint]
    lib.bna_apply_add.restype = None
    lib.bna_coefficients.argtypes = [ptr, ptr, ptr, ptr, ctypes.c_double, i64, i64, ptr]
    lib.bna_coefficients.restype = None
    lib.bna_running_update.argtypes = [ptr, i64, ctypes.c_double, ptr, ptr]
    lib.bna_running_update.restype = None
    lib.bna_backward.argtypes = [ptr, ptr, ptr, ptr, ptr, i64, i64, ptr, ptr, ptr, ptr, cint, ptr, ptr, ptr, cint]
    lib.bna_backward.restype = cint
    lib.codes_agreements.argtypes = [ptr, i64, i64, ptr, cint]
    lib.codes_agreements.restype = cint
    return lib


def _private_temp_folder() -> Path:
    """``<tmp>/igcnas-native-<uid>``, created 0700; OSError unless it is a real folder only this user can write.

    The check matters on shared machines: a library another user could plant there would be loaded and run.
    """
    folder = Path(tempfile.gettempdir()) / f"igcnas-native-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise OSError(errno.EPERM, f"{folder} is not a private folder of this user", str(folder))
    return folder


def _build_slot(name: str) -> tuple[Path, str]:
    """(target path, temporary file in its folder): the user cache, else the private temporary folder."""
    errors = []
    for where in (_cache_dir, _private_temp_folder):
        try:
            folder = where()
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / name
            fd, tmp_name = tempfile.mkstemp(prefix=".igcnas_native-", suffix=".so.tmp", dir=folder)
            os.close(fd)
            return target, tmp_name
        except OSError as exc:
            errors.append(f"{exc.filename or where.__name__}: {exc.strerror or exc}")
    raise RuntimeError(f"cannot write the build cache ({'; '.join(errors)})")


def _run_compiler(args: list[str]) -> None:
    """Run one compiler command; RuntimeError with the last lines of its output when it fails."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"compiling the native kernels failed: {' | '.join(message)}")


def _link(compiler: str, flags: tuple[str, ...], output: str) -> None:
    """Compile every source to an object file, one compiler per CPU at a time, then link them into ``output``."""
    compile_flags = [flag for flag in flags if flag != "-shared"]
    with tempfile.TemporaryDirectory(prefix="igcnas-native-build-") as folder:
        objects = [str(Path(folder) / f"{path.stem}.o") for path in _SOURCES]
        jobs = max(1, min(len(_SOURCES), os.cpu_count() or 1))
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            compiles = [pool.submit(_run_compiler, [compiler, *compile_flags, "-c", "-o", obj, str(path)])
                        for path, obj in zip(_SOURCES, objects, strict=True)]
            for done in compiles:
                done.result()
        _run_compiler([compiler, *flags, "-o", output, *objects])


def _compile(compiler: str, flags: tuple[str, ...], name: str) -> Path:
    """Compile the sources into ``name`` in the first writable build folder (reusing a build already there)."""
    target, tmp_name = _build_slot(name)
    if target.exists():  # the private temporary folder already holds this build
        os.unlink(tmp_name)
        return target
    try:
        _link(compiler, flags, tmp_name)
        os.replace(tmp_name, target)  # atomic: concurrent builders each publish a complete file
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"compiling the native kernels failed: {exc}") from exc
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    for stale in target.parent.glob("igcnas_native-*.so"):  # builds of older sources, unused for a week
        with contextlib.suppress(OSError):
            if stale != target and time.time() - stale.stat().st_mtime > _STALE_BUILD_S:
                stale.unlink()
    return target


def _build() -> ctypes.CDLL:
    """Compile (or reuse the cached build of) the kernel and load it; raises ``RuntimeError`` with the reason."""
    if os.environ.get("IGCNAS_NATIVE", "").strip() == "0":
        raise RuntimeError("disabled by IGCNAS_NATIVE=0")
    if not sys.platform.startswith("linux"):
        raise RuntimeError(f"native kernels are built on Linux only (platform {sys.platform})")
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C compiler found ($CC, cc, gcc)")
    flags = _flags()
    try:
        version = subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
        sources = [path.read_bytes() for path in _INPUTS]
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"cannot query the compiler or read the kernel source: {exc}") from exc
    digest = hashlib.sha256()
    key = (compiler, " ".join(flags), version, _cpu_signature())
    for part in (*sources, *(text.encode() for text in key)):
        digest.update(part)
        digest.update(b"\0")
    name = f"igcnas_native-{digest.hexdigest()[:24]}.so"
    target = _cache_dir() / name
    if not target.exists():
        target = _compile(compiler, flags, name)
    try:
        return _bind(ctypes.CDLL(str(target)))
    except (OSError, AttributeError) as exc:
        raise RuntimeError(f"cannot load {target}: {exc}") from exc


def library() -> ctypes.CDLL | None:
    """The loaded kernel library (built once per process), or None when unavailable."""
    if _state["status"] is None:
        with _lock:
            if _state["status"] is None:
                try:
                    _state["lib"] = _build()
                    _state["status"] = "available"
                except RuntimeError as exc:
                    _state["lib"] = None
                    _state["status"] = f"unavailable: {exc}"
                    log.debug("igcnas native kernels %s", _state["status"])
    lib = _state["lib"]
    return lib if isinstance(lib, ctypes.CDLL) else None


def _reset() -> None:
    """Forget the loaded library and its status (the next use builds/loads again); for tests."""
    with _lock:
        _state["lib"] = None
        _state["status"] = None


def native_available() -> bool:
    """Whether the C kernels could be built and loaded in this process (builds them on first call)."""
    return library() is not None


def native_status() -> str:
    """``"available"`` or ``"unavailable: <reason>"`` (builds the kernels on first call)."""
    library()
    return str(_state["status"])
