"""igcnas.proxies: every proxy deterministic, finite and defined as its paper; the vote; one-line user errors."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from igcnas.arch import ArchSpec, BlockSpec, KernelSpec, layout_arch
from igcnas.cost import count
from igcnas.errors import UserError
from igcnas.nn.network import Block
from igcnas.nn.norm import BatchNormAct2d
from igcnas.proxies import PROXIES, VOTE_PROXIES, score, vote
from igcnas.proxies import _measures as measures

CPU = torch.device("cpu")


def _igc_spec() -> ArchSpec:
    """IGCV1-like: GC+PWG, one BN per block, no ReLU inside the block, ReLU after the block (no shortcut)."""
    block = BlockSpec((KernelSpec("GC", groups=4), KernelSpec("PWG", group_width=4)), bn="block", identity=False)
    return layout_arch(block, widths=(8, 16), depths=(2, 1), input_shape=(3, 8, 8))


def _bottleneck_spec() -> ArchSpec:
    """MobileNetV2-like: PW+DW+PW with ReLUs inside the block (fused into its BNs), no ReLU after the sum."""
    block = BlockSpec((KernelSpec("PW"), KernelSpec("DW"), KernelSpec("PW")), bottleneck=0.5, relu_after=(0, 1),
                      post_relu=False)
    return layout_arch(block, widths=(8, 16), depths=(2, 1), input_shape=(3, 16, 16))


SPECS = {"igc": _igc_spec, "bottleneck": _bottleneck_spec}


def _batch(spec: ArchSpec, n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images of the spec's input shape and labels of its classes."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, *spec.input_shape, generator=generator)
    labels = torch.randint(0, spec.num_classes, (n,), generator=generator)
    return images, labels


@pytest.fixture(scope="module", params=sorted(SPECS))
def case(request: pytest.FixtureRequest) -> tuple[ArchSpec, torch.Tensor, torch.Tensor, dict[str, float]]:
    """A tiny spec, a batch and every proxy of it (seed 0)."""
    spec = SPECS[request.param]()
    images, labels = _batch(spec)
    return spec, images, labels, score(spec, images, labels)


# -- determinism, independence, invariances ----------------------------------------------------------------------
def test_every_proxy_is_deterministic_and_finite(case: tuple[ArchSpec, torch.Tensor, torch.Tensor, dict[str, float]]) -> None:
    spec, images, labels, first = case
    assert list(first) == list(PROXIES)
    assert all(isinstance(v, float) and math.isfinite(v) for v in first.values()), first
    assert score(spec, images, labels) == first


def test_a_proxy_does_not_depend_on_which_others_are_asked(
    case: tuple[ArchSpec, torch.Tensor, torch.Tensor, dict[str, float]],
) -> None:
    spec, images, labels, every = case
    for name in PROXIES:
        assert score(spec, images, labels, proxies=(name,)) == {name: every[name]}
    assert list(score(spec, images, labels, proxies=("snip", "params", "snip"))) == ["snip", "params"]


def test_the_seed_draws_the_weights(case: tuple[ArchSpec, torch.Tensor, torch.Tensor, dict[str, float]]) -> None:
    spec, images, labels, first = case
    other = score(spec, images, labels, seed=1, proxies=("naswot", "synflow", "snip"))
    assert all(other[name] != first[name] for name in other)


def test_synflow_does_not_depend_on_the_data(case: tuple[ArchSpec, torch.Tensor, torch.Tensor, dict[str, float]]) -> None:
    spec, _, _, first = case
    images, labels = _batch(spec, n=4, seed=7)
    assert score(spec, images * 3 + 1, labels, proxies="synflow")["synflow"] == first["synflow"]
    assert first["synflow"] > 0


def test_naswot_does_not_depend_on_the_order_of_the_batch(
    case: tuple[ArchSpec, torch.Tensor, torch.Tensor, dict[str, float]],
) -> None:
    spec, images, labels, first = case
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(1))
    permuted = score(spec, images[order], labels[order], proxies="naswot")["naswot"]
    assert permuted == pytest.approx(first["naswot"], rel=1e-6)


def test_params_flops_and_width(case: tuple[ArchSpec, torch.Tensor, torch.Tensor, dict[str, float]]) -> None:
    spec, images, labels, first = case
    cost = count(spec)
    assert (first["params"], first["flops"], first["width"]) == (cost.params, cost.flops, spec.stages[0].width)
    at_budget = score(spec, images, labels, proxies="width", budget_params=cost.params)["width"]
    assert at_budget == spec.stages[0].width
    wider = score(spec, images, labels, proxies="width", budget_params=4 * cost.params)["width"]
    assert wider == pytest.approx(2 * spec.stages[0].width)


def test_global_state_is_left_as_it_was() -> None:
    spec = _igc_spec()
    images, labels = _batch(spec)
    torch.manual_seed(1234)
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    with torch.no_grad():
        score(spec, images, labels)
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads
    with torch.inference_mode():  # an inference-mode caller and batch still get the gradient proxies
        frozen = images.clone()
        assert score(spec, frozen, labels, proxies="jacob_cov") == score(spec, images, labels, proxies="jacob_cov")
    assert not images.requires_grad


# -- the definitions ---------------------------------------------------------------------------------------------
def test_relu_sites_are_every_relu_of_the_network() -> None:
    igc = measures.seeded_model(_igc_spec(), seed=0, device=CPU)
    sites = measures.relu_sites(igc)
    # no ReLU inside the block: the stem's, then the ReLU after each of the 3 blocks (no shortcut: fused into the
    # block's BN as the stem's is; the naive build's Block applies it)
    assert [type(m).__name__ for m in sites] == ["BatchNormAct2d"] * 4
    naive_igc = measures.seeded_model(_igc_spec(), seed=0, device=CPU, impl="naive")
    assert [type(m).__name__ for m in measures.relu_sites(naive_igc)] == ["ReLU", "Block", "Block", "Block"]
    spec = _bottleneck_spec()
    fused = measures.seeded_model(spec, seed=0, device=CPU)
    naive = measures.seeded_model(spec, seed=0, device=CPU, impl="naive")
    fused_sites, naive_sites = measures.relu_sites(fused), measures.relu_sites(naive)
    # 2 ReLUs inside each of the 3 blocks and the stem's, fused into their BN by default; none after the sum
    assert sum(isinstance(m, BatchNormAct2d) for m in fused_sites) == 7 and len(fused_sites) == 7
    assert not any(isinstance(m, Block) for m in fused_sites)
    assert len(naive_sites) == 7 and all(isinstance(m, torch.nn.ReLU) for m in naive_sites)
    # same weights in both builds, so the same codes: NASWOT agrees up to float rounding
    assert all(torch.equal(a, b) for a, b in zip(fused.state_dict().values(), naive.state_dict().values(), strict=True))
    images, _ = _batch(spec)
    assert measures.naswot(fused, images) == pytest.approx(measures.naswot(naive, images), rel=1e-6)


@pytest.mark.parametrize("counts", ["native", "matmul"])
def test_naswot_is_the_log_determinant_of_the_hamming_kernel(counts: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # both ways of counting the agreements: the native popcount kernel and the matmul of the 0/1 codes
    if counts == "matmul":
        monkeypatch.setattr(measures._native, "native_available", lambda: False)
    elif not measures._native.native_available():
        pytest.skip(f"native kernels {measures._native.native_status()}")
    spec = _bottleneck_spec()
    images, _ = _batch(spec, n=12)
    model = measures.seeded_model(spec, seed=0, device=CPU, impl="naive")
    codes: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, _i, out: codes.append((out > 0).flatten(1)))
               for m in measures.relu_sites(model)]
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    c = torch.cat(codes, dim=1)
    hamming = (c[:, None, :] != c[None, :, :]).sum(dim=2).double()
    expected = torch.linalg.slogdet(c.shape[1] - hamming).logabsdet
    assert measures.naswot(model, images) == pytest.approx(float(expected), rel=1e-9)


def test_snip_and_grad_norm_are_the_loss_gradient_sums(
    case: tuple[ArchSpec, torch.Tensor, torch.Tensor, dict[str, float]],
) -> None:
    spec, images, labels, first = case
    model = measures.seeded_model(spec, seed=0, device=CPU)
    F.cross_entropy(model(images), labels).backward()
    theta = measures.weights(model)
    snip = sum(float((w.grad * w.detach()).abs().sum()) for w in theta if w.grad is not None)
    norm = math.sqrt(sum(float(w.grad.square().sum()) for w in theta if w.grad is not None))
    assert first["snip"] == pytest.approx(snip, rel=1e-5)
    assert first["grad_norm"] == pytest.approx(norm, rel=1e-5)


def test_jacob_cov_is_at_most_minus_the_batch_size(
    case: tuple[ArchSpec, torch.Tensor, torch.Tensor, dict[str, float]],
) -> None:
    # log(x) + 1/x >= 1 for every x > 0, with equality at x = 1 (uncorrelated Jacobians)
    _, images, _, first = case
    assert first["jacob_cov"] <= -images.shape[0] + 1e-9


# -- the vote ----------------------------------------------------------------------------------------------------
def test_vote_sums_the_ranks_of_each_proxy() -> None:
    rows = [
        {"synflow": 10.0, "jacob_cov": -70.0, "snip": 2.0},
        {"synflow": 30.0, "jacob_cov": -65.0, "snip": 1.0},
        {"synflow": 20.0, "jacob_cov": -90.0, "snip": 3.0},
    ]
    assert VOTE_PROXIES == ("synflow", "jacob_cov", "snip")
    assert vote(rows) == [1 + 2 + 2, 3 + 3 + 1, 2 + 1 + 3]
    assert vote(rows, proxies=("synflow",)) == [1.0, 3.0, 2.0]
    ties = [{"snip": 1.0}, {"snip": 5.0}, {"snip": 1.0}, {"snip": float("nan")}]
    assert vote(ties, proxies="snip") == [2.5, 4.0, 2.5, 1.0]  # ties share their mean rank, NaN ranks lowest
    assert vote([], proxies="snip") == []


def test_vote_of_scored_candidates() -> None:
    spec = _igc_spec()
    images, labels = _batch(spec)
    rows = [score(spec, images, labels, seed=s, proxies=VOTE_PROXIES) for s in (0, 1, 2)]
    votes = vote(rows)
    assert sum(votes) == 3 * (1 + 2 + 3) and all(3 <= v <= 9 for v in votes)  # 3 proxies, ranks 1..3, no ties
    best = {name: max(row[name] for row in rows) + 1.0 for name in VOTE_PROXIES}  # better than all on each proxy
    assert vote([*rows, best])[-1] == 3 * 4


def test_vote_names_a_row_that_lacks_a_proxy() -> None:
    with pytest.raises(UserError, match=r"^rows\[1\]: no 'snip' score; score every candidate"):
        vote([{"synflow": 1.0, "jacob_cov": 1.0, "snip": 1.0}, {"synflow": 1.0, "jacob_cov": 1.0}])


# -- user errors -------------------------------------------------------------------------------------------------
def _one_line(error: pytest.ExceptionInfo[UserError]) -> str:
    """The message, checked to be one line."""
    message = str(error.value)
    assert "\n" not in message
    return message


def test_an_unknown_proxy_lists_the_known_ones() -> None:
    spec = _igc_spec()
    images, labels = _batch(spec)
    with pytest.raises(UserError) as error:
        score(spec, images, labels, proxies=("synflow", "zen_nas"))
    message = _one_line(error)
    assert message.startswith("proxies: 'zen_nas' is not a proxy; choose from ")
    assert all(name in message for name in PROXIES)
    with pytest.raises(UserError, match="^proxies: none given"):
        score(spec, images, labels, proxies=())
    with pytest.raises(UserError, match="^proxies: 'zen_nas' is not a proxy"):
        vote([], proxies=("zen_nas",))


@pytest.mark.parametrize(
    ("images", "labels", "field"),
    [
        (torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.int64), "images: shape (4, 3, 32, 32)"),
        (torch.randn(4, 3, 8), torch.zeros(4, dtype=torch.int64), "images: shape (4, 3, 8)"),
        (torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64), "images: got a tensor of dtype uint8"),
        (torch.randn(1, 3, 8, 8), torch.zeros(1, dtype=torch.int64), "images: a batch of 1"),
        (torch.full((4, 3, 8, 8), float("nan")), torch.zeros(4, dtype=torch.int64), "images: the batch holds NaN"),
        (torch.randn(4, 3, 8, 8), torch.zeros(5, dtype=torch.int64), "labels: 5 labels for 4 images"),
        (torch.randn(4, 3, 8, 8), torch.zeros(4, dtype=torch.int32), "labels: got a tensor of dtype int32"),
        (torch.randn(4, 3, 8, 8), torch.full((4,), 10, dtype=torch.int64), "labels: class 10 is outside 0..9"),
    ],
)
def test_a_bad_batch_names_the_field_the_value_and_the_fix(
    images: torch.Tensor, labels: torch.Tensor, field: str
) -> None:
    with pytest.raises(UserError) as error:
        score(_igc_spec(), images, labels)
    message = _one_line(error)
    assert message.startswith(field), message
    assert "give" in message


def test_a_single_image_is_enough_for_the_proxies_without_batch_statistics() -> None:
    spec = _igc_spec()
    images, labels = _batch(spec, n=1)
    names = ("params", "flops", "width", "synflow")
    assert list(score(spec, images, labels, proxies=names)) == list(names)
    with pytest.raises(UserError, match=r"^images: a batch of 1 image\(s\); give at least 2"):
        score(spec, images, labels, proxies="snip")


@pytest.mark.parametrize(("options", "field"), [({"seed": 1.5}, "seed: 1.5"), ({"budget_params": 0}, "budget_params: 0"),
                                                ({"budget_params": True}, "budget_params: True")])
def test_bad_options_name_the_option(options: dict[str, object], field: str) -> None:
    spec = _igc_spec()
    images, labels = _batch(spec)
    with pytest.raises(UserError) as error:
        score(spec, images, labels, **options)  # type: ignore[arg-type]
    assert _one_line(error).startswith(field)


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="the malloc tuning is glibc's")
@pytest.mark.parametrize(("proxies", "env", "status"), [
    ("params,flops", "", "not tuned yet"),  # closed forms: no network runs, the process is left alone
    ("naswot", "", "tuned"),
    ("naswot", "system", "disabled by IGCNAS_MALLOC=system"),
])
def test_scoring_on_cpu_tunes_malloc_as_training_does(proxies: str, env: str, status: str) -> None:
    code = ("import torch; from igcnas._allocator import allocator_status; from igcnas.arch import ArchSpec; "
            "from igcnas.proxies import score; "
            "spec = ArchSpec.simple('DW+PW', widths=(8, 16), depths=(1, 1), input_shape=(3, 8, 8)); "
            f"score(spec, torch.randn(4, 3, 8, 8), torch.arange(4), proxies={proxies.split(',')!r}); "
            "print(allocator_status())")
    environ = {k: v for k, v in os.environ.items() if k != "IGCNAS_MALLOC"}
    if env:
        environ["IGCNAS_MALLOC"] = env
    out = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == status
