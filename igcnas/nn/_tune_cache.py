"""The cache file of measured forms (:mod:`igcnas.nn.tune`): one JSON file per machine fingerprint.

The fingerprint is the CPU's model and ISA flags (``/proc/cpuinfo``), the versions of torch and igcnas, the ISA
the libraries run (:func:`library_isa`), the native kernels' source and build (``IGCNAS_NATIVE_MARCH``), the thread
count, the malloc regime (:func:`malloc_regime`) and how choices are measured (:data:`METHOD`): a change of any of
them is a new file, so every choice is remeasured. Files live in ``$IGCNAS_TUNE_DIR``, else
``$IGCNAS_CACHE_DIR/tune``, else ``~/.cache/igcnas/tune``; every write replaces the file atomically (concurrent
writers lose at most a choice, which is then measured again).

Example:
    >>> fingerprint(threads=2)["threads"]
    2
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from igcnas._allocator import allocator_status
from igcnas.nn.plan import ConvPlan

__all__ = ["METHOD", "ISA_CAPS", "fingerprint", "library_isa", "malloc_regime", "cache_file", "lookup", "store", "entries"]

_loaded: dict[str, dict[str, Any]] = {}

METHOD = 2
"""The version of how :mod:`igcnas.nn.tune` measures a choice (2: near wins confirmed, :data:`~igcnas.nn.tune.NEAR`):
choices measured another way are measured again."""


def malloc_regime() -> str:
    """``tuned`` when this process runs under igcnas's malloc tuning (:mod:`igcnas._allocator`), else ``system``.

    Forms are timed under the regime that will run them: under the system malloc every large allocation of a
    step is page-faulted afresh, by an amount that depends on glibc's adaptive threshold, so a choice measured
    there (several times slower, and noisy) does not hold where training runs (tuned).
    """
    return "tuned" if allocator_status() == "tuned" else "system"


ISA_CAPS: tuple[str, ...] = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
"""Environment variables that cap the instruction set of torch's own kernels, oneDNN's and MKL's: the reference
forms a choice is timed against run other code under each."""


def library_isa() -> dict[str, str]:
    """The vector ISA torch's kernels dispatch to, with every :data:`ISA_CAPS` variable that is set.

    A cap changes the speed of the torch forms (and of the naive reference), not of the native kernels, so a
    choice measured under one does not hold under another.

    Example:
        >>> list(library_isa())[0]
        'torch'
    """
    import torch

    return {"torch": torch.backends.cpu.get_cpu_capability(),
            **{name: os.environ[name] for name in ISA_CAPS if os.environ.get(name)}}


def fingerprint(*, threads: int) -> dict[str, Any]:
    """What measured choices depend on besides the op: CPU, ISA, versions, native build, threads, malloc regime."""
    return dict(_fingerprint(int(threads), malloc_regime()))


@functools.lru_cache(maxsize=16)
def _fingerprint(threads: int, malloc: str) -> dict[str, Any]:
    """:func:`fingerprint`, read once per process and thread count (/proc/cpuinfo, the kernel sources)."""
    import torch

    from igcnas import __version__
    from igcnas.nn._native_build import _INPUTS, _cpu_signature, march_setting

    cpu = _cpu_signature()
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in cpu.splitlines()
                  if line.startswith(("flags", "features"))), [])
    sources = hashlib.sha256(b"".join(p.read_bytes() for p in _INPUTS if p.is_file())).hexdigest()[:16]
    return {"cpu": model, "isa": sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4", "neon",
                                                                            "asimd", "sve"))),
            "cpu_signature": hashlib.sha256(cpu.encode()).hexdigest()[:16], "torch": torch.__version__,
            "igcnas": __version__, "library_isa": library_isa(), "native_source": sources,
            "native_march": march_setting(), "threads": int(threads), "malloc": malloc, "method": METHOD}


def cache_file(*, threads: int) -> Path:
    """The cache file of this machine and thread count."""
    tune_dir, root = os.environ.get("IGCNAS_TUNE_DIR"), os.environ.get("IGCNAS_CACHE_DIR")
    folder = Path(tune_dir) if tune_dir else (Path(root) if root else Path.home() / ".cache" / "igcnas") / "tune"
    digest = hashlib.sha256(json.dumps(fingerprint(threads=threads), sort_keys=True).encode()).hexdigest()[:20]
    return folder / f"forms-{digest}.json"


def _read(path: Path, threads: int) -> dict[str, Any]:
    """The file's content ({} when absent or unreadable)."""
    key = str(path)
    if key not in _loaded:
        try:
            data = json.loads(path.read_text())
            _loaded[key] = data if isinstance(data, dict) and isinstance(data.get("choices"), dict) else {}
        except (OSError, ValueError):
            _loaded[key] = {}
        _loaded[key].setdefault("fingerprint", fingerprint(threads=threads))
        _loaded[key].setdefault("choices", {})
    return _loaded[key]


def lookup(signature: str, *, threads: int) -> ConvPlan | None:
    """The cached plan of a signature, or None."""
    entry = _read(cache_file(threads=threads), threads)["choices"].get(signature)
    if not isinstance(entry, dict) or entry.get("form") not in ("reference", "grouped", "dense", "native"):
        return None
    return ConvPlan(entry["form"], bool(entry.get("channels_last", True)),
                    f"measured on this machine ({entry.get('label', entry['form'])}, cached)",
                    merge=int(entry.get("merge", 1)), kernel="direct" if entry.get("kernel") == "direct" else "tiles")


def store(signature: str, plan: ConvPlan, seconds: dict[str, float], *, threads: int, name: str) -> None:
    """Add a measured choice and rewrite the file (compact and not synced: a cache, remeasured if lost; a search
    meets hundreds of signatures, and an indented, fsynced rewrite of a large file per choice cost seconds)."""
    from igcnas.store import atomic_write

    path = cache_file(threads=threads)
    data = _read(path, threads)
    fresh = _reread(path)
    data["choices"].update({k: v for k, v in fresh.items() if k not in data["choices"]})  # another process's
    data["choices"][signature] = {"form": plan.form, "merge": plan.merge, "kernel": plan.kernel,
                                  "channels_last": plan.channels_last, "label": name,
                                  "ms": {k: round(v * 1000, 4) for k, v in seconds.items()}}
    text = json.dumps(data, separators=(",", ":"), sort_keys=True)
    with contextlib.suppress(OSError):  # a read-only home: the choice still holds for this process
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _reread(path: Path) -> dict[str, Any]:
    """The choices in the file now (written by another process meanwhile)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    choices = data.get("choices") if isinstance(data, dict) else None
    return choices if isinstance(choices, dict) else {}


def entries(*, threads: int) -> dict[str, dict[str, Any]]:
    """Every cached choice of this machine and thread count (signature -> entry)."""
    return dict(_read(cache_file(threads=threads), threads)["choices"])
