from __future__ import annotations

import numpy as np
import pytest

from igcnas.errors import UserError
from igcnas.space import (
    Chain,
    Kernel,
    connectivity,
    field_trace,
    info_field,
    is_dense,
    kernel_kind,
    loose_complementary,
    parse_design,
    shuffle_permutation,
    strict_complementary,
)


def igc(L: int, M: int, *, shuffle: bool = True) -> Chain:
    """IGCV1 block: primary 3x3 GC with L groups of M channels, secondary 1x1 PWG with M groups."""
    return Chain(L * M, (Kernel("GC", groups=L), Kernel("PWG", groups=M, shuffle_in=L if shuffle else None)))


@pytest.mark.parametrize(("L", "M"), [(24, 2), (4, 8), (8, 4), (2, 2)])
def test_igcv1_is_strictly_complementary(L, M):
    chain = igc(L, M)
    assert strict_complementary(chain)
    assert info_field(chain).as_tuple() == (3, 3, L * M)


def test_without_permutation_aligned_groups_do_not_widen_the_field():
    chain = igc(24, 2, shuffle=False)
    assert info_field(chain).channels == 24  # both branches cover the same half of the channels
    assert not is_dense(chain)
    assert not strict_complementary(chain)


def test_igcv2_c64_k8_l3():
    chain = Chain(64, (Kernel("DW"), Kernel("PWG", groups=8), Kernel("PWG", groups=8, shuffle_in=8)))
    assert strict_complementary(chain)
    paths = connectivity(chain)
    assert paths.shape == (64, 64) and (paths == 1).all()


def test_igcv3_loose_condition_over_super_channels():
    chain = Chain(
        32,
        (
            Kernel("PWG", groups=2, out_channels=192),
            Kernel("DW"),
            Kernel("PWG", groups=2, out_channels=32, shuffle_in=2),
        ),
    )
    assert is_dense(chain)
    assert not strict_complementary(chain)  # 192 / 4 = 48 paths per pair
    assert loose_complementary(chain, 2)
    assert not loose_complementary(chain, 4)
    no_shuffle = Chain(32, (Kernel("PWG", groups=2, out_channels=192), Kernel("PWG", groups=2, out_channels=32)))
    assert not loose_complementary(no_shuffle, 2)


def test_shuffle_permutation_is_the_channel_shuffle():
    perm = shuffle_permutation(6, 2)
    assert perm.tolist() == [0, 3, 1, 4, 2, 5]
    assert sorted(perm.tolist()) == list(range(6))


def test_field_trace_is_monotone():
    chain = Chain(64, (Kernel("PWG", groups=4), Kernel("DW"), Kernel("PWG", groups=16, shuffle_in=4)))
    trace = [f.as_tuple() for f in field_trace(chain)]
    assert trace == [(1, 1, 1), (1, 1, 16), (3, 3, 16), (3, 3, 64)]


def test_bottleneck_widths_change_and_params():
    chain = Chain(64, (Kernel("PW", out_channels=16), Kernel("DW"), Kernel("PW", out_channels=64)))
    assert chain.widths() == [64, 16, 16, 64]
    assert chain.params() == 64 * 16 + 9 * 16 + 16 * 64
    assert info_field(chain).as_tuple() == (3, 3, 64)


@pytest.mark.parametrize(
    ("kernels", "field"),
    [
        ((Kernel("GC", groups=5),), "groups"),
        ((Kernel("DW", out_channels=32),), "depthwise"),
        ((Kernel("PW", groups=2),), "dense"),
        ((Kernel("PWG", groups=4, shuffle_in=7),), "shuffle_in"),
        ((Kernel("NOPE"),), "unknown kernel kind"),
    ],
)
def test_invalid_chains_name_the_field(kernels, field):
    with pytest.raises(UserError, match=field):
        Chain(64, kernels)


def test_parse_design_and_registry():
    assert parse_design("pwg+dw, PWG") == ("PWG", "DW", "PWG")
    with pytest.raises(UserError, match="known kinds: CONV, GC, DW, PW, PWG"):
        kernel_kind("XX")
    with pytest.raises(UserError):
        parse_design("+")
    assert parse_design(" PWG DW  PWG ") == ("PWG", "DW", "PWG")
    for text in ("GC++PW", "+GC", "GC+", "GC,,PW", "GC + , PW"):
        with pytest.raises(UserError, match="without a kernel kind on each side"):
            parse_design(text)


def test_connectivity_matches_explicit_matrix_product():
    rng = np.random.default_rng(0)
    for _ in range(20):
        c = int(rng.choice([8, 12, 16]))
        g1 = int(rng.choice([d for d in (1, 2, 4) if c % d == 0]))
        g2 = int(rng.choice([d for d in (1, 2, 4) if c % d == 0]))
        s = int(rng.choice([d for d in (2, 4) if c % d == 0]))
        chain = Chain(c, (Kernel("PWG" if g1 > 1 else "PW", groups=g1), Kernel("PWG" if g2 > 1 else "PW", groups=g2, shuffle_in=s)))
        from igcnas.space import kernel_mask

        perm = np.eye(c, dtype=np.int64)[shuffle_permutation(c, s)]
        expected = kernel_mask(c, c, g2) @ perm @ kernel_mask(c, c, g1)
        assert (connectivity(chain) == expected).all()
