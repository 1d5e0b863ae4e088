"""Shared CLI plumbing: a parser whose errors are one line, typed option converters and the shared options."""

from __future__ import annotations

import argparse
import difflib
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from igcnas.errors import UserError
from igcnas.units import parse_count

__all__ = [
    "Parser", "positive_int", "count", "fraction", "die", "argument_group", "format_parent", "study_parent",
    "storage_parent", "dataset_parent", "device_parent", "FORMAT_HELP", "check_data_dir", "check_recorded_data_dir", "check_dataset_options",
    "unrecognized_arguments", "os_error_message", "integer", "real", "positive_float", "nonnegative_float",
    "nonnegative_int",
]


def die(message: str, *, status: int = 2) -> NoReturn:
    """Print ``igcnas: error: ...`` on one line and exit."""
    print(f"igcnas: error: {message}", file=sys.stderr)
    raise SystemExit(status)


class Parser(argparse.ArgumentParser):
    """ArgumentParser that reports mistakes on one line (with a pointer to --help) and exits with status 2."""

    def error(self, message: str) -> NoReturn:
        die(f"{self.prog}: {message} (see '{self.prog} --help')")


def _close_option(parser: argparse.ArgumentParser, flag: str) -> str | None:
    """The long option of ``parser`` spelled most like ``flag``, if any is close."""
    options = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
    close = difflib.get_close_matches(flag, options, n=1, cutoff=0.6)
    return close[0] if close else None


def unrecognized_arguments(parser: argparse.ArgumentParser, extras: Sequence[str]) -> NoReturn:
    """Report ``extras`` against ``parser`` (the sub-command that got them), with close option names, and exit 2.

    Example: ``igcnas search: unrecognized arguments: --trails 5 (did you mean --trials? see 'igcnas search --help')``
    """
    flags = [text.split("=", 1)[0] for text in extras if text.startswith("--")]
    guesses = {flag: close for flag in flags if (close := _close_option(parser, flag))}
    if len(guesses) == 1:
        hint = f"did you mean {next(iter(guesses.values()))}? "
    elif guesses:
        hint = "did you mean " + ", ".join(f"{close} for {flag}" for flag, close in guesses.items()) + "? "
    else:
        hint = ""
    die(f"{parser.prog}: unrecognized arguments: {' '.join(extras)} ({hint}see '{parser.prog} --help')")


def os_error_message(error: OSError) -> str:
    """One line for an OSError no command turned into a UserError: the file and the system's reason."""
    if error.filename is None:
        return f"{type(error).__name__}: {error}"
    target = str(error.filename) + (f" -> {error.filename2}" if error.filename2 is not None else "")
    return f"cannot write/read {target}: {error.strerror or error}"


def integer(text: str, *, minimum: int, what: str, example: str = "") -> int:
    """``text`` as an integer >= ``minimum``, or argparse's error naming ``what`` it must be (and ``example``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}" + (f" (e.g. {example})" if example else "")) \
            from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what} (give a number >= {minimum}"
                                         + (f", e.g. {example})" if example else ")"))
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return integer(text, minimum=1, what="a positive integer")


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return integer(text, minimum=0, what="an integer >= 0")


def real(text: str, *, minimum: float, inclusive: bool, example: str = "") -> float:
    """``text`` as a finite number >= ``minimum`` (> with ``inclusive`` False), or argparse's error; ``example``
    (e.g. ``"0.25"``) ends the message."""
    hint = f" (e.g. {example})" if example else ""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number{hint}") from None
    if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
        bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number {bound}{hint}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return real(text, minimum=0.0, inclusive=False)


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return real(text, minimum=0.0, inclusive=True)


def count(text: str) -> int:
    """argparse type: a positive count with human units (0.5M, 300M, 1.2G)."""
    try:
        return parse_count(text)
    except UserError as error:
        raise argparse.ArgumentTypeError(str(error).split(": ", 1)[-1]) from None


def fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number between 0 and 1") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be strictly between 0 and 1")
    return value


# Parent parsers: each option shared by several commands is defined once here and added to a command with
# ``subparsers.add_parser(..., parents=[...])``. ``group``: put the options in the argument group of that title
# (fetch it with :func:`argument_group` to add the command's own options to it).

FORMAT_HELP = "output format (default: %(default)s)"


def _parent(group: str | None) -> tuple[argparse.ArgumentParser, argparse._ActionsContainer]:
    """A parent parser (no -h) and where to add its options: the parser itself or its group titled ``group``."""
    parent = argparse.ArgumentParser(add_help=False)
    return parent, (parent.add_argument_group(group) if group else parent)


def argument_group(parser: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    """``parser``'s group titled ``title`` (made by a parent), listed after the groups made so far; else a new one."""
    for group in parser._action_groups:
        if group.title == title:
            parser._action_groups.remove(group)  # --help lists groups in this order: keep the command's order
            parser._action_groups.append(group)
            return group
    return parser.add_argument_group(title)


def format_parent(choices: tuple[str, ...] = ("table", "json"), default: str = "table") -> argparse.ArgumentParser:
    """``--format`` with these choices and default, in the group "output" (listed after the command's options)."""
    parent, where = _parent("output")
    where.add_argument("--format", choices=choices, default=default, help=FORMAT_HELP)
    return parent


def study_parent() -> argparse.ArgumentParser:
    """``--study NAME`` (required) of the commands that read an existing study."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--study", required=True, help="study name (a folder under --trials-dir)")
    return parent


def add_trials_dir(where: argparse._ActionsContainer) -> None:
    """``--trials-dir DIR`` (the study folders; the tabular benchmark's runs are a folder there too)."""
    where.add_argument("--trials-dir", default="trials",
                       help="folder holding the study folders (default: %(default)s)")


def storage_parent(group: str | None = None) -> argparse.ArgumentParser:
    """``--storage URL`` and ``--trials-dir DIR``: where the search studies are kept."""
    parent, where = _parent(group)
    where.add_argument("--storage", help="Optuna storage of the studies: an RDB URL (sqlite:///FILE, "
                                         "postgresql://USER:PASSWORD@HOST/DB, mysql+pymysql://...) or "
                                         "journal:PATH (a JournalStorage log file on a shared filesystem), "
                                         "shared by workers on several machines (default: "
                                         "sqlite:///<trials-dir>/igcnas.db for 'igcnas search'; the other "
                                         "commands read the URL recorded in the study's folder)")
    add_trials_dir(where)
    where.add_argument("--artifacts", metavar="URI",
                       help="Optuna artifact store holding every trial's files, shared by workers on several "
                            "machines: a shared folder (file://PATH), s3://BUCKET/PREFIX or gs://BUCKET/PREFIX. "
                            "'igcnas search' writes each file there as well as in --trials-dir; the other commands "
                            "pull what --trials-dir lacks (default: the store recorded with the study, else none)")
    return parent


class _StoreGiven(argparse._StoreAction):
    """Store the value and record that the option was given (``<dest>_given``): tells it from its default."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        """Store ``values`` and mark the option as given."""
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


def dataset_parent(default_help: str, default: str | None = None, *,
                   group: str | None = None) -> argparse.ArgumentParser:
    """``--dataset NAME`` (``default_help`` says what its default is) and ``--data-dir DIR``."""
    parent, where = _parent(group)
    where.add_argument("--dataset", default=default, action=_StoreGiven,
                       help=f"dataset name: digits, cifar10, ..., imagefolder:PATH (default: {default_help})")
    return data_dir_parent(parent=(parent, where))


def check_data_dir(dataset: object, data_dir: object, *, origin: str | None = None, fixed: bool = False) -> None:
    """UserError when ``--data-dir`` is given but ``dataset`` never reads it (``digits``, ``imagefolder:PATH``).

    ``origin`` says where ``dataset`` came from when the user did not type it ("the default", "recorded in
    runs/x/export.json"); ``fixed``: the command cannot take another dataset, so the fix is to drop --data-dir.

    Example:
        >>> check_data_dir("digits", "data/cifar10", origin="the default")
        Traceback (most recent call last):
        ...
        igcnas.errors.UserError: --data-dir is not read by --dataset digits (the default); add --dataset cifar10 (or drop --data-dir)
    """
    if data_dir is None or not isinstance(dataset, str):
        return
    head, sep, path = dataset.strip().partition(":")
    kind = head.strip().lower()
    if kind == "digits":
        other = "--dataset cifar10"
    elif kind == "imagefolder" and sep and path.strip():
        other = "--dataset imagefolder (it reads --data-dir; imagefolder:PATH reads PATH)"
    else:
        return
    if origin is None or origin == "the default":
        named = f"--dataset {dataset}" + (f" ({origin})" if origin else "")
    else:
        named = f"the dataset {dataset} ({origin})"
    if fixed:
        fix = "drop --data-dir"
    elif origin is None:
        fix = f"drop --data-dir, or use {other}"
    else:
        fix = f"add {other} (or drop --data-dir)"
    raise UserError(f"--data-dir is not read by {named}; {fix}")


def check_recorded_data_dir(folder: Path, manifest: dict[str, Any], data_dir: object) -> None:
    """:func:`check_data_dir` for the dataset recorded in the ``export.json`` (``manifest``) of ``folder``, the
    model folder a command was given without ``--dataset``."""
    from igcnas._artifacts import MANIFEST_FILE

    check_data_dir(manifest.get("dataset"), data_dir, origin=f"recorded in {str(folder / MANIFEST_FILE)!r}")


def check_dataset_options(args: argparse.Namespace) -> None:
    """:func:`check_data_dir` for a command given both ``--dataset`` (with a default) and ``--data-dir``."""
    if getattr(args, "dataset", None) is not None and getattr(args, "data_dir", None) is not None:
        check_data_dir(args.dataset, args.data_dir,
                       origin=None if getattr(args, "dataset_given", False) else "the default")


def data_dir_parent(*, parent: tuple[argparse.ArgumentParser, Any] | None = None) -> argparse.ArgumentParser:
    """``--data-dir DIR`` alone (commands whose dataset is a study's), or added to ``parent``."""
    made, where = parent or _parent(None)
    where.add_argument("--data-dir",
                       help="folder holding the downloaded datasets (default: $IGCNAS_DATA_DIR or ./data)")
    return made


def device_parent(default: str, *, group: str | None = None) -> argparse.ArgumentParser:
    """``--device`` (a torch device or auto) with this default."""
    parent, where = _parent(group)
    where.add_argument("--device", default=default,
                       help="auto (CUDA when available), cpu, cuda or cuda:N (default: %(default)s)")
    return parent


def helper_argv(args: argparse.Namespace, command: list[str], flags: tuple[str, ...]) -> list[str]:
    """The command line of a helper process: ``command``, each of ``flags`` this process was given (its value
    from ``args``), one worker, and ``--quiet`` when this process is quiet."""
    argv = list(command)
    for flag in flags:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--workers", "1"] + (["--quiet"] if args.quiet else [])
    return argv


def start_helpers(argv: list[str], count: int) -> list[Any]:
    """``count`` more ``igcnas`` processes running ``argv`` (the same command with ``--workers 1``); they die
    with this one. Used by the commands whose runs are shared by lock (``retrain``, ``tabular build``)."""
    import subprocess
    import sys

    from igcnas.search._workers import _die_with_parent

    return [subprocess.Popen([sys.executable, "-m", "igcnas", *argv], stdout=subprocess.DEVNULL,
                             preexec_fn=_die_with_parent)  # noqa: PLW1509
            for _ in range(count)]


def wait_helpers(helpers: list[Any], what: str, *, check: bool = True) -> None:
    """Wait for the helpers of :func:`start_helpers`; with ``check`` a UserError when any failed (the rerun
    finishes the work)."""
    from igcnas.errors import UserError

    codes = [proc.wait() for proc in helpers]
    if check and any(codes):
        raise UserError(f"{what}: {sum(1 for c in codes if c)} of {len(helpers)} helper process(es) failed (exit "
                        f"codes {codes}); rerun the same command to finish")
