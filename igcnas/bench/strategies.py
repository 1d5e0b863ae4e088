"""Search strategies compared on the tabular benchmark: lookups in the table instead of training.

The search space is the table's rows trained at the fidelity (``<fidelity>_val_acc`` not empty) with
``params <= max_params``. Each Optuna trial suggests a categorical ``design`` (one of the distinct
``source/design`` pairs of those rows) and a float ``log_params`` (log10 params, over the range of those rows);
the lookup maps it to the row of that design nearest in log10 params (a tie goes to the smaller row). "Training"
a candidate reads its per-epoch curve ``<fidelity>_val_acc_1..E`` and its final ``<fidelity>_val_acc``.

A strategy is a sampler (``random``, ``tpe``: multivariate TPE, ``nsga2``) on a two-objective study (accuracy
up, params down), with or without prescreening and with or without pruning (3 x 2 x 2 = 12 strategies):

* prescreening K: per trained candidate, K trials are asked and looked up, the one with the highest proxy score
  among those that are not twins (below; a twin only when all K are) is trained, the other K-1 are told
  ``PRUNED`` with user attrs ``igcnas_state="screened"`` and ``proxy_score`` (as ``igcnas search --prescreen K``
  does, so the sampler learns from them). NaN scores rank lowest;
* pruning: the curve is reported epoch by epoch to a single-objective side study of accuracy that owns a
  successive-halving pruner (``min_resource=1, reduction_factor=3``), as the Optuna backend does; a pruned
  candidate costs the epochs it ran and enters the main study as ``PRUNED``.

A looked-up row already run in this run (completed or pruned) is a twin: it is told again with the same outcome,
costs nothing and is not counted. Asks are capped at ``20 x N x max(K, 1)``, so a run that keeps proposing twins
ends (with fewer candidates than its budget).

Two budgets of equal cost, from one run per strategy and seed (the second continues the first): ``trials``: N
trained candidates (a pruned one counts as one); ``epochs``: E = N x the fidelity's epochs, spent on as many
candidates as it pays for (the candidate that would overshoot is cut short and counted pruned). Without a
pruner both budgets give the same N candidates.

Per run: the hypervolume of the (accuracy, params) front of the completed candidates against the reference
(accuracy 0, params ``max_params``), divided by ``max_params``, and the best completed accuracy. Per strategy and
budget: their mean and (sample) std over the seeds, and the mean candidates, epochs and asks spent.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from igcnas._table import render_table
from igcnas.errors import UserError
from igcnas.tabular import FIDELITIES, PROXY_COLUMNS, TABLE_FILE, read_table

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SAMPLERS", "MAX_PARAMS", "MIN_ROWS", "Strategy", "TabularSpace", "RunMetrics", "Run", "strategies",
           "hypervolume", "default_proxy", "proxy_spearman", "simulate", "bench_strategies", "render"]

SAMPLERS: tuple[str, ...] = ("random", "tpe", "nsga2")
MAX_PARAMS = 156_000
"""The default params budget: IGC-L24M2-D20's."""
MIN_ROWS = 8
"""Fewer trained rows under the budget than this make no search worth simulating."""
ASK_CAP = 20
"""Asks per run are capped at ``ASK_CAP x N x max(K, 1)``."""


@dataclass(frozen=True)
class Strategy:
    """A sampler, with prescreening of ``prescreen`` asks per candidate (0: off) and a pruner or none."""

    sampler: str
    prescreen: int = 0
    pruner: bool = False

    @property
    def name(self) -> str:
        """E.g. ``tpe+screen8+sha``."""
        return self.sampler + (f"+screen{self.prescreen}" if self.prescreen else "") + ("+sha" if self.pruner else "")


def strategies(*, prescreen: int = 8) -> tuple[Strategy, ...]:
    """The 12 strategies: each sampler x {no prescreen, prescreen ``prescreen``} x {no pruner, pruner}."""
    return tuple(Strategy(s, k, p) for s in SAMPLERS for k in (0, prescreen) for p in (False, True))


class TabularSpace:
    """The table's trained rows under a params budget, and the lookup from a trial's parameters to a row."""

    def __init__(self, frame: pd.DataFrame, *, name: str, max_params: int, fidelity: str, epochs: int) -> None:
        self.frame = frame.reset_index(drop=True)
        self.name, self.max_params, self.fidelity, self.epochs = name, max_params, fidelity, epochs
        keys = (self.frame["source"].astype(str) + "/" + self.frame["design"].astype(str)).to_numpy()
        self.keys: tuple[str, ...] = tuple(keys)
        self.designs: tuple[str, ...] = tuple(sorted(set(self.keys)))
        self.spec_ids: tuple[str, ...] = tuple(self.frame["spec_id"].astype(str))
        self.params = self.frame["params"].to_numpy(dtype=float)
        self.log_params = np.log10(np.maximum(self.params, 1.0))
        self.log_low, self.log_high = float(self.log_params.min()), float(self.log_params.max())
        self.accuracy = self.frame[f"{fidelity}_val_acc"].to_numpy(dtype=float)
        curves = self.frame[[f"{fidelity}_val_acc_{e}" for e in range(1, epochs + 1)]].to_numpy(dtype=float)
        self.curves = np.where(np.isnan(curves), self.accuracy[:, None], curves)  # a missing epoch: the final
        self._by_design: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for design in self.designs:
            rows = np.flatnonzero(keys == design)
            rows = rows[np.argsort(self.log_params[rows], kind="stable")]
            self._by_design[design] = (self.log_params[rows], rows)

    @classmethod
    def from_table(cls, table: str | Path | pd.DataFrame | None = None, *, max_params: int = MAX_PARAMS,
                   fidelity: str = "low") -> TabularSpace:
        """The space of ``table`` (a CSV, default the packaged table, or a DataFrame with its columns)."""
        import pandas as pd

        if fidelity not in FIDELITIES:
            raise UserError(f"--target: {fidelity!r} is not a fidelity of the table; choose from "
                            f"{', '.join(FIDELITIES)}")
        _check_count("max_params", max_params, "--max-params", minimum=1)
        if isinstance(table, pd.DataFrame):
            frame, name = table.copy(), "<frame>"
        else:
            frame, name = read_table(table), str(Path(table) if table is not None else TABLE_FILE)
        epochs = 0
        while f"{fidelity}_val_acc_{epochs + 1}" in frame.columns:
            epochs += 1
        needed = ["spec_id", "source", "design", "params", f"{fidelity}_val_acc", *PROXY_COLUMNS]
        missing = [c for c in needed if c not in frame.columns] + ([] if epochs else [f"{fidelity}_val_acc_1"])
        if missing:
            raise UserError(f"--table: {name} lacks the columns {', '.join(missing)}; it is not an igcnas tabular "
                            "benchmark (rebuild it with 'igcnas tabular build')")
        for column in ("params", *PROXY_COLUMNS, *(c for c in frame.columns if c.startswith(f"{fidelity}_val_acc"))):
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
        trained = frame[frame[f"{fidelity}_val_acc"].notna() & frame["params"].notna()]
        usable = trained[trained["params"] <= max_params]
        if len(usable) < MIN_ROWS:
            raise UserError(f"--max-params: {name} has {len(usable)} rows trained at {fidelity} fidelity with "
                            f"params <= {max_params:,} ({len(trained)} trained of {len(frame)}); need at least "
                            f"{MIN_ROWS}: raise --max-params or train more rows of the table")
        return cls(usable, name=name, max_params=max_params, fidelity=fidelity, epochs=epochs)

    def distributions(self) -> dict[str, Any]:
        """The trial's parameters: ``design`` (categorical) and ``log_params`` (float)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        return {"design": CategoricalDistribution(self.designs),
                "log_params": FloatDistribution(self.log_low, self.log_high)}

    def lookup(self, design: str, log_params: float) -> int:
        """The row of ``design`` nearest to ``log_params`` (the smaller one on a tie)."""
        logs, rows = self._by_design[design]
        j = int(np.searchsorted(logs, log_params))
        if j == 0:
            return int(rows[0])
        if j == len(logs) or log_params - logs[j - 1] <= logs[j] - log_params:
            return int(rows[j - 1])
        return int(rows[j])

    def scores(self, proxy: str) -> np.ndarray:
        """The proxy column (higher = predicted better); NaN counts as ``-inf``."""
        if proxy not in PROXY_COLUMNS:
            raise UserError(f"--proxy: {proxy!r} is not a proxy column of the table; choose from "
                            f"{', '.join(PROXY_COLUMNS)}")
        values = self.frame[proxy].to_numpy(dtype=float)
        return np.where(np.isnan(values), -np.inf, values)


def default_proxy(table: str | Path | pd.DataFrame | None) -> str:
    """The proxy ``igcnas search --prescreen-proxy auto`` takes from ``table``, so the simulation ranks as the
    search's default does (:func:`igcnas.search._prescreen.resolve_proxy`)."""
    from igcnas.search._prescreen import resolve_proxy

    return resolve_proxy("auto", table=table)[0]


def proxy_spearman(space: TabularSpace, proxy: str) -> float | None:
    """Spearman of the proxy column against the accuracy over the space's rows (None when undefined)."""
    from igcnas.bench.proxies import bench_proxies

    frame = space.frame.copy()
    frame[f"{space.fidelity}_val_acc"] = space.accuracy
    report = bench_proxies(table=frame, target=space.fidelity, bootstrap=0, bins=False)
    rho = next((row["spearman"] for row in report["rows"] if row["proxy"] == proxy), None)
    return None if rho is None else float(rho)


def hypervolume(points: Iterable[tuple[float, float]], *, max_params: float) -> float:
    """Exact 2-D hypervolume of ``(accuracy, params)`` points against (0, ``max_params``), over ``max_params``.

    Example:
        >>> hypervolume([(0.9, 2e5), (0.8, 1e5), (0.7, 3e5)], max_params=3e5)
        0.5666666666666667
    """
    area, best = 0.0, 0.0
    for params, acc in sorted((float(p), float(a)) for a, p in points):
        if acc > best and params < max_params:
            area += (max_params - params) * (acc - best)
            best = acc
    return area / max_params


@dataclass(frozen=True)
class RunMetrics:
    """One run's outcome under one budget."""

    hypervolume: float
    best_acc: float
    trained: int
    epochs: int
    asks: int
    pruned: int


@dataclass
class Run:
    """One strategy at one seed: its metrics under both budgets, and its studies (for inspection)."""

    strategy: Strategy
    seed: int
    trials: RunMetrics
    epochs: RunMetrics
    study: Any
    side: Any


def _sampler(name: str, seed: int, trials: int) -> Any:
    """The seeded sampler, sized like the Optuna backend's for ``trials`` trained trials."""
    from optuna.samplers import NSGAIISampler, RandomSampler, TPESampler

    if name == "random":
        return RandomSampler(seed=seed)
    if name == "tpe":
        return TPESampler(seed=seed, multivariate=True, constant_liar=True,
                          n_startup_trials=max(4, min(10, trials // 2)))
    if name == "nsga2":
        return NSGAIISampler(seed=seed, population_size=max(4, min(20, trials // 2)))
    raise UserError(f"sampler: {name!r} is not a sampler; choose from {', '.join(SAMPLERS)}")


def simulate(space: TabularSpace, strategy: Strategy, *, trials: int = 10, seed: int = 0,
             scores: np.ndarray | None = None) -> Run:
    """One run of ``strategy`` (see the module docstring); ``scores`` (one per row) rank prescreened asks.

    Optuna's logging is set to errors only, and its ExperimentalWarning is silenced during the run.
    """
    import optuna

    if strategy.prescreen and scores is None:
        raise UserError("scores: prescreening needs one proxy score per row of the space")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        return _simulate(space, strategy, trials=trials, seed=seed, scores=scores)


def _simulate(space: TabularSpace, strategy: Strategy, *, trials: int, seed: int, scores: np.ndarray | None) -> Run:
    """The body of :func:`simulate`."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=_sampler(strategy.sampler, seed, trials))
    side = (optuna.create_study(direction="maximize", pruner=optuna.pruners.SuccessiveHalvingPruner(
        min_resource=1, reduction_factor=3)) if strategy.pruner else None)
    distributions = space.distributions()
    k = max(strategy.prescreen, 1)
    budget, cap = trials * space.epochs, ASK_CAP * trials * k
    done: dict[int, bool] = {}  # row -> completed (False: pruned)
    candidates = used = asks = pruned = 0

    def snapshot() -> RunMetrics:
        complete = [r for r, ok in done.items() if ok]
        best = max((float(space.accuracy[r]) for r in complete), default=math.nan)
        front = hypervolume(((space.accuracy[r], space.params[r]) for r in complete), max_params=space.max_params)
        return RunMetrics(front, best, candidates, used, asks, pruned)

    at_trials: RunMetrics | None = None
    while asks + k <= cap:
        if at_trials is None and candidates >= trials:
            at_trials = snapshot()
        if used >= budget:
            break
        batch = [study.ask(distributions) for _ in range(k)]
        asks += k
        rows = [space.lookup(t.params["design"], t.params["log_params"]) for t in batch]
        # the best-scored ask that is not a twin (a twin's result is known); the best twin when all are
        pick = (max(range(k), key=lambda i: (rows[i] not in done, scores[rows[i]], -i))
                if scores is not None and k > 1 else 0)
        for i, (trial, row) in enumerate(zip(batch, rows, strict=True)):
            trial.set_user_attr("spec_id", space.spec_ids[row])
            if i != pick:
                trial.set_user_attr("igcnas_state", "screened")
                trial.set_user_attr("proxy_score", float(scores[row]) if scores is not None else math.nan)
                study.tell(trial, state=TrialState.PRUNED)
        trial, row = batch[pick], rows[pick]
        values = [float(space.accuracy[row]), float(space.params[row])]
        if row in done:  # a twin: reused, free, not counted
            trial.set_user_attr("igcnas_state", "reused")
            study.tell(trial, values if done[row] else None, state=None if done[row] else TrialState.PRUNED)
            continue
        limit = min(space.epochs, budget - used)
        side_trial = side.ask() if side is not None else None
        ran, complete = limit, limit == space.epochs
        for epoch in range(1, limit + 1):
            if side_trial is not None:
                side_trial.report(float(space.curves[row, epoch - 1]), epoch)
                if epoch < space.epochs and side_trial.should_prune():
                    ran, complete = epoch, False
                    break
        used, candidates, done[row] = used + ran, candidates + 1, complete
        trial.set_user_attr("epochs", ran)
        trial.set_user_attr("igcnas_state", "complete" if complete else "pruned")
        if side is not None and side_trial is not None:
            side.tell(side_trial, values[0] if complete else None, state=None if complete else TrialState.PRUNED)
        if complete:
            study.tell(trial, values)
        else:
            pruned += 1
            study.tell(trial, state=TrialState.PRUNED)
    final = snapshot()
    return Run(strategy, seed, at_trials or final, final, study, side)


def _check_count(field: str, value: object, option: str, *, minimum: int) -> int:
    """``value`` as an int >= ``minimum``, else a UserError naming the option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{option}: {value!r} is not a valid {field}; give an integer >= {minimum}")
    return value


def _stats(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample std (0 for one value) of the non-NaN values; None when there are none."""
    clean = np.array([v for v in values if not math.isnan(v)], dtype=float)
    if not len(clean):
        return None, None
    std = float(clean.std(ddof=1)) if len(clean) > 1 else 0.0
    return round(float(clean.mean()), 4), round(std, 4)


def bench_strategies(*, table: str | Path | pd.DataFrame | None = None, max_params: int = MAX_PARAMS,
                     trials: int = 10, seeds: int = 25, seed: int = 0, prescreen: int = 8, proxy: str | None = None,
                     fidelity: str = "low") -> list[dict[str, Any]]:
    """Compare the 12 search strategies on the tabular benchmark by lookups (see the module docstring).

    ``table``: a table CSV (default :data:`igcnas.tabular.TABLE_FILE`) or a DataFrame with its columns;
    ``max_params``: the params budget (also the hypervolume reference); ``trials``: N, the trained candidates of
    the ``trials`` budget (the ``epochs`` budget is N x the fidelity's epochs); ``seeds``: runs per strategy, with
    sampler seeds ``seed .. seed + seeds - 1``; ``prescreen``: K, the asks per candidate of the prescreening
    strategies; ``proxy``: the column that ranks them (default: :func:`default_proxy`); ``fidelity``: ``low`` or
    ``high``. Returns one row per budget and strategy (24), JSON-safe; :func:`render` prints them.

    Example:
        >>> import numpy as np, pandas as pd
        >>> from igcnas.tabular import columns
        >>> rng = np.random.default_rng(0)
        >>> t = pd.DataFrame({c: [np.nan] * 40 for c in columns()})
        >>> t["spec_id"], t["source"], t["design"] = [f"s{i}" for i in range(40)], "igc_cifar", ["A", "B"] * 20
        >>> t["params"] = rng.uniform(1e4, 1.5e5, 40)
        >>> for e in range(1, 5):
        ...     t[f"low_val_acc_{e}"] = 0.1 * e + rng.uniform(0, 0.3, 40)
        >>> t["low_val_acc"] = t["low_val_acc_4"]
        >>> t["vote"] = t["low_val_acc"]
        >>> rows = bench_strategies(table=t, trials=4, seeds=2)
        >>> len(rows), rows[0]["budget"], rows[0]["strategy"], rows[0]["proxy"]
        (24, 'trials', 'random', 'vote')
    """
    _check_count("number of trained candidates", trials, "--trials", minimum=1)
    _check_count("number of seeds", seeds, "--seeds", minimum=1)
    _check_count("number of prescreened asks", prescreen, "--prescreen", minimum=2)
    _check_count("seed", seed, "seed", minimum=0)
    space = TabularSpace.from_table(table, max_params=max_params, fidelity=fidelity)
    if proxy is None:
        proxy = default_proxy(table)
    rho = proxy_spearman(space, proxy)
    scores = space.scores(proxy)
    rows: list[dict[str, Any]] = []
    runs = {s: [simulate(space, s, trials=trials, seed=seed + i, scores=scores) for i in range(seeds)]
            for s in strategies(prescreen=prescreen)}
    for budget, limit in (("trials", f"N={trials}"), ("epochs", f"E={trials * space.epochs}")):
        for strategy, done in runs.items():
            metrics = [run.trials if budget == "trials" else run.epochs for run in done]
            hv_mean, hv_std = _stats([m.hypervolume for m in metrics])
            acc_mean, acc_std = _stats([m.best_acc for m in metrics])
            rows.append({
                "budget": budget, "limit": limit, "strategy": strategy.name, "sampler": strategy.sampler,
                "prescreen": strategy.prescreen, "pruner": "sha" if strategy.pruner else "none",
                "hv_mean": hv_mean, "hv_std": hv_std, "best_acc_mean": acc_mean, "best_acc_std": acc_std,
                "trained_mean": round(float(np.mean([m.trained for m in metrics])), 2),
                "pruned_mean": round(float(np.mean([m.pruned for m in metrics])), 2),
                "epochs_mean": round(float(np.mean([m.epochs for m in metrics])), 2),
                "asks_mean": round(float(np.mean([m.asks for m in metrics])), 2),
                "seeds": seeds, "proxy": proxy, "proxy_spearman": None if rho is None else round(rho, 4),
                "fidelity": fidelity, "max_params": max_params, "space_rows": len(space.frame),
                "designs": len(space.designs), "table": space.name,
            })
    return rows


def render(rows: Sequence[dict[str, Any]]) -> str:
    """The text table of :func:`bench_strategies` rows, under one line naming the setup."""
    if not rows:
        return "no strategies"

    def pm(mean: float | None, std: float | None) -> str:
        return "-" if mean is None or std is None else f"{mean:.4f} ± {std:.4f}"

    first = rows[0]
    rho = "" if first["proxy_spearman"] is None else f", spearman {first['proxy_spearman']:.3f}"
    limits = ", ".join(dict.fromkeys(f"{r['budget']} {r['limit']}" for r in rows))
    title = (f"search strategies on {first['table']}: {first['space_rows']} rows trained at {first['fidelity']} "
             f"fidelity with params <= {first['max_params']:,} ({first['designs']} designs); prescreen proxy "
             f"{first['proxy']}{rho}; budgets {limits}; {first['seeds']} seeds, mean ± std")
    shown = [{"budget": r["budget"], "strategy": r["strategy"], "hypervolume": pm(r["hv_mean"], r["hv_std"]),
              "best_acc": pm(r["best_acc_mean"], r["best_acc_std"]), "trained": r["trained_mean"],
              "pruned": r["pruned_mean"], "epochs": r["epochs_mean"], "asks": r["asks_mean"]} for r in rows]
    return render_table(shown, title=title)
