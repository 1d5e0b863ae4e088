"""Prescreening (``igcnas search --prescreen K``): of K sampled candidates, train only the one a proxy ranks first.

For each trial to train, the backend's sampler proposes candidates, one Optuna ``ask`` each. A candidate over
the budget or with an invalid architecture is settled at once as the search always settles it (``infeasible``
with its constraint values, or ``failed``; never trained) and does not count towards K. The K feasible ones are
scored by one training-free proxy of :mod:`igcnas.proxies` on one seeded batch of 64 training images (``vote``:
the rank vote of synflow, jacob_cov and snip among the K). A score of ``-inf`` or NaN ranks last; ties go to the
earlier sample. An architecture the study has already trained ranks after every new one (training it again
would only reuse its result), so a good proxy does not pick the same top network over and over; the tabular
simulation of ``igcnas bench search`` follows the same rule.

Every candidate is told to Optuna as PRUNED and recorded in the trial store with state ``screened`` and its
score (``trial.json``'s ``screen``: proxy, score, rank, of how many, chosen or not), so a sampler that learns
from pruned trials (TPE) sees what was rejected, and none of them is ever trained. The chosen one is then
trained: on the Optuna backend as the next trial, with the same parameters (``enqueue_trial``); on the Ray
backend its own trial is trained. Either way the trained trial's ``screen`` names the proxy, its score and the
screening trial it came from.

``auto`` picks the proxy with the highest Spearman correlation on the packaged tabular benchmark
(:func:`igcnas.bench.proxies.bench_proxies`), once it holds at least :data:`MIN_TABLE_ROWS` trained rows; before
that, ``vote``. ``--prescreen auto`` (the default) is :data:`DEFAULT_K` on the datasets in
:data:`MEASURED_DATASETS`, where the tabular benchmark measured that prescreening raises the best accuracy at equal
trained candidates (``igcnas bench search``), and off elsewhere, where nothing measured it.

Example:
    >>> resolve_proxy("synflow")
    ('synflow', 'given')
    >>> default_prescreen("cifar10"), default_prescreen("digits")
    (8, 0)
    >>> resolve_proxy("zen")
    Traceback (most recent call last):
    ...
    igcnas.errors.UserError: --prescreen-proxy: 'zen' is not a proxy; choose from auto, params, flops, width, naswot, synflow, snip, grad_norm, jacob_cov, vote
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from igcnas.errors import UserError
from igcnas.proxies import PROXIES
from igcnas.search.runner import TrialContext
from igcnas.store import TrialRecord

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Candidate", "Screener", "UntrainedAdapter", "resolve_proxy", "default_prescreen", "screener_for",
           "PRESCREEN_PROXIES", "SCREENING", "MIN_TABLE_ROWS", "DEFAULT_K", "MEASURED_DATASETS", "STALE_SCREENING_S",
           "stale_screening"]

PRESCREEN_PROXIES: tuple[str, ...] = (*PROXIES, "vote")
"""Proxies ``--prescreen-proxy`` accepts (besides ``auto``)."""

SCREENING = "screening"
"""Value of an Optuna trial's ``igcnas_state`` user attr while it is being scored (it is told soon after)."""

STALE_SCREENING_S = 600.0
"""A trial still RUNNING as ``screening`` after this many seconds was left by a killed process."""

MIN_TABLE_ROWS = 16
"""Trained rows the tabular benchmark needs before ``auto`` trusts its proxy ranking."""

DEFAULT_K = 8
"""K of ``--prescreen auto`` where prescreening was measured to help (the K ``igcnas bench search`` compares)."""

MEASURED_DATASETS: tuple[str, ...] = ("cifar10",)
"""Datasets of the packaged tabular benchmark: ``--prescreen auto`` prescreens only on these."""

STATE_ATTR = "igcnas_state"


def default_prescreen(dataset: str) -> int:
    """K of ``--prescreen auto``: :data:`DEFAULT_K` on a dataset the tabular benchmark measured, else 0 (off)."""
    return DEFAULT_K if str(dataset).strip().lower() in MEASURED_DATASETS else 0


def resolve_proxy(name: str, *, table: str | Path | pd.DataFrame | None = None) -> tuple[str, str]:
    """The proxy that ``--prescreen-proxy NAME`` means and why (``given``, or how ``auto`` chose it)."""
    if name != "auto":
        if name not in PRESCREEN_PROXIES:
            raise UserError(f"--prescreen-proxy: {name!r} is not a proxy; choose from auto, "
                            f"{', '.join(PRESCREEN_PROXIES)}")
        return name, "given"
    from igcnas.bench.proxies import bench_proxies

    try:
        report = bench_proxies(table=table, bootstrap=0, bins=False)
    except UserError:
        report = {"n": 0, "rows": []}
    rows = [r for r in report["rows"] if r.get("spearman") is not None and math.isfinite(r["spearman"])]
    if int(report["n"]) < MIN_TABLE_ROWS or not rows:
        return "vote", (f"auto: the tabular benchmark has {int(report['n'])} trained rows (< {MIN_TABLE_ROWS}), "
                        "so the rank vote of synflow, jacob_cov and snip")
    best = max(rows, key=lambda r: float(r["spearman"]))
    return str(best["proxy"]), (f"auto: the best Spearman ({float(best['spearman']):.2f}) of the tabular "
                                f"benchmark's {int(report['n'])} trained rows")


def screener_for(ctx: TrialContext, *, line: Callable[[str], None]) -> Screener | None:
    """The run's :class:`Screener` when its ``--prescreen`` K is >= 2 (announced through ``line``), else None."""
    k = int(ctx.config.prescreen)
    if k < 2:
        return None
    proxy, why = resolve_proxy(ctx.config.prescreen_proxy)
    line(f"prescreening: each trained trial is the best of {k} feasible candidates by {proxy} ({why})")
    return Screener(ctx, k=k, proxy=proxy)


@dataclass
class Candidate:
    """One sampled, feasible candidate of a screening: its trial, parameters, spec and score."""

    trial: Any
    params: dict[str, Any]
    spec: Any
    cost: Any
    score: float = math.nan
    rank: int = 0

    @property
    def number(self) -> int:
        """The Optuna trial number (also its number in the trial store)."""
        return int(self.trial.number)


class Screener:
    """Picks the best of ``k`` feasible sampled candidates by ``proxy``; one per search process.

    ``ask()`` returns a new Optuna trial and its sampled parameters; ``settle(trial, params)`` records and tells
    an untrained (over-budget or invalid) candidate as the backend does; ``tell_screened(trial, record)`` tells
    a screened candidate PRUNED. See the module docstring.
    """

    def __init__(self, ctx: TrialContext, *, k: int, proxy: str) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise UserError(f"--prescreen: {k!r} must be an integer >= 2 (or 0/1 for no prescreening)")
        if proxy not in PRESCREEN_PROXIES:
            raise UserError(f"--prescreen-proxy: {proxy!r} is not a proxy; choose from {', '.join(PRESCREEN_PROXIES)}")
        self.ctx = ctx
        self.k = k
        self.proxy = proxy
        self._batch: tuple[Any, Any] | None = None

    def prime(self, data: Any) -> None:
        """Draw the scoring batch from ``data`` now (a Ray searcher carries the batch, not the dataset)."""
        from igcnas.proxies import proxy_batch

        self._batch = proxy_batch(data, seed=self.ctx.config.seed)

    def scores(self, specs: list[Any]) -> list[float]:
        """The proxy's score of each spec (higher = predicted better) on the study's scoring batch."""
        from igcnas.proxies import VOTE_PROXIES, proxy_batch, score, vote

        if self._batch is None:
            self._batch = proxy_batch(self.ctx.data, seed=self.ctx.config.seed)
        images, labels = self._batch
        budget = self.ctx.config.max_params
        seed = self.ctx.config.seed
        if self.proxy == "vote":
            rows = [score(spec, images, labels, proxies=VOTE_PROXIES, seed=seed, budget_params=budget)
                    for spec in specs]
            return [float(v) for v in vote(rows)]
        return [float(score(spec, images, labels, proxies=(self.proxy,), seed=seed, budget_params=budget)[self.proxy])
                for spec in specs]

    def screen(self, ask: Callable[[], tuple[Any, dict[str, Any]]], settle: Callable[[Any, dict[str, Any]], None],
               tell_screened: Callable[[Any, TrialRecord], None], *, limit: int,
               trained: Callable[[], Collection[str]] = frozenset,
               train_chosen: bool = False) -> Candidate | None:
        """Sample up to ``limit`` candidates until ``k`` are feasible, score them, record and tell them
        screened; returns the chosen one (None when no candidate was feasible).

        ``trained()``: the spec ids the study has trained already, read once per screening (they rank after the
        new ones).
        ``train_chosen``: the chosen candidate's own trial is trained (Ray), so it is neither recorded nor told
        screened; otherwise (Optuna) it is screened too and trained again as a new trial."""
        from igcnas.cost import count

        ctx = self.ctx
        candidates: list[Candidate] = []
        for _ in range(max(limit, 1)):
            trial, params = ask()
            try:
                spec, _, _ = ctx.make_spec(params)
            except UserError:
                settle(trial, params)  # invalid architecture: recorded failed, as the search always does
                continue
            cost = count(spec)
            _, over = ctx.violations(cost.params, cost.flops)
            if over:
                settle(trial, params)
                continue
            candidates.append(Candidate(trial, dict(params), spec, cost))
            if len(candidates) == self.k:
                break
        if not candidates:
            return None
        for candidate, value in zip(candidates, self.scores([c.spec for c in candidates]), strict=True):
            candidate.score = value
        done = trained()
        old = [c.spec.id in done for c in candidates]
        order = sorted(range(len(candidates)), key=lambda i: (old[i], -_rank_key(candidates[i].score), i))
        for rank, index in enumerate(order, start=1):
            candidates[index].rank = rank
        chosen = candidates[order[0]]
        for candidate in candidates:
            if train_chosen and candidate is chosen:
                chosen.trial.set_user_attr(STATE_ATTR, "chosen")
                continue
            record = self._record(candidate, of=len(candidates), chosen=candidate is chosen)
            record.arch_path = ctx.store.write_arch(candidate.number, candidate.spec.to_dict())
            ctx.store.write_record(record)
            tell_screened(candidate.trial, record)
        return chosen

    def screen_info(self, chosen: Candidate, *, of: int | None = None) -> dict[str, Any]:
        """The ``screen`` entry of the trained trial that ``chosen`` became."""
        return {"proxy": self.proxy, "score": _json_float(chosen.score), "rank": 1, "of": of or self.k,
                "from_trial": chosen.number}

    def _record(self, candidate: Candidate, *, of: int, chosen: bool) -> TrialRecord:
        """The ``screened`` trial.json row of a candidate."""
        record = self.ctx.base_record(candidate.number, candidate.spec, candidate.cost, candidate.params,
                                      backend=self.ctx.config.backend)
        record.state = "screened"
        record.epochs = 0
        record.screen = {"proxy": self.proxy, "score": _json_float(candidate.score), "rank": candidate.rank,
                         "of": of, "chosen": chosen}
        verdict = "chosen: trained" if chosen else "not trained"
        record.reason = f"prescreen: {self.proxy} {candidate.score:.4g}, rank {candidate.rank} of {of}; {verdict}"
        return record


class UntrainedAdapter:
    """The runner's adapter for a screening candidate settled before training (over budget or invalid)."""

    node = ""

    def __init__(self, backend: str) -> None:
        self.backend = backend

    def counted(self, record: TrialRecord, constraints: dict[str, float]) -> None:
        """Nothing to store: the backend tells the constraints with the outcome."""

    def twin(self, record: TrialRecord, key: str) -> dict[str, Any] | None:
        raise RuntimeError(f"trial {record.trial}: a feasible screening candidate reached the runner's twin check")

    def training(self, record: TrialRecord) -> None:
        raise RuntimeError(f"trial {record.trial}: a screening candidate must never be trained")

    def report(self, record: TrialRecord, metrics: Any) -> bool:
        raise RuntimeError(f"trial {record.trial}: a screening candidate must never be trained")


def stale_screening(trial: Any, *, now: float | None = None) -> bool:
    """True for an Optuna trial left RUNNING as ``screening`` by a process killed while scoring."""
    if trial.user_attrs.get(STATE_ATTR) != SCREENING or trial.datetime_start is None:
        return False
    return (now if now is not None else time.time()) - trial.datetime_start.timestamp() > STALE_SCREENING_S


def _rank_key(value: float) -> float:
    """A score for ranking: NaN and -inf are the lowest."""
    return value if math.isfinite(value) or value == math.inf else -math.inf


def _json_float(value: float) -> float | None:
    """A JSON-safe score (None for NaN and infinities)."""
    return float(value) if math.isfinite(value) else None
