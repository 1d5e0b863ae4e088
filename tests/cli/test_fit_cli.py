"""``igcnas fit``: option mistakes are one-line errors naming the option; ``--out`` prints the file it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from igcnas.arch import load_spec
from igcnas.cli import main

FIT = ["fit", "--design", "PWG+DW+PWG", "--max-params", "50k"]



@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--design", "FOO"], "argument --design: unknown kernel kind 'FOO'"),
        (["--groups", "2,-"], "--groups: '2,-' has 2 values for the 3 kernels of PWG+DW+PWG (give one per kernel"),
        (["--bottleneck", "-1"], "argument --bottleneck: '-1' must be a finite number > 0"),
        (["--bottleneck", "nan"], "argument --bottleneck: 'nan' must be a finite number > 0"),
        (["--bottleneck", "inf"], "argument --bottleneck: 'inf' must be a finite number > 0"),
        (["--bottleneck", "wide"], "argument --bottleneck: 'wide' is not a number"),
        (["--num-classes", "1"], "argument --num-classes: '1' is not a class count (give a number >= 2, e.g. 10)"),
    ],
)
def test_fit_option_mistakes_name_the_option_not_the_budget(capsys, options, message, one_line_error):
    err = one_line_error([*FIT, *options])
    assert message in err and "budget too small" not in err


def test_fit_out_prints_the_file_it_wrote(capsys, tmp_path):
    folder = tmp_path / "best.v2"  # a folder name with a dot is still a folder
    assert main([*FIT, "--out", str(folder), "--format", "table"]) == 0
    written = folder / "arch.json"
    assert capsys.readouterr().out.rstrip().endswith(f"wrote {written}")
    assert load_spec(written).name == "PWG+DW+PWG-fit"
    file = tmp_path / "sub" / "mine.json"  # a name ending in .json is the file itself
    assert main([*FIT, "--out", str(file)]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"wrote {file}")
    assert json.loads(file.read_text())["name"] == "PWG+DW+PWG-fit"


def test_fit_out_that_is_a_file_is_refused(capsys, tmp_path, one_line_error):
    taken = tmp_path / "notes"
    taken.write_text("mine")
    err = one_line_error([*FIT, "--out", str(taken)])
    assert err == f"igcnas: error: --out: {str(taken)!r} is a file, not a folder (give a folder, or a file name " \
                  "ending in .json)"
    assert taken.read_text() == "mine" and sorted(p.name for p in Path(tmp_path).iterdir()) == ["notes"]


def test_fit_out_keeps_an_existing_arch_json_unless_forced(capsys, tmp_path, one_line_error):
    for out in (tmp_path / "run", tmp_path / "mine.json"):
        assert main([*FIT, "--out", str(out)]) == 0
        written = out / "arch.json" if out.suffix != ".json" else out
        written.write_text("kept")
        err = one_line_error([*FIT, "--out", str(out)])
        assert err == f"igcnas: error: --out: {str(written)!r} already exists; give --force to replace it, or " \
                      "another --out"
        assert written.read_text() == "kept"
        assert main([*FIT, "--out", str(out), "--force"]) == 0
        assert load_spec(written).name == "PWG+DW+PWG-fit"
