"""A study's trial files in an Optuna artifact store (``--artifacts URI``), for workers on several machines.

Every file the trial store writes (study.json, and each trial's trial.json, arch.json, metrics.json and weights)
is also written to the artifact store under a fixed id, ``<study>/study.json`` and
``<study>/<trial:04d>/<file>``: a rewrite of trial.json replaces the artifact, and readers on any machine find a
trial's files from its number alone (the numbers come from the Optuna storage). The local ``--trials-dir`` is
then a working copy: a reader pulls the files it lacks from the artifact store into it, so the readers of a local
folder (``igcnas pareto``, ``export``, ``evaluate``, :func:`~igcnas.search.load_study`) work unchanged on a machine
that ran no trial.

URIs:

* ``PATH`` or ``file://PATH``: :class:`optuna.artifacts.FileSystemArtifactStore` on a shared path (NFS, a mounted
  volume); each write is atomic (temporary file, ``os.replace``), so a reader never sees half a file.
* ``s3://BUCKET[/PREFIX]``: :class:`optuna.artifacts.Boto3ArtifactStore` (needs ``boto3`` and its credentials).
* ``gs://BUCKET[/PREFIX]``: :class:`optuna.artifacts.GCSArtifactStore` (needs ``google-cloud-storage``).

Example:
    >>> import tempfile
    >>> mirror = ArtifactMirror(tempfile.mkdtemp(), "demo")
    >>> mirror.put(3, "trial.json", b'{"trial": 3}')
    >>> mirror.get(3, "trial.json"), mirror.get(4, "trial.json")
    (b'{"trial": 3}', None)
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urlparse

from igcnas.errors import UserError
from igcnas.store._files import trial_folder_name

__all__ = ["ArtifactMirror", "open_artifact_store", "describe_artifacts"]

_SCHEMES = ("file", "s3", "gs")


def describe_artifacts(uri: str) -> str:
    """The URI as printed and recorded: a plain path made absolute, any other URI unchanged."""
    scheme = urlparse(uri).scheme
    if scheme in ("", "file") or len(scheme) == 1:  # a path (``C:`` counts as one)
        return str(Path(_local_path(uri)).resolve())
    return uri


def _local_path(uri: str) -> str:
    """The folder of a ``PATH`` or ``file://PATH`` URI."""
    return uri[len("file://"):] if uri.startswith("file://") else uri


def open_artifact_store(uri: str) -> Any:
    """The Optuna artifact store a ``--artifacts`` URI names (see the module docstring for the forms)."""
    if not isinstance(uri, str) or not uri.strip():
        raise UserError(f"--artifacts: {uri!r} is not an artifact store; give a shared folder or file://PATH, "
                        "s3://BUCKET/PREFIX or gs://BUCKET/PREFIX")
    parsed = urlparse(uri)
    scheme = parsed.scheme if len(parsed.scheme) > 1 else ""
    if scheme in ("", "file"):
        folder = Path(_local_path(uri))
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"--artifacts: cannot create the folder {str(folder)!r} ({error.strerror}); give a "
                            "writable shared path") from None
        return _AtomicFileSystemArtifactStore(folder)
    if scheme not in _SCHEMES:
        raise UserError(f"--artifacts: {uri!r} has the scheme {scheme!r}; allowed: a folder, file://PATH, "
                        "s3://BUCKET/PREFIX, gs://BUCKET/PREFIX")
    if not parsed.netloc:
        raise UserError(f"--artifacts: {uri!r} names no bucket (e.g. {scheme}://my-bucket/igcnas)")
    prefix = parsed.path.strip("/")
    if scheme == "s3":
        try:
            from optuna.artifacts import Boto3ArtifactStore

            store: Any = Boto3ArtifactStore(parsed.netloc)
        except ImportError:
            raise UserError(f"--artifacts {uri}: S3 needs boto3; pip install boto3") from None
    else:
        try:
            from optuna.artifacts import GCSArtifactStore

            store = GCSArtifactStore(parsed.netloc)
        except ImportError:
            raise UserError(f"--artifacts {uri}: GCS needs google-cloud-storage; pip install google-cloud-storage") \
                from None
    return _Prefixed(store, prefix) if prefix else store


class _AtomicFileSystemArtifactStore:
    """:class:`optuna.artifacts.FileSystemArtifactStore` whose ids may hold folders and whose writes are atomic."""

    def __init__(self, base_path: Path) -> None:
        from optuna.artifacts import FileSystemArtifactStore

        self._inner = FileSystemArtifactStore(base_path)
        self.base_path = base_path

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self._inner.open_reader(artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        path = self._inner._get_filepath(artifact_id)  # validates the id (no absolute path, nothing outside)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                shutil.copyfileobj(content_body, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def remove(self, artifact_id: str) -> None:
        self._inner.remove(artifact_id)


class _Prefixed:
    """An artifact store whose ids all start with ``<prefix>/`` (the path of an ``s3://`` or ``gs://`` URI)."""

    def __init__(self, inner: Any, prefix: str) -> None:
        self._inner = inner
        self._prefix = prefix

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self._inner.open_reader(f"{self._prefix}/{artifact_id}")

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self._inner.write(f"{self._prefix}/{artifact_id}", content_body)

    def remove(self, artifact_id: str) -> None:
        self._inner.remove(f"{self._prefix}/{artifact_id}")


class ArtifactMirror:
    """One study's files in an artifact store, by fixed ids (``<study>/study.json``, ``<study>/<trial>/<file>``)."""

    def __init__(self, uri: str, study: str, *, store: Any = None) -> None:
        self.uri = uri
        self.study = study
        self._store = store if store is not None else open_artifact_store(uri)

    def __repr__(self) -> str:
        return f"ArtifactMirror({self.uri!r}, {self.study!r})"

    def artifact_id(self, number: int | None, name: str) -> str:
        """The id of a study file (``number`` None) or of a trial file."""
        study = quote(self.study, safe="")
        return f"{study}/{name}" if number is None else f"{study}/{trial_folder_name(number)}/{name}"

    def put(self, number: int | None, name: str, data: bytes) -> None:
        """Write (or replace) one file."""
        try:
            self._store.write(self.artifact_id(number, name), io.BytesIO(data))
        except OSError as error:
            raise UserError(f"--artifacts {self.uri}: cannot write {self.artifact_id(number, name)} "
                            f"({error.strerror or error}); check the shared path or bucket") from None

    def get(self, number: int | None, name: str) -> bytes | None:
        """The bytes of one file, or None when the artifact store has none."""
        from optuna.artifacts.exceptions import ArtifactNotFound

        try:
            with self._store.open_reader(self.artifact_id(number, name)) as reader:
                return bytes(reader.read())
        except ArtifactNotFound:
            return None
