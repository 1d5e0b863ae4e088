"""The zoo's entries: the papers' reference networks as specs, and the specs of every paper row we rebuild."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from igcnas.arch.spec import ArchSpec
from igcnas.arch.spec import KernelSpec as K
from igcnas.errors import UserError
from igcnas.zoo import _builders as b

__all__ = ["ZooEntry", "FAMILIES", "CLAIMS", "build_entries", "build_reproductions"]

FAMILIES: tuple[str, ...] = ("igcv1", "igcv2", "igcv3", "mobilenet", "fog")
CLAIMS: tuple[str, ...] = ("strict", "loose:<G>", "dense", "none")


@dataclass(frozen=True)
class ZooEntry:
    """One reference network of the papers.

    ``claims``: the property the papers claim for its block's composed kernel: ``"strict"`` (IGCV1/IGCV2
    complementary condition, exactly one path between every input and output channel), ``"loose:G"`` (IGCV3's
    loose condition over G super-channels), ``"dense"`` (every output sees every input) or ``"none"``.
    ``claim_span``: the number of leading kernels of the block the claim is about (a residual unit of two IGC
    blocks claims it for one IGC block); None means the whole block. ``paper_keys`` index the rows of
    ``paper_figures.json`` that report this exact network; ``counting`` says what the papers count for it.
    """

    name: str
    family: str
    description: str
    spec: ArchSpec
    paper_keys: tuple[str, ...] = ()
    claims: str = "dense"
    claim_span: int | None = None
    counting: str = ""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise UserError(f"zoo entry {self.name}: family {self.family!r} is not one of {', '.join(FAMILIES)}")
        kind, _, value = self.claims.partition(":")
        if kind not in ("strict", "loose", "dense", "none") or (kind == "loose") != value.isdigit():
            raise UserError(f"zoo entry {self.name}: claims {self.claims!r} must be one of {', '.join(CLAIMS)}")

    @property
    def layout(self) -> str:
        """``cifar`` or ``imagenet``."""
        return self.spec.layout


# ------------------------------------------------------------------------------------------- counting notes

_V1_CIFAR = "IGCV1 Table 3: all conv weights (stem included) + a 10-class FC with bias; no BN"
_V1_T7 = "IGCV1 Table 7: all conv weights + a 100-class FC with bias (CIFAR-100); no BN"
_V1_SLIDES = "IGC talk slides: all conv weights + a 100-class FC without bias; no BN"
_V1_IMAGENET = ("IGCV1 Table 6: conv weights incl. projections, no BN; the FC-1000 is excluded for ResNet, L4M32 "
                "and L16M16 but included for L100M2 (the table is inconsistent)")
_V2 = ("IGCV2 Tables 3/4/6 (fitted): conv weights except the stem + a 10-class FC with bias, no BN (even for "
       "CIFAR-100); FLOPs include the stem")
_V3_CIFAR = "IGCV3 Tables 1/2/5: conv weights (head conv included), no FC, no BN"
_V3_IMAGENET = "IGCV3 Table 3: conv weights + FC-1000 with bias, no BN"
_MBV1 = "IGCV2 slides / IGCV3 Table 3: conv weights + FC-1000, no BN"
_FOG = "Fog Tables 3/4: conv weights + FC-1000, no BN (the rows do not reproduce; see the README)"

_PLAIN_NOTE = ("Downsampling as the official plain_igc.py: the first block of stages 2 and 3 has a stride-2 "
               "primary GC mapping C -> 2C with L groups. PERM_BACK after the secondary conv is omitted (a fixed "
               "permutation that the next block's dense reach makes irrelevant; no cost).")
_IDENT_NOTE = ("Residual unit of two IGC blocks (IGC+BN+ReLU, IGC+BN, sum, ReLU) with a 1x1 stride-2 projection "
               "of L groups on a shape change (resnet_igc.py). The official code's first IGC of a transition "
               "unit uses C_in/L secondary groups; here it uses the stage's M_s like every other block.")


def _fog_note(extra: str) -> str:
    return ("Fog Table 1 layout: conv3x3/2 + max-pool, 4 stages (w, 2w, 4w, 8w), identity over every block, BN "
            "after every layer, ReLU only after the sum. The paper gives no blocks per stage for Tables 3/4; B = 2 "
            "is used (as `igcnas fit --layout imagenet`), with a dense 1x1 projection on a shape change. " + extra)


def build_entries() -> list[ZooEntry]:
    """Every zoo entry, in display order."""
    e: list[ZooEntry] = []
    keys: tuple[str, ...]

    # ---------------------------------------------------------------------------- IGCV1, CIFAR
    for width, depth in ((16, 8), (16, 20), (18, 20)):
        e.append(ZooEntry(
            f"RegConv-W{width}-D{depth}", "igcv1",
            f"IGCV1 plain baseline: 3x3 conv + BN + ReLU blocks, widths {width}/{2 * width}/{4 * width}, "
            f"D = 3B + 2 = {depth} (B = {(depth - 2) // 3}); the first block of stages 2 and 3 is a stride-2 3x3 "
            "conv C -> 2C (official plain.py).",
            b.regconv_plain(width, depth, name=f"RegConv-W{width}-D{depth}"),
            (f"igcv1/RegConv-W{width}/D{depth}/cifar",), "dense", None, _V1_CIFAR,
        ))
    e.append(ZooEntry(
        "SumFusion-D20", "igcv1",
        "IGCV1 Table 2 SumFusion: four parallel 3x3 convs on the same input, summed (4 x (3x3, 8) + summation, then "
        "(3x3, 16) and (3x3, 32)), BN + ReLU after each block, widths 8/16/32, 6 blocks per stage. Written as a "
        "GC with 4 groups on the input copied 4 times side by side, summed over the 4 partitions (block.fusion = 4); "
        "BN acts on each partition before the sum. The paper prints no figures ('nearly the same as RegConv-W16': "
        "ours 270k params / 40.3M FLOPs vs RegConv-W16's 270k / 40.6M). The composed chain is a GC over the copies, "
        "so no density is claimed for it.",
        b.sumfusion_plain(8, 20, name="SumFusion-D20"), (), "none", None, _V1_CIFAR,
    ))
    for L, M in ((4, 8), (24, 2)):
        name = f"IGC-L{L}M{M}-D20"
        e.append(ZooEntry(
            name, "igcv1",
            f"IGCV1 plain IGC net: primary GC3x3 with L={L} groups, PERM, secondary PWG with M_s = {M}, {2 * M}, "
            f"{4 * M} groups of L channels; BN + ReLU after each block; widths {L * M}/{2 * L * M}/{4 * L * M}, "
            f"6 blocks per stage. " + _PLAIN_NOTE,
            b.igcv1_plain(L, M, 20, name=name), (f"igcv1/IGC-L{L}M{M}/D20/cifar",), "strict", None, _V1_CIFAR,
        ))
    e.append(ZooEntry(
        "IGC-L32M26-D20", "igcv1",
        "IGCV1 Table 7 wide plain IGC net (CIFAR-100 head): L=32, M=26/52/104, widths 832/1664/3328, 6 blocks per "
        "stage. Whether Table 7 used identity mappings is not stated; see IGC-L32M26+Ident-D20. " + _PLAIN_NOTE,
        b.igcv1_plain(32, 26, 20, num_classes=100, name="IGC-L32M26-D20"),
        ("igcv1/IGC-L32M26/D20/cifar",), "strict", None, _V1_T7,
    ))
    e.append(ZooEntry(
        "RegConv-W16+Ident-D20", "igcv1",
        "IGCV1 Table 5 RegConv-W16+Ident.: residual units of two 3x3 convs (conv-BN-ReLU-conv-BN, sum, ReLU), "
        "3 units per stage (D = 6U + 2), 1x1 stride-2 projection + BN on a shape change.",
        b.regconv_resnet(16, 20, name="RegConv-W16+Ident-D20"), (), "dense", None, _V1_CIFAR,
    ))
    for L, M, classes in ((4, 8, 10), (24, 2, 10), (32, 26, 100)):
        name = f"IGC-L{L}M{M}+Ident-D20"
        e.append(ZooEntry(
            name, "igcv1",
            f"IGCV1 Table 5 IGC-L{L}M{M}+Ident.: 3 residual units per stage (D = 20). " + _IDENT_NOTE
            + (" CIFAR-100 head (Table 7)." if classes == 100 else ""),
            b.igcv1_resnet(L, M, 20, num_classes=classes, name=name), (), "strict", 2,
            _V1_T7 if classes == 100 else _V1_CIFAR,
        ))
    for L, M, label, size in ((64, 1, "Xception", "small"), (40, 2, "IGC", "small"),
                              (128, 1, "Xception", "large"), (85, 2, "IGC", "large")):
        name = f"IGC-L{L}M{M}-NoDown"
        e.append(ZooEntry(
            name, "igcv1",
            f"IGCV1 Sec. 5.3 / talk slides 'Comparison to Xception' ({label}-{size}): 8-layer CIFAR-100 net "
            f"without down-sampling, stem 3x3 -> {L * M}, 6 IGC blocks (L={L}, M={M}) at 32x32, FC."
            + (" With M = 1 the block is Xception's DW3x3 + PW1x1." if M == 1 else ""),
            b.igcv1_nodown(L, M, name=name),
            (f"igcv1/slides/{label}-{size}/L{L}M{M}/cifar100", f"igcv1/table1/L{L}M{M}"), "strict", None, _V1_SLIDES,
        ))

    # ---------------------------------------------------------------------------- IGCV1, ImageNet
    e.append(ZooEntry(
        "ResNet18-C64-ImageNet", "igcv1",
        "ResNet-18 (IGCV1 Table 6, Fog Tables 3/4 'Standard Convolution'/'ResNet'): 7x7/2 stem + max-pool, 4 "
        "stages x 2 basic units (two 3x3 convs), 1x1 projections on shape changes.",
        b.resnet18_imagenet(64, name="ResNet18-C64-ImageNet"),
        ("igcv1/ResNet-C64/imagenet", "fog/table3/StandardConv/w64", "fog/table4/ResNet/w64"), "dense", None,
        _V1_IMAGENET,
    ))
    fog_rows: tuple[tuple[int, int, str, tuple[str, ...]], ...] = (
        (4, 32, "M", ("fog/table3/GConv(4)+PWGConv(32)/w128",)),
        (16, 16, "M", ("fog/table3/GConv(16)+PWGConv(16)/w256",)),
        (100, 2, "L", ("fog/table4/GConv(100)+PWGConv(2)/w200",)),
    )
    for L, M, vary, fog_keys in fog_rows:
        name = f"IGC-L{L}M{M}+Ident-ImageNet"
        if vary == "M":
            detail = (f"stem 7x7/2 -> {L * M} + max-pool, widths {L * M}..{8 * L * M}, primary GC with L={L} groups, "
                      f"secondary PWG with M_s = {M}..{8 * M} groups")
        else:
            detail = ("stem 7x7/2 -> 100 + max-pool, widths 200/400/800/1600, primary GC with 100*2^s groups "
                      "(2 channels each, per-stage group override), secondary PWG with 2 groups; the projection "
                      "also exists in stage 1 (100 -> 200)")
        e.append(ZooEntry(
            name, "igcv1",
            f"IGCV1 Table 6 ResNet-18-style IGC net (official code and symbol JSONs): {detail}; 2 residual units "
            "of two IGC blocks per stage, grouped 1x1 projections (the primary conv's groups). Fog's "
            f"GConv({L})+PWGConv({M}) row repeats these numbers.",
            b.igcv1_imagenet(L, M, vary=vary, name=name),
            (f"igcv1/IGC-L{L}M{M}+Ident/imagenet",) + fog_keys, "strict", 2, _V1_IMAGENET,
        ))

    # ---------------------------------------------------------------------------- IGCV2 (Table 1 skeleton)
    v2_common = ("IGCV2 Table 1 skeleton (no public code; transitions fitted to Tables 3/4/6): stem 3x3, 3 stages "
                 "of widths x/2x/4x, D = 20 (6 blocks per stage), a parameter-free skip every two blocks (units "
                 "of two blocks; no shortcut on a shape change, which costs the same as a zero-pad shortcut). ")
    for x, keys in ((35, ("igcv2/Xception-C35/D20/cifar",)), (58, ("igcv2/Xception-C58/D20/cifar",))):
        e.append(ZooEntry(
            f"Xception-C{x}-D20", "igcv2",
            v2_common + f"Xception block DW3x3 + PW1x1, stem fixed at 35 -> x = {x}. Stage transitions use a "
            "depthwise conv with channel multiplier 2 (C -> 2C, 9*C_out weights; written as a GC with one input "
            "channel per group), the fitted 'full cost' form; the stem -> x block applies the DW on the stem "
            "width (a multiplier x/35 is not an integer, the fit counts 9*x there).",
            b.igcv2_xception(x, 20, name=f"Xception-C{x}-D20"), keys, "dense", 2, _V2,
        ))
    for x, keys in ((48, ("igcv2/IGC-V1-C48/D20/cifar",)), (96, ("igcv2/IGC-V1-C96/D20/cifar",))):
        e.append(ZooEntry(
            f"IGCV1-C{x}-D20", "igcv2",
            v2_common + f"IGC-V1 (C{x}) block: the IGCV1 layout with L = {x // 2} fixed and M = 2/4/8 (Sec. 4.4: "
            "C48 corresponds to IGC-L24M2); Table 1's 'x(3x3,2)' text for stage 2 does not reproduce the counts.",
            b.igcv2_igcv1(x, 20, name=f"IGCV1-C{x}-D20"), keys, "strict", 2, _V2,
        ))
    for x, K_s, keys in ((64, (8, 16, 32), ("igcv2/IGC-V2-C64/D20/cifar",)),
                         (80, (10, 16, 20), ("igcv2/IGC-V2-C80/D20/cifar",))):
        e.append(ZooEntry(
            f"IGCV2-C{x}-D20", "igcv2",
            v2_common + f"IGC-V2 (C{x}) block: DW3x3 + two group 1x1 convs with K_s = {K_s} channels per branch "
            "(C_s/K_s groups, per-stage group override) and the interleaving PERMs; the first group conv of a "
            "transition block maps C/2 -> C with C/K_s groups. The complementary condition holds strictly only "
            "where K_s^2 = C_s (stage 1 of C64); elsewhere the block is dense with repeated paths.",
            b.igcv2_igcv2(x, 20, K_s, name=f"IGCV2-C{x}-D20"), keys, "dense", 3, _V2,
        ))
    for x, keys in ((216, ("igcv2/IGC-V2*-C216/D20/cifar",)),
                    (416, ("igcv2/IGC-V2*-C416/D20/cifar", "igcv2/IGC-V2*-C416/D20/cifar-sota"))):
        e.append(ZooEntry(
            f"IGCV2*-C{x}-D20", "igcv2",
            v2_common + f"IGC-V2* (C{x}) block: DW3x3 + n_s group 1x1 convs with K = 8 channels per branch, stem "
            "(3x3, 64). n_s = ceil(log_8 C_s) per stage (per-stage block override), the only reading near the "
            "counts; the Table 1 text's L* = ceil(log_K x) + 1 for all stages is ~10% low. The stem -> x block's "
            "first group conv has 64/8 groups (the fit: the largest divisor of 64 and x up to x/8). The least "
            "certain IGCV2 family.",
            b.igcv2_star(x, 20, name=f"IGCV2*-C{x}-D20"), keys, "dense", None, _V2,
        ))

    # ---------------------------------------------------------------------------- IGCV3 / MobileNetV2
    v3_block = ("IGCV3 block: PWG1x1 (G=2, C_in -> 6 C_in) + BN, DW3x3 + BN + ReLU, PWG1x1 (G=2) + BN (linear), "
                "identity when the shape is kept; the interleaving PERM sits before the second PWG (the DW is "
                "channel-wise, so this equals IGCV3's PERM after the first PWG). ReLU stands for ReLU6 (same "
                "cost). The t = 1 row keeps the grouped 1x1 conv (32 -> 32) as the official code does.")
    cifar_note = " CIFAR version (xxradon/IGCV3-pytorch): stem stride 1, second row stride 1, 10 classes."
    imagenet_note = " ImageNet: stem 3x3/2 -> 32, 1x1 head conv -> 1280, GAP, FC-1000."
    e.append(ZooEntry(
        "IGCV3-D-CIFAR", "igcv3",
        "IGCV3-D (official code): MobileNetV2 widths with n doubled in the middle rows (1,16,1,1) (6,24,4,2) "
        "(6,32,6,2) (6,64,8,2) (6,96,6,1) (6,160,6,2) (6,320,1,1). " + v3_block + cifar_note,
        b.mobilenet_v2_like(b.IGCV3_D_ROWS, groups=2, cifar=True, name="IGCV3-D-CIFAR"),
        ("igcv3/table1/IGCV3-D/cifar", "igcv3/table2/IGCV3-D-1.0x/cifar", "igcv3/table5/IGCV3-D/cifar",
         "igcv3/table7/IGCV3-D-G2-G2/cifar", "igcv3/table6/G1x1_Dw3x3_ReLU_G1x1/cifar"), "loose:2", None, _V3_CIFAR,
    ))
    e.append(ZooEntry(
        "IGCV3-W-CIFAR", "igcv3",
        "IGCV3-W: every MobileNetV2 width x2 with the same n and G = 4 group 1x1 convs (paper). " + v3_block
        .replace("G=2", "G=4") + cifar_note,
        b.mobilenet_v2_like(b.IGCV3_W_ROWS, groups=4, cifar=True, name="IGCV3-W-CIFAR"),
        ("igcv3/table5/IGCV3-W/cifar",), "loose:4", None, _V3_CIFAR,
    ))
    e.append(ZooEntry(
        "IGCV3-D-ImageNet", "igcv3",
        "IGCV3-D 1.0 on ImageNet (official code), rows as IGCV3-D-CIFAR. " + v3_block + imagenet_note,
        b.mobilenet_v2_like(b.IGCV3_D_ROWS, groups=2, name="IGCV3-D-ImageNet"),
        ("igcv3/table3/IGCV3-D/imagenet", "igcv3/slides/IGCV3-1.0/imagenet"), "loose:2", None, _V3_IMAGENET,
    ))
    e.append(ZooEntry(
        "IGCV3-W-ImageNet", "igcv3",
        "IGCV3-W on ImageNet (widths x2, G = 4; no ImageNet figures in the paper). " + v3_block.replace("G=2", "G=4")
        + imagenet_note,
        b.mobilenet_v2_like(b.IGCV3_W_ROWS, groups=4, name="IGCV3-W-ImageNet"), (), "loose:4", None, _V3_IMAGENET,
    ))
    mbv2 = ("MobileNetV2: rows (t,c,n,s) (1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2) "
            "(6,320,1,1); block PW1x1 expansion 6 of C_in + BN + ReLU, DW3x3 + BN + ReLU, PW1x1 + BN (linear "
            "bottleneck), identity when the shape is kept; the t = 1 row is DW3x3 + PW1x1 (per-stage block "
            "override). ReLU stands for ReLU6 (same cost).")
    e.append(ZooEntry(
        "MobileNetV2-CIFAR", "mobilenet", mbv2 + cifar_note,
        b.mobilenet_v2_like(b.MBV2_ROWS, cifar=True, name="MobileNetV2-CIFAR"),
        ("igcv3/table2/MobileNetV2/cifar",), "dense", None, _V3_CIFAR,
    ))
    e.append(ZooEntry(
        "MobileNetV2-ImageNet", "mobilenet", mbv2 + imagenet_note,
        b.mobilenet_v2_like(b.MBV2_ROWS, name="MobileNetV2-ImageNet"),
        ("igcv3/table3/MobileNetV2/imagenet", "igcv3/table3/MobileNetV2-ourimpl/imagenet"), "dense", None,
        _V3_IMAGENET,
    ))
    for mult, keys in ((1.0, ("igcv2/slides/MobileNetV1-1.0/imagenet", "igcv3/table3/MobileNetV1/imagenet")),
                       (0.5, ("igcv2/slides/MobileNetV1-0.5/imagenet",))):
        name = f"MobileNetV1-{mult}-ImageNet"
        e.append(ZooEntry(
            name, "mobilenet",
            f"MobileNetV1 {mult}: stem 3x3/2 -> {int(32 * mult)}, 13 blocks DW3x3 + BN + ReLU, PW1x1 + BN + ReLU "
            "(widths 64..1024 x multiplier), no identity, GAP, FC-1000.",
            b.mobilenet_v1(mult, name=name), keys, "dense", None, _MBV1,
        ))

    # ---------------------------------------------------------------------------- Fog (Table 1 layout)
    fog = (
        ("Fog-GC4+PWG32-w128", (K("GC", groups=4), K("PWG", group_width=4)), 128, 1.0,
         (), "strict",
         "GConv(4)+PWGConv(32): GC3x3 with 4 groups, PWG with 32 groups at w (groups 4 channels wide, so they "
         "double with the width as in IGCV1). The Fog Table 3 row repeats IGCV1 Table 6 and is reproduced by "
         "IGC-L4M32+Ident-ImageNet (IGCV1's ResNet-18-style layout), not by this layout."),
        ("Fog-GC16+PWG16-w256", (K("GC", groups=16), K("PWG", group_width=16)), 256, 1.0,
         (), "strict",
         "GConv(16)+PWGConv(16): GC3x3 with 16 groups, PWG with 16 groups at w (16 channels per group). The Fog "
         "Table 3 row repeats IGCV1 Table 6 and is reproduced by IGC-L16M16+Ident-ImageNet, not by this layout."),
        ("Fog-DW+PW-w280", (K("DW"), K("PW")), 280, 1.0,
         ("fog/table3/DW+PW/w280", "fog/table4/Xception/w280"), "dense",
         "DW+PW (Xception's block, Table 4)."),
        ("Fog-PW+DW+PW-w400", (K("PW"), K("DW"), K("PW")), 400, 0.25,
         ("fog/table3/PW+DW+PW/w400",), "dense",
         "PW+DW+PW with bottleneck ratio 1:4 (K = F/4)."),
        ("Fog-ShuffleNet-w560", (K("PWG", groups=4), K("DW"), K("PWG", groups=4)), 560, 0.25,
         ("fog/table3/PWGConv(4)+DW+PWGConv(4)/w560", "fog/table4/ShuffleNet/w560"), "dense",
         "PWGConv(4)+DW+PWGConv(4) (ShuffleNet's block with 4 groups, Table 4), bottleneck 1:4, PERM before the "
         "second group conv."),
        ("Fog-PWG100+DW+PWG2-w700", (K("PWG", groups=100), K("DW"), K("PWG", groups=2)), 700, 2 / 7,
         ("fog/table4/PWGConv(100)+DW+PWGConv(2)/w700",), "dense",
         "PWGConv(100)+DW+PWGConv(2) with K = M*N = 200 bottleneck channels at w = 700 (Theorem 1's best "
         "efficiency; a 1:4 ratio would give 175, which 100 groups do not divide), i.e. ratio 2/7 in every stage."),
        ("Fog-ResNet-bottleneck-w192", (K("PW"), K("CONV"), K("PW")), 192, 0.25,
         ("fog/table4/ResNet-bottleneck/w192",), "dense",
         "ResNet bottleneck PW + CONV3x3 + PW with ratio 1:4."),
        ("Fog-ResNeXt-w192", (K("PW"), K("GC", groups=16), K("PW")), 192, 0.5,
         ("fog/table4/ResNeXt/w192",), "dense",
         "ResNeXt PW + GC3x3 (cardinality 16) + PW with ratio 1:2 (Table 4 caption)."),
    )
    for name, kernels, width, ratio, keys, claims, text in fog:
        e.append(ZooEntry(
            name, "fog", _fog_note(text), b.fog_net(kernels, width, bottleneck=ratio, name=name), keys, claims,
            None, _FOG,
        ))
    return e


# ---------------------------------------------------------------------------------------------------------------
# Every paper row whose layout we rebuild (zoo entries' rows plus other depths/widths of the same layouts)


def build_reproductions() -> dict[str, Callable[[], ArchSpec]]:
    """Paper row key -> a function building the spec we compare with that row (block rows: the 8-layer net)."""
    r: dict[str, Callable[[], ArchSpec]] = {}
    for depth in (8, 20, 38, 62, 98):
        for width in (16, 18):
            r[f"igcv1/RegConv-W{width}/D{depth}/cifar"] = partial(b.regconv_plain, width, depth)
        for L, M in ((4, 8), (24, 2)):
            r[f"igcv1/IGC-L{L}M{M}/D{depth}/cifar"] = partial(b.igcv1_plain, L, M, depth)
    for width in (16, 18):
        r[f"igcv1/RegConv-W{width}+Ident/D98/cifar"] = partial(b.regconv_resnet, width, 98)
    for L, M in ((4, 8), (24, 2)):
        r[f"igcv1/IGC-L{L}M{M}+Ident/D98/cifar"] = partial(b.igcv1_resnet, L, M, 98)
    for L, M in ((16, 32), (450, 2), (32, 26)):
        r[f"igcv1/IGC-L{L}M{M}/D20/cifar"] = partial(b.igcv1_plain, L, M, 20, num_classes=100)
    r["igcv1/ResNet-C64/imagenet"] = partial(b.resnet18_imagenet, 64)
    r["igcv1/ResNet-C69/imagenet"] = partial(b.resnet18_imagenet, 69)
    r["igcv1/IGC-L4M32+Ident/imagenet"] = partial(b.igcv1_imagenet, 4, 32)
    r["igcv1/IGC-L16M16+Ident/imagenet"] = partial(b.igcv1_imagenet, 16, 16)
    r["igcv1/IGC-L100M2+Ident/imagenet"] = partial(b.igcv1_imagenet, 100, 2, vary="L")
    for key in ("fog/table3/StandardConv/w64", "fog/table4/ResNet/w64"):
        r[key] = r["igcv1/ResNet-C64/imagenet"]
    r["fog/table3/GConv(4)+PWGConv(32)/w128"] = r["igcv1/IGC-L4M32+Ident/imagenet"]
    r["fog/table3/GConv(16)+PWGConv(16)/w256"] = r["igcv1/IGC-L16M16+Ident/imagenet"]
    r["fog/table4/GConv(100)+PWGConv(2)/w200"] = r["igcv1/IGC-L100M2+Ident/imagenet"]
    table1 = ((1, 23), (2, 16), (3, 13), (5, 10), (6, 9), (12, 6), (28, 3), (40, 2), (64, 1), (1, 44), (2, 31),
              (4, 22), (12, 12), (14, 11), (23, 8), (28, 7), (41, 5), (64, 3), (85, 2), (128, 1))
    for L, M in table1:
        r[f"igcv1/table1/L{L}M{M}"] = partial(b.igcv1_nodown, L, M)
    for label, size, L, M in (("Xception", "small", 64, 1), ("IGC", "small", 40, 2), ("Xception", "large", 128, 1),
                              ("IGC", "large", 85, 2)):
        r[f"igcv1/slides/{label}-{size}/L{L}M{M}/cifar100"] = partial(b.igcv1_nodown, L, M)

    # IGCV2
    for x in (58, 71, 83):
        r[f"igcv2/Xception-C{x}/D20/cifar"] = partial(b.igcv2_xception, x, 20)
    for x in (96, 126, 150):
        r[f"igcv2/IGC-V1-C{x}/D20/cifar"] = partial(b.igcv2_igcv1, x, 20)
    for x in (216, 304, 416):
        r[f"igcv2/IGC-V2*-C{x}/D20/cifar"] = partial(b.igcv2_star, x, 20)
    r["igcv2/IGC-V2*-C416/D20/cifar-sota"] = r["igcv2/IGC-V2*-C416/D20/cifar"]
    for depth in (8, 20, 26):
        r[f"igcv2/Xception-C35/D{depth}/cifar"] = partial(b.igcv2_xception, 35, depth)
        r[f"igcv2/IGC-V1-C48/D{depth}/cifar"] = partial(b.igcv2_igcv1, 48, depth)
        r[f"igcv2/IGC-V2-C64/D{depth}/cifar"] = partial(b.igcv2_igcv2, 64, depth, (8, 16, 32))
        r[f"igcv2/IGC-V2-C80/D{depth}/cifar"] = partial(b.igcv2_igcv2, 80, depth, (10, 16, 20))
    for C in (64, 96, 128):
        r[f"igcv2/table2/Xception-C{C}"] = partial(b.igcv2_block_net, (K("DW"), K("PW")), C)
    for C, Kb in ((144, 12), (256, 16), (361, 19)):
        r[f"igcv2/table2/IGC-V2-C{C}"] = partial(
            b.igcv2_block_net, (K("DW"), K("PWG", groups=C // Kb), K("PWG", groups=C // Kb)), C)
    for C in (64, 96, 128):
        r[f"igcv2/table5/IGC-V1-C{C}"] = partial(b.igcv2_block_net, (K("GC", groups=C // 2), K("PWG", groups=2)), C)
    for C, Kb in ((98, 7), (162, 9), (242, 11)):
        r[f"igcv2/table5/IGC-V2I-C{C}"] = partial(
            b.igcv2_block_net, (K("GC", groups=C // 2), K("PWG", groups=C // Kb), K("PWG", groups=C // Kb)), C)
    for C, Kb in ((100, 10), (169, 13), (256, 16)):
        r[f"igcv2/table5/IGC-V2II-C{C}"] = partial(
            b.igcv2_block_net, (K("DW"), K("PWG", groups=C // Kb), K("PWG", groups=C // Kb)), C)
    for mult in (1.0, 0.5, 0.25):
        r[f"igcv2/slides/MobileNetV1-{mult}/imagenet"] = partial(b.mobilenet_v1, mult)
    r["igcv3/table3/MobileNetV1/imagenet"] = r["igcv2/slides/MobileNetV1-1.0/imagenet"]

    # IGCV3 / MobileNetV2
    def igcv3_d_cifar() -> ArchSpec:
        return b.mobilenet_v2_like(b.IGCV3_D_ROWS, groups=2, cifar=True)

    for key in ("igcv3/table1/IGCV3-D/cifar", "igcv3/table2/IGCV3-D-1.0x/cifar", "igcv3/table5/IGCV3-D/cifar",
                "igcv3/table7/IGCV3-D-G2-G2/cifar", "igcv3/table6/G1x1_Dw3x3_ReLU_G1x1/cifar"):
        r[key] = igcv3_d_cifar
    r["igcv3/table6/G1x1_ReLU_Dw3x3_ReLU_G1x1/cifar"] = partial(
        b.mobilenet_v2_like, b.IGCV3_D_ROWS, groups=2, cifar=True, relu_after=(0, 1))
    r["igcv3/table6/G1x1_Dw3x3_G1x1_ReLU/cifar"] = partial(
        b.mobilenet_v2_like, b.IGCV3_D_ROWS, groups=2, cifar=True, relu_after=(2,))
    r["igcv3/table7/IGCV3-D-G2-G4/cifar"] = partial(
        b.mobilenet_v2_like, b.IGCV3_D_ROWS, groups=2, second_groups=4, cifar=True)
    r["igcv3/table7/IGCV3-D-G4-G2/cifar"] = partial(
        b.mobilenet_v2_like, b.IGCV3_D_ROWS, groups=4, second_groups=2, cifar=True)
    r["igcv3/table5/IGCV3-W/cifar"] = partial(b.mobilenet_v2_like, b.IGCV3_W_ROWS, groups=4, cifar=True)
    r["igcv3/table2/MobileNetV2/cifar"] = partial(b.mobilenet_v2_like, b.MBV2_ROWS, cifar=True)
    for key in ("igcv3/table3/MobileNetV2/imagenet", "igcv3/table3/MobileNetV2-ourimpl/imagenet"):
        r[key] = partial(b.mobilenet_v2_like, b.MBV2_ROWS)
    for key in ("igcv3/table3/IGCV3-D/imagenet", "igcv3/slides/IGCV3-1.0/imagenet"):
        r[key] = partial(b.mobilenet_v2_like, b.IGCV3_D_ROWS, groups=2)

    # Fog Table 1 layout (B = 2 for Tables 3/4; Table 2 gives B = (D - 2) / 12)
    fog = {
        "fog/table3/DW+PW/w72": ((K("DW"), K("PW")), 72, 1.0, 2),
        "fog/table3/DW+PW/w280": ((K("DW"), K("PW")), 280, 1.0, 2),
        "fog/table4/Xception/w280": ((K("DW"), K("PW")), 280, 1.0, 2),
        "fog/table3/PW+DW+PW/w400": ((K("PW"), K("DW"), K("PW")), 400, 0.25, 2),
        "fog/table3/PWGConv(4)+DW+PWGConv(4)/w560": ((K("PWG", groups=4), K("DW"), K("PWG", groups=4)), 560, 0.25, 2),
        "fog/table4/ShuffleNet/w560": ((K("PWG", groups=4), K("DW"), K("PWG", groups=4)), 560, 0.25, 2),
        "fog/table4/PWGConv(100)+DW+PWGConv(2)/w700": (
            (K("PWG", groups=100), K("DW"), K("PWG", groups=2)), 700, 2 / 7, 2),
        "fog/table4/ResNet-bottleneck/w192": ((K("PW"), K("CONV"), K("PW")), 192, 0.25, 2),
        "fog/table4/ResNeXt/w192": ((K("PW"), K("GC", groups=16), K("PW")), 192, 0.5, 2),
    }
    for key, (M, width, depth) in {
        "fog/table2/PW+GConv(1)+PW/w128/d98": (1, 128, 98), "fog/table2/PW+GConv(32)+PW/w256/d98": (32, 256, 98),
        "fog/table2/PW+GConv(1)+PW/w128/d194": (1, 128, 194), "fog/table2/PW+GConv(1)+PW/w200/d98": (1, 200, 98),
        "fog/table2/PW+GConv(2)+PW/w256/d98": (2, 256, 98), "fog/table2/PW+GConv(64)+PW/w512/d98": (64, 512, 98),
    }.items():
        fog[key] = ((K("PW"), K("GC", groups=M), K("PW")), width, 0.25, (depth - 2) // 12)
    for key, (kernels, width, ratio, blocks) in fog.items():
        r[key] = partial(b.fog_net, kernels, width, blocks=blocks, bottleneck=ratio)
    return r
