from __future__ import annotations

import json

import pytest

from igcnas.cli import main
from igcnas.zoo import get_zoo


def test_describe_zoo_network_table(capsys):
    assert main(["describe", "igc-l24m2-d20"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("IGC-L24M2-D20 (igcv1, GC+PWG")
    assert "stages.0.0-5" in out and "GC(g=24) > shuffle(24) > PWG(g=2)" in out
    assert "total: 155,962 params, 28,755,840 FLOPs" in out
    assert "(3,3,192)" in out and "strict" in out
    assert "igcv1/IGC-L24M2/D20/cifar" in out and "+1.2%" in out and "match" in out


def test_describe_json_has_layers_blocks_paper_and_fvcore(capsys):
    assert main(["describe", "MobileNetV2-CIFAR", "--format", "json", "--fvcore"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == "MobileNetV2-CIFAR" and info["family"] == "mobilenet"
    assert sum(layer["params"] for layer in info["layers"]) == info["params"]
    assert sum(layer["flops"] for layer in info["layers"]) == info["flops"]
    assert info["fvcore"] == {"params": info["params"], "flops": info["flops"], "equal": True}
    assert all(block["holds"] for block in info["blocks"])
    assert [p["key"] for p in info["paper"]] == ["igcv3/table2/MobileNetV2/cifar"]
    assert info["paper"][0]["status"] == "differs" and info["paper"][0]["note"]
    assert info["arch"]["stages"][0]["block"]["kernels"][0]["kind"] == "DW"


def test_describe_arch_json_finds_the_zoo_entry_and_paper_rows(tmp_path, capsys):
    path = get_zoo("IGC-L4M8-D20").spec.with_name("mine").save(tmp_path)
    assert main(["describe", str(path), "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == "igcv1" and info["claims"] == "strict"
    assert [p["key"] for p in info["paper"]] == ["igcv1/IGC-L4M8/D20/cifar"]
    other = get_zoo("IGC-L4M8-D20").spec
    from dataclasses import replace

    from igcnas.arch import StageSpec

    deeper = replace(other, stages=(StageSpec(32, 32),) + other.stages[1:], name="")
    path = deeper.save(tmp_path / "deeper")
    assert main(["describe", str(tmp_path / "deeper")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("(unnamed arch.json)") and "Paper figures: none" in out


def test_describe_unknown_name_is_one_line_with_close_names(capsys):
    with pytest.raises(SystemExit) as error:
        main(["describe", "IGCV3-D-CIFA"])
    assert error.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown zoo network 'IGCV3-D-CIFA'" in err and "did you mean IGCV3-D-CIFAR" in err


def test_describe_missing_arch_json_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["describe", str(tmp_path / "nope.json")])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such arch.json" in err
