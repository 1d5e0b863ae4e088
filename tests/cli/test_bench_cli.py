"""``igcnas bench``: ops (blocks + zoo networks, with the data pipeline when --data-dir is given) and space."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from igcnas.cli import main


@pytest.fixture
def tiny_cifar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_cifar10: Path) -> Path:
    """4 training JPGs per CIFAR-10 class in a private folder (and a private user cache)."""
    monkeypatch.setenv("IGCNAS_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "cifar10"
    for class_dir in sorted((shared_cifar10 / "train").iterdir()):
        target = root / "train" / class_dir.name
        target.mkdir(parents=True)
        for src in sorted(class_dir.glob("*.jpg"))[:4]:
            shutil.copyfile(src, target / src.name)
    return root


def test_bench_ops_json_has_blocks_networks_and_the_data_pipeline(tiny_cifar: Path, capsys) -> None:
    threads = torch.get_num_threads()
    try:
        status = main(["bench", "ops", "--batch", "2", "--size", "8", "--repeats", "1", "--format", "json",
                       "--data-dir", str(tiny_cifar)])
    finally:
        torch.set_num_threads(threads)
    assert status == 0
    rows = json.loads(capsys.readouterr().out)
    ops = [row for row in rows if "block" in row]
    assert [row["block"] for row in ops] == ["IGC-L24M2", "IGCV2*-C416", "IGCV3-D", "IGC-L24M2-D20",
                                              "IGCV2-C64-D20", "IGCV3-D-CIFAR", "RegConv-W16-D20"]
    assert all(row["train_speedup"] > 0 and row["train_ops_speedup"] > 0 for row in ops)
    assert all(row["forms"].startswith("train ") for row in ops)  # the forms each fast build ran
    assert all(row["max_abs_diff"] < 1e-3 for row in ops)
    pipelines = {row["pipeline"] for row in rows if "pipeline" in row}
    assert pipelines == {"igcnas", "torchvision"}


def test_bench_ops_table_compares_igc_with_regular_convs_and_lists_the_forms(capsys) -> None:
    threads = torch.get_num_threads()
    try:
        assert main(["bench", "ops", "--batch", "2", "--size", "8", "--repeats", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    machine = out.splitlines()[0]  # the table names the CPU and the code its ratios come from
    assert machine.startswith("machine: ") and f"runs {torch.backends.cpu.get_cpu_capability()} kernels" in machine
    assert "native kernels -march=" in machine
    assert "IGC-L24M2-D20 trains at " in out and "x the images/s of RegConv-W16-D20" in out
    assert "forms the fast build ran" in out and "  IGC-L24M2-D20: train " in out
    assert "per image IGC-L24M2-D20 has 0.71x the FLOPs and 4.27x the bytes of layer outputs" in out
    assert re.search(r"memory: copying 256 MiB ran at \d+\.\d GB/s before the cases and \d+\.\d GB/s after", out)


def test_bench_stages_breaks_a_network_down_and_names_unknown_networks(capsys) -> None:
    threads = torch.get_num_threads()
    try:
        assert main(["bench", "stages", "--network", "RegConv-W16-D8", "--batch", "4", "--repeats", "1",
                     "--format", "json"]) == 0
    finally:
        torch.set_num_threads(threads)
    rows = json.loads(capsys.readouterr().out)
    assert [row["part"] for row in rows] == ["stem", "stages.0", "stages.1", "stages.2", "head"]
    assert all(row["network"] == "RegConv-W16-D8" and row["fast_train_ms"] > 0 for row in rows)
    assert rows[0]["summary"].startswith("RegConv-W16-D8: the parts sum to ")
    assert all(row["forms"].startswith("train ") for row in rows[:-1])  # what each part's fast build ran
    assert rows[-1]["forms"] == ""  # the head (pool, linear) has no op with forms to choose
    with pytest.raises(SystemExit) as info:
        main(["bench", "stages", "--network", "nope"])
    assert info.value.code == 2
    assert "unknown zoo network 'nope'" in capsys.readouterr().err


def test_bench_space_table(capsys) -> None:
    assert main(["bench", "space", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "5460" in out


def test_bench_data_without_a_folder_is_a_one_line_error(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["bench", "data"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("igcnas: error: bench data: give --data-dir") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("argv", "flag", "readers"), [
    (["bench", "ops", "--network", "best/arch.json"], "--network", "bench stages"),
    (["bench", "space", "--device", "cuda"], "--device", "bench ops, bench stages, bench train"),
    (["bench", "proxies", "--repeats", "3"], "--repeats", "bench space"),
    (["bench", "cost", "--table", "t.csv"], "--table", "bench proxies, bench search"),
])
def test_an_option_the_benchmark_does_not_read_is_refused_not_ignored(capsys, argv: list[str], flag: str,
                                                                       readers: str) -> None:
    with pytest.raises(SystemExit) as info:  # before anything runs
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"igcnas: error: {flag}: '{' '.join(argv[:2])}' does not read it") and readers in err
    assert "\n" not in err
