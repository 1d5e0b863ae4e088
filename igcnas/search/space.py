"""Search spaces: a YAML file of architecture (and training) choices, validated, sampled and turned into specs.

A search space lists, for one layout (``cifar``: 3 stages of widths w, 2w, 4w; ``imagenet``: the Fog paper's 4
stages), the block designs (each must survive the design-space funnel of :func:`igcnas.space.prune_design_space`),
the base widths, the blocks per stage, the group numbers of the grouped kernels (``groups_rule: complementary``
keeps only group numbers for which every stage's block satisfies IGC's strict or IGCV3's loose complementary
condition; ``free`` samples each grouped kernel within divisibility), bottleneck ratios, BN and ReLU placement,
identity mappings and optional training hyper-parameter ranges.

Example:
    >>> space = SearchSpace.load("igc_cifar")  # doctest: +SKIP
    >>> import optuna
    >>> trial = optuna.create_study().ask()  # doctest: +SKIP
    >>> spec, overrides = space.to_spec(space.define(trial), input_shape=(1, 8, 8), num_classes=10)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from igcnas.arch.spec import ArchSpec, BlockSpec, KernelSpec, StageSpec, StemSpec, plan_block
from igcnas.errors import UserError
from igcnas.search._shipped import read_space_text
from igcnas.space.chain import loose_complementary, parse_design, strict_complementary
from igcnas.space.kernels import KERNEL_KINDS, SPARSE_KINDS, is_bottleneck_form

__all__ = [
    "SearchSpace",
    "FloatRange",
    "SuggestTrial",
    "RELU_PLACEMENTS",
    "GROUPS_RULES",
    "LAYOUTS",
    "load_space",
]

RELU_PLACEMENTS: tuple[str, ...] = ("none", "all", "first", "spatial")
"""ReLU placement inside a block (the block output always gets a ReLU after the identity sum):
``none`` (Fog: ReLU only after the addition), ``all`` (after every kernel but the last), ``first`` (after the
first kernel), ``spatial`` (after the k x k kernel(s), IGCV3's choice)."""
GROUPS_RULES: tuple[str, ...] = ("complementary", "free")
LAYOUTS: tuple[str, ...] = ("cifar", "imagenet")
BN_CHOICES: tuple[str, ...] = ("each", "block", "none")
_TOP_KEYS: tuple[str, ...] = (
    "name",
    "description",
    "layout",
    "stages",
    "designs",
    "base_widths",
    "depths",
    "groups",
    "groups_rule",
    "bottlenecks",
    "bn",
    "relu",
    "identity",
    "train",
)
_TRAIN_KEYS: tuple[str, ...] = ("lr", "weight_decay", "batch_size")
_GROUPED = frozenset(name for name, kind in KERNEL_KINDS.items() if kind.grouping == "grouped")


class SuggestTrial(Protocol):
    """What :meth:`SearchSpace.define` needs: an ``optuna.Trial`` or Ray's OptunaSearch trial captor."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...


@dataclass(frozen=True)
class FloatRange:
    """A float hyper-parameter range ``[low, high]``, sampled on a log scale when ``log``."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class _DesignPlan:
    """How one design's group numbers are sampled: its grouped kernel positions and the allowed values."""

    design: str
    kinds: tuple[str, ...]
    grouped: tuple[int, ...]
    # complementary rule: one group number per design; "pair" = second grouped kernel gets g channels per group
    mode: Literal["none", "pair", "same", "free"]
    choices: tuple[int, ...]

    @property
    def bottleneck_form(self) -> bool:
        """First and last kernels pointwise, length >= 3."""
        return is_bottleneck_form(self.kinds)


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
    lr: FloatRange | None = None
    weight_decay: FloatRange | None = None
    batch_size: tuple[int, ...] | None = None
    description: str = ""
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
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise UserError(f"{source}: not valid YAML ({str(error).splitlines()[0]})") from None
        return cls.from_dict(data, source=source, digest=hashlib.sha256(text.encode()).hexdigest()[:16])

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<space>", digest: str = "") -> SearchSpace:
        """Validate a parsed YAML mapping (see the module docstring for the keys)."""
        where = source
        if not isinstance(data, dict):
            raise UserError(f"{where}: expected a mapping of keys ({', '.join(_TOP_KEYS)}), got {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in _TOP_KEYS)
        if unknown:
            raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed keys: {', '.join(_TOP_KEYS)}")
        for required in ("name", "designs", "base_widths", "depths"):
            if required not in data:
                raise UserError(f"{where}: missing key '{required}' (see 'igcnas spaces' and search_spaces/igc_cifar.yaml for an example)")
        name = data["name"]
        if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
            raise UserError(f"{where}: key 'name': {name!r} must be a non-empty word without '/', '\\' or spaces")
        layout = _choice(where, "layout", data.get("layout", "cifar"), LAYOUTS)
        default_stages = 3 if layout == "cifar" else 4
        stages = data.get("stages", default_stages)
        if isinstance(stages, bool) or not isinstance(stages, int) or not 1 <= stages <= 6:
            raise UserError(f"{where}: key 'stages': {stages!r} must be an integer from 1 to 6 (default {default_stages})")
        designs = _designs(where, data["designs"])
        base_widths = _ints(where, "base_widths", data["base_widths"], minimum=1)
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
        lr = weight_decay = None
        batch_size = None
        train = data.get("train")
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
        space = cls(
            name=name,
            path=source,
            layout=layout,
            stages=stages,
            designs=designs,
            base_widths=base_widths,
            depths=depths,
            groups=groups,
            groups_rule=rule,
            bottlenecks=bottlenecks,
            bn=bn,
            relu=relu,
            identity=identity,
            lr=lr,
            weight_decay=weight_decay,
            batch_size=batch_size,
            description=str(data.get("description", "")),
            digest=digest or hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16],
        )
        return replace(space, plans=tuple(space._plan(d) for d in designs))

    # -- group numbers -----------------------------------------------------------------------------------
    def _plan(self, design: str) -> _DesignPlan:
        """Work out (and check) the group numbers a design may take in this space."""
        where = f"{self.path}: key 'groups'"
        kinds = parse_design(design)
        grouped = tuple(i for i, k in enumerate(kinds) if k in _GROUPED)
        if not grouped:
            return _DesignPlan(design, kinds, grouped, "none", ())
        probe = _DesignPlan(design, kinds, grouped, "free", self.groups)
        if self.groups_rule == "free":
            bad = sorted({g for g in self.groups for w in self._kernel_widths(probe) if w % g})
            if bad:
                ok = [g for g in self.groups if g not in bad]
                raise UserError(
                    f"{where}: group number(s) {', '.join(map(str, bad))} do not divide every width the design "
                    f"{design} reaches (widths {', '.join(map(str, sorted(self._kernel_widths(probe))))}, from "
                    f"base_widths {list(self.base_widths)} and bottlenecks {list(self.bottlenecks)}); allowed here: "
                    f"{', '.join(map(str, ok)) or 'none - change base_widths to multiples of the group numbers'}"
                )
            return probe
        modes: list[Literal["pair", "same"]] = (
            ["pair", "same"] if len(grouped) == 2 and not probe.bottleneck_form else ["same"]
        )
        for mode in modes:
            allowed = tuple(g for g in self.groups if self._complementary(replace(probe, mode=mode, choices=(g,))))
            if allowed:
                return _DesignPlan(design, kinds, grouped, mode, allowed)
        raise UserError(
            f"{where}: no group number in {list(self.groups)} makes every stage of {design} satisfy the "
            f"complementary condition at base_widths {list(self.base_widths)}; use groups_rule: free or other "
            f"group numbers (divisors of every width)"
        )

    def _kernel_widths(self, plan: _DesignPlan) -> set[int]:
        """Every width a grouped kernel of the design sees, over all base widths and bottlenecks."""
        widths: set[int] = set()
        ratios = self.bottlenecks if plan.bottleneck_form else (1.0,)
        for base in self.base_widths:
            for s in range(self.stages):
                out = base * 2**s
                widths.add(out)
                for r in ratios:
                    widths.add(max(1, int(round(out * r))))
                if s:
                    widths.add(base * 2 ** (s - 1))
        return widths

    def _complementary(self, plan: _DesignPlan) -> bool:
        """True when every stage's block satisfies the strict or the loose complementary condition."""
        g = plan.choices[0]
        ratios = self.bottlenecks if plan.bottleneck_form else (1.0,)
        for base in self.base_widths:
            for ratio in ratios:
                try:
                    spec = self._build(plan, base, (1,) * self.stages, g_values=(g,), bottleneck=ratio,
                                       bn="each", relu="none", identity=True, input_shape=(3, 32, 32),
                                       num_classes=10)
                except UserError:
                    return False
                for s in range(self.stages):
                    chain = plan_block(spec, s, spec.stages[s].width, first=False).chain
                    if not (strict_complementary(chain) or loose_complementary(chain, g)):
                        return False
        return True

    # -- sampling ----------------------------------------------------------------------------------------
    def define(self, trial: SuggestTrial, *, fill_budget: bool = False) -> dict[str, Any]:
        """Sample one configuration with ``trial.suggest_*`` (define-by-run; Optuna or Ray's OptunaSearch).

        Parameter names depend on the design where the choices do (``groups.GC+PWG``), so every name always has
        the same distribution. With ``fill_budget`` the base width is not sampled (it is fitted to the budget).
        """
        params: dict[str, Any] = {}
        design = trial.suggest_categorical("design", list(self.designs))
        params["design"] = design
        plan = self._plan_of(design)
        if not fill_budget:
            params["base_width"] = trial.suggest_categorical("base_width", list(self.base_widths))
        for s in range(self.stages):
            params[f"depth{s}"] = trial.suggest_categorical(f"depth{s}", list(self.depths))
        if plan.mode in ("pair", "same"):
            params[f"groups.{design}"] = trial.suggest_categorical(f"groups.{design}", list(plan.choices))
        elif plan.mode == "free":
            for i in plan.grouped:
                params[f"groups.{design}.{i}"] = trial.suggest_categorical(f"groups.{design}.{i}", list(plan.choices))
        if plan.bottleneck_form:
            params["bottleneck"] = trial.suggest_categorical("bottleneck", list(self.bottlenecks))
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
        width = base_width if base_width is not None else params.get("base_width")
        if not isinstance(width, int) or width < 1:
            raise UserError(f"params.base_width: {width!r} must be a positive integer (one of {list(self.base_widths)})")
        depths = tuple(int(params[f"depth{s}"]) for s in range(self.stages))
        if plan.mode in ("pair", "same"):
            g_values: tuple[int, ...] = (int(params[f"groups.{design}"]),)
        elif plan.mode == "free":
            g_values = tuple(int(params[f"groups.{design}.{i}"]) for i in plan.grouped)
        else:
            g_values = ()
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
        overrides: dict[str, Any] = {k: params[k] for k in ("lr", "weight_decay", "batch_size") if k in params}
        return spec, overrides

    def width_quantum(self, params: dict[str, Any]) -> int:
        """Base-width step that keeps the sampled group numbers dividing every width (budget filling)."""
        design = params["design"]
        plan = self._plan_of(design)
        if plan.mode in ("pair", "same"):
            values = [int(params[f"groups.{design}"])]
        elif plan.mode == "free":
            values = [int(params[f"groups.{design}.{i}"]) for i in plan.grouped]
        else:
            values = []
        quantum = math.lcm(*values) if values else 2
        ratio = float(params.get("bottleneck", 1.0))
        if plan.bottleneck_form and ratio < 1:
            quantum = math.lcm(quantum, max(1, int(round(quantum / ratio))))
        return quantum

    def smallest_spec(
        self, *, input_shape: tuple[int, int, int], num_classes: int, by: Literal["params", "flops"] = "params"
    ) -> tuple[ArchSpec, int]:
        """The cheapest architecture of the space by closed-form ``params`` or ``flops``, and that count."""
        from igcnas.cost import count

        best: tuple[ArchSpec, int] | None = None
        for plan in self.plans:
            base = {"design": plan.design, "base_width": min(self.base_widths), "bn": self.bn[0],
                    "relu": self.relu[0], "identity": self.identity[0], "bottleneck": min(self.bottlenecks)}
            base.update({f"depth{s}": min(self.depths) for s in range(self.stages)})
            options: list[dict[str, Any]] = []
            if plan.mode in ("pair", "same"):
                options = [{f"groups.{plan.design}": g} for g in plan.choices]
            elif plan.mode == "free":
                options = [{f"groups.{plan.design}.{i}": max(plan.choices) for i in plan.grouped}]
            else:
                options = [{}]
            for extra in options:
                spec, _ = self.to_spec({**base, **extra}, input_shape=input_shape, num_classes=num_classes)
                cost = count(spec)
                value = cost.params if by == "params" else cost.flops
                if best is None or value < best[1]:
                    best = (spec, value)
        assert best is not None
        return best

    # -- helpers -----------------------------------------------------------------------------------------
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
        if self.layout == "cifar":
            stem = StemSpec(width=base_width)
        else:
            stem = StemSpec(width=base_width, kernel_size=3, stride=2, pool=True)
        stages = tuple(
            StageSpec(width=base_width * 2**i, depth=d, stride=1 if i == 0 else 2) for i, d in enumerate(depths)
        )
        return ArchSpec(stem=stem, block=block, stages=stages, input_shape=input_shape, num_classes=num_classes)

    def settings(self) -> dict[str, Any]:
        """JSON-safe summary (stored with the study)."""
        return {"name": self.name, "path": self.path, "digest": self.digest, "layout": self.layout,
                "designs": list(self.designs), "groups_rule": self.groups_rule}


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
