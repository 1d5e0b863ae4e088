from __future__ import annotations

import json

import pytest

from igcnas.arch import ArchSpec, BlockSpec, KernelSpec, StageSpec, StemSpec, load_spec, plan_block
from igcnas.errors import UserError
from igcnas.space import info_field, is_dense


def make(**block_kwargs) -> ArchSpec:
    kernels = block_kwargs.pop("kernels", (KernelSpec("GC", groups=8), KernelSpec("PWG", groups=4)))
    return ArchSpec(
        stem=StemSpec(width=32),
        block=BlockSpec(kernels, **block_kwargs),
        stages=(StageSpec(32, 2), StageSpec(64, 2, stride=2)),
    )


def test_json_round_trip_is_lossless_and_id_is_stable(tmp_path):
    spec = make(relu_after=(0,), bn="block")
    again = ArchSpec.from_json(spec.to_json())
    assert again == spec and again.id == spec.id
    path = spec.save(tmp_path)
    assert path.name == "arch.json" and load_spec(tmp_path) == spec
    assert spec.with_name("renamed").id == spec.id  # the name is a label, not part of the id
    assert make(relu_after=(1,), bn="block").id != spec.id


def test_first_block_strides_and_projects():
    spec = make()
    first = plan_block(spec, 1, 32, first=True)
    later = plan_block(spec, 1, 64, first=False)
    assert (first.stride, first.projection, first.identity) == (2, True, False)
    assert (later.stride, later.projection, later.identity) == (1, False, True)


def test_shuffles_are_placed_to_make_the_block_dense():
    spec = make()
    plan = plan_block(spec, 0, 32, first=True)
    assert plan.chain.kernels[1].shuffle_in == 8
    assert is_dense(plan.chain)
    unshuffled = plan_block(make(shuffle="none"), 0, 32, first=True)
    assert not is_dense(unshuffled.chain)


def test_group_width_and_stage_overrides():
    spec = ArchSpec(
        stem=StemSpec(width=24),
        block=BlockSpec((KernelSpec("DW"), KernelSpec("PWG", group_width=4), KernelSpec("PWG", group_width=6))),
        stages=(StageSpec(24, 1), StageSpec(48, 1, stride=2, groups=(None, 8, 6))),
    )
    first = plan_block(spec, 0, 24, first=True)
    assert [k.groups for k in first.chain.kernels] == [1, 6, 4]
    second = plan_block(spec, 1, 48, first=False)
    assert [k.groups for k in second.chain.kernels] == [1, 6, 8]
    assert info_field(second.chain).channels == 48


def test_bottleneck_widths():
    spec = ArchSpec.simple("PWG+DW+PWG", widths=(32, 64), depths=(1, 1), bottleneck=6)
    plan = plan_block(spec, 1, 32, first=True)
    assert plan.chain.widths() == [32, 384, 384, 64]


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d["block"]["kernels"][0].update(groups=5), "groups"),
        (lambda d: d["block"]["kernels"][0].update(kind="XYZ"), "unknown kernel kind"),
        (lambda d: d["stages"][0].update(width=0), "width"),
        (lambda d: d.update(colour="red"), "colour"),
        (lambda d: d["block"].update(bottleneck=4.0), "bottleneck"),
        (lambda d: d["block"].update(relu_after=[7]), "relu_after"),
        (lambda d: d["stem"].pop("width"), "width"),
    ],
)
def test_invalid_specs_name_the_field(mutate, needle):
    data = make().to_dict()
    mutate(data)
    with pytest.raises(UserError, match=needle):
        ArchSpec.from_dict(json.loads(json.dumps(data)))


def test_kernel_spec_validation():
    with pytest.raises(UserError, match="exactly one of groups or group_width"):
        KernelSpec("PWG")
    with pytest.raises(UserError, match="takes no groups"):
        KernelSpec("PW", groups=4)


def test_required_complementary_condition_is_checked_per_stage():
    ok = ArchSpec(
        stem=StemSpec(width=48),
        block=BlockSpec((KernelSpec("GC", groups=24), KernelSpec("PWG", group_width=24)), require="strict"),
        stages=(StageSpec(48, 1), StageSpec(96, 1, stride=2)),
    )
    assert ArchSpec.from_json(ok.to_json()) == ok and '"require"' in ok.to_json()
    assert '"require"' not in make().to_json()  # default omitted: existing spec ids unchanged
    with pytest.raises(UserError, match=r"stages\[0\]\.width.*require='strict'"):
        ArchSpec(
            stem=StemSpec(width=48),
            block=BlockSpec((KernelSpec("GC", groups=8), KernelSpec("PWG", groups=2)), require="strict"),
            stages=(StageSpec(48, 1),),
        )
    with pytest.raises(UserError, match="loose:G"):
        BlockSpec((KernelSpec("DW"),), require="loose")
    dense = BlockSpec((KernelSpec("GC", groups=8), KernelSpec("PWG", groups=2)), require="dense")
    ArchSpec(stem=StemSpec(width=48), block=dense, stages=(StageSpec(48, 1),))  # dense, though not strict


def test_each_block_position_is_planned_once_per_spec(monkeypatch):
    """Validating, building and counting a spec (and the zoo's stage plans) plan each (stage, block) once."""
    import igcnas.arch.plan as plan_module
    from igcnas.cost import count
    from igcnas.nn.network import build, layer_costs, network_cost
    from igcnas.zoo.compare import stage_plans

    calls: list[tuple[int, int, bool]] = []
    real = plan_module.plan_block

    def counting(spec, stage_index, in_width, *, first):
        calls.append((stage_index, in_width, first))
        return real(spec, stage_index, in_width, first=first)

    monkeypatch.setattr(plan_module, "plan_block", counting)
    spec = ArchSpec.simple("GC+PWG", widths=(16, 32, 64), depths=(3, 1, 2), groups=(4, 2), name="counted")
    build(spec)
    build(spec, impl="naive")
    network_cost(spec)
    layer_costs(spec)
    count(spec)
    stage_plans(spec)
    assert len(spec.block_plan(0, 2).chain.kernels) == 2
    # stage 0: first block and the later blocks' shared plan; stage 1 (depth 1): its first block only; stage 2: both
    assert calls == [(0, 16, True), (0, 16, False), (1, 16, True), (2, 32, True), (2, 64, False)]


def test_cached_plans_leave_identity_alone():
    """The plan cache is no field: JSON, equality, hashing, the id and pickling are as without it."""
    import pickle

    spec = make()
    fresh = ArchSpec.from_json(spec.to_json())
    assert spec.plans() is spec.plans()  # one tuple, kept
    assert "_plans" not in spec.to_dict() and "_plans" not in spec.to_json()
    assert spec == fresh and hash(spec) == hash(fresh) and spec.id == fresh.id
    again = pickle.loads(pickle.dumps(spec))
    assert again == spec and again.id == spec.id and again.plans() == spec.plans()
    assert [len(stage) for stage in spec.plans()] == [2, 2]
    assert spec.block_plan(1, 0) == plan_block(spec, 1, 32, first=True)
    assert spec.block_plan(1, 5) == plan_block(spec, 1, 64, first=False)


def test_plans_keep_their_former_module_name_for_pickled_specs():
    """Block planning lives in igcnas.arch.plan; a spec pickled with its plans before the move names their class
    under igcnas.arch.spec, which still resolves it."""
    import pickle

    import igcnas.arch.spec as spec_module
    from igcnas.arch.plan import BlockPlan, plan_block

    assert pickle.loads(b"cigcnas.arch.spec\nBlockPlan\n.") is BlockPlan
    assert spec_module.plan_block is plan_block
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        spec_module.nope  # noqa: B018


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["stem"].update(stride=-2), "stem.stride: -2 must be an integer >= 1"),
        (lambda d: d["stem"].update(stride=0), "stem.stride: 0 must be an integer >= 1"),
        (lambda d: d["stem"].update(kernel_size=0), "stem.kernel_size: 0 must be a positive odd integer"),
        (lambda d: d["stem"].update(kernel_size=4), "stem.kernel_size: 4 must be a positive odd integer"),
        (lambda d: d["stem"].update(pool=1), "stem.pool: 1 must be true or false"),
        (lambda d: d["stem"].update(width=True), "stem.width: True must be a positive integer"),
        (lambda d: d["head"].update(width=-5), "head.width: -5 must be an integer >= 1, or null"),
        (lambda d: d["head"].update(width=0), "head.width: 0 must be an integer >= 1, or null"),
        (lambda d: d["head"].update(width=True), "head.width: True must be an integer >= 1, or null"),
        (lambda d: d["head"].update(dropout=2.0), r"head.dropout: 2.0 must be a number with 0 <= dropout < 1"),
        (lambda d: d["head"].update(dropout=-1), r"head.dropout: -1 must be a number with 0 <= dropout < 1"),
        (lambda d: d["head"].update(dropout=float("nan")), r"head.dropout: nan must be a number"),
        (lambda d: d["head"].update(dropout=True), r"head.dropout: True must be a number"),
        (lambda d: d["stages"][1].update(depth=True), r"stages\[1\].depth: True must be a positive integer"),
        (lambda d: d["stages"][1].update(width=-8), r"stages\[1\].width: -8 must be a positive integer"),
        (lambda d: d["stages"][0].update(bottleneck=-1), r"stages\[0\].bottleneck: -1 must be a positive number"),
        (lambda d: d["stages"][0].update(groups=[-2, 2]), r"stages\[0\].groups: -2 must be a positive integer"),
        (lambda d: d["stages"].__setitem__(1, 5), r"arch.stages\[1\]: expected a stage object .*got 5"),
        (lambda d: d.update(stages={"width": 8}), "arch.stages: expected a list of stage objects"),
        (lambda d: d.update(input_shape=[3, True, 32]), r"input_shape: \(3, True, 32\) must be three positive"),
        (lambda d: d.update(name=123), "name: 123 must be a string"),
    ],
)
def test_stem_head_and_stage_fields_are_checked(mutate, message):
    """Bad stem/head values, bools given as counts and non-object stages are one-line errors naming the field."""
    data = make().to_dict()
    mutate(data)
    with pytest.raises(UserError, match=message):
        ArchSpec.from_dict(json.loads(json.dumps(data)))


def test_stem_and_head_accept_their_valid_values():
    spec = ArchSpec.from_dict({**make().to_dict(), "stem": {"width": 32, "kernel_size": 7, "stride": 2, "pool": True},
                               "head": {"width": 64, "dropout": 0.5}})
    assert (spec.stem.kernel_size, spec.stem.stride, spec.head.width, spec.head.dropout) == (7, 2, 64, 0.5)


def test_unreadable_arch_json_names_the_file(tmp_path):
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError, match=r"binary\.json: not a UTF-8 text file \(byte 0xff at offset 0\)") as info:
        load_spec(binary)
    assert str(binary) in str(info.value) and "\n" not in str(info.value)
    broken = tmp_path / "broken.json"
    broken.write_text('{"stages": ')
    with pytest.raises(UserError, match=r"broken\.json: not valid JSON") as info:
        load_spec(broken)
    assert str(broken) in str(info.value)
    with pytest.raises(UserError, match=r"^arch\.json: not valid JSON"):  # text with no file: the generic name
        ArchSpec.from_json("{")
    bom = tmp_path / "bom"
    bom.mkdir()
    (bom / "arch.json").write_bytes(b"\xef\xbb\xbf" + make().to_json().encode())  # as some editors save it
    assert load_spec(bom) == make()
