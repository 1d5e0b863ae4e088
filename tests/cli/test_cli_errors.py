"""Mistakes caught by the command line itself: unknown options (blamed on their sub-command, with a close name),
``--version``, ``--data-dir`` with a dataset that never reads it, and OSErrors no command handled."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

import igcnas
from igcnas.cli import main
from igcnas.errors import UserError


def test_a_mistyped_option_is_blamed_on_its_subcommand_with_a_close_name(capsys, one_line_error) -> None:
    err = one_line_error(["search", "--trails", "5"])
    assert err == ("igcnas: error: igcnas search: unrecognized arguments: --trails 5 (did you mean --trials? "
                   "see 'igcnas search --help')")


def test_several_mistyped_options_each_get_their_close_name(capsys, one_line_error) -> None:
    err = one_line_error(["train", "IGC-L24M2-D20", "--epoks=3", "--bacth-size", "8"])
    assert "igcnas train: unrecognized arguments: --epoks=3 --bacth-size 8" in err
    assert "--epochs for --epoks" in err and "--batch-size for --bacth-size" in err
    assert "see 'igcnas train --help'" in err


def test_an_extra_positional_names_the_subcommand_without_a_guess(capsys, one_line_error) -> None:
    err = one_line_error(["space", "--channels", "64", "extra_positional"])
    assert err == ("igcnas: error: igcnas space: unrecognized arguments: extra_positional "
                   "(see 'igcnas space --help')")


def test_an_unknown_top_level_option_is_blamed_on_igcnas(capsys, one_line_error) -> None:
    err = one_line_error(["--verison"])
    assert "igcnas: unrecognized arguments: --verison (did you mean --version? see 'igcnas --help')" in err


def test_version_prints_the_package_version(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"igcnas {igcnas.__version__}"


def test_data_dir_with_the_default_digits_is_refused_before_anything_is_written(
        tmp_path: Path, capsys, monkeypatch, one_line_error) -> None:
    monkeypatch.chdir(tmp_path)
    err = one_line_error(["search", "--data-dir", str(tmp_path / "cifar10"), "--trials", "1",
                                   "--trials-dir", str(tmp_path / "trials")])
    assert err == ("igcnas: error: --data-dir is not read by --dataset digits (the default); add --dataset "
                   "cifar10 (or drop --data-dir)")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["search", "--dataset", "Digits", "--data-dir", "d"], "not read by --dataset Digits; drop --data-dir, or "
                                                               "use --dataset cifar10"),
        (["search", "--dataset", "imagefolder:imgs", "--data-dir", "d"], "not read by --dataset imagefolder:imgs"),
        (["train", "IGC-L24M2-D20", "--dataset", "digits", "--data-dir", "d"], "not read by --dataset digits;"),
        (["evaluate", "somewhere", "--dataset", "digits", "--data-dir", "d"], "not read by --dataset digits;"),
    ],
)
def test_data_dir_with_a_dataset_that_never_reads_it_is_refused(tmp_path: Path, capsys, monkeypatch,
                                                                argv: list[str], needle: str, one_line_error) -> None:
    monkeypatch.chdir(tmp_path)  # were the check missing, nothing lands in the working tree
    assert needle in one_line_error(argv)
    assert list(tmp_path.iterdir()) == []


def test_check_data_dir_lets_datasets_that_read_it_pass() -> None:
    from igcnas.cli._common import check_data_dir

    for dataset in ("cifar10", "svhn", "imagefolder", None):
        check_data_dir(dataset, "data")
    check_data_dir("digits", None)
    with pytest.raises(UserError, match=r"recorded in 'x/export.json'\); add --dataset cifar10"):
        check_data_dir("digits", "data", origin="recorded in 'x/export.json'")
    with pytest.raises(UserError, match=r"of study 's'\); drop --data-dir$"):
        check_data_dir("digits", "data", origin="of study 's'", fixed=True)


def test_retrain_refuses_data_dir_for_a_digits_study(tmp_path: Path, capsys, one_line_error) -> None:
    study = tmp_path / "trials" / "s"
    study.mkdir(parents=True)
    (study / "study.json").write_text(json.dumps({"name": "s", "dataset": "digits"}))
    err = one_line_error(["retrain", "--study", "s", "--trials-dir", str(tmp_path / "trials"),
                                   "--data-dir", str(tmp_path / "cifar10")])
    assert err == "igcnas: error: --data-dir is not read by the dataset digits (of study 's'); drop --data-dir"


def _patched_command(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    """Make ``igcnas zoo`` raise ``error``."""
    from igcnas.cli import zoo

    def run(args: argparse.Namespace) -> int:
        raise error

    monkeypatch.setattr(zoo, "run", run)


def test_an_oserror_without_a_file_and_a_bug_keep_their_kind(monkeypatch, capsys, one_line_error) -> None:
    _patched_command(monkeypatch, ConnectionRefusedError(111, "Connection refused"))
    assert one_line_error(["zoo"]) == "igcnas: error: ConnectionRefusedError: [Errno 111] Connection refused"
    _patched_command(monkeypatch, PermissionError(13, "Permission denied", "out/x.png"))
    assert one_line_error(["zoo"]) == "igcnas: error: cannot write/read out/x.png: Permission denied"
    _patched_command(monkeypatch, KeyError("bug"))
    with pytest.raises(KeyError):  # not a user mistake: the traceback stays
        main(["zoo"])


def test_studies_in_a_folder_that_is_not_there_is_an_error_not_no_studies(tmp_path, capsys, one_line_error) -> None:
    err = one_line_error(["studies", "--trials-dir", str(tmp_path / "nope")])
    assert err == f"igcnas: error: --trials-dir: {str(tmp_path / 'nope')!r} is no such folder; give the folder a " \
                  "search wrote (default trials)"
    (tmp_path / "file").write_text("x")
    assert "is a file" in one_line_error(["studies", "--trials-dir", str(tmp_path / "file")])
