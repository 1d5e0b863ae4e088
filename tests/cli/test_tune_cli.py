"""``igcnas tune``: what to tune, and its one-line errors."""

from __future__ import annotations

import pytest

from igcnas.cli import main


@pytest.mark.parametrize(("argv", "message"), [
    (["tune"], "igcnas tune: give a network (NAME|arch.json, e.g. igcnas tune IGC-L24M2-D20) or --space NAME"),
    (["tune", "IGC-L24M2-D20", "--space", "igc_cifar"],
     "igcnas tune: give a network (IGC-L24M2-D20) or --space igc_cifar, not both"),
    (["tune", "IGC-L24M2-D20", "--samples", "5"], "--samples 5: is for --space"),
])
def test_what_to_tune_is_one_line_error_when_unclear(capsys, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"igcnas: error: {message}") and "\n" not in err
