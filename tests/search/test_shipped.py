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


SPACES = sorted(shipped_spaces())


def _reference(network: str):
    from igcnas.zoo import ZOO, paper_specs

    return ZOO[network].spec if network in ZOO else paper_specs()[network]


@pytest.mark.parametrize("name", SPACES)
def test_every_network_a_space_claims_is_a_configuration_of_it(name: str) -> None:
    space = load_space(name)
    for network, params in space.claimed().items():
        reference = _reference(network)
        space.check_params(params)  # every value is one the sampler can draw
        spec, _ = space.to_spec(params, input_shape=reference.input_shape, num_classes=reference.num_classes)
        assert spec.id == reference.id, network


@pytest.mark.parametrize("name", SPACES)
def test_every_network_a_space_leaves_out_says_why(name: str) -> None:
    from igcnas.space import prune_design_space
    from igcnas.space.chain import parse_design

    space = load_space(name)
    funnel = prune_design_space()
    assert not set(space.claimed()) & {network for network, _ in space.baselines_only}
    for network, reason in space.baselines_only:
        design = _reference(network).design
        if design in space.designs:  # the same design on another layout
            assert "layout" in reason, network
        elif "CONV" in design.split("+"):
            assert "dense" in reason, network
        else:  # a sparse chain the funnel removes (or longer than its 6 kernels)
            kinds = parse_design(design) if len(design.split("+")) <= 6 else None
            assert kinds is None or not funnel.verdict(kinds).survives, network
            assert "rule" in reason, network


def test_igc_cifar_reaches_the_papers_scale() -> None:
    from igcnas.cost import count

    space = load_space("igc_cifar")
    assert {"IGC-L24M2-D20", "IGC-L4M8-D20"} <= set(space.claimed())
    smallest = space.smallest_spec(input_shape=(3, 32, 32), num_classes=10)[1]
    biggest = max(count(_reference(n)).params for n in space.claimed())
    assert smallest < 20_000 and biggest > 1_500_000


def test_a_claimed_configuration_outside_the_space_is_an_error(tmp_path: Path) -> None:
    text = (REPO / "search_spaces/igc_cifar.yaml").read_text().replace("groups: [2, 4, 8, 12, 16, 24, 32]",
                                                                       "groups: [2, 4, 8]")
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(UserError, match=r"key 'contains.IGC-L24M2-D20': groups.GC\+PWG = 24 is not allowed"):
        load_space(tmp_path / "s.yaml")
