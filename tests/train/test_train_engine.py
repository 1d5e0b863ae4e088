"""The training engine on the digits dataset: learning, determinism, divergence, pruning, checkpoints, resume."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from igcnas.data import DataBundle, ImageTensors, normalize
from igcnas.errors import UserError
from igcnas.train import (
    ARCH_FILE,
    CHECKPOINT_FILE,
    METRICS_FILE,
    WEIGHTS_FILE,
    EpochMetrics,
    TrainConfig,
    TrainResult,
    evaluate,
    load_weights,
    train,
)

MakeCnn = Callable[..., nn.Module]
_TIMING = ("seconds", "images_per_second")


def _cfg(**changes: Any) -> TrainConfig:
    """A fast CPU config for digits."""
    values: dict[str, Any] = {"epochs": 3, "batch_size": 32, "device": "cpu", "num_threads": 1}
    values.update(changes)
    return TrainConfig(**values)


def _numbers(history: list[EpochMetrics]) -> list[dict[str, Any]]:
    """Per-epoch metrics without the wall-clock fields."""
    return [{k: v for k, v in m.to_dict().items() if k not in _TIMING} for m in history]


class _NanAfter(nn.Module):
    """Wraps a model; its output becomes NaN from the ``after``-th forward call on (in ``mode``)."""

    def __init__(self, inner: nn.Module, *, after: int, mode: str = "train") -> None:
        super().__init__()
        self.inner = inner
        self.after = after
        self.mode = mode
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if (self.mode == "train") == self.training:
            self.calls += 1
            if self.calls > self.after:
                return out * float("nan")
        return out


def test_learns_digits(digits: DataBundle, make_cnn: MakeCnn) -> None:
    result = train(make_cnn(), digits, _cfg(epochs=5), progress=False)
    assert result.status == "completed" and result.epochs_trained == 5 and len(result.history) == 5
    assert result.val_accuracy > 0.6  # chance is 0.1; ~0.85-0.93 measured over seeds
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.best_val_accuracy == max(m.val_accuracy for m in result.history)
    assert result.history[result.best_epoch - 1].val_accuracy == result.best_val_accuracy
    assert result.test_accuracy is None and result.reason == "completed 5/5 epochs"
    first = result.history[0]
    assert first.epoch == 1 and first.train_images == (len(digits.train) // 32) * 32
    assert first.seconds > 0 and first.images_per_second > 0 and 0 < first.lr <= 0.1
    assert result.device == "cpu" and result.seconds >= sum(m.seconds for m in result.history) * 0.99


def test_same_seed_same_numbers_different_seed_different(digits: DataBundle, make_cnn: MakeCnn) -> None:
    a = train(make_cnn(seed=0), digits, _cfg(seed=0), progress=False)
    b = train(make_cnn(seed=0), digits, _cfg(seed=0), progress=False)
    c = train(make_cnn(seed=0), digits, _cfg(seed=1), progress=False)
    assert _numbers(a.history) == _numbers(b.history)
    assert _numbers(a.history) != _numbers(c.history)


def test_nan_output_stops_the_run_as_diverged(digits: DataBundle, make_cnn: MakeCnn, tmp_path: Path) -> None:
    model = _NanAfter(make_cnn(), after=1)
    result = train(model, digits, _cfg(epochs=5), checkpoint_dir=tmp_path, progress=False)
    assert result.status == "diverged" and result.epochs_trained == 0 and result.history == []
    assert "nan" in result.reason and "epoch 1, batch 2" in result.reason and "learning rate" in result.reason
    assert model.calls == 2  # stopped at once: no further training steps
    assert result.val_accuracy == 0.0 and result.test_accuracy is None
    assert not (tmp_path / WEIGHTS_FILE).exists()
    metrics = json.loads((tmp_path / METRICS_FILE).read_text())
    assert metrics["status"] == "diverged" and metrics["result"]["reason"] == result.reason


def test_nan_in_validation_is_diverged(digits: DataBundle, make_cnn: MakeCnn) -> None:
    result = train(_NanAfter(make_cnn(), after=0, mode="eval"), digits, _cfg(epochs=3), progress=False)
    assert result.status == "diverged" and result.epochs_trained == 0
    assert result.reason.startswith("validation loss became nan after epoch 1")


def test_huge_learning_rate_diverges(digits: DataBundle, make_cnn: MakeCnn) -> None:
    result = train(make_cnn(), digits, _cfg(epochs=3, lr=1e6), progress=False)
    assert result.status == "diverged"
    assert "loss became" in result.reason and "lr=1e+06" in result.reason


def test_on_epoch_true_prunes(digits: DataBundle, make_cnn: MakeCnn) -> None:
    seen: list[int] = []

    def pruner(metrics: EpochMetrics) -> bool:
        seen.append(metrics.epoch)
        return metrics.epoch >= 2

    result = train(make_cnn(), digits, _cfg(epochs=5), on_epoch=pruner, progress=False)
    assert result.status == "pruned" and result.epochs_trained == 2 < 5
    assert seen == [1, 2] and len(result.history) == 2
    assert "epoch 2/5" in result.reason
    assert result.val_accuracy == result.history[-1].val_accuracy


def test_on_epoch_none_continues_and_exceptions_propagate(
    digits: DataBundle, make_cnn: MakeCnn, tmp_path: Path
) -> None:
    calls: list[int] = []
    result = train(
        make_cnn(), digits, _cfg(epochs=2), on_epoch=lambda m: calls.append(m.epoch), progress=False
    )
    assert result.status == "completed" and calls == [1, 2]

    def boom(metrics: EpochMetrics) -> None:
        raise RuntimeError("pruner crashed")

    with pytest.raises(RuntimeError, match="pruner crashed"):
        train(make_cnn(), digits, _cfg(epochs=2), on_epoch=boom, checkpoint_dir=tmp_path, progress=False)
    metrics = json.loads((tmp_path / METRICS_FILE).read_text())
    assert metrics["status"] == "failed" and "pruner crashed" in metrics["reason"]
    assert len(metrics["history"]) == 1  # the epoch finished before the crash is kept


def test_checkpoint_dir_contents_and_weights_round_trip(
    digits: DataBundle, make_cnn: MakeCnn, tmp_path: Path
) -> None:
    arch = {"family": "test-cnn", "width": 16}
    cfg = _cfg(epochs=3)
    during: list[tuple[str, int]] = []

    def peek(metrics: EpochMetrics) -> None:
        saved = json.loads((tmp_path / METRICS_FILE).read_text())
        during.append((saved["status"], len(saved["history"])))

    model = make_cnn()
    result = train(model, digits, cfg, checkpoint_dir=tmp_path, arch=arch, on_epoch=peek, progress=False)
    assert during == [("running", 1), ("running", 2), ("running", 3)]  # written after every epoch
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [ARCH_FILE, WEIGHTS_FILE, METRICS_FILE, CHECKPOINT_FILE]
    )  # no temp files left behind
    assert json.loads((tmp_path / ARCH_FILE).read_text()) == arch
    metrics = json.loads((tmp_path / METRICS_FILE).read_text())
    assert metrics["status"] == "completed" and metrics["config"] == cfg.to_dict() and metrics["arch"] == arch
    assert TrainResult.from_dict(metrics["result"]) == result
    assert [EpochMetrics.from_dict(m) for m in metrics["history"]] == result.history
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert state["epoch"] == 3 and TrainConfig.from_dict(state["config"]) == cfg

    restored = load_weights(make_cnn(seed=123), tmp_path / WEIGHTS_FILE)
    for key, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    loss, acc = evaluate(restored, digits.val, digits, batch_size=64, device="cpu")
    assert acc == result.val_accuracy and loss == pytest.approx(result.history[-1].val_loss, rel=1e-6)


def test_resume_gives_the_same_numbers_as_an_uninterrupted_run(
    digits: DataBundle, make_cnn: MakeCnn, tmp_path: Path
) -> None:
    def model(seed: int) -> nn.Module:  # dropout exercises the global RNG state in the checkpoint
        return nn.Sequential(make_cnn(seed=seed), nn.Dropout(0.2))

    cfg = _cfg(epochs=4, seed=5)
    full = train(model(0), digits, cfg, progress=False)
    first = train(
        model(0), digits, cfg, checkpoint_dir=tmp_path, on_epoch=lambda m: m.epoch == 2, progress=False
    )
    assert first.status == "pruned" and first.epochs_trained == 2

    resumed = train(model(99), digits, cfg, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert resumed.status == "completed" and resumed.epochs_trained == 4
    assert _numbers(resumed.history) == _numbers(full.history)
    assert resumed.val_accuracy == full.val_accuracy
    metrics = json.loads((tmp_path / METRICS_FILE).read_text())
    assert metrics["status"] == "completed" and len(metrics["history"]) == 4


def test_resume_checks_config_and_needs_a_directory(
    digits: DataBundle, make_cnn: MakeCnn, tmp_path: Path
) -> None:
    cfg = _cfg(epochs=2)
    train(make_cnn(), digits, cfg, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(UserError, match="lr: saved 0.1 vs now 0.05"):
        train(make_cnn(), digits, cfg.replace(lr=0.05), checkpoint_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(UserError, match="checkpoint_dir"):
        train(make_cnn(), digits, cfg, resume=True, progress=False)
    # fields that do not change the numbers may differ; a finished run resumes to the same result
    again = train(make_cnn(), digits, cfg.replace(eval_batch_size=100), checkpoint_dir=tmp_path, resume=True)
    assert again.status == "completed" and again.epochs_trained == 2


def test_resume_without_checkpoint_starts_fresh(
    digits: DataBundle, make_cnn: MakeCnn, tmp_path: Path
) -> None:
    cfg = _cfg(epochs=2)
    fresh = train(make_cnn(), digits, cfg, checkpoint_dir=tmp_path / "run", resume=True, progress=False)
    plain = train(make_cnn(), digits, cfg, progress=False)
    assert fresh.status == "completed" and _numbers(fresh.history) == _numbers(plain.history)


def test_evaluate_matches_a_direct_computation(digits: DataBundle, make_cnn: MakeCnn) -> None:
    model = make_cnn()
    model.train()
    loss, acc = evaluate(model, digits.val, digits, batch_size=7, device="cpu")
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        logits = model(normalize(digits.val.images, digits.mean, digits.std))
    assert acc == pytest.approx((logits.argmax(1) == digits.val.labels).float().mean().item())
    assert loss == pytest.approx(nn.functional.cross_entropy(logits, digits.val.labels).item(), rel=1e-5)


def test_evaluate_test_split(digits: DataBundle, make_cnn: MakeCnn) -> None:
    with_test = dataclasses.replace(digits, test=digits.test if digits.test is not None else digits.val)
    result = train(make_cnn(), with_test, _cfg(epochs=2), evaluate_test=True, progress=False)
    assert result.test_accuracy is not None and 0.0 <= result.test_accuracy <= 1.0
    assert result.test_loss is not None and result.test_loss > 0
    with pytest.raises(UserError, match="no test split"):
        train(make_cnn(), dataclasses.replace(digits, test=None), _cfg(), evaluate_test=True, progress=False)


def test_bad_inputs_raise_user_errors(digits: DataBundle, make_cnn: MakeCnn) -> None:
    with pytest.raises(UserError, match="num_classes=10"):
        train(make_cnn(num_classes=7), digits, _cfg(), progress=False)
    empty = ImageTensors(digits.val.images[:0], digits.val.labels[:0])
    with pytest.raises(UserError, match="val_fraction"):
        train(make_cnn(), dataclasses.replace(digits, val=empty), _cfg(), progress=False)
    frozen = make_cnn().requires_grad_(False)
    with pytest.raises(UserError, match="no trainable parameters"):
        train(frozen, digits, _cfg(), progress=False)
    with pytest.raises(UserError, match="progress"):
        train(make_cnn(), digits, _cfg(), progress="yes")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="TrainConfig"):
        train(make_cnn(), digits, {"epochs": 1}, progress=False)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_cuda_requested_without_cuda(digits: DataBundle, make_cnn: MakeCnn) -> None:
    with pytest.raises(UserError, match="CUDA is not available"):
        train(make_cnn(), digits, _cfg(device="cuda"), progress=False)


def test_max_train_batches_and_schedule_in_history(digits: DataBundle, make_cnn: MakeCnn) -> None:
    cfg = _cfg(epochs=4, batch_size=16, max_train_batches=3, schedule="step", lr=0.2)
    result = train(make_cnn(), digits, cfg, progress=False)
    assert [m.train_images for m in result.history] == [48] * 4
    assert [m.lr for m in result.history] == pytest.approx([0.2, 0.2, 0.02, 0.002])


def test_bf16_autocast_and_channels_last_on_cpu(digits: DataBundle, make_cnn: MakeCnn) -> None:
    model = make_cnn()
    cfg = _cfg(epochs=2, amp="bf16", channels_last="on", label_smoothing=0.1, warmup_epochs=1)
    result = train(model, digits, cfg, progress=False)
    assert result.status == "completed"
    assert result.val_accuracy > 0.2
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_global_torch_settings_are_restored(digits: DataBundle, make_cnn: MakeCnn) -> None:
    torch.set_num_threads(2)  # the autouse fixture restores the original count afterwards
    deterministic = torch.are_deterministic_algorithms_enabled()
    seen: list[tuple[int, bool]] = []

    def on_epoch(metrics: EpochMetrics) -> None:
        seen.append((torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()))

    train(make_cnn(), digits, _cfg(epochs=1, num_threads=1), on_epoch=on_epoch, progress=False)
    assert seen == [(1, True)]  # during the run: the configured threads, deterministic algorithms on CPU
    assert torch.get_num_threads() == 2
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_progress_output(
    digits: DataBundle, make_cnn: MakeCnn, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    train(make_cnn(), digits, _cfg(epochs=2), progress="force")
    err = capsys.readouterr().err
    assert "\repoch 1/2 [" in err and "img/s ETA" in err and " loss " in err
    summaries = [line for line in err.split("\n") if "val loss" in line]
    assert len(summaries) == 2 and "epoch 2/2  train loss" in summaries[1]

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    train(make_cnn(), digits, _cfg(epochs=2), progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("val loss") == 2  # no bar without a terminal, summaries only

    train(make_cnn(), digits, _cfg(epochs=1), progress=False)
    assert capsys.readouterr().err == ""
