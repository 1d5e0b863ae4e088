"""The tiny stderr progress bar."""

from __future__ import annotations

import io

from igcnas._progress import ProgressBar, format_duration


def test_format_duration() -> None:
    assert format_duration(0) == "0:00"
    assert format_duration(75.4) == "1:15"
    assert format_duration(3725) == "1:02:05"
    assert format_duration(float("nan")) == "?"
    assert format_duration(float("inf")) == "?"


def test_bar_shows_progress_throughput_eta_and_loss() -> None:
    stream = io.StringIO()
    bar = ProgressBar(total=10, label="epoch 2/5", stream=stream, min_interval=0.0)
    bar.update(5, images=640, loss=1.2345)
    text = stream.getvalue()
    assert text.startswith("\repoch 2/5 [")
    assert "5/10" in text and "img/s" in text and "ETA " in text and "loss 1.2345" in text
    assert "#" * 12 + "-" * 12 in text  # half of the 24-character bar
    bar.close()
    assert stream.getvalue().endswith("\r")


def test_bar_throttles_redraws() -> None:
    stream = io.StringIO()
    bar = ProgressBar(total=100, label="e", stream=stream, min_interval=3600.0)
    for done in range(1, 50):
        bar.update(done, images=done)
    assert stream.getvalue().count("\r") == 1  # only the first update draws
    bar.update(50, images=50, force=True)
    assert stream.getvalue().count("\r") == 2


def test_shorter_line_overwrites_the_previous_one() -> None:
    stream = io.StringIO()
    bar = ProgressBar(total=1000, label="epoch", stream=stream, min_interval=0.0)
    bar.update(1, images=10_000_000, loss=123456.0)
    first = stream.getvalue()
    bar.update(2, images=2)
    second = stream.getvalue()[len(first) :]
    assert len(second) >= len(first)  # padded with spaces to erase the longer line
