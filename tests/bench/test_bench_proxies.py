"""``igcnas bench proxies``: rank correlations of the training-free proxies with the table's accuracy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from igcnas.bench.proxies import bench_proxies, kendall_tau_b, render, spearman
from igcnas.cli import main
from igcnas.errors import UserError
from igcnas.tabular import PROXY_COLUMNS, columns

KEYS = {"proxy", "spearman", "kendall", "ci_low", "ci_high", "n"}


def _table(n: int = 30) -> pd.DataFrame:
    """``n`` rows with every column: params = accuracy, flops = -accuracy, width constant, the rest noise."""
    rng = np.random.default_rng(1)
    acc = rng.permutation(n) / n
    frame = pd.DataFrame({c: [""] * n for c in columns()})
    frame["size_bin"] = ["0-20k" if i % 2 else "20k-50k" for i in range(n)]
    for proxy in PROXY_COLUMNS:
        frame[proxy] = rng.normal(size=n)
    frame["params"], frame["flops"], frame["width"] = acc, -acc, 7.0
    frame["low_val_acc"] = acc
    high = acc + 0.5
    high[:10] = np.nan  # only part of the rows are trained at high fidelity
    frame["high_val_acc"] = high
    frame.loc[0, "naswot"] = -np.inf
    frame.loc[1, "snip"] = np.nan
    return frame


@pytest.fixture
def table_csv(tmp_path: Path) -> Path:
    path = tmp_path / "table.csv"
    _table().to_csv(path, index=False)
    return path


def test_identity_negation_and_constant_proxies(table_csv: Path) -> None:
    report = bench_proxies(table=table_csv, bootstrap=200)
    assert report["table"] == str(table_csv) and report["target"] == "low_val_acc" and report["n"] == 30
    rows = {row["proxy"]: row for row in report["rows"]}
    assert [row["proxy"] for row in report["rows"]] == list(PROXY_COLUMNS)
    assert all(set(row) == KEYS for row in report["rows"])
    assert rows["params"]["spearman"] == pytest.approx(1.0) and rows["params"]["kendall"] == pytest.approx(1.0)
    assert rows["params"]["ci_low"] == pytest.approx(1.0) and rows["params"]["ci_high"] == pytest.approx(1.0)
    assert rows["flops"]["spearman"] == pytest.approx(-1.0) and rows["flops"]["kendall"] == pytest.approx(-1.0)
    assert rows["width"]["spearman"] is None and rows["width"]["kendall"] is None and rows["width"]["ci_low"] is None
    assert all(row["n"] == 30 for row in report["rows"])
    for proxy in ("naswot", "snip"):  # -inf / NaN scores count as the lowest value
        assert -1.0 <= rows[proxy]["spearman"] <= 1.0
        assert rows[proxy]["ci_low"] <= rows[proxy]["spearman"] <= rows[proxy]["ci_high"]
    json.dumps(report, allow_nan=False)


def test_bins_and_fidelity(table_csv: Path) -> None:
    report = bench_proxies(table=table_csv, bootstrap=50)
    assert {row["size_bin"] for row in report["bins"]} == {"0-20k", "20k-50k"}
    assert len(report["bins"]) == 2 * len(PROXY_COLUMNS)
    params = [row for row in report["bins"] if row["proxy"] == "params"]
    assert all(row["n"] == 15 and row["spearman"] == pytest.approx(1.0) for row in params)
    fidelity = report["fidelity"]
    assert fidelity["n"] == 20 and fidelity["spearman"] == pytest.approx(1.0)
    assert fidelity["kendall"] == pytest.approx(1.0)
    high = bench_proxies(table=table_csv, target="high", bootstrap=10, bins=False)
    assert high["target"] == "high_val_acc" and high["n"] == 20 and high["bins"] == []


def test_small_bins_are_left_out_and_small_fidelity_is_null() -> None:
    frame = _table(6)
    frame["high_val_acc"] = np.nan
    frame.loc[0, "high_val_acc"] = 0.3
    report = bench_proxies(table=frame, bootstrap=10)
    assert report["table"] == "<frame>" and report["bins"] == []  # 3 rows per bin
    assert report["fidelity"]["n"] == 1 and report["fidelity"]["spearman"] is None


def test_same_seed_same_report(table_csv: Path) -> None:
    assert bench_proxies(table=table_csv, bootstrap=100, seed=3) == bench_proxies(table=table_csv, bootstrap=100,
                                                                                  seed=3)
    a = bench_proxies(table=table_csv, bootstrap=100, seed=3)["rows"]
    b = bench_proxies(table=table_csv, bootstrap=100, seed=4)["rows"]
    assert [r["ci_low"] for r in a] != [r["ci_low"] for r in b]


def test_correlations_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, size=40).astype(float), rng.integers(0, 6, size=40).astype(float)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert kendall_tau_b(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)
    assert math.isnan(spearman(x, np.ones(40)))


def test_errors(table_csv: Path) -> None:
    with pytest.raises(UserError, match=r"--target: 'mid'.*low, high"):
        bench_proxies(table=table_csv, target="mid")
    frame = _table(5)
    frame.loc[:2, "low_val_acc"] = np.nan
    with pytest.raises(UserError, match=r"<frame> has 2 rows"):
        bench_proxies(table=frame)


def test_render(table_csv: Path) -> None:
    text = render(bench_proxies(table=table_csv, bootstrap=10))
    assert "params" in text and "per size bin" in text and "fidelity low_val_acc vs high_val_acc" in text


def test_cli_json(table_csv: Path, capsys) -> None:
    assert main(["bench", "proxies", "--table", str(table_csv), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [row["proxy"] for row in report["rows"]] == list(PROXY_COLUMNS)
    assert all(set(row) == KEYS for row in report["rows"])
    assert report["rows"][0]["spearman"] == pytest.approx(1.0)


def test_cli_table_and_high_target(table_csv: Path, capsys) -> None:
    assert main(["bench", "proxies", "--table", str(table_csv), "--target", "high"]) == 0
    assert "proxies vs high_val_acc" in capsys.readouterr().out


def test_cli_bad_target_and_missing_table_are_one_line_errors(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["bench", "proxies", "--target", "mid"])
    assert info.value.code == 2
    assert "--target" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["bench", "proxies", "--table", str(tmp_path / "none.csv")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("igcnas: error: --table:") and len(err.strip().splitlines()) == 1
