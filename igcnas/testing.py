"""Stand-ins for tests of code that trains: :func:`replay_curve` plays a given learning curve as training would.

A search, a benchmark or a baseline run takes a ``train_fn`` with the signature of :func:`igcnas.train.train`. A
test passes a small callable that picks the accuracy of each epoch and hands the rest to :func:`replay_curve`, so the
pruning and recording logic run exactly as with real training, in milliseconds. It lives in the package (as
``optuna.testing`` does) so that Ray workers, which cannot import a test module, can import it.

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     result = replay_curve([0.5, 0.6, 0.7], on_epoch=lambda m: m.epoch == 2, checkpoint_dir=folder)
    >>> result.status, result.epochs_trained, result.val_accuracy
    ('pruned', 2, 0.6)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from igcnas.train import EpochMetrics, TrainResult

__all__ = ["replay_curve"]


def replay_curve(curve: Sequence[float], *, on_epoch: Callable[[EpochMetrics], bool | None],
                 checkpoint_dir: str | Path, obey_pruner: bool = True) -> TrainResult:
    """Report ``curve[e - 1]`` as the accuracy of epoch ``e`` to ``on_epoch``, as :func:`igcnas.train.train` would.

    Stops early, with status ``pruned``, when ``on_epoch`` returns true and ``obey_pruner`` is set. Creates
    ``checkpoint_dir`` and writes an empty weights file there, as a finished training leaves one.
    """
    if not curve:
        raise ValueError("curve: empty; give one accuracy per epoch")
    folder = Path(checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    history: list[EpochMetrics] = []
    status = "completed"
    for epoch, accuracy in enumerate(curve, 1):
        metrics = EpochMetrics(epoch, 1.0, accuracy, 1.0, accuracy, 0.1, 0.01, 1000.0, 100)
        history.append(metrics)
        if on_epoch(metrics) and obey_pruner:
            status = "pruned"
            break
    (folder / "weights.safetensors").write_bytes(b"")
    last = history[-1].val_accuracy
    best = max(m.val_accuracy for m in history)
    return TrainResult(status, len(history), history, last, best, None, 0.01, status)  # type: ignore[arg-type]
