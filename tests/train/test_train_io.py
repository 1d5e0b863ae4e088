"""Weights files: safetensors/.pt round trips, load_weights errors, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from igcnas.errors import UserError
from igcnas.train import load_weights, save_weights
from igcnas.train._io import write_json_atomic


def _conv_net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )


def test_safetensors_round_trip_with_channels_last_and_shared_weights(tmp_path: Path) -> None:
    src = _conv_net(0).to(memory_format=torch.channels_last)
    tied = nn.ModuleDict({"a": src, "b": nn.Linear(4, 2)})
    tied["b"].weight = src[4].weight  # shared storage must not break safetensors
    save_weights(tied, tmp_path / "w.safetensors")
    dst = nn.ModuleDict({"a": _conv_net(1), "b": nn.Linear(4, 2)})
    load_weights(dst, tmp_path / "w.safetensors")
    for key, value in tied.state_dict().items():
        assert torch.equal(dst.state_dict()[key], value), key


def test_pt_state_dict_and_checkpoint_dict(tmp_path: Path) -> None:
    src = _conv_net(0)
    torch.save(src.state_dict(), tmp_path / "plain.pt")
    torch.save({"model": src.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pt")
    for name in ("plain.pt", "checkpoint.pt"):
        dst = load_weights(_conv_net(1), tmp_path / name)
        x = torch.randn(2, 3, 8, 8)
        src.eval()
        dst.eval()
        assert torch.equal(src(x), dst(x))


def test_load_weights_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_weights(_conv_net(0), tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="not a valid safetensors"):
        load_weights(_conv_net(0), tmp_path / "junk.safetensors")
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="weights_only"):
        load_weights(_conv_net(0), tmp_path / "junk.pt")
    save_weights(_conv_net(0), tmp_path / "w.safetensors")
    other = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)
    )
    with pytest.raises(UserError, match="wrong shape"):
        load_weights(other, tmp_path / "w.safetensors")
    with pytest.raises(UserError, match="missing"):
        load_weights(nn.Sequential(_conv_net(0), nn.Linear(2, 2)), tmp_path / "w.safetensors")


def test_write_json_atomic_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "m.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    with pytest.raises(TypeError):
        write_json_atomic(target, {"a": object()})  # not JSON: the old file stays intact
    assert json.loads(target.read_text()) == {"a": 2}
    write_json_atomic(target, {"a": float("nan")})  # strict JSON: NaN is written as null
    assert json.loads(target.read_text()) == {"a": None}
    assert [p.name for p in target.parent.iterdir()] == ["m.json"]
