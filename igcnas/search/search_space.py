"""The search space: a YAML file of architecture (and training) choices, validated, sampled and turned into specs.

Not to be confused with the *design space* of :mod:`igcnas.space` (kernel chains and the funnel that prunes
them): a search space picks designs from it and adds widths, depths, group numbers and the rest. The YAML keys
are checked in :mod:`igcnas.search._space_yaml`; sampling, building and budget filling are here.

A search space lists, for one layout (``cifar``: 3 stages of widths w, 2w, 4w; ``imagenet``: the Fog paper's 4
stages; ``mobilenet_cifar`` and ``mobilenet``: MobileNetV2's 7 rows after a stem w wide, where the bottleneck ratio
is the expansion t of the block input; see :mod:`igcnas.arch.layout`), the block designs (each must survive the
design-space funnel of :func:`igcnas.space.prune_design_space`), the base widths, the blocks per stage
(``depths``, or on the mobilenet layouts ``depth_multipliers`` of MobileNetV2's row depths), the
group numbers of the grouped kernels (``groups_rule: complementary`` keeps only group numbers for which every
stage's block satisfies IGC's strict or IGCV3's loose complementary condition; ``free`` samples each grouped
kernel within divisibility), bottleneck ratios, BN and ReLU placement, identity mappings and optional training
hyper-parameter ranges.

Example:
    >>> space = SearchSpace.load("igc_cifar")  # doctest: +SKIP
    >>> import optuna
    >>> trial = optuna.create_study().ask()  # doctest: +SKIP
    >>> spec, overrides = space.to_spec(space.define(trial), input_shape=(1, 8, 8), num_classes=10)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from igcnas.arch.layout import LAYOUT_DEFAULTS, layout_arch, layout_width_step
from igcnas.arch.spec import ArchSpec, BlockSpec, KernelSpec
from igcnas.errors import UserError
from igcnas.search._shipped import read_space_text
from igcnas.search._space_yaml import (
    GROUPS_RULES,
    LAYOUTS,
    RELU_PLACEMENTS,
    FloatRange,
    parse_space,
    scaled_depths,
)
from igcnas.space.chain import loose_complementary, parse_design, strict_complementary
from igcnas.space.kernels import KERNEL_KINDS, is_bottleneck_form

__all__ = [
    "SearchSpace",
    "FloatRange",
    "SuggestTrial",
    "RELU_PLACEMENTS",
    "GROUPS_RULES",
    "LAYOUTS",
    "load_space",
]

_GROUPED = frozenset(name for name, kind in KERNEL_KINDS.items() if kind.grouping == "grouped")
_HYPER_KEYS: tuple[str, ...] = ("lr", "weight_decay", "batch_size")


class SuggestTrial(Protocol):
    """What :meth:`SearchSpace.define` needs: an ``optuna.Trial`` or Ray's OptunaSearch trial captor."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...


@dataclass(frozen=True)
class _DesignPlan:
    """How one design's group numbers are sampled: its grouped kernel positions, the allowed values, and which
    base widths each choice of group numbers and bottleneck ratio can take (``valid``)."""

    design: str
    kinds: tuple[str, ...]
    grouped: tuple[int, ...]
    # complementary rule: one group number per design; "pair" = second grouped kernel gets g channels per group
    mode: Literal["none", "pair", "same", "free"]
    choices: tuple[int, ...]
    # ((group numbers, bottleneck ratio), base widths that build and pass the groups rule), every combination
    valid: tuple[tuple[tuple[tuple[int, ...], float], tuple[int, ...]], ...] = ()

    @property
    def bottleneck_form(self) -> bool:
        """First and last kernels pointwise, length >= 3."""
        return is_bottleneck_form(self.kinds)

    def widths_for(self, g_values: tuple[int, ...], ratio: float) -> tuple[int, ...]:
        """The base widths allowed with these group numbers and bottleneck ratio (empty when none)."""
        for key, widths in self.valid:
            if key == (tuple(g_values), float(ratio)):
                return widths
        return ()



def _refusing_duplicate_keys(base: type) -> type:
    """A subclass of the YAML loader ``base`` (``yaml.SafeLoader``) that refuses a key given twice in one mapping
    (plain YAML keeps the last one)."""
    import yaml

    class UniqueKeys(base):
        """``base`` whose mappings refuse duplicate keys, naming the key."""

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice; keep one", key_node.start_mark)
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return UniqueKeys

@dataclass(frozen=True)
class SearchSpace:
    """A validated search space (load one with :meth:`load`).

    Example:
        >>> space = SearchSpace.load("fog_designs")  # doctest: +SKIP
        >>> space.designs  # doctest: +SKIP
        ('DW+PW', 'GC+PWG', 'PW+DW+PW', 'PWG+DW+PWG')
    """

    name: str
    path: str
    layout: str
    stages: int
    designs: tuple[str, ...]
    base_widths: tuple[int, ...]
    depths: tuple[int, ...]
    groups: tuple[int, ...]
    groups_rule: str
    bottlenecks: tuple[float, ...]
    bn: tuple[str, ...]
    relu: tuple[str, ...]
    identity: tuple[bool, ...]
    depth_multipliers: tuple[float, ...] = ()
    lr: FloatRange | None = None
    weight_decay: FloatRange | None = None
    batch_size: tuple[int, ...] | None = None
    description: str = ""
    contains: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    baselines_only: tuple[tuple[str, str], ...] = ()
    plans: tuple[_DesignPlan, ...] = field(default=(), repr=False)
    digest: str = ""

    # -- loading -------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        """Read and validate a search space: a YAML file, or the name of a shipped one (``igc_cifar``).

        Mistakes raise UserError naming the file, key and fix.
        """
        import yaml

        text, source = read_space_text(path)
        try:
            data = yaml.load(text, Loader=_refusing_duplicate_keys(yaml.SafeLoader))
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise UserError(f"{source}: not valid YAML{where} ({error.problem or str(error).splitlines()[0]})"
                            ) from None
        except yaml.YAMLError as error:
            raise UserError(f"{source}: not valid YAML ({str(error).splitlines()[0]})") from None
        return cls.from_dict(data, source=source, digest=hashlib.sha256(text.encode()).hexdigest()[:16])

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<space>", digest: str = "") -> SearchSpace:
        """Validate a parsed YAML mapping (see the module docstring for the keys)."""
        space = cls(
            path=source,
            **parse_space(data, source),
            digest=digest or hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16],
        )
        space = replace(space, plans=tuple(space._plan(d) for d in space.designs))
        for network, params in space.claimed().items():
            space.check_params(params, where=f"{source}: key 'contains.{network}'")
        return space

    def claimed(self) -> dict[str, dict[str, Any]]:
        """The papers' networks this space contains (key ``contains``): zoo name or paper row key -> params."""
        return {name: dict(items) for name, items in self.contains}

    def check_params(self, params: dict[str, Any], *, where: str = "params") -> None:
        """Raise UserError unless ``params`` is a configuration this space can sample (every key, every value).

        Example:
            >>> space = SearchSpace.load("igc_cifar")  # doctest: +SKIP
            >>> space.check_params(space.claimed()["IGC-L24M2-D20"])  # doctest: +SKIP
        """
        design = params.get("design")
        if design not in self.designs:
            raise UserError(f"{where}: design {design!r} is not in space {self.name}; allowed: {', '.join(self.designs)}")
        plan = self._plan_of(design)
        expected: dict[str, list[Any]] = {"design": list(self.designs), "bn": list(self.bn), "relu": list(self.relu),
                    "identity": list(self.identity), **self._depth_choices()}
        if plan.mode in ("pair", "same"):
            expected[f"groups.{design}"] = list(plan.choices)
        elif plan.mode == "free":
            expected.update({f"groups.{design}.{i}": list(plan.choices) for i in plan.grouped})
        if plan.bottleneck_form:
            expected["bottleneck"] = list(self.bottlenecks)
        if self.batch_size is not None:
            expected["batch_size"] = list(self.batch_size)
        ranges = {key: r for key, r in (("lr", self.lr), ("weight_decay", self.weight_decay)) if r is not None}
        values, ratio = self._group_values(params), float(params.get("bottleneck", 1.0))
        widths = plan.widths_for(values, ratio)
        width_keys = {"base_width", self._width_param(design, values, ratio, widths)}
        unknown = sorted(set(params) - set(expected) - set(ranges) - width_keys)
        if unknown:
            raise UserError(f"{where}: unknown parameter(s) {', '.join(unknown)} for design {design}; expected: "
                            f"{', '.join([*expected, 'base_width', *ranges])}")
        for key, allowed in expected.items():
            if key not in params:
                raise UserError(f"{where}: missing parameter {key} (one of {allowed})")
            if params[key] not in allowed or isinstance(params[key], bool) != isinstance(allowed[0], bool):
                raise UserError(f"{where}: {key} = {params[key]!r} is not allowed; allowed values: {allowed}")
        for key, r in ranges.items():
            value = params.get(key)
            if not isinstance(value, (int, float)) or not r.low <= value <= r.high:
                raise UserError(f"{where}: {key} = {value!r} must be within [{r.low:g}, {r.high:g}]")
        if _sampled_width(params) not in widths:
            raise UserError(f"{where}: base_width = {_sampled_width(params)!r} is not allowed with these group "
                            f"numbers; allowed values: {list(widths)}")

    # -- group numbers -----------------------------------------------------------------------------------
    def _plan(self, design: str) -> _DesignPlan:
        """Work out (and check) the group numbers a design may take in this space, and the base widths of each.

        A group number is allowed when at least one base width builds with it (it divides every width the
        design reaches there) and, under ``groups_rule: complementary``, every stage's block then satisfies the
        strict or the loose complementary condition; sampling draws the base width among those of the sampled
        group numbers (:meth:`define`).
        """
        where = f"{self.path}: key 'groups'"
        kinds = parse_design(design)
        grouped = tuple(i for i, k in enumerate(kinds) if k in _GROUPED)
        ratios = self.bottlenecks if is_bottleneck_form(kinds) else (1.0,)
        if not grouped:
            plan = _DesignPlan(design, kinds, grouped, "none", ())
            plan = replace(plan, valid=self._valid(plan, [()], ratios))
            if not any(widths for _, widths in plan.valid):
                raise UserError(f"{self.path}: key 'base_widths': no base width in {list(self.base_widths)} builds "
                                f"design {design} (bottlenecks {list(ratios)}); use larger base widths")
            return plan
        if self.groups_rule == "free":
            plan = _DesignPlan(design, kinds, grouped, "free", self.groups)
            plan = replace(plan, valid=self._valid(plan, list(itertools.product(self.groups, repeat=len(grouped))),
                                                   ratios))
            used = {g for (values, _), widths in plan.valid if widths for g in values}
            bad = [g for g in self.groups if g not in used]
            if bad:
                raise UserError(
                    f"{where}: group number(s) {', '.join(map(str, bad))} divide no base width's widths of design "
                    f"{design} (base_widths {list(self.base_widths)}, bottlenecks {list(ratios)}); allowed here: "
                    f"{', '.join(str(g) for g in self.groups if g in used) or 'none'} - drop them or add base "
                    f"widths that are multiples of them"
                )
            return plan
        modes: list[Literal["pair", "same"]] = (
            ["pair", "same"] if len(grouped) == 2 and not is_bottleneck_form(kinds) else ["same"]
        )
        for mode in modes:
            plan = _DesignPlan(design, kinds, grouped, mode, self.groups)
            valid = self._valid(plan, [(g,) for g in self.groups], ratios)
            allowed = tuple(g for g in self.groups if any(widths for (values, _), widths in valid if values == (g,)))
            if allowed:
                return replace(plan, choices=allowed, valid=tuple(v for v in valid if v[0][0][0] in allowed))
        raise UserError(
            f"{where}: no group number in {list(self.groups)} makes every stage of {design} satisfy the "
            f"complementary condition at any of base_widths {list(self.base_widths)}; use groups_rule: free or "
            f"group numbers that divide a base width"
        )

    def _valid(self, plan: _DesignPlan, combos: list[tuple[int, ...]], ratios: tuple[float, ...]
               ) -> tuple[tuple[tuple[tuple[int, ...], float], tuple[int, ...]], ...]:
        """For every combination of group numbers and bottleneck ratio, the base widths it may take."""
        return tuple(
            ((tuple(values), float(ratio)), tuple(b for b in self.base_widths if self._allowed(plan, b, values, ratio)))
            for values in combos for ratio in ratios
        )

    def _allowed(self, plan: _DesignPlan, base: int, values: tuple[int, ...], ratio: float) -> bool:
        """True when base width ``base`` builds with these group numbers (and passes the complementary rule)."""
        try:  # two blocks a stage: the later one (stage width in and out) is the one checked
            spec = self._build(plan, base, (2,) * self.stages, g_values=values, bottleneck=ratio, bn="each",
                               relu="none", identity=True, input_shape=(3, 32, 32), num_classes=10)
            plans = spec.plans()
        except UserError:
            return False
        if self.groups_rule == "free" or not plan.grouped:
            return True
        g = values[0]
        return all(strict_complementary(later.chain) or loose_complementary(later.chain, g) for _first, later in plans)

    # -- sampling ----------------------------------------------------------------------------------------
    def define(self, trial: SuggestTrial, *, fill_budget: bool = False) -> dict[str, Any]:
        """Sample one configuration with ``trial.suggest_*`` (define-by-run; Optuna or Ray's OptunaSearch).

        Parameter names depend on the design where the choices do (``groups.GC+PWG``), so every name always has
        the same distribution: the base width is ``base_width`` when every base width fits the sampled group
        numbers, else ``base_width.<design>.g<groups>[.r<bottleneck>]`` over the widths that fit. With
        ``fill_budget`` the base width is not sampled (it is fitted to the budget).
        """
        params: dict[str, Any] = {}
        design = trial.suggest_categorical("design", list(self.designs))
        params["design"] = design
        plan = self._plan_of(design)
        if plan.mode in ("pair", "same"):
            params[f"groups.{design}"] = trial.suggest_categorical(f"groups.{design}", list(plan.choices))
        elif plan.mode == "free":
            for i in plan.grouped:
                params[f"groups.{design}.{i}"] = trial.suggest_categorical(f"groups.{design}.{i}", list(plan.choices))
        if plan.bottleneck_form:
            params["bottleneck"] = trial.suggest_categorical("bottleneck", list(self.bottlenecks))
        if not fill_budget:
            values, ratio = self._group_values(params), float(params.get("bottleneck", 1.0))
            widths = plan.widths_for(values, ratio)
            if widths:  # none: to_spec says the combination fits no base width (an invalid architecture)
                name = self._width_param(design, values, ratio, widths)
                params[name] = trial.suggest_categorical(name, list(widths))
        for name, choices in self._depth_choices().items():
            params[name] = trial.suggest_categorical(name, choices)
        params["bn"] = trial.suggest_categorical("bn", list(self.bn))
        params["relu"] = trial.suggest_categorical("relu", list(self.relu))
        params["identity"] = trial.suggest_categorical("identity", list(self.identity))
        if self.lr is not None:
            params["lr"] = trial.suggest_float("lr", self.lr.low, self.lr.high, log=self.lr.log)
        if self.weight_decay is not None:
            wd = self.weight_decay
            params["weight_decay"] = trial.suggest_float("weight_decay", wd.low, wd.high, log=wd.log)
        if self.batch_size is not None:
            params["batch_size"] = trial.suggest_categorical("batch_size", list(self.batch_size))
        return params

    def to_spec(
        self,
        params: dict[str, Any],
        *,
        input_shape: tuple[int, int, int],
        num_classes: int,
        base_width: int | None = None,
    ) -> tuple[ArchSpec, dict[str, Any]]:
        """The architecture spec and training overrides (lr, weight_decay, batch_size) of sampled ``params``.

        Pure: the same params always give the same spec (same id). ``base_width`` overrides the sampled one
        (budget filling).

        Example:
            >>> spec, overrides = space.to_spec({"design": "DW+PW", "base_width": 8, "depth0": 1, "depth1": 1,
            ...     "depth2": 1, "bn": "each", "relu": "none", "identity": True}, input_shape=(1, 8, 8),
            ...     num_classes=10)  # doctest: +SKIP
        """
        design = params.get("design")
        if design not in self.designs:
            raise UserError(f"params.design: {design!r} is not in space {self.name}; allowed: {', '.join(self.designs)}")
        plan = self._plan_of(design)
        width = base_width if base_width is not None else _sampled_width(params)
        if not isinstance(width, int) or width < 1:
            fits = plan.widths_for(self._group_values(params), float(params.get("bottleneck", 1.0)))
            raise UserError(f"params.base_width: {width!r} must be a positive integer (here one of {list(fits)}: the "
                            f"base widths of {list(self.base_widths)} that fit the sampled group numbers)")
        depths = self.depths_of(params)
        g_values = self._group_values(params)
        spec = self._build(
            plan,
            width,
            depths,
            g_values=g_values,
            bottleneck=float(params.get("bottleneck", 1.0)),
            bn=str(params["bn"]),
            relu=str(params["relu"]),
            identity=bool(params["identity"]),
            input_shape=input_shape,
            num_classes=num_classes,
        )
        return spec, _overrides(params)

    def width_quantum(self, params: dict[str, Any]) -> int:
        """Base-width step that keeps the sampled group numbers dividing every width (budget filling)."""
        plan = self._plan_of(params["design"])
        values = self._group_values(params)
        step = layout_width_step(self.layout)  # 4 on the mobilenet layouts (rows w/2, 3w/4, ...), else 1
        quantum = math.lcm(*values) * step if values else max(2, step)
        ratio = float(params.get("bottleneck", 1.0))
        if plan.bottleneck_form and ratio < 1:
            quantum = math.lcm(quantum, max(1, int(round(quantum / ratio))))
        return quantum

    def fill_budget(
        self,
        params: dict[str, Any],
        *,
        input_shape: tuple[int, int, int],
        num_classes: int,
        max_params: float | None,
        max_flops: float | None,
    ) -> tuple[ArchSpec, dict[str, Any], str]:
        """The widest spec of sampled ``params`` within budget (base widths in steps of :meth:`width_quantum`).

        Returns the spec, the training overrides and a note naming the base width; when even the narrowest
        width is over budget, the spec at base width one quantum (the trial is then infeasible).
        """
        from igcnas.arch.fit import widest_within

        quantum = self.width_quantum(params)
        best, _ = widest_within(
            lambda width: self.to_spec(params, input_shape=input_shape, num_classes=num_classes, base_width=width)[0],
            quantum, max_params=max_params, max_flops=max_flops,
        )
        if best is None:
            spec, overrides = self.to_spec(params, input_shape=input_shape, num_classes=num_classes, base_width=quantum)
            return spec, overrides, f"budget filling: even base width {quantum} is over budget"
        return best.spec, _overrides(params), f"budget filling: base width {best.spec.stem.width}"

    def smallest_spec(
        self, *, input_shape: tuple[int, int, int], num_classes: int, by: Literal["params", "flops"] = "params"
    ) -> tuple[ArchSpec, int]:
        """The cheapest architecture of the space by closed-form ``params`` or ``flops``, and that count."""
        from igcnas.cost import count

        best: tuple[ArchSpec, int] | None = None
        for plan in self.plans:
            for (values, ratio), widths in plan.valid:
                if not widths:
                    continue
                for bn, relu, identity in itertools.product(self.bn, self.relu, self.identity):
                    params = {"design": plan.design, "base_width": widths[0], "bn": bn, "relu": relu,
                              "identity": identity, "bottleneck": ratio,
                              **{name: min(choices) for name, choices in self._depth_choices().items()},
                              **self._group_params(plan, values)}
                    spec, _ = self.to_spec(params, input_shape=input_shape, num_classes=num_classes)
                    cost = count(spec)
                    value = cost.params if by == "params" else cost.flops
                    if best is None or value < best[1]:
                        best = (spec, value)
        assert best is not None
        return best

    # -- helpers -----------------------------------------------------------------------------------------
    def _depth_choices(self) -> dict[str, list[Any]]:
        """The depth parameters and their choices: ``depth_multiplier``, or one ``depth<s>`` per stage."""
        if self.depth_multipliers:
            return {"depth_multiplier": list(self.depth_multipliers)}
        return {f"depth{s}": list(self.depths) for s in range(self.stages)}

    def depths_of(self, params: dict[str, Any]) -> tuple[int, ...]:
        """Blocks per stage of sampled ``params`` (with ``depth_multipliers``: the layout's rows scaled)."""
        if self.depth_multipliers:
            return scaled_depths(LAYOUT_DEFAULTS[self.layout][0], float(params["depth_multiplier"]))
        return tuple(int(params[f"depth{s}"]) for s in range(self.stages))

    def _group_values(self, params: dict[str, Any]) -> tuple[int, ...]:
        """The sampled group numbers of ``params`` (one for pair/same designs, one per grouped kernel for free)."""
        design = params["design"]
        plan = self._plan_of(design)
        try:
            if plan.mode in ("pair", "same"):
                return (int(params[f"groups.{design}"]),)
            if plan.mode == "free":
                return tuple(int(params[f"groups.{design}.{i}"]) for i in plan.grouped)
        except KeyError as missing:
            raise UserError(f"params: missing {missing} (design {design} samples its group numbers)") from None
        return ()

    @staticmethod
    def _group_params(plan: _DesignPlan, values: tuple[int, ...]) -> dict[str, int]:
        """The params keys of group numbers ``values`` (the inverse of :meth:`_group_values`)."""
        if plan.mode in ("pair", "same"):
            return {f"groups.{plan.design}": values[0]}
        if plan.mode == "free":
            return {f"groups.{plan.design}.{i}": g for i, g in zip(plan.grouped, values, strict=True)}
        return {}

    def _width_param(self, design: str, values: tuple[int, ...], ratio: float, widths: tuple[int, ...]) -> str:
        """The name of the base-width parameter for these group numbers (see :meth:`define`)."""
        if widths == self.base_widths:
            return "base_width"
        plan = self._plan_of(design)
        name = f"base_width.{design}.g{'-'.join(map(str, values))}"
        return name + (f".r{ratio:g}" if plan.bottleneck_form and len(self.bottlenecks) > 1 else "")

    def _plan_of(self, design: str) -> _DesignPlan:
        """The plan of one design of this space."""
        for plan in self.plans:
            if plan.design == design:
                return plan
        raise UserError(f"design {design!r} is not in space {self.name}; allowed: {', '.join(self.designs)}")

    def _build(
        self,
        plan: _DesignPlan,
        base_width: int,
        depths: tuple[int, ...],
        *,
        g_values: tuple[int, ...],
        bottleneck: float,
        bn: str,
        relu: str,
        identity: bool,
        input_shape: tuple[int, int, int],
        num_classes: int,
    ) -> ArchSpec:
        """Assemble the spec of one configuration on the space's layout."""
        kernels: list[KernelSpec] = []
        for i, kind in enumerate(plan.kinds):
            if i not in plan.grouped:
                kernels.append(KernelSpec(kind))
                continue
            position = plan.grouped.index(i)
            if plan.mode == "free":
                kernels.append(KernelSpec(kind, groups=g_values[position]))
            elif plan.mode == "pair" and position == 1:
                kernels.append(KernelSpec(kind, group_width=g_values[0]))
            else:
                kernels.append(KernelSpec(kind, groups=g_values[0]))
        block = BlockSpec(
            tuple(kernels),
            bottleneck=bottleneck if plan.bottleneck_form else 1.0,
            bn=bn,  # type: ignore[arg-type]
            relu_after=_relu_indices(relu, plan.kinds),
            identity=identity,
        )
        return layout_arch(block, base_width=base_width, depths=depths, layout=self.layout, input_shape=input_shape,
                           num_classes=num_classes)

    def settings(self) -> dict[str, Any]:
        """JSON-safe summary (stored with the study)."""
        return {"name": self.name, "path": self.path, "digest": self.digest, "layout": self.layout,
                "designs": list(self.designs), "groups_rule": self.groups_rule}


def _sampled_width(params: dict[str, Any]) -> Any:
    """The base width of ``params``: key ``base_width``, or the one ``base_width.<design>.g...`` key (None if absent)."""
    if "base_width" in params:
        return params["base_width"]
    keys = [k for k in params if k.startswith("base_width.")]
    return params[keys[0]] if len(keys) == 1 else None


def _overrides(params: dict[str, Any]) -> dict[str, Any]:
    """The sampled training hyper-parameters of ``params`` (lr, weight_decay, batch_size)."""
    return {k: params[k] for k in _HYPER_KEYS if k in params}


def _relu_indices(placement: str, kinds: tuple[str, ...]) -> tuple[int, ...]:
    """Kernel indices followed by a ReLU for a placement name (never the last kernel: the block ends in one)."""
    last = len(kinds) - 1
    if placement == "all":
        return tuple(range(last))
    if placement == "first":
        return (0,) if last > 0 else ()
    if placement == "spatial":
        return tuple(i for i, k in enumerate(kinds) if KERNEL_KINDS[k].spatial and i < last)
    return ()


def load_space(path: str | Path) -> SearchSpace:
    """Shorthand for :meth:`SearchSpace.load`: a YAML file, or a shipped space by name (``igcnas spaces``)."""
    return SearchSpace.load(path)
