"""Tests of the front plot writer (PNG, SVG, PDF and self-contained HTML)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from igcnas.analysis.plot import plot_front
from igcnas.errors import UserError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _trials(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """A study-like frame: every state, NaN accuracy for failed/infeasible, partial pruned trials."""
    rng = np.random.default_rng(seed)
    params = np.exp(rng.uniform(np.log(5e4), np.log(2e6), n)).round()
    accuracy = np.clip(0.8 + 0.04 * np.log10(params / 5e4) + rng.normal(0, 0.02, n), 0, 1)
    state = np.array(["complete", "pruned", "infeasible", "failed", "running"] * (n // 5))
    accuracy[np.isin(state, ["infeasible", "failed"])] = np.nan
    return pd.DataFrame(
        {
            "trial": np.arange(n),
            "state": state,
            "accuracy": accuracy,
            "params": params,
            "flops": params * 120,
            "epochs": np.where(state == "complete", 30, 3),
            "max_epochs": 30,
            "design": "PWG+DW+PWG",
            "widths": "64-128-256",
            "study": "demo",
        }
    )


ZOO = pd.DataFrame(
    {
        "name": ["ResNet-20", "MobileNetV2 (no acc)"],
        "params": [272_000, 2_240_000],
        "accuracy": [0.9125, np.nan],
    }
)


def test_png_is_a_real_readable_image(tmp_path: Path) -> None:
    import matplotlib.image

    out = plot_front(_trials(), path=tmp_path / "sub" / "front.png", reference_points=ZOO)
    assert out == tmp_path / "sub" / "front.png"
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 400 and image.shape[1] > 600
    # Not a blank canvas: a good share of pixels differ from white.
    assert float(np.mean(image[..., :3] < 0.95)) > 0.02


def test_html_is_self_contained_with_inline_svg_and_front_table(tmp_path: Path) -> None:
    out = plot_front(_trials(), path=tmp_path / "front.html", reference_points=ZOO, title="My <study>")
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "<svg" in text and "</svg>" in text
    assert "<?xml" not in text  # the SVG prologue is stripped for inlining
    assert "My &lt;study&gt;" in text
    assert "<table>" in text and "PWG+DW+PWG" in text
    assert "http://" not in text.split("<svg", 1)[0]  # no external resources in the head
    assert "<script" not in text and "<link" not in text


def test_svg_and_pdf_outputs(tmp_path: Path) -> None:
    svg = plot_front(_trials(), path=tmp_path / "front.svg")
    assert "<svg" in svg.read_text(encoding="utf-8")
    pdf = plot_front(_trials(), path=tmp_path / "front.pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_flops_axis_and_other_directions(tmp_path: Path) -> None:
    df = _trials()
    out = plot_front(df, ("accuracy:max", "flops:min"), path=tmp_path / "flops.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
    out = plot_front(df, [("params", "min"), ("accuracy", "max")], path=tmp_path / "swapped.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
    out = plot_front(df, ["accuracy:max", "epochs:max"], path=tmp_path / "linear.png")
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_empty_and_all_failed_frames_still_plot(tmp_path: Path) -> None:
    from igcnas.analysis.schema import empty_trials_frame

    out = plot_front(empty_trials_frame(), path=tmp_path / "empty.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
    failed = _trials().assign(state="failed", accuracy=np.nan)
    html = plot_front(failed, path=tmp_path / "failed.html").read_text(encoding="utf-8")
    assert "No trial is on the front yet." in html


def test_plot_does_not_modify_input(tmp_path: Path) -> None:
    df = _trials()
    before = df.copy()
    plot_front(df, path=tmp_path / "front.png", reference_points=ZOO)
    pd.testing.assert_frame_equal(df, before)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"path": "front.jpg"}, r"suffix '.jpg'; plots are written as .png"),
        ({"path": "front"}, r"suffix '\(none\)'"),
        (
            {"path": "f.png", "objectives": ["accuracy:max", "params:min", "flops:min"]},
            r"exactly 2 objectives",
        ),
        ({"path": "f.png", "objectives": ["acc:max", "params:min"]}, r"no column named 'acc'"),
        ({"path": "f.png", "reference_points": pd.DataFrame({"name": ["x"]})}, r"missing column\(s\) params"),
        (
            {
                "path": "f.png",
                "reference_points": pd.DataFrame({"name": ["x"], "params": [1], "accuracy": [91.3]}),
            },
            r"91.3 is outside \[0, 1\]",
        ),
    ],
)
def test_bad_arguments_raise_user_error(tmp_path: Path, kwargs: dict[str, object], pattern: str) -> None:
    kwargs = {**kwargs, "path": tmp_path / str(kwargs["path"])}
    with pytest.raises(UserError, match=pattern):
        plot_front(_trials(), **kwargs)  # type: ignore[arg-type]
