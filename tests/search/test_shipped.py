"""Shipped search spaces: one source (the top-level search_spaces/), found by name or path, listed by the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from igcnas.cli import main
from igcnas.errors import UserError
from igcnas.search import load_space
from igcnas.search._shipped import read_space_text, shipped_space, shipped_spaces

REPO = Path(__file__).resolve().parents[2]


def test_the_package_ships_exactly_the_top_level_folder() -> None:
    top = {p.stem: p.read_bytes() for p in sorted((REPO / "search_spaces").glob("*.yaml"))}
    shipped = {name: f.read_bytes() for name, f in shipped_spaces().items()}
    assert shipped == top and {"igc_cifar", "fog_designs", "igcv3_mobile"} <= set(shipped)


@pytest.mark.parametrize("name", ["igc_cifar", "igc_cifar.yaml", "search_spaces/igc_cifar.yaml"])
def test_a_space_is_found_by_name_from_any_folder(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no search_spaces/ here
    space = load_space(name)
    assert space.name == "igc_cifar" and space.path == "igc_cifar (shipped)"
    assert space.digest == load_space(REPO / "search_spaces/igc_cifar.yaml").digest


def test_a_file_of_the_same_name_wins_over_the_shipped_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (REPO / "search_spaces/igc_cifar.yaml").read_text().replace("name: igc_cifar", "name: my_copy")
    (tmp_path / "igc_cifar.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    assert load_space("igc_cifar.yaml").name == "my_copy"
    assert load_space("igc_cifar").name == "igc_cifar"  # a bare name is not a file here


@pytest.mark.parametrize(("name", "what"), [
    ("nope", "is neither a file nor a shipped space"), ("igc_cifar.yml", "is not a file"),
    ("other/igc_cifar.yaml", "is not a file"), ("a/b/igc_cifar", "is not a file"),
])
def test_unknown_names_list_the_shipped_spaces(name: str, what: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert shipped_space(name) is None
    with pytest.raises(UserError, match=rf"^--space: {name} {what}; shipped spaces: fog_designs, igc_cifar, igcv3_mobile"):
        read_space_text(name)


@pytest.mark.parametrize(("content", "message"), [
    (b"name: x\ndesigns: [\xff\xfe]\n", r"bad\.yaml is not UTF-8 text \(byte 18: 0xff\); save it as UTF-8"),
    (b"\x7fELF\x02\x01\x01\x00\x00\x00", r"bad\.yaml is a binary file, not a YAML search space"),
    (b"\xff\xfen\x00a\x00m\x00e\x00", r"bad\.yaml is a binary file"),  # UTF-16
])
def test_non_utf8_and_binary_files_are_one_line_errors(tmp_path: Path, content: bytes, message: str, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    with pytest.raises(UserError, match=message):
        load_space(bad)
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "--space", str(bad), "--trials-dir", str(tmp_path / "trials")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("igcnas: error: --space: ") and str(bad) in err and "\n" not in err


def test_a_folder_is_not_a_space(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a file"):
        load_space(tmp_path)


def test_igcnas_spaces_lists_every_shipped_space_with_its_description(capsys) -> None:
    assert main(["spaces"]) == 0
    table = capsys.readouterr().out
    for name in shipped_spaces():
        line = next(row for row in table.splitlines() if row.startswith(name + " "))
        assert load_space(name).description in line
    assert main(["spaces", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(shipped_spaces()) and all(r["description"] for r in rows)


def test_igcnas_spaces_show_prints_the_yaml(capsys) -> None:
    assert main(["spaces", "--show", "fog_designs"]) == 0
    assert capsys.readouterr().out == (REPO / "search_spaces/fog_designs.yaml").read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(["spaces", "--show", "nope"])
    assert exit_info.value.code == 2
    assert "no shipped space 'nope'; shipped spaces: fog_designs" in capsys.readouterr().err
