from __future__ import annotations

import re

import pytest

from igcnas.errors import UserError
from igcnas.space import SpaceOptions, evaluate_design, prune_design_space

PAPER_FINAL = ["DW+PW", "GC+PWG", "PW+DW+PW", "PWG+DW+PWG"]
REMOVED = {
    "DW": "field",
    "PW": "field",
    "GC+DW": "field",
    "DW+DW": "repeat",
    "PW+PW": "repeat",
    "PW+PWG": "field",
    "PWG+PWG": "repeat",
    "GC+PWG+GC+PWG": "repeat",
    "DW+PW+DW+PW": "repeat",
    "PW+DW+PW+DW+PW+DW": "repeat",
}


@pytest.fixture(scope="module")
def result():
    return prune_design_space(channels=64, max_length=6)


def test_funnel_starts_from_every_type_sequence(result):
    assert result.funnel[0][2] == sum(4**n for n in range(1, 7)) == 5460
    removed = sum(r for _, r, _ in result.funnel[1:])
    assert removed + result.funnel[-1][2] == 5460
    assert len(result.survivors()) == result.funnel[-1][2]


@pytest.mark.parametrize("design", PAPER_FINAL)
def test_paper_final_designs_survive(result, design):
    verdict = result.verdict(design)
    assert verdict.survives, verdict.reason
    assert verdict.field is not None and verdict.field.as_tuple() == (3, 3, 64)
    assert verdict.witness is not None and verdict.witness.design == design


@pytest.mark.parametrize(("design", "rule"), sorted(REMOVED.items()))
def test_paper_examples_removed_by_the_right_rule(result, design, rule):
    verdict = result.verdict(design)
    assert verdict.removed_by == rule, verdict.reason
    assert verdict.reason


def test_whole_match_mode_only_removes_full_repetitions():
    whole = prune_design_space(channels=64, max_length=6, repeat_match="whole")
    assert whole.verdict("DW+PW+DW+PW").removed_by == "repeat"
    assert whole.verdict("PW+PW").removed_by == "repeat"
    # contains an adjacent repeat but is not one: kept by rule 1 in "whole" mode, removed in "any" mode
    assert whole.verdict("PW+PW+DW").removed_by != "repeat"
    assert prune_design_space(channels=64).verdict("PW+PW+DW").removed_by == "repeat"
    assert whole.funnel[1][1] < prune_design_space(channels=64).funnel[1][1]


def test_repeat_rule_matches_the_regex_on_tokens(result):
    tokens = {"GC": "G", "DW": "D", "PW": "P", "PWG": "Q"}
    pattern = re.compile(r"(.+?)\1+")
    for verdict in result.verdicts:
        text = "".join(tokens[k] for k in verdict.design)
        assert (verdict.removed_by == "repeat") == bool(pattern.search(text))


def test_bottleneck_exception_is_what_keeps_pw_dw_pw():
    off = prune_design_space(channels=64, bottleneck=False)
    verdict = off.verdict("PW+DW+PW")
    assert verdict.removed_by == "redundancy"
    assert "complete" in verdict.reason
    # PWG+DW+PWG grows the field at every kernel, so it survives with or without the exception
    assert off.verdict("PWG+DW+PWG").survives


def test_redundancy_reasons(result):
    assert "sub-chain" in result.verdict("GC+PWG+PW").reason
    assert result.verdict("DW+PW+PWG").removed_by == "redundancy"


def test_survivors_grouped_up_to_order(result):
    groups = result.same_up_to_order()
    assert sorted(groups["DW+PW"]) == ["DW+PW", "PW+DW"]
    payload = result.to_dict()
    row = next(s for s in payload["survivors"] if s["design"] == "DW+PW")
    assert row["same_up_to_order"] == ["PW+DW"]
    assert row["param_formula"] == "9·C + C·F"


def test_witness_group_numbers_keep_the_field(result):
    from igcnas.space import info_field

    for verdict in result.survivors():
        assert verdict.witness is not None
        assert info_field(verdict.witness).as_tuple() == (3, 3, 64)


def test_other_channel_counts_and_lengths():
    small = prune_design_space(channels=16, max_length=3)
    assert small.funnel[0][2] == 4 + 16 + 64
    for design in PAPER_FINAL:
        assert small.verdict(design).survives
    with pytest.raises(UserError, match="not in this space"):
        small.verdict("PW+DW+PW+DW")


@pytest.mark.parametrize("bad", [dict(channels=1), dict(max_length=0), dict(kernel_size=2), dict(repeat_match="x")])
def test_bad_options(bad):
    with pytest.raises(UserError):
        SpaceOptions(**bad)


def test_evaluate_single_design():
    assert evaluate_design(["GC", "DW"]).removed_by == "field"
    assert evaluate_design(["PWG", "DW", "PWG"]).survives
