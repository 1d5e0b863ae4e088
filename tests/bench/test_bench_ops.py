"""The naive-vs-fast block benchmark runs end to end on tiny inputs and reports consistent rows."""

from __future__ import annotations

import json
import re

import pytest
import torch

from igcnas.bench import ops as bench
from igcnas.errors import UserError
from igcnas.nn.ops import FastSparseConv2d, SparseConv2d


def test_bench_blocks_rows_are_complete_and_consistent() -> None:
    rows = bench.bench_blocks(batch=2, size=8, repeats=1)
    assert [row["block"] for row in rows] == ["IGC-L24M2", "IGCV2*-C416", "IGCV3-D"]
    for row in rows:
        for key in ("naive_train_ips", "fast_train_ips", "naive_eval_ips", "fast_eval_ips"):
            assert row[key] > 0
        assert row["train_speedup"] == pytest.approx(row["fast_train_ips"] / row["naive_train_ips"], rel=0.02)
        assert row["max_abs_diff"] < 1e-4
        # headline: naive under the system malloc vs fast under the tuned one; ops: both tuned
        for mode in ("train", "eval"):
            assert row[f"naive_{mode}_ips"] == row[f"naive_{mode}_ips_system"]
            assert row[f"fast_{mode}_ips"] == row[f"fast_{mode}_ips_tuned"]
            assert row[f"{mode}_ops_speedup"] == pytest.approx(
                row[f"fast_{mode}_ips_tuned"] / row[f"naive_{mode}_ips_tuned"]
            )
            assert row[f"fast_{mode}_ips_system"] > 0
        assert row["runtime"].startswith("naive: system malloc, fast: ")
    # closed-form sizes of the three paper blocks (conv weights + BN affine)
    igc, v2, v3 = rows
    assert igc["params"] == 48 * 2 * 9 + 48 * 24 + 2 * 48
    assert igc["macs"] == (48 * 2 * 9 + 48 * 24) * 8 * 8
    assert v2["params"] == 416 * 9 + 3 * 416 * 8 + 2 * 416
    assert v3["params"] == 192 * 16 + 192 * 9 + 32 * 96 + 2 * (192 + 192 + 32)
    table = bench.format_table(rows)
    assert "IGCV2*-C416" in table and "train_ops_speedup" in table and "tuned malloc" in table
    # the form each layer kind ran, for a training step and for inference (the IGC block: its GC and PWG; its BN +
    # ReLU in training, and the IGCV3-D block's closing BN with the identity sum)
    train, evaluation = igc["forms"].split("; ")
    assert train.startswith("train BN+ReLU ") and "GC " in train and "PWG " in train
    assert evaluation.startswith("eval GC ") and "BN" not in evaluation
    assert "BN+add " in v3["forms"].split("; ")[0]
    assert f"  IGC-L24M2: {igc['forms']}" in table


def test_bench_pair_measures_in_the_calling_process() -> None:
    row = bench.bench_pair("igc", lambda impl: bench.igc_l24m2_block(impl=impl), channels=48, batch=2, size=8,
                           repeats=2)
    assert row["runtime"] == "current" and row["max_abs_diff"] < 1e-4
    assert row["train_speedup"] == row["train_ops_speedup"]
    assert row["naive_train_ips_current"] == row["naive_train_ips"] > 0


def test_zoo_cases_run_in_the_workers_and_unknown_blocks_are_named() -> None:
    rows = bench.bench_cases([bench.CaseRef("zoo", "IGC-L24M2-D20")], batch=2, repeats=1, input_format="nchw")
    assert rows[0]["size"] == 32 and rows[0]["channels"] == 3 and rows[0]["max_abs_diff"] < 1e-3
    with pytest.raises(UserError, match="unknown block 'nope'; known: IGC-L24M2"):
        bench.CaseRef("block", "nope").build("naive")
    with pytest.raises(UserError, match="^bench: unknown block 'nope'"):
        bench.bench_cases([bench.CaseRef("block", "nope")], batch=2, size=8, repeats=1)


def test_network_parts_are_cases_with_the_input_each_part_gets() -> None:
    cases = bench.network_cases("IGC-L24M2-D20")
    assert [case.name.split(":")[1] for case in cases] == ["stem", "stages.0", "stages.1", "stages.2", "head"]
    assert [case.input_shape(8) for case in cases] == [(3, 32), (48, 32), (48, 32), (96, 16), (192, 8)]
    # the images get no gradient, as in training; a stage's or a block's input does, as inside a network
    assert [case.input_grad() for case in cases] == [False, True, True, True, True]
    assert not bench.CaseRef("zoo", "IGC-L24M2-D20").input_grad() and bench.CaseRef("block", "IGCV3-D").input_grad()
    with pytest.raises(UserError, match=r"^bench: case kind 'network' is not one of block, zoo, part \(e\.g\. "
                                        r"CaseRef\(\"zoo\", 'IGC-L24M2-D20'\) for a network\)$"):
        bench.CaseRef("network", "IGC-L24M2-D20")  # type: ignore[arg-type]
    naive = cases[2].build("naive")
    assert sum(p.numel() for p in naive.parameters()) > 0 and not hasattr(naive, "stem")  # the stage alone
    with pytest.raises(UserError, match="IGC-L24M2-D20 has no part 'stages.9'; its parts: stem, stages.0"):
        bench.CaseRef("part", "IGC-L24M2-D20:stages.9").input_shape(32)
    with pytest.raises(UserError, match="unknown zoo network 'nope'"):
        bench.network_cases("nope")


def test_an_arch_json_is_a_network_case_too(tmp_path) -> None:
    from igcnas.zoo import get_zoo

    path = tmp_path / "run:1" / "arch.json"  # a ':' in the path: the part is what follows the last one
    path.parent.mkdir()
    path.write_text(get_zoo("IGC-L24M2-D20").spec.to_json(), encoding="utf-8")
    cases = bench.network_cases(str(path))
    assert cases[1].name == f"{path}:stages.0"
    assert [case.input_shape(8) for case in cases] == [(3, 32), (48, 32), (48, 32), (96, 16), (192, 8)]
    assert bench.CaseRef("zoo", str(path)).input_shape(8) == (3, 32)
    assert sum(p.numel() for p in cases[-1].build("fast").parameters()) == 192 * 10 + 10  # the head: the classifier


def test_the_stage_table_sums_the_parts_in_this_process() -> None:
    from igcnas.bench.ops_workers import _bench

    rows = _bench(bench.network_cases("RegConv-W16-D8"), batch=2, size=32, repeats=1, warmup=1, device="cpu",
                  input_format="native", seed=0, interleave=True, here=True)
    assert [row["block"] for row in rows] == [f"RegConv-W16-D8:{part}" for part in
                                              ("stem", "stages.0", "stages.1", "stages.2", "head")]
    assert all(row["max_abs_diff"] < 1e-3 for row in rows)
    table, line = bench.stage_table(rows, display=False)
    assert [row["part"] for row in table] == ["stem", "stages.0", "stages.1", "stages.2", "head"]
    assert sum(row["fast_share"] for row in table) == pytest.approx(1.0, abs=0.01)
    naive, fast = (sum(row[key] for row in table) for key in ("naive_train_ms", "fast_train_ms"))
    # the line sums the unrounded times, the table shows them to 0.01 ms: equal within the rounding
    found = re.fullmatch(r"RegConv-W16-D8: the parts sum to (\d+\.\d) ms per training step naive, (\d+\.\d) ms fast "
                         r"\((\d+\.\d\d)x; batch 2\)", line)
    assert found, line
    assert float(found[1]) == pytest.approx(naive, abs=0.06) and float(found[2]) == pytest.approx(fast, abs=0.06)
    assert float(found[3]) == pytest.approx(float(found[1]) / float(found[2]), rel=0.02)
    assert bench.stage_table([]) == ([], "")


def test_interleaved_cases_give_one_row_each_in_order_and_need_distinct_names() -> None:
    from igcnas.bench.ops_workers import rotated

    cases = [bench.CaseRef("zoo", "RegConv-W16-D8"), bench.CaseRef("zoo", "IGC-L24M2-D20")]
    rows = bench.bench_cases(cases, batch=2, repeats=2, input_format="nchw", interleave=True)
    assert [row["block"] for row in rows] == ["RegConv-W16-D8", "IGC-L24M2-D20"]
    assert all(row["fast_train_ips"] > 0 and row["max_abs_diff"] < 1e-3 for row in rows)
    # every case leads one round in turn
    assert [[case.name for case in rotated(cases, index)] for index in range(3)] == [
        ["RegConv-W16-D8", "IGC-L24M2-D20"], ["IGC-L24M2-D20", "RegConv-W16-D8"], ["RegConv-W16-D8", "IGC-L24M2-D20"]]
    with pytest.raises(UserError, match="^bench: interleaved cases need distinct names"):
        bench.bench_cases([cases[0], cases[0]], batch=2, repeats=1, interleave=True)


def test_off_cpu_the_same_rounds_run_in_this_process() -> None:
    # what a GPU run takes (one runtime, "current"), run here on the CPU
    from igcnas.bench.ops_workers import _bench

    cases = [bench.CaseRef("zoo", "RegConv-W16-D8"), bench.CaseRef("zoo", "IGC-L24M2-D20")]
    rows = _bench(cases, batch=2, size=32, repeats=2, warmup=1, device="cpu", input_format="nchw", seed=0,
                  interleave=True, here=True)
    assert [(row["block"], row["runtime"], row["device"]) for row in rows] == [
        ("RegConv-W16-D8", "current", "cpu"), ("IGC-L24M2-D20", "current", "cpu")]
    assert all(row["train_speedup"] == row["train_ops_speedup"] > 0 and "naive_train_ips_current" in row
               for row in rows)
    with pytest.raises(UserError, match="^bench: unknown block 'nope'"):
        _bench([bench.CaseRef("block", "nope")], batch=2, size=8, repeats=1, warmup=1, device="cpu",
               input_format="native", seed=0, interleave=False, here=True)
    assert bench.bench_cases([], batch=2, repeats=1, interleave=True) == []  # no case: no worker started
    with pytest.raises(UserError, match="^device: 'gpu0' is not a device; use 'auto', 'cpu'"):
        bench.bench_pair("igc", lambda impl: bench.igc_l24m2_block(impl=impl), channels=48, batch=2, size=8,
                         device="gpu0")


def test_blocks_use_the_requested_impl_and_share_weights() -> None:
    for case in bench.BLOCKS:
        naive, fast = case.build("naive"), case.build("fast")
        convs_naive = [m for m in naive.modules() if isinstance(m, SparseConv2d)]
        convs_fast = [m for m in fast.modules() if isinstance(m, SparseConv2d)]
        assert convs_naive and all(type(m) is SparseConv2d for m in convs_naive)
        assert convs_fast and all(isinstance(m, FastSparseConv2d) for m in convs_fast)
        assert naive.state_dict().keys() == fast.state_dict().keys()


def test_igcv2_star_has_log_k_group_convs() -> None:
    # L* = ceil(log_8 416) + 1 = 4: one channel-wise conv + 3 group 1x1 convs of 52 x 8 channels
    block = bench.igcv2_star_c416_block(impl="naive")
    convs = [m for m in block.modules() if isinstance(m, SparseConv2d)]
    assert [(m.groups, m.kernel_size[0], m.shuffle_groups) for m in convs] == [(416, 3, 1)] + [
        (52, 1, 52)
    ] * 3


def test_main_prints_table_and_writes_json(tmp_path, capsys) -> None:
    out = tmp_path / "rows.json"
    threads = torch.get_num_threads()
    try:
        assert (
            bench.main(
                ["--batch", "1", "--size", "4", "--repeats", "1", "--threads", "1", "--json", str(out)]
            )
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    assert "IGC-L24M2" in capsys.readouterr().out
    assert len(json.loads(out.read_text())) == 3


def test_bad_arguments_raise_user_errors() -> None:
    with pytest.raises(UserError, match="repeats=0"):
        bench.bench_pair("x", lambda impl: bench.igc_l24m2_block(impl=impl), channels=48, repeats=0)
    with pytest.raises(UserError, match="--threads"):
        bench.main(["--threads", "0"])



def test_traffic_counts_the_bytes_every_layer_writes_for_one_image() -> None:
    from igcnas.arch import ArchSpec
    from igcnas.cost import count
    from igcnas.zoo import ZOO

    narrow = ArchSpec.simple("DW+PW", widths=(8,), depths=(1,), input_shape=(3, 4, 4))
    wide = ArchSpec.simple("DW+PW", widths=(16,), depths=(1,), input_shape=(3, 4, 4))
    (flops, small), (_, large) = bench.traffic(narrow), bench.traffic(wide)
    assert flops == count(narrow).flops and small % 4 == 0
    assert small >= 4 * 8 * 4 * 4 * 3  # at least the stem conv's, its BN's and its ReLU's outputs
    assert 1.8 * small < large < 2.2 * small  # the layer outputs scale with the width (the 10 logits do not)
    sparse, regular = bench.traffic(ZOO["IGC-L24M2-D20"].spec), bench.traffic(ZOO["RegConv-W16-D20"].spec)
    assert sparse[0] < regular[0] and sparse[1] > 3 * regular[1]  # fewer FLOPs, several times the bytes
