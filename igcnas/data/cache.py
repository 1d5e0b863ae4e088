"""On-disk cache of decoded image folders: ``<root>/.igcnas-cache/<split>-<key>.pt``.

The key hashes the sorted ``(relative path, size, mtime_ns)`` list of the split's files (and the class
list and cache format version), so adding, removing, replacing or touching a file invalidates it.
Files hold only tensors, strings and ints, written with ``torch.save`` and read back with
``torch.load(weights_only=True)`` (no arbitrary pickle). When ``<root>`` is not writable (a read-only
shared dataset folder) the cache goes to ``$IGCNAS_CACHE_DIR`` (else ``$XDG_CACHE_HOME/igcnas`` or
``~/.cache/igcnas``) under a folder keyed by the dataset's absolute path.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "CACHE_DIRNAME",
    "CACHE_VERSION",
    "CachedSplit",
    "user_cache_dir",
    "content_key",
    "is_writable_dir",
    "cache_dirs",
    "save_cached_split",
    "load_cached_split",
    "read_cache",
    "write_cache",
]

CACHE_DIRNAME = ".igcnas-cache"
CACHE_VERSION = 1


@dataclass(frozen=True)
class CachedSplit:
    """A decoded split as stored in the cache."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    skipped: tuple[str, ...]


def user_cache_dir() -> Path:
    """The per-user cache folder: ``$IGCNAS_CACHE_DIR``, else ``$XDG_CACHE_HOME/igcnas``, else ``~/.cache/igcnas``."""
    explicit = os.environ.get("IGCNAS_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "igcnas"


def content_key(entries: Iterable[tuple[str, int, int]], *, classes: Iterable[str], split: str) -> str:
    """A 16-hex-digit hash of the sorted ``(relative path, size, mtime_ns)`` list plus classes and split."""
    digest = hashlib.sha256()
    digest.update(f"igcnas-cache-v{CACHE_VERSION}\0{split}\0".encode())
    digest.update("\0".join(classes).encode("utf-8", "surrogateescape"))
    for rel, size, mtime_ns in sorted(entries):
        digest.update(f"\n{rel}\0{size}\0{mtime_ns}".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


def is_writable_dir(path: Path) -> bool:
    """Whether ``path`` (or, if missing, its nearest existing parent) may be written.

    Read-only permission bits are honoured even when running as root, so a ``r-x`` shared dataset
    folder is never written into.
    """
    probe = Path(path)
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    try:
        mode = probe.stat().st_mode
    except OSError:
        return False
    if not stat.S_ISDIR(mode) or not (mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)):
        return False
    return os.access(probe, os.W_OK | os.X_OK)


def _slug(text: str) -> str:
    """A short filesystem-safe name fragment."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:40] or "data"


def cache_dirs(root: Path) -> list[Path]:
    """Candidate cache folders of dataset ``root``: next to the data first, then the user cache."""
    absolute = Path(os.path.abspath(root))
    path_hash = hashlib.sha256(str(absolute).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return [absolute / CACHE_DIRNAME, user_cache_dir() / f"{_slug(absolute.name)}-{path_hash}"]


def _file_name(split: str, key: str) -> str:
    """Cache file name of one split."""
    return f"{split}-{key}.pt"


def save_cached_split(path: Path, data: CachedSplit) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    blob = {
        "version": CACHE_VERSION,
        "images": data.images.contiguous(),
        "labels": data.labels,
        "classes": list(data.classes),
        "skipped": list(data.skipped),
    }
    path = Path(path)
    tmp_name: str | None = None
    try:
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp", delete=False
        ) as tmp:
            tmp_name = tmp.name
            torch.save(blob, tmp)
        os.replace(tmp_name, path)
        tmp_name = None
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)


def load_cached_split(path: Path) -> CachedSplit | None:
    """Read a cache file with ``torch.load(weights_only=True)``; None if it is damaged or of another version."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("version") != CACHE_VERSION:
            return None
        images, labels = blob["images"], blob["labels"]
        if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.dim() == 4):
            return None
        if not (isinstance(labels, torch.Tensor) and labels.dtype == torch.int64 and labels.dim() == 1):
            return None
        if images.shape[0] != labels.shape[0]:
            return None
        return CachedSplit(
            images=images.contiguous(),
            labels=labels,
            classes=tuple(str(c) for c in blob["classes"]),
            skipped=tuple(str(s) for s in blob["skipped"]),
        )
    except Exception:  # a damaged cache file is rebuilt, never fatal
        return None


def read_cache(root: Path, split: str, key: str) -> tuple[CachedSplit | None, Path | None]:
    """Load the cached split if a file with this key exists in any cache folder (damaged files are ignored)."""
    for folder in cache_dirs(root):
        path = folder / _file_name(split, key)
        if path.is_file():
            data = load_cached_split(path)
            if data is not None:
                return data, path
    return None, None


def write_cache(root: Path, split: str, key: str, data: CachedSplit) -> Path | None:
    """Store ``data`` in the first writable cache folder; drop stale files of the same split there.

    Returns the file written, or None (with a warning) when no folder could be written.
    """
    problems: list[str] = []
    for folder in cache_dirs(root):
        if not is_writable_dir(folder):
            problems.append(f"{folder} (not writable)")
            continue
        target = folder / _file_name(split, key)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            save_cached_split(target, data)
        except OSError as exc:
            problems.append(f"{folder} ({exc.strerror or exc})")
            continue
        for stale in folder.glob(f"{split}-*.pt"):
            if stale.name != target.name:
                stale.unlink(missing_ok=True)
        return target
    warnings.warn(
        f"igcnas: could not write the decoded-image cache for {root} ({'; '.join(problems)}); "
        "images will be decoded again next time (set IGCNAS_CACHE_DIR to a writable folder)",
        stacklevel=3,
    )
    return None
