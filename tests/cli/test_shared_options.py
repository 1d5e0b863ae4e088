"""The options several commands share come from the parent parsers in igcnas.cli._common, defined once."""

from __future__ import annotations

import argparse

import pytest

from igcnas.cli import build_parser, main


def _commands() -> dict[str, argparse.ArgumentParser]:
    """Every sub-command's parser, by name."""
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    """The action of ``flag`` in ``parser``, or None."""
    return next((a for a in parser._actions if flag in a.option_strings), None)


def _having(flag: str) -> dict[str, argparse.Action]:
    """The commands with ``flag`` and its action in each."""
    found = {name: _option(p, flag) for name, p in _commands().items()}
    return {name: action for name, action in found.items() if action is not None}


@pytest.mark.parametrize(
    ("flag", "commands"),
    [
        ("--storage", {"search", "studies", "pareto", "export", "retrain"}),
        ("--trials-dir", {"search", "studies", "pareto", "export", "retrain", "tabular"}),
        ("--study", {"search", "pareto", "export", "retrain"}),
        ("--data-dir", {"search", "evaluate", "train", "bench", "retrain", "tabular"}),
    ],
)
def test_shared_option_is_defined_once(flag: str, commands: set[str]) -> None:
    having = _having(flag)
    assert set(having) == commands
    if flag == "--study":  # search names a new study (optional); pareto/export read an existing one
        having = {k: v for k, v in having.items() if k != "search"}
    if flag == "--data-dir":  # bench's is one ImageFolder root, not a folder of datasets
        having = {k: v for k, v in having.items() if k != "bench"}
    assert len({(a.help, a.default, a.type, a.dest, a.required) for a in having.values()}) == 1, having


def test_format_has_one_help_and_a_default_per_choice_set() -> None:
    having = _having("--format")
    assert set(having) == set(_commands()) - {"search", "studies", "train"}
    assert {a.help for a in having.values()} == {"output format (default: %(default)s)"}
    by_choices: dict[tuple[str, ...], set[object]] = {}
    for action in having.values():
        assert action.choices is not None and action.dest == "format"
        by_choices.setdefault(tuple(action.choices), set()).add(action.default)
    assert by_choices == {("table", "json"): {"table"}, ("text", "json"): {"text"},
                          ("table", "csv", "json"): {"table"}}
    assert tuple(having["pareto"].choices or ()) == ("table", "csv", "json")
    assert {name for name, a in having.items() if a.default == "text"} == {"evaluate", "export"}


def test_device_help_is_shared_and_defaults_kept() -> None:
    having = _having("--device")
    defaults = {name: a.default for name, a in having.items()}
    assert defaults == {"search": "auto", "train": "auto", "evaluate": "cpu", "bench": "cpu", "retrain": "auto",
                        "tabular": "auto"}
    assert len({a.help for name, a in having.items() if name != "bench"}) == 1


def test_shared_options_parse_to_the_same_names_and_defaults() -> None:
    parser = build_parser()
    args = parser.parse_args(["pareto", "--study", "s"])
    assert (args.study, args.storage, args.trials_dir, args.format) == ("s", None, "trials", "table")
    args = parser.parse_args(["export", "--study", "s", "--out", "o", "--storage", "sqlite:///x.db",
                              "--trials-dir", "t", "--format", "json"])
    assert (args.storage, args.trials_dir, args.format) == ("sqlite:///x.db", "t", "json")
    args = parser.parse_args(["search"])
    assert (args.dataset, args.data_dir, args.device, args.study, args.storage, args.trials_dir) == (
        "digits", None, "auto", None, None, "trials")
    args = parser.parse_args(["evaluate", "d"])
    assert (args.dataset, args.device, args.format) == (None, "cpu", "text")
    args = parser.parse_args(["studies", "--trials-dir", "t"])
    assert (args.trials_dir, args.storage) == ("t", None)


def test_search_help_keeps_its_group_order(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    options = ["what to search:", "\n  --dataset", "budget and objectives:", "training (per trial", "\n  --device",
               "study and backend:", "\n  --storage"]
    positions = [out.index(text) for text in options]
    assert positions == sorted(positions)


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_command_help_exits_zero(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: igcnas {command}")
    for flag in ("--storage", "--trials-dir", "--format"):
        if command in _having(flag):
            assert f"{flag} " in out
