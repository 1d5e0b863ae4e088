from __future__ import annotations

import json
import subprocess
import sys

import pytest

from igcnas.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "igcnas", *args], capture_output=True, text=True, timeout=120)


def test_space_table_shows_funnel_survivors_and_removal_rules(capsys):
    assert main(["space"]) == 0
    out = capsys.readouterr().out
    assert "5460" in out
    for design in ("DW+PW", "GC+PWG", "PW+DW+PW", "PWG+DW+PWG"):
        assert design in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert lines["GC+DW"].split()[1] == "field"
    assert lines["PW+PW"].split()[1] == "repeat"
    assert lines["PWG+PWG"].split()[1] == "repeat"


def test_space_json(capsys):
    assert main(["space", "--channels", "32", "--max-length", "4", "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["funnel"][0]["remaining"] == 4 + 16 + 64 + 256
    assert {s["design"] for s in payload["survivors"]} >= {"DW+PW", "GC+PWG", "PW+DW+PW", "PWG+DW+PWG"}
    assert len(payload["designs"]) == 340


def test_space_help_explains_every_option():
    proc = run_cli("space", "--help")
    assert proc.returncode == 0
    for option in ("--channels", "--max-length", "--kernel-size", "--repeat-match", "--no-bottleneck", "--format"):
        assert option in proc.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--channels", "0"], "--channels"),
        (["--channels", "abc"], "--channels"),
        (["--channels", "1"], "--channels: 1 is too small; give C from 2 to 4096"),
        (["--channels", "8192"], "--channels: 8192 is too large; give C from 2 to 4096"),
        (["--max-length", "0"], "--max-length"),
        (["--explain", "FOO"], "unknown kernel kind"),
        (["--format", "xml"], "--format"),
    ],
)
def test_bad_options_get_one_line_errors(args, needle):
    proc = run_cli("space", *args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0]
