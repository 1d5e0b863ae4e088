"""Validation of a search space's YAML mapping: the allowed keys and values, with messages naming the fix.

:func:`parse_space` turns a parsed mapping into the fields of :class:`~igcnas.search.search_space.SearchSpace`;
the helpers below check one key each. Every mistake raises UserError naming the file, the key and what is
allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from igcnas.arch.layout import LAYOUT_DEFAULTS, MOBILENET_LAYOUTS, layout_width_step
from igcnas.errors import UserError
from igcnas.space.chain import parse_design
from igcnas.space.kernels import SPARSE_KINDS

__all__ = ["FloatRange", "RELU_PLACEMENTS", "GROUPS_RULES", "LAYOUTS", "BN_CHOICES", "parse_space", "scaled_depths"]

RELU_PLACEMENTS: tuple[str, ...] = ("none", "all", "first", "spatial")
"""ReLU placement inside a block (the block output gets a ReLU after the identity sum, except on the MobileNetV2
layouts, whose blocks end linear):
``none`` (Fog: ReLU only after the addition), ``all`` (after every kernel but the last), ``first`` (after the
first kernel), ``spatial`` (after the k x k kernel(s), IGCV3's choice)."""
GROUPS_RULES: tuple[str, ...] = ("complementary", "free")
LAYOUTS: tuple[str, ...] = tuple(LAYOUT_DEFAULTS)
BN_CHOICES: tuple[str, ...] = ("each", "block", "none")
_TOP_KEYS: tuple[str, ...] = (
    "name",
    "description",
    "layout",
    "stages",
    "designs",
    "base_widths",
    "depths",
    "depth_multipliers",
    "groups",
    "groups_rule",
    "bottlenecks",
    "bn",
    "relu",
    "identity",
    "train",
    "contains",
    "baselines_only",
)
_TRAIN_KEYS: tuple[str, ...] = ("lr", "weight_decay", "batch_size")


@dataclass(frozen=True)
class FloatRange:
    """A float hyper-parameter range ``[low, high]``, sampled on a log scale when ``log``."""

    low: float
    high: float
    log: bool = False


def parse_space(data: Any, where: str) -> dict[str, Any]:
    """The validated fields of a search space (all but ``path``, ``plans`` and ``digest``) from its mapping.

    Example:
        >>> fields = parse_space({"name": "tiny", "designs": ["DW+PW"], "base_widths": [16, 8], "depths": 1}, "x")
        >>> fields["layout"], fields["stages"], fields["base_widths"], fields["depths"], fields["bn"]
        ('cifar', 3, (8, 16), (1,), ('each',))
    """
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping of keys ({', '.join(_TOP_KEYS)}), got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in _TOP_KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed keys: {', '.join(_TOP_KEYS)}")
    if "depths" in data and "depth_multipliers" in data:
        raise UserError(f"{where}: keys 'depths' and 'depth_multipliers' exclude each other; give one: depths per "
                        "row, or multipliers of the layout's row depths")
    if "depths" not in data and "depth_multipliers" not in data:
        raise UserError(f"{where}: missing key 'depths' (blocks per stage; on the mobilenet layouts, or "
                        "'depth_multipliers' of MobileNetV2's row depths); see search_spaces/igc_cifar.yaml")
    for required in ("name", "designs", "base_widths"):
        if required not in data:
            raise UserError(f"{where}: missing key '{required}' (see 'igcnas spaces' and search_spaces/igc_cifar.yaml for an example)")
    name = data["name"]
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        raise UserError(f"{where}: key 'name': {name!r} must be a non-empty word without '/', '\\' or spaces")
    layout = _choice(where, "layout", data.get("layout", "cifar"), LAYOUTS)
    default_stages = len(LAYOUT_DEFAULTS[layout][0])  # cifar 3, imagenet 4, mobilenet 7 rows
    stages = data.get("stages", default_stages)
    if layout in MOBILENET_LAYOUTS:
        if type(stages) is not int or stages != default_stages:
            raise UserError(f"{where}: key 'stages': {stages!r} is not allowed on layout {layout}, which has "
                            f"MobileNetV2's {default_stages} rows; leave the key out")
    elif isinstance(stages, bool) or not isinstance(stages, int) or not 1 <= stages <= 6:
        raise UserError(f"{where}: key 'stages': {stages!r} must be an integer from 1 to 6 (default {default_stages})")
    designs = _designs(where, data["designs"])
    base_widths = _ints(where, "base_widths", data["base_widths"], minimum=1)
    odd = [w for w in base_widths if w % layout_width_step(layout)]
    if odd:
        verb = "is not a multiple" if len(odd) == 1 else "are not multiples"
        raise UserError(f"{where}: key 'base_widths': {', '.join(map(str, odd))} {verb} of 4; on layout {layout} the "
                        "base width is the stem's and the rows are w/2, 3w/4, w, ... 10w wide, so use multiples of 4 "
                        "(MobileNetV2: 32)")
    depths: tuple[int, ...] = ()
    multipliers: tuple[float, ...] = ()
    if "depth_multipliers" in data:
        if layout not in MOBILENET_LAYOUTS:
            raise UserError(f"{where}: key 'depth_multipliers' is for the mobilenet layouts, whose rows have "
                            f"different depths; on layout {layout} give 'depths' (blocks per stage)")
        multipliers = _floats(where, "depth_multipliers", data["depth_multipliers"])
        pattern = LAYOUT_DEFAULTS[layout][0]
        seen: dict[tuple[int, ...], float] = {}
        for m in multipliers:
            rows = scaled_depths(pattern, m)
            if rows in seen:
                raise UserError(f"{where}: key 'depth_multipliers': {seen[rows]:g} and {m:g} give the same row depths "
                                f"{rows}; keep one of them")
            seen[rows] = m
    else:
        depths = _ints(where, "depths", data["depths"], minimum=1)
    groups = _ints(where, "groups", data.get("groups", [2]), minimum=1)
    rule = _choice(where, "groups_rule", data.get("groups_rule", "free"), GROUPS_RULES)
    bottlenecks = _floats(where, "bottlenecks", data.get("bottlenecks", [0.25]))
    bn = tuple(_choice(where, "bn", v, BN_CHOICES) for v in _as_list(data.get("bn", ["each"])))
    relu = tuple(_choice(where, "relu", v, RELU_PLACEMENTS) for v in _as_list(data.get("relu", ["none"])))
    identity = _bools(where, "identity", data.get("identity", [True]))
    for key, values in (("bn", bn), ("relu", relu), ("identity", identity)):
        if not values:
            raise UserError(f"{where}: key '{key}': give at least one value")
    if layout in MOBILENET_LAYOUTS and "none" in relu:
        raise UserError(f"{where}: key 'relu': none is not allowed on layout {layout}: its blocks end linear "
                        "(MobileNetV2's linear bottleneck), so they would have no ReLU at all; use spatial, first or all")
    return {
        "name": name,
        "layout": layout,
        "stages": stages,
        "designs": designs,
        "base_widths": base_widths,
        "depths": depths,
        "depth_multipliers": multipliers,
        "groups": groups,
        "groups_rule": rule,
        "bottlenecks": bottlenecks,
        "bn": bn,
        "relu": relu,
        "identity": identity,
        **_train(where, data.get("train")),
        "description": str(data.get("description", "")),
        "contains": _contains(where, data.get("contains")),
        "baselines_only": _baselines_only(where, data.get("baselines_only")),
    }


def _contains(where: str, value: Any) -> tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]:
    """``contains``: zoo network (or paper row key) -> the configuration of this space that builds it."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise UserError(f"{where}: key 'contains': expected a mapping of zoo names to configurations "
                        "({design: GC+PWG, base_width: 48, depth0: 6, ...}), got " + type(value).__name__)
    out = []
    for name, config in value.items():
        _known_network(where, "contains", name)
        if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
            raise UserError(f"{where}: key 'contains.{name}': expected a mapping of parameters (as a trial's "
                            "'sampled' in trial.json), e.g. {design: GC+PWG, base_width: 48, depth0: 6, ...}")
        out.append((str(name), tuple(sorted(config.items()))))
    return tuple(out)


def _baselines_only(where: str, value: Any) -> tuple[tuple[str, str], ...]:
    """``baselines_only``: zoo network -> why no configuration of this space builds it (it takes part as a baseline)."""
    if value is None:
        return ()
    if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
        raise UserError(f"{where}: key 'baselines_only': expected a mapping of zoo names to the reason the space "
                        "leaves them out, e.g. {IGCV2-C64-D20: 'DW+PWG+PWG is removed by the repeat rule'}")
    for name in value:
        _known_network(where, "baselines_only", name)
    return tuple((str(k), str(v)) for k, v in value.items())


def _known_network(where: str, key: str, name: Any) -> None:
    """A zoo name or a paper row key (``igcv1/IGC-L24M2/D98/cifar``); an unknown one lists the zoo."""
    from igcnas.zoo import ZOO, paper_specs

    if isinstance(name, str) and (name in ZOO or name in paper_specs()):
        return
    raise UserError(f"{where}: key '{key}': {name!r} is neither a zoo network nor a paper row key; zoo networks: "
                    f"{', '.join(ZOO)}")


def _train(where: str, train: Any) -> dict[str, Any]:
    """The optional ``train`` key: ranges of lr and weight_decay, choices of batch_size (None when absent)."""
    lr = weight_decay = None
    batch_size = None
    if train is not None:
        if not isinstance(train, dict):
            raise UserError(f"{where}: key 'train': expected a mapping with keys {', '.join(_TRAIN_KEYS)}")
        bad = sorted(str(k) for k in train if k not in _TRAIN_KEYS)
        if bad:
            raise UserError(f"{where}: key 'train': unknown key(s) {', '.join(bad)}; allowed: {', '.join(_TRAIN_KEYS)}")
        if "lr" in train:
            lr = _range(where, "train.lr", train["lr"])
        if "weight_decay" in train:
            weight_decay = _range(where, "train.weight_decay", train["weight_decay"], allow_zero=True)
        if "batch_size" in train:
            batch_size = _ints(where, "train.batch_size", train["batch_size"], minimum=1)
    return {"lr": lr, "weight_decay": weight_decay, "batch_size": batch_size}


# -- validation helpers ----------------------------------------------------------------------------------------
def _as_list(value: Any) -> list[Any]:
    """A scalar becomes a one-element list."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _choice(where: str, key: str, value: Any, allowed: tuple[Any, ...]) -> Any:
    """One of ``allowed``."""
    if value not in allowed:
        raise UserError(f"{where}: key '{key}': {value!r} is not allowed; allowed values: {', '.join(map(str, allowed))}")
    return value


def _ints(where: str, key: str, value: Any, *, minimum: int) -> tuple[int, ...]:
    """A non-empty list of distinct integers >= minimum, sorted."""
    values = _as_list(value)
    if not values:
        raise UserError(f"{where}: key '{key}': give at least one integer")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise UserError(f"{where}: key '{key}': {v!r} is not allowed; allowed values: integers >= {minimum}")
    return tuple(sorted(set(values)))


def scaled_depths(pattern: tuple[int, ...], multiplier: float) -> tuple[int, ...]:
    """Row depths ``pattern`` scaled by ``multiplier`` (half up, at least 1); one-block rows stay one block.

    MobileNetV2's CIFAR rows (1, 2, 3, 4, 3, 3, 1): x1 is MobileNetV2, x2 IGCV3-D's (1, 4, 6, 8, 6, 6, 1).

    Example:
        >>> [scaled_depths((1, 2, 3, 4, 3, 3, 1), m) for m in (0.25, 1, 2)]
        [(1, 1, 1, 1, 1, 1, 1), (1, 2, 3, 4, 3, 3, 1), (1, 4, 6, 8, 6, 6, 1)]
    """
    return tuple(1 if p == 1 else max(1, math.floor(multiplier * p + 0.5)) for p in pattern)


def _floats(where: str, key: str, value: Any) -> tuple[float, ...]:
    """A non-empty list of positive finite numbers."""
    values = _as_list(value)
    if not values:
        raise UserError(f"{where}: key '{key}': give at least one number")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise UserError(f"{where}: key '{key}': {v!r} is not allowed; allowed values: positive numbers (e.g. 0.25, 6)")
    return tuple(sorted({float(v) for v in values}))


def _bools(where: str, key: str, value: Any) -> tuple[bool, ...]:
    """A non-empty list of booleans."""
    values = _as_list(value)
    for v in values:
        if not isinstance(v, bool):
            raise UserError(f"{where}: key '{key}': {v!r} is not allowed; allowed values: true, false")
    return tuple(dict.fromkeys(values))


def _range(where: str, key: str, value: Any, *, allow_zero: bool = False) -> FloatRange:
    """``{low, high, log}`` or ``[low, high]``."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        value = {"low": value[0], "high": value[1]}
    if not isinstance(value, dict) or set(value) - {"low", "high", "log"} or not {"low", "high"} <= set(value):
        raise UserError(f"{where}: key '{key}': give {{low: L, high: H, log: true|false}} or [L, H], got {value!r}")
    low, high, log = value["low"], value["high"], value.get("log", False)
    for v in (low, high):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise UserError(f"{where}: key '{key}': {v!r} is not allowed; allowed values: finite numbers >= 0")
    if not isinstance(log, bool):
        raise UserError(f"{where}: key '{key}.log': {log!r} is not allowed; allowed values: true, false")
    if low > high or (log and low <= 0) or (not allow_zero and low <= 0):
        raise UserError(f"{where}: key '{key}': need 0 < low <= high (log scale needs low > 0), got [{low}, {high}]")
    return FloatRange(float(low), float(high), log)


def _designs(where: str, value: Any) -> tuple[str, ...]:
    """Block designs that survive the design-space funnel (a removed one names the rule that removed it)."""
    from igcnas.space import prune_design_space

    values = _as_list(value)
    if not values:
        raise UserError(f"{where}: key 'designs': give at least one block design, e.g. [GC+PWG, DW+PW]")
    result = prune_design_space()
    survivors = [v.name for v in result.survivors()]
    out: list[str] = []
    for v in values:
        if not isinstance(v, str):
            raise UserError(f"{where}: key 'designs': {v!r} is not a design; allowed values: {', '.join(survivors)}")
        try:
            kinds = parse_design(v)
        except UserError as error:
            raise UserError(f"{where}: key 'designs': {error}; allowed values: {', '.join(survivors)}") from None
        name = "+".join(kinds)
        if any(k not in SPARSE_KINDS for k in kinds):
            raise UserError(f"{where}: key 'designs': {v!r} uses a kernel outside GC, DW, PW, PWG; allowed values: "
                            f"{', '.join(survivors)}")
        verdict = result.verdict(kinds)
        if not verdict.survives:
            raise UserError(
                f"{where}: key 'designs': {name} was removed by the design-space rule '{verdict.removed_by}' "
                f"({verdict.reason}); allowed values: {', '.join(survivors)}"
            )
        if name not in out:
            out.append(name)
    return tuple(out)
