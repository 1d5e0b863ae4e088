"""Architecture specs: frozen, JSON-safe dataclasses with a content-hash id.

An :class:`ArchSpec` fully describes a network: input, stem, the block (its chain of kernels with group numbers,
bottleneck ratio, BN/ReLU placement, identity mapping), the stages (width, depth, stride) and the head.
``build(spec)`` (in :mod:`igcnas.nn.network`) turns it into an ``nn.Module`` without reading anything global.

Groups of a grouped kernel (GC, PWG) are given either as a count (``groups``) or as channels per group
(``group_width``, IGCV1's M and IGCV2's K); a stage may override them per kernel (IGCV2 uses K = 8, 16, 32 in
its three stages). Permutations are IGC interleaving shuffles, placed automatically where the composed kernel
needs them (``shuffle="interleave"``) or never (``shuffle="none"``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from igcnas.errors import UserError
from igcnas.space.kernels import KERNEL_KINDS, is_bottleneck_form, kernel_kind
from igcnas.store import ARCH_FILE, atomic_write

if TYPE_CHECKING:
    from igcnas.arch.plan import BlockPlan

__all__ = [
    "KernelSpec",
    "BlockSpec",
    "StageSpec",
    "StemSpec",
    "HeadSpec",
    "ArchSpec",
    "load_spec",
    "SPEC_VERSION",
]

SPEC_VERSION = 1
BNPlacement = Literal["each", "block", "none"]
Shortcut = Literal["projection", "grouped_projection", "none"]
BottleneckOf = Literal["out", "in"]
# fields added after SPEC_VERSION 1 was frozen: omitted from to_dict() at their default, so older ids stay valid
_BLOCK_DEFAULTS: dict[str, Any] = {"bottleneck_of": "out", "fusion": 1, "require": "none"}
_STAGE_DEFAULTS: dict[str, Any] = {"block": None}


@dataclass(frozen=True)
class KernelSpec:
    """One kernel of a block: kind, and for GC/PWG either ``groups`` or ``group_width`` (channels per group)."""

    kind: str
    groups: int | None = None
    group_width: int | None = None
    kernel_size: int = 3

    def __post_init__(self) -> None:
        info = kernel_kind(self.kind)
        object.__setattr__(self, "kind", info.name)
        if info.grouping == "grouped":
            if (self.groups is None) == (self.group_width is None):
                raise UserError(
                    f"block.kernels[{self.kind}]: give exactly one of groups or group_width for a {self.kind} kernel"
                )
            value = self.groups if self.groups is not None else self.group_width
            if not isinstance(value, int) or value < 1:
                raise UserError(f"block.kernels[{self.kind}]: groups/group_width {value!r} must be a positive integer")
        elif self.groups not in (None, 1) or self.group_width is not None:
            raise UserError(f"block.kernels[{self.kind}]: {self.kind} takes no groups (got {self.groups or self.group_width})")


@dataclass(frozen=True)
class BlockSpec:
    """The block every stage repeats.

    ``require`` makes every stage's planned block prove a property of its composed kernel, or the spec is
    invalid: ``"dense"``, ``"strict"`` (IGCV1/IGCV2 complementary condition: exactly one path between every input
    and output channel) or ``"loose:G"`` (IGCV3's condition over G super-channels); ``"none"`` checks nothing.
    ``fusion`` > 1 is IGCV1's summation fusion: the block input is copied ``fusion`` times side by side, the chain
    runs on the ``fusion``-times wider tensor (a GC with ``fusion`` groups is then ``fusion`` parallel convolutions
    of the same input) and its output is summed over the ``fusion`` partitions back to the stage width.
    ``bottleneck`` is the ratio of the inner width to the block's output width (Fog: 0.25), or to its input
    width with ``bottleneck_of="in"`` (MobileNetV2/IGCV3 expansion t = 6 of C_in); it applies to chains whose
    first and last kernels are pointwise. ``bn="each"`` puts a BN after every kernel (Fog, IGCV3), ``"block"`` one
    BN after the last kernel (IGCV1: IGC + BN + ReLU), a tuple of kernel indices a BN after exactly those (a
    residual unit of two IGC blocks: ``(1, 3)``). ``relu_after`` lists the kernels (0-based) followed by a ReLU
    inside the block (IGCV3 Table 6 placements); ``post_relu`` applies a ReLU to the block output (after the
    identity sum when ``identity``). On a shape change the shortcut is a 1x1 projection + BN (``"projection"``),
    the same with the group count of the block's first kernel (``"grouped_projection"``, IGCV1's L-group
    projection), or absent (``"none"``, also for parameter-free shortcuts, which cost nothing).
    """

    kernels: tuple[KernelSpec, ...]
    bottleneck: float = 1.0
    shuffle: Literal["interleave", "none"] = "interleave"
    bn: BNPlacement | tuple[int, ...] = "each"
    relu_after: tuple[int, ...] = ()
    post_relu: bool = True
    identity: bool = True
    shortcut: Shortcut = "projection"
    bottleneck_of: BottleneckOf = "out"
    fusion: int = 1
    require: str = "none"

    def __post_init__(self) -> None:
        if not self.kernels:
            raise UserError("block.kernels: a block needs at least one kernel")
        _parse_requirement(self.require)
        if not isinstance(self.fusion, int) or self.fusion < 1:
            raise UserError(f"block.fusion: {self.fusion!r} must be a positive integer (1: no fusion)")
        if not (isinstance(self.bottleneck, (int, float)) and self.bottleneck > 0 and math.isfinite(self.bottleneck)):
            raise UserError(f"block.bottleneck: {self.bottleneck!r} must be a positive number (e.g. 0.25 or 6)")
        if self.shuffle not in ("interleave", "none"):
            raise UserError(f"block.shuffle: {self.shuffle!r} must be 'interleave' or 'none'")
        if isinstance(self.bn, (tuple, list)):
            object.__setattr__(self, "bn", tuple(self.bn))
            for index in self.bn:
                if not isinstance(index, int) or not 0 <= index < len(self.kernels):
                    raise UserError(f"block.bn: kernel index {index!r} is outside 0..{len(self.kernels) - 1}")
        elif self.bn not in ("each", "block", "none"):
            raise UserError(f"block.bn: {self.bn!r} must be 'each', 'block', 'none' or a list of kernel indices")
        if self.shortcut not in ("projection", "grouped_projection", "none"):
            raise UserError(
                f"block.shortcut: {self.shortcut!r} must be 'projection', 'grouped_projection' or 'none'"
            )
        if self.bottleneck_of not in ("out", "in"):
            raise UserError(f"block.bottleneck_of: {self.bottleneck_of!r} must be 'out' or 'in'")
        for index in self.relu_after:
            if not 0 <= index < len(self.kernels):
                raise UserError(
                    f"block.relu_after: kernel index {index} is outside 0..{len(self.kernels) - 1}"
                )
        if self.bottleneck != 1 and not self.is_bottleneck_form:
            raise UserError(
                f"block.bottleneck: {self.bottleneck} needs a chain of >= 3 kernels starting and ending pointwise "
                f"(PW/PWG), got {self.design}; use bottleneck 1"
            )

    @property
    def design(self) -> str:
        """Kernel kinds joined by '+'."""
        return "+".join(k.kind for k in self.kernels)

    def bn_after(self, index: int) -> bool:
        """Whether kernel ``index`` is followed by a BatchNorm."""
        if isinstance(self.bn, tuple):
            return index in self.bn
        return self.bn == "each" or (self.bn == "block" and index == len(self.kernels) - 1)

    @property
    def is_bottleneck_form(self) -> bool:
        """Length >= 3 with pointwise first and last kernels."""
        return is_bottleneck_form([k.kind for k in self.kernels])


@dataclass(frozen=True)
class StageSpec:
    """A stage: output width, number of blocks, stride of its first block, optional per-stage overrides.

    ``groups`` overrides the block's group spec per kernel (None keeps it): the value is a group *count* when the
    block kernel uses ``groups`` and channels per group when it uses ``group_width``. ``block`` replaces the
    network's block in this stage (MobileNetV2's t = 1 stage without expansion conv, IGCV2*'s per-stage number
    of group convs); ``groups`` then refers to its kernels.
    """

    width: int
    depth: int
    stride: int = 1
    groups: tuple[int | None, ...] | None = None
    bottleneck: float | None = None
    block: BlockSpec | None = None

    def __post_init__(self) -> None:
        for name in ("width", "depth", "stride"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise UserError(f"stages[].{name}: {value!r} must be a positive integer")
        if self.groups is not None:
            object.__setattr__(self, "groups", tuple(self.groups))
            for value in self.groups:
                if value is not None and (not _is_int(value) or value < 1):
                    raise UserError(
                        f"stages[].groups: {value!r} must be a positive integer, or null to keep the block's"
                    )
        bottleneck = self.bottleneck
        if bottleneck is not None and not (_is_real(bottleneck) and bottleneck > 0):
            raise UserError(
                f"stages[].bottleneck: {bottleneck!r} must be a positive number, or null to keep the block's"
            )


@dataclass(frozen=True)
class StemSpec:
    """First convolution (dense k x k, BN, ReLU) and an optional 3x3/2 max-pool (ImageNet layout)."""

    width: int
    kernel_size: int = 3
    stride: int = 1
    pool: bool = False

    def __post_init__(self) -> None:
        if not _is_int(self.width) or self.width < 1:
            raise UserError(f"stem.width: {self.width!r} must be a positive integer")
        if not _is_int(self.kernel_size) or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise UserError(f"stem.kernel_size: {self.kernel_size!r} must be a positive odd integer (e.g. 3, or 7)")
        if not _is_int(self.stride) or self.stride < 1:
            raise UserError(f"stem.stride: {self.stride!r} must be an integer >= 1")
        if not isinstance(self.pool, bool):
            raise UserError(f"stem.pool: {self.pool!r} must be true or false")


@dataclass(frozen=True)
class HeadSpec:
    """Optional 1x1 conv (+BN+ReLU) to ``width`` before global average pooling, then the linear classifier."""

    width: int | None = None
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.width is not None and (not _is_int(self.width) or self.width < 1):
            raise UserError(f"head.width: {self.width!r} must be an integer >= 1, or null for no 1x1 conv")
        dropout = self.dropout
        if not (_is_real(dropout) and 0 <= dropout < 1):
            raise UserError(f"head.dropout: {dropout!r} must be a number with 0 <= dropout < 1 (0: no dropout)")


@dataclass(frozen=True)
class ArchSpec:
    """A whole network. ``name`` is a label and not part of the id; everything else is.

    Example:
        >>> spec = ArchSpec.simple("DW+PW", widths=(16, 32, 64), depths=(1, 1, 1))
        >>> spec == ArchSpec.from_json(spec.to_json()), len(spec.id)
        (True, 12)
    """

    stem: StemSpec
    block: BlockSpec
    stages: tuple[StageSpec, ...]
    head: HeadSpec = field(default_factory=HeadSpec)
    input_shape: tuple[int, int, int] = (3, 32, 32)
    num_classes: int = 10
    name: str = ""

    def __post_init__(self) -> None:
        if not self.stages:
            raise UserError("stages: a network needs at least one stage")
        if len(self.input_shape) != 3 or any(not _is_int(v) or v < 1 for v in self.input_shape):
            raise UserError(f"input_shape: {self.input_shape!r} must be three positive integers (C, H, W)")
        if not _is_int(self.num_classes) or self.num_classes < 2:
            raise UserError(f"num_classes: {self.num_classes!r} must be an integer >= 2")
        if not isinstance(self.name, str):
            raise UserError(f"name: {self.name!r} must be a string (a label, e.g. \"my-net\")")
        # every stage's block must plan (groups divide widths, ...): fail now, naming the field
        self.plans()

    # -- block plans ------------------------------------------------------------------------------------------
    def plans(self) -> tuple[tuple[BlockPlan, ...], ...]:
        """Per stage, the plan of its first block and (depth >= 2) the one plan all its later blocks share.

        Planned once per spec (when it is made, which validates it) and kept on the instance, outside the
        dataclass fields: ``to_dict()``, equality, hashing and the id do not see it.

        Example:
            >>> spec = ArchSpec.simple("DW+PW", widths=(16, 32), depths=(1, 3))
            >>> [[p.chain.widths() for p in stage] for stage in spec.plans()]
            [[[16, 16, 16]], [[16, 16, 32], [32, 32, 32]]]
        """
        cached = self.__dict__.get("_plans")
        if cached is None:
            from igcnas.arch.plan import plan_block

            stages: list[tuple[BlockPlan, ...]] = []
            in_width = self.stem.width
            for index, stage in enumerate(self.stages):
                stages.append(tuple(
                    plan_block(self, index, in_width if block_index == 0 else stage.width, first=block_index == 0)
                    for block_index in range(min(stage.depth, 2))
                ))
                in_width = stage.width
            cached = tuple(stages)
            object.__setattr__(self, "_plans", cached)
        return cached

    def block_plan(self, stage_index: int, block_index: int) -> BlockPlan:
        """The plan of block ``block_index`` of stage ``stage_index`` (from :meth:`plans`)."""
        return self.plans()[stage_index][min(block_index, 1)]

    # -- identity ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples become lists; fields added later are left out at their default)."""
        payload = asdict(self)
        payload["version"] = SPEC_VERSION
        _drop_defaults(payload["block"], _BLOCK_DEFAULTS)
        for stage in payload["stages"]:
            _drop_defaults(stage, _STAGE_DEFAULTS)
            if stage.get("block") is not None:
                _drop_defaults(stage["block"], _BLOCK_DEFAULTS)
        return json.loads(json.dumps(payload))

    def block_of(self, stage_index: int) -> BlockSpec:
        """The block stage ``stage_index`` repeats (its override, else the network's block)."""
        return self.stages[stage_index].block or self.block

    def to_json(self, *, indent: int | None = 2) -> str:
        """Canonical JSON text."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @cached_property
    def id(self) -> str:
        """Content hash (12 hex digits) of everything but the name."""
        payload = self.to_dict()
        payload.pop("name", None)
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> ArchSpec:
        """Inverse of :meth:`to_dict`; unknown or missing fields raise UserError naming them."""
        if not isinstance(payload, dict):
            raise UserError("arch: expected a JSON object")
        data = dict(payload)
        version = data.pop("version", SPEC_VERSION)
        if version != SPEC_VERSION:
            raise UserError(f"arch.version: {version!r} is not supported (this igcnas reads version {SPEC_VERSION})")
        _check_keys("arch", data, cls)
        try:
            stages = tuple(
                _stage_from_dict(index, stage)
                for index, stage in enumerate(_as_tuple("arch.stages", data["stages"], " of stage objects"))
            )
            return cls(
                stem=_build("arch.stem", StemSpec, data["stem"]),
                block=_block_from_dict("arch.block", data["block"]),
                stages=stages,
                head=_build("arch.head", HeadSpec, data.get("head", {})),
                input_shape=_as_tuple("arch.input_shape", data.get("input_shape", (3, 32, 32)), " (C, H, W)"),
                num_classes=data.get("num_classes", 10),
                name=data.get("name", ""),
            )
        except KeyError as missing:
            raise UserError(f"arch: missing field {missing}") from None
        except TypeError as error:
            raise UserError(f"arch: {error}") from None

    @classmethod
    def from_json(cls, text: str, *, source: str = "arch.json") -> ArchSpec:
        """Parse JSON text; ``source`` names it in the error when it is not JSON."""
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(f"{source}: not valid JSON ({error})") from None
        return cls.from_dict(payload)

    def save(self, path: str | Path) -> Path:
        """Write ``arch.json`` (path may be a directory)."""
        target = Path(path)
        if target.is_dir() or not target.suffix:
            target.mkdir(parents=True, exist_ok=True)
            target = target / ARCH_FILE
        text = self.to_json() + "\n"
        atomic_write(target, lambda tmp: tmp.write_text(text))
        return target

    def with_name(self, name: str) -> ArchSpec:
        """Same architecture, another label."""
        return replace(self, name=name)

    @property
    def design(self) -> str:
        """The block design, e.g. ``PWG+DW+PWG``."""
        return self.block.design

    @property
    def layout(self) -> str:
        """``imagenet`` for 4-stage 224-input layouts, ``cifar`` otherwise (informational)."""
        return "imagenet" if self.input_shape[1] >= 128 else "cifar"

    # -- convenience -------------------------------------------------------------------------------------------
    @classmethod
    def simple(
        cls,
        design: str,
        *,
        widths: tuple[int, ...] = (32, 64, 128),
        depths: tuple[int, ...] = (2, 2, 2),
        groups: tuple[int | None, ...] | None = None,
        bottleneck: float = 1.0,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        num_classes: int = 10,
        stem_width: int | None = None,
        name: str = "",
    ) -> ArchSpec:
        """A CIFAR-style network of one design: stride 2 at the first block of every stage but the first."""
        from igcnas.arch.layout import layout_arch
        from igcnas.space.chain import parse_design

        kinds = parse_design(design)
        groups = groups or tuple(2 if KERNEL_KINDS[k].grouping == "grouped" else None for k in kinds)
        if len(groups) != len(kinds):
            raise UserError(f"groups: {len(groups)} values for {len(kinds)} kernels of {design}")
        kernels = tuple(KernelSpec(k, groups=g) for k, g in zip(kinds, groups, strict=True))
        block = BlockSpec(kernels, bottleneck=bottleneck if is_bottleneck_form(kinds) else 1.0)
        return layout_arch(block, widths=widths, depths=depths, layout="cifar", input_shape=input_shape,
                           num_classes=num_classes, stem_width=stem_width, name=name)


def _drop_defaults(payload: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Remove keys that hold their default (keeps ids of specs written before the field existed)."""
    for key, value in defaults.items():
        if key in payload and payload[key] == value:
            del payload[key]


def _is_int(value: object) -> bool:
    """An ``int`` that is not a ``bool`` (JSON ``true`` is no count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    """A finite ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _as_tuple(where: str, value: Any, what: str = "") -> tuple[Any, ...]:
    """A JSON list as a tuple, or UserError naming ``where``."""
    if not isinstance(value, (list, tuple)):
        raise UserError(f"{where}: expected a list{what}, got {value!r}")
    return tuple(value)


def _stage_from_dict(index: int, data: Any) -> StageSpec:
    """A StageSpec from its JSON dict; errors name the stage as ``stages[index]``."""
    where = f"arch.stages[{index}]"
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a stage object (width, depth, stride, ...), got {data!r}")
    stage = dict(data)
    if stage.get("groups") is not None:
        stage["groups"] = _as_tuple(f"{where}.groups", stage["groups"], " (one value or null per kernel)")
    if stage.get("block") is not None:
        stage["block"] = _block_from_dict(f"{where}.block", stage["block"])
    try:
        spec: StageSpec = _build(where, StageSpec, stage)
    except UserError as error:
        raise UserError(str(error).replace("stages[].", f"stages[{index}].", 1)) from None
    return spec


def _block_from_dict(where: str, data: Any) -> BlockSpec:
    """A BlockSpec from its JSON dict (lists become tuples)."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected an object, got {data!r}")
    block = dict(data)
    _check_keys(where, block, BlockSpec)
    kernels = _as_tuple(f"{where}.kernels", block["kernels"], " of kernel objects")
    block["kernels"] = tuple(_build(f"{where}.kernels[]", KernelSpec, k) for k in kernels)
    if "relu_after" in block:
        block["relu_after"] = _as_tuple(f"{where}.relu_after", block["relu_after"], " of kernel indices")
    if isinstance(block.get("bn"), list):
        block["bn"] = tuple(block["bn"])
    return BlockSpec(**block)


def _check_keys(where: str, data: dict[str, Any], cls: type) -> None:
    """Unknown keys raise UserError listing the allowed ones."""
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UserError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _build(where: str, cls: type, data: Any) -> Any:
    """Instantiate a dataclass from a dict, naming the place of a bad field."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected an object, got {data!r}")
    _check_keys(where, data, cls)
    return cls(**data)


def load_spec(path: str | Path) -> ArchSpec:
    """Read an ``arch.json`` (or a directory holding one)."""
    target = Path(path)
    if target.is_dir():
        target = target / ARCH_FILE
    if not target.is_file():
        raise UserError(f"{path}: no such arch.json (give a zoo name, an arch.json file or a directory with one)")
    try:
        text = target.read_bytes().decode("utf-8-sig")  # a BOM some editors write is no error
    except UnicodeDecodeError as error:
        raise UserError(
            f"{target}: not a UTF-8 text file (byte {error.object[error.start]:#04x} at offset {error.start}); "
            "an arch.json is JSON text, as 'igcnas fit --out' or 'igcnas export' write it"
        ) from None
    except OSError as error:
        raise UserError(f"{target}: cannot read it ({error.strerror or error})") from None
    return ArchSpec.from_json(text, source=str(target))


def _parse_requirement(text: str) -> tuple[str, int | None]:
    """Parse ``block.require``: none, dense, strict or loose:G."""
    if text in ("none", "dense", "strict"):
        return text, None
    if isinstance(text, str) and text.startswith("loose:") and text[6:].isdigit() and int(text[6:]) >= 1:
        return "loose", int(text[6:])
    raise UserError(
        f"block.require: {text!r} must be 'none', 'dense', 'strict' or 'loose:G' (G super-channels, e.g. loose:2)"
    )


def __getattr__(name: str) -> Any:
    """``BlockPlan`` and ``plan_block`` under their former module (:mod:`igcnas.arch.plan` owns them): a spec
    pickled with its plans before they moved names its plans' class here."""
    if name in ("BlockPlan", "plan_block"):
        from igcnas.arch import plan

        return getattr(plan, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
