from __future__ import annotations

import json

import pytest

from igcnas.cli import main
from igcnas.zoo import ZOO, zoo_names


def test_zoo_table_lists_every_network_in_human_units(capsys):
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    for name in ZOO:
        assert name in out
    line = next(line for line in out.splitlines() if line.startswith("IGC-L24M2-D20 "))
    assert "156k" in line and "28.8M" in line and "150k" in line and "+1.2%/-0.2%" in line and "match" in line


def test_zoo_json_rows(capsys):
    assert main(["zoo", "--format", "json", "--family", "igcv3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == zoo_names("igcv3")
    first = rows[0]
    assert {"name", "params", "flops", "paper_params", "paper_flops"} <= set(first)
    assert first["name"] == "IGCV3-D-CIFAR" and first["paper_params"] == 2_400_000 and first["paper_flops"] is None
    assert first["paper_convention_params"] == 2_146_144 and first["params"] > first["paper_convention_params"]
    assert next(r for r in rows if r["name"] == "IGCV3-W-ImageNet")["paper_params"] is None


def test_zoo_bad_family_is_one_line(capsys):
    with pytest.raises(SystemExit) as error:
        main(["zoo", "--family", "resnet"])
    assert error.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--family" in err and "igcv1" in err


def test_zoo_help_names_every_family(capsys):
    from igcnas.zoo import FAMILIES

    with pytest.raises(SystemExit):
        main(["zoo", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for family in FAMILIES:
        assert family in out


def test_zoo_family_is_case_insensitive_as_the_names_are(capsys):
    assert main(["zoo", "--format", "json", "--family", "IGCV3"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == zoo_names("igcv3")
