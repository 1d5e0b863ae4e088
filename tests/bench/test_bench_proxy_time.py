"""igcnas bench proxy-time: seconds per proxy on the zoo's CIFAR networks."""

from __future__ import annotations

import json

import pytest

from igcnas.bench.proxy_time import bench_proxy_time, cifar_zoo, gradient_macs, matmul_rate, render
from igcnas.cli import main
from igcnas.cost import count
from igcnas.errors import UserError
from igcnas.proxies import PROXIES
from igcnas.zoo import get_zoo


def test_cifar_zoo_is_every_cifar10_network_within_the_budget() -> None:
    names = cifar_zoo(max_params=200_000)
    assert "IGC-L24M2-D20" in names and "RegConv-W16-D20" not in names  # 156k in, 270k out
    for name in names:
        spec = get_zoo(name).spec
        assert spec.input_shape == (3, 32, 32) and spec.num_classes == 10 and count(spec).params <= 200_000


def test_rows_hold_every_proxy_sorted_by_flops() -> None:
    rows = bench_proxy_time(names=["RegConv-W16-D20", "RegConv-W16-D8"], repeats=1, batch=4)
    assert [r["network"] for r in rows] == ["RegConv-W16-D8", "RegConv-W16-D20"]
    for row in rows:
        assert all(row[f"{p}_s"] >= 0 for p in PROXIES) and row["slowest"] in PROXIES
        assert row[row["slowest"] + "_s"] == max(row[f"{p}_s"] for p in PROXIES)
    assert rows[0]["flops"] == count(get_zoo("RegConv-W16-D8").spec).flops
    # the floor: the gradient passes' multiply-adds at the matmul rate measured once for the run
    assert len({r["matmul_gmacs"] for r in rows}) == 1 and rows[0]["matmul_gmacs"] > 0
    for row in rows:
        macs = gradient_macs(get_zoo(row["network"]).spec, batch=4)
        assert row["floor_s"] == pytest.approx(macs / (row["matmul_gmacs"] * 1e9), rel=0.01, abs=1e-4)
    text = render(rows, batch=4)
    assert "RegConv-W16-D8" in text and "of 2 networks" in text
    assert f"{rows[0]['matmul_gmacs']:.1f} GMAC/s on 1 thread(s)" in text and "matmul_gmacs" not in text


def test_gradient_macs_are_three_passes_but_the_images_gradient() -> None:
    from igcnas.nn.network import layer_costs

    spec = get_zoo("RegConv-W16-D8").spec
    stem = layer_costs(spec)[0]
    assert stem.role == "stem"
    assert gradient_macs(spec, batch=5) == 5 * (3 * count(spec).flops - stem.flops)


def test_matmul_rate_restores_the_threads() -> None:
    import torch

    before = torch.get_num_threads()
    assert matmul_rate(num_threads=1, size=64, repeats=1) > 0
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"repeats": 0}, "--repeats: 0 must be a positive integer"),
    ({"max_params": 10}, "--max-params: no CIFAR-10 zoo network has at most 10 params"),
])
def test_bad_options_name_the_option(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(UserError, match=message):
        bench_proxy_time(**kwargs)


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "proxy-time", "--max-params", "80k", "--repeats", "1", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["params"] <= 80_000 for r in rows)


def test_cli_threads_set_the_scoring_threads_and_the_title_says_so(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    import igcnas.proxies

    seen: list[int] = []
    real_score = igcnas.proxies.score
    monkeypatch.setattr(igcnas.proxies, "score", lambda *a, **k: seen.append(torch.get_num_threads()) or real_score(*a, **k))
    before = torch.get_num_threads()
    assert main(["bench", "proxy-time", "--max-params", "80k", "--repeats", "1", "--threads", "2"]) == 0
    assert seen and set(seen) == {2} and torch.get_num_threads() == before
    assert "2 thread(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["bench", "proxy-time", "--threads", "0"])
