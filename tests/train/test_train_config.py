"""TrainConfig validation, JSON round trip and the learning-rate schedules."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from igcnas.errors import UserError
from igcnas.train import SCHEDULES, TrainConfig, learning_rate


def test_defaults_follow_the_papers() -> None:
    cfg = TrainConfig(epochs=10)
    assert (cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay) == (0.1, 0.9, True, 1e-4)
    assert cfg.batch_size == 128 and cfg.schedule == "cosine" and cfg.warmup_epochs == 0
    assert (cfg.device, cfg.amp, cfg.channels_last) == ("auto", "auto", "auto")
    assert cfg.max_train_batches is None and cfg.num_threads is None


def test_json_round_trip() -> None:
    cfg = TrainConfig(
        epochs=7,
        batch_size=32,
        lr=0.05,
        schedule="step",
        warmup_epochs=2,
        label_smoothing=0.1,
        seed=3,
        device="cpu",
        amp="off",
        channels_last="off",
        augment=False,
        max_train_batches=4,
        num_threads=1,
    )
    text = json.dumps(cfg.to_dict())
    assert TrainConfig.from_dict(json.loads(text)) == cfg


def test_int_given_for_float_field_is_normalised() -> None:
    cfg = TrainConfig.from_dict({"epochs": 3, "lr": 1, "weight_decay": 0})
    assert isinstance(cfg.lr, float) and cfg.lr == 1.0
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_from_dict_names_unknown_keys() -> None:
    with pytest.raises(UserError, match="'learning_rate'") as info:
        TrainConfig.from_dict({"epochs": 3, "learning_rate": 0.1})
    assert "lr" in str(info.value)  # lists the known keys


def test_from_dict_requires_epochs_and_a_dict() -> None:
    with pytest.raises(UserError, match="epochs"):
        TrainConfig.from_dict({"lr": 0.1})
    with pytest.raises(UserError, match="dict"):
        TrainConfig.from_dict([("epochs", 3)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("epochs", 2.5),
        ("epochs", True),
        ("batch_size", 0),
        ("lr", 0.0),
        ("lr", -0.1),
        ("lr", math.nan),
        ("lr", "0.1"),
        ("momentum", 1.0),
        ("momentum", -0.5),
        ("nesterov", "yes"),
        ("weight_decay", -1e-4),
        ("schedule", "linear"),
        ("warmup_epochs", -1),
        ("warmup_epochs", 10),
        ("label_smoothing", 1.0),
        ("seed", -1),
        ("device", "gpu"),
        ("device", "cuda:x"),
        ("amp", "fp16"),
        ("channels_last", "yes"),
        ("augment", 1),
        ("eval_batch_size", 0),
        ("max_train_batches", 0),
        ("num_threads", 0),
    ],
)
def test_bad_values_name_the_field(field: str, value: Any) -> None:
    values: dict[str, Any] = {"epochs": 10, field: value}
    with pytest.raises(UserError, match=f"TrainConfig.{field}"):
        TrainConfig(**values)


def test_nesterov_needs_momentum() -> None:
    with pytest.raises(UserError, match="nesterov"):
        TrainConfig(epochs=2, momentum=0.0)
    assert TrainConfig(epochs=2, momentum=0.0, nesterov=False).momentum == 0.0


def test_accepts_every_device_form() -> None:
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        assert TrainConfig(epochs=1, device=device).device == device


def test_replace_revalidates() -> None:
    cfg = TrainConfig(epochs=5)
    assert cfg.replace(lr=0.2).lr == 0.2
    with pytest.raises(UserError, match="TrainConfig.lr"):
        cfg.replace(lr=-1.0)


def test_step_schedule_matches_the_papers_cifar_milestones() -> None:
    cfg = TrainConfig(epochs=400, schedule="step")
    lrs = {epoch: learning_rate(cfg, epoch, 1) for epoch in (0, 199, 200, 299, 300, 349, 350, 399)}
    assert lrs[0] == lrs[199] == pytest.approx(0.1)
    assert lrs[200] == lrs[299] == pytest.approx(0.01)
    assert lrs[300] == lrs[349] == pytest.approx(0.001)
    assert lrs[350] == lrs[399] == pytest.approx(0.0001)


def test_step30_schedule_divides_every_30_epochs() -> None:
    cfg = TrainConfig(epochs=100, schedule="step30", lr=0.1)
    steps = 10  # steps per epoch
    assert learning_rate(cfg, 29 * steps + 9, steps) == pytest.approx(0.1)
    assert learning_rate(cfg, 30 * steps, steps) == pytest.approx(0.01)
    assert learning_rate(cfg, 60 * steps, steps) == pytest.approx(0.001)
    assert learning_rate(cfg, 90 * steps, steps) == pytest.approx(0.0001)


def test_cosine_schedule_decays_per_step_to_zero() -> None:
    cfg = TrainConfig(epochs=10, lr=0.2, schedule="cosine")
    steps = 5
    values = [learning_rate(cfg, s, steps) for s in range(cfg.epochs * steps)]
    assert values[0] == pytest.approx(0.2)
    assert values[25] == pytest.approx(0.1)  # halfway
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert 0 < values[-1] < 0.001


def test_warmup_ramps_linearly_then_follows_the_schedule() -> None:
    cfg = TrainConfig(epochs=10, lr=0.4, warmup_epochs=2, schedule="cosine")
    steps = 4
    warm = [learning_rate(cfg, s, steps) for s in range(8)]
    assert warm == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4])
    assert learning_rate(cfg, 8, steps) == pytest.approx(0.4)  # cosine starts after warm-up
    assert learning_rate(cfg, 8 + 16, steps) == pytest.approx(0.2)


def test_constant_schedule() -> None:
    cfg = TrainConfig(epochs=3, lr=0.03, schedule="constant")
    assert {learning_rate(cfg, s, 2) for s in range(6)} == {0.03}
    assert set(SCHEDULES) == {"cosine", "step", "step30", "constant"}
