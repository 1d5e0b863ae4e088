"""Training-free pruning of the sparse-kernel design space (Fog paper, Section 3.1).

Every type sequence of length 1..L over {GC, DW, PW, PWG} (4 + 16 + ... + 4^6 = 5460 for L = 6) is passed through
three rules, in this order:

1. **repeat** (composition): the regex ``(.+?)\\1+`` over one token per kernel (G, D, P, Q) finds a repeated
   pattern. ``repeat_match="any"`` (default) removes a chain that *contains* an adjacent repeat anywhere
   (``PW+PW+DW`` contains ``PW+PW``), reading the paper's "combinations including repeated patterns";
   ``repeat_match="whole"`` removes only chains that are entirely one pattern repeated (AAAAAA, ABABAB, ABCABC).
2. **field** (performance): some admissible assignment of group numbers (every divisor g of C with 1 < g < C for
   GC and PWG, as the paper's footnote says) and channel permutations gives exactly the standard convolution's
   information field (k, k, C). Permutations are IGC interleaving shuffles placed where they help: before a kernel,
   shuffle by the number of distinct reach classes the prefix produced (IGCV2's construction).
3. **redundancy** (efficiency): for some admissible assignment, (a) every kernel grows the field, (b) the field is
   not complete before the last kernel, and (c) no proper sub-chain (dropping kernels) reaches the field already.
   **Bottleneck exception** (``bottleneck=True``): a chain of length >= 3 whose first and last kernels are
   pointwise (PW or PWG) is read as a low-rank bottleneck, C -> K -> F: its first and last kernels are the width
   projections. The last projection is exempt from (a) and may follow a field completed by the kernel before it
   (b), and (c) never drops the two projections. This is what lets PW+DW+PW survive (the paper keeps it "with
   bottleneck structure") without naming any design.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from igcnas.errors import UserError
from igcnas.space.chain import Chain, InfoField, canonical_shuffle, standard_field
from igcnas.space.kernels import KERNEL_KINDS, SPARSE_KINDS, Kernel, divisors, is_bottleneck_form

__all__ = ["SpaceOptions", "Verdict", "SpaceResult", "prune_design_space", "evaluate_design", "RULES"]

RULES: tuple[str, ...] = ("repeat", "field", "redundancy")
RepeatMatch = Literal["any", "whole"]
_REPEAT = re.compile(r"(.+?)\1+")


@dataclass(frozen=True)
class SpaceOptions:
    """Settings of the design-space funnel."""

    channels: int = 64
    max_length: int = 6
    kernel_size: int = 3
    repeat_match: RepeatMatch = "any"
    bottleneck: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.channels, int) or self.channels < 2:
            raise UserError(f"channels: {self.channels!r} must be an integer >= 2 (e.g. 64)")
        if not isinstance(self.max_length, int) or not 1 <= self.max_length <= 8:
            raise UserError(f"max_length: {self.max_length!r} must be an integer from 1 to 8 (the paper uses 6)")
        if not isinstance(self.kernel_size, int) or self.kernel_size < 3 or self.kernel_size % 2 == 0:
            raise UserError(f"kernel_size: {self.kernel_size!r} must be an odd integer >= 3")
        if self.repeat_match not in ("any", "whole"):
            raise UserError(f"repeat_match: {self.repeat_match!r} must be 'any' or 'whole'")


@dataclass(frozen=True)
class Verdict:
    """What the funnel decided for one type sequence."""

    design: tuple[str, ...]
    removed_by: str | None
    reason: str
    field: InfoField | None = None
    witness: Chain | None = None
    formula: str | None = None
    bottleneck: bool = False

    @property
    def name(self) -> str:
        """The design as ``A+B+C``."""
        return "+".join(self.design)

    @property
    def survives(self) -> bool:
        """True when no rule removed it."""
        return self.removed_by is None

    @property
    def order_key(self) -> str:
        """Designs with the same multiset of kernels share this key (same design up to order)."""
        return "+".join(sorted(self.design))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "design": self.name,
            "length": len(self.design),
            "removed_by": self.removed_by,
            "reason": self.reason,
            "info_field": list(self.field.as_tuple()) if self.field else None,
            "witness": self.witness.describe() if self.witness else None,
            "witness_groups": [k.groups for k in self.witness.kernels] if self.witness else None,
            "witness_shuffles": [k.shuffle_in for k in self.witness.kernels] if self.witness else None,
            "param_formula": self.formula,
            "bottleneck": self.bottleneck,
        }


@dataclass
class SpaceResult:
    """All verdicts of one funnel run, with the funnel counts."""

    options: SpaceOptions
    verdicts: list[Verdict]
    seconds: float
    funnel: list[tuple[str, int, int]] = field(default_factory=list)  # (stage, removed, remaining)

    def survivors(self) -> list[Verdict]:
        """Verdicts no rule removed, shortest first."""
        return [v for v in self.verdicts if v.survives]

    def verdict(self, design: str | Iterable[str]) -> Verdict:
        """The verdict of one design, e.g. ``result.verdict("GC+PWG")``."""
        from igcnas.space.chain import parse_design

        kinds = parse_design(design) if isinstance(design, str) else tuple(design)
        for v in self.verdicts:
            if v.design == kinds:
                return v
        raise UserError(
            f"design {'+'.join(kinds)!r} is not in this space (max length {self.options.max_length}, "
            f"kinds {', '.join(SPARSE_KINDS)})"
        )

    def same_up_to_order(self) -> dict[str, list[str]]:
        """Survivors grouped by their kernel multiset (e.g. DW+PW with PW+DW)."""
        groups: dict[str, list[str]] = {}
        for v in self.survivors():
            groups.setdefault(v.order_key, []).append(v.name)
        return groups

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form of the whole run."""
        order = self.same_up_to_order()
        return {
            "options": {
                "channels": self.options.channels,
                "max_length": self.options.max_length,
                "kernel_size": self.options.kernel_size,
                "repeat_match": self.options.repeat_match,
                "bottleneck": self.options.bottleneck,
            },
            "standard_field": list(standard_field(self.options.channels, self.options.kernel_size).as_tuple()),
            "seconds": self.seconds,
            "funnel": [{"stage": s, "removed": r, "remaining": n} for s, r, n in self.funnel],
            "survivors": [
                {**v.to_dict(), "same_up_to_order": [n for n in order[v.order_key] if n != v.name]}
                for v in self.survivors()
            ],
            "designs": [v.to_dict() for v in self.verdicts],
        }


# --------------------------------------------------------------------------------------------------------------
# channel reachability with numpy boolean matrices (rows: channels after the prefix, columns: chain inputs)


def _step(reach: np.ndarray, kind: str, groups: int) -> tuple[np.ndarray, int | None]:
    """Apply one kernel (after the canonical shuffle) to a reach matrix; returns the new matrix and the shuffle used."""
    channels = reach.shape[0]
    grouping = KERNEL_KINDS[kind].grouping
    if grouping == "dense":
        return np.ones_like(reach), None
    if grouping == "channelwise":
        return reach, None
    shuffle = canonical_shuffle(reach)
    if shuffle is not None:
        reach = reach.reshape(shuffle, channels // shuffle, -1).transpose(1, 0, 2).reshape(channels, -1)
    grouped = reach.reshape(groups, channels // groups, -1).any(axis=1)
    return np.repeat(grouped, channels // groups, axis=0), shuffle


class _Searcher:
    """Depth-first search over group numbers for one options set (memoised per type sequence)."""

    def __init__(self, options: SpaceOptions) -> None:
        self.options = options
        self.channels = options.channels
        self.group_choices = [g for g in divisors(options.channels) if 1 < g < options.channels]
        self.target = standard_field(options.channels, options.kernel_size)
        self._reachable_cache: dict[tuple[str, ...], tuple[bool, int, tuple[int, ...] | None]] = {}

    def spatial(self, design: tuple[str, ...]) -> int:
        """Spatial extent of the chain's field (independent of groups)."""
        k = self.options.kernel_size
        return 1 + sum(k - 1 for kind in design if KERNEL_KINDS[kind].spatial)

    def options_for(self, kind: str) -> list[int]:
        """Group numbers tried for one kernel kind."""
        return self.group_choices if KERNEL_KINDS[kind].grouping == "grouped" else [1]

    def reachable(self, design: tuple[str, ...]) -> tuple[bool, int, tuple[int, ...] | None]:
        """Rule 2: can some group assignment give the full channel field? Returns (ok, best channels, groups)."""
        if design in self._reachable_cache:
            return self._reachable_cache[design]
        best = 0
        found: tuple[int, ...] | None = None
        start = np.eye(self.channels, dtype=bool)
        seen: set[tuple[int, bytes]] = set()

        def visit(index: int, reach: np.ndarray, chosen: tuple[int, ...]) -> bool:
            nonlocal best, found
            if index == len(design):
                channels = int(reach.sum(axis=1).min())
                best = max(best, channels)
                if channels == self.channels:
                    found = chosen
                    return True
                return False
            key = (index, np.packbits(reach).tobytes())
            if key in seen:
                return False
            seen.add(key)
            for groups in self.options_for(design[index]):
                nxt, _ = _step(reach, design[index], groups)
                if visit(index + 1, nxt, (*chosen, groups)):
                    return True
            return False

        visit(0, start, ())
        answer = (found is not None, best, found)
        self._reachable_cache[design] = answer
        return answer

    def bottleneck_form(self, design: tuple[str, ...]) -> bool:
        """Bottleneck reading: length >= 3, first and last kernels pointwise."""
        return self.options.bottleneck and is_bottleneck_form(design)

    def redundancy(self, design: tuple[str, ...]) -> tuple[str | None, Chain | None]:
        """Rule 3: returns (reason it is redundant or None, witness chain when it survives)."""
        bottleneck = self.bottleneck_form(design)
        last = len(design) - 1
        k = self.options.kernel_size
        target = self.target
        failures: list[str] = []

        def field_of(reach: np.ndarray, spatial: int) -> InfoField:
            return InfoField(spatial, spatial, int(reach.sum(axis=1).min()))

        def visit(
            index: int, reach: np.ndarray, spatial: int, prev: InfoField, chosen: list[tuple[int, int | None]]
        ) -> list[tuple[int, int | None]] | None:
            if index == len(design):
                return chosen if prev == target else None
            kind = design[index]
            exempt = bottleneck and index == last
            for groups in self.options_for(kind):
                nxt, shuffle = _step(reach, kind, groups)
                nxt_spatial = spatial + (k - 1 if KERNEL_KINDS[kind].spatial else 0)
                new = field_of(nxt, nxt_spatial)
                if new.exceeds(target):
                    failures.append(f"{kind} at position {index + 1} makes the field {new}, larger than {target}")
                    continue
                if not exempt and not new.grows_from(prev):
                    failures.append(f"{kind} at position {index + 1} does not grow the field {prev}")
                    continue
                remaining = last - index
                if new == target and remaining > 0 and not (bottleneck and remaining == 1):
                    failures.append(
                        f"the field is complete after {'+'.join(design[: index + 1])}, before the chain ends"
                    )
                    continue
                found = visit(index + 1, nxt, nxt_spatial, new, [*chosen, (groups, shuffle)])
                if found is not None:
                    return found
            return None

        found = visit(0, np.eye(self.channels, dtype=bool), 1, InfoField(1, 1, 1), [])
        if found is None:
            return _most_telling(failures), None
        # (c) a proper sub-chain already reaching the field makes the extra kernels redundant
        protected = {0, last} if bottleneck else set()
        droppable = [i for i in range(len(design)) if i not in protected]
        for size in range(1, len(droppable) + 1):
            for dropped in itertools.combinations(droppable, size):
                sub = tuple(kind for i, kind in enumerate(design) if i not in dropped)
                if sub and self.spatial(sub) == k and self.reachable(sub)[0]:
                    return (
                        f"the sub-chain {'+'.join(sub)} already reaches the field {target}; "
                        f"{'+'.join(design[i] for i in dropped)} adds nothing",
                        None,
                    )
        kernels = tuple(
            Kernel(kind, groups=groups if KERNEL_KINDS[kind].grouping == "grouped" else 1, shuffle_in=shuffle,
                   kernel_size=k)
            for kind, (groups, shuffle) in zip(design, found, strict=True)
        )
        return None, Chain(self.channels, kernels)


def _most_telling(failures: list[str]) -> str:
    """Pick the failure message that best explains a redundancy removal."""
    for marker in ("complete after", "does not grow", "larger than"):
        for message in failures:
            if marker in message:
                return message
    return "no group assignment passes the redundancy checks"


def _repeat_reason(design: tuple[str, ...], mode: RepeatMatch) -> str | None:
    """Rule 1: the repeated pattern found, or None."""
    tokens = "".join(KERNEL_KINDS[kind].token for kind in design)
    match = _REPEAT.fullmatch(tokens) if mode == "whole" else _REPEAT.search(tokens)
    if match is None:
        return None
    start, end = match.span()
    unit = len(match.group(1))
    pattern = "+".join(design[start : start + unit])
    times = (end - start) // unit
    scope = "is" if mode == "whole" else "contains"
    return f"{scope} the pattern {pattern} repeated {times} times"


def param_formula(design: tuple[str, ...], *, bottleneck: bool, kernel_size: int = 3) -> str:
    """Parameter count of a design as a formula in C (input), F (output), K (bottleneck) and group numbers G1, G2..."""
    area = kernel_size * kernel_size
    terms: list[str] = []
    group_index = 0
    widths = ["C"]
    for i, kind in enumerate(design):
        last = i == len(design) - 1
        if KERNEL_KINDS[kind].grouping == "channelwise":
            out = widths[-1]
        elif last:
            out = "F"
        elif bottleneck:
            out = "K"
        else:
            out = "C"
        widths.append(out)
    for i, kind in enumerate(design):
        cin, cout = widths[i], widths[i + 1]
        info = KERNEL_KINDS[kind]
        scale = f"{area}·" if info.spatial else ""
        if info.grouping == "channelwise":
            terms.append(f"{scale}{cin}")
            continue
        product = f"{cin}²" if cin == cout else f"{cin}·{cout}"
        if info.grouping == "grouped":
            group_index += 1
            terms.append(f"{scale}{product}/G{group_index}")
        else:
            terms.append(f"{scale}{product}")
    return " + ".join(terms)


def evaluate_design(design: Iterable[str], options: SpaceOptions | None = None) -> Verdict:
    """Run the three rules on one design.

    Example:
        >>> evaluate_design(["GC", "DW"]).removed_by
        'field'
    """
    options = options or SpaceOptions()
    return _evaluate(tuple(design), options, _Searcher(options))


def _evaluate(design: tuple[str, ...], options: SpaceOptions, searcher: _Searcher) -> Verdict:
    """Evaluate one design with a shared searcher."""
    repeat = _repeat_reason(design, options.repeat_match)
    if repeat:
        return Verdict(design, "repeat", repeat)
    target = searcher.target
    spatial = searcher.spatial(design)
    if spatial != options.kernel_size:
        field = InfoField(spatial, spatial, options.channels if spatial > 1 else 1)
        relation = "larger" if spatial > options.kernel_size else "smaller"
        return Verdict(
            design, "field", f"spatial field {spatial}x{spatial} is {relation} than the standard {target}", field
        )
    ok, best, _ = searcher.reachable(design)
    if not ok:
        return Verdict(
            design,
            "field",
            f"channel field reaches at most {best} of {options.channels} channels for any group numbers",
            InfoField(spatial, spatial, best),
        )
    reason, witness = searcher.redundancy(design)
    bottleneck = searcher.bottleneck_form(design)
    if reason is not None:
        return Verdict(design, "redundancy", reason, target, bottleneck=bottleneck)
    return Verdict(
        design,
        None,
        "survives" + (" (bottleneck form: first and last kernels are width projections)" if bottleneck else ""),
        target,
        witness,
        param_formula(design, bottleneck=bottleneck, kernel_size=options.kernel_size),
        bottleneck,
    )


@lru_cache(maxsize=16)
def _cached_run(options: SpaceOptions) -> SpaceResult:
    """Run the funnel once per options set."""
    start = time.perf_counter()
    searcher = _Searcher(options)
    verdicts = [
        _evaluate(design, options, searcher)
        for length in range(1, options.max_length + 1)
        for design in itertools.product(SPARSE_KINDS, repeat=length)
    ]
    seconds = time.perf_counter() - start
    remaining = len(verdicts)
    funnel = [("all type sequences", 0, remaining)]
    for rule in RULES:
        removed = sum(1 for v in verdicts if v.removed_by == rule)
        remaining -= removed
        funnel.append((rule, removed, remaining))
    return SpaceResult(options, verdicts, seconds, funnel)


def prune_design_space(options: SpaceOptions | None = None, **kwargs: Any) -> SpaceResult:
    """Enumerate every type sequence and prune it with the three rules.

    Example:
        >>> result = prune_design_space(channels=64, max_length=6)
        >>> result.funnel[0][2], result.verdict("PWG+DW+PWG").survives
        (5460, True)
    """
    if options is None:
        options = SpaceOptions(**kwargs)
    elif kwargs:
        raise UserError("pass either options or keyword settings, not both")
    return _cached_run(options)
