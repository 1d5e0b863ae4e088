"""``igcnas bench search``'s tabular part: search strategies simulated by lookups in synthetic tables."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from optuna.trial import TrialState

from igcnas.analysis import front_hypervolume
from igcnas.bench.strategies import (
    SAMPLERS,
    Strategy,
    TabularSpace,
    bench_strategies,
    default_proxy,
    hypervolume,
    proxy_spearman,
    render,
    simulate,
    strategies,
)
from igcnas.cli import main
from igcnas.errors import UserError
from igcnas.search._prescreen import resolve_proxy
from igcnas.tabular import FIDELITIES, PROXY_COLUMNS, columns, epoch_columns

N = 4
E = N * FIDELITIES["low"].epochs
NAMES = {f"{s}{k}{p}" for s in SAMPLERS for k in ("", "+screen8") for p in ("", "+sha")}


def _table(n: int = 44, *, seed: int = 3) -> pd.DataFrame:
    """``n`` rows of 6 designs (2 sources), 4 of them over 156k params and 4 untrained; ``vote`` is the accuracy,
    ``naswot`` noise; each curve rises to its final accuracy from a start that does not predict it well (so
    successive halving prunes some good ones too)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({c: [np.nan] * n for c in columns()}).astype(object)
    frame["spec_id"] = [f"id{i:03d}" for i in range(n)]
    frame["name"] = [f"row{i}" for i in range(n)]
    frame["source"] = ["igc_cifar" if i % 2 else "zoo" for i in range(n)]
    frame["design"] = [("GC+PWG", "PWG+GC", "IGC")[(i // 2) % 3] for i in range(n)]
    frame["size_bin"], frame["arch"] = "0-200k", "{}"
    params = np.round(np.exp(rng.uniform(math.log(4e3), math.log(1.5e5), n)))
    params[:4] = [2e5, 3e5, 4e5, 5e5]  # over the default budget
    final = 0.2 + 0.5 * rng.uniform(size=n)
    start = 0.1 + 0.3 * rng.uniform(size=n)
    for proxy in PROXY_COLUMNS:
        frame[proxy] = rng.normal(size=n)
    frame["params"], frame["flops"], frame["vote"] = params, params * 40, final
    for e, column in enumerate(epoch_columns("low"), start=1):
        frame[column] = start + (final - start) * e / 4
    frame["low_val_acc"] = final
    frame["low_fidelity"], frame["low_seconds"] = "synthetic", 1.0
    untrained = [4, 5, 6, 7]
    frame.loc[untrained, [*epoch_columns("low"), "low_val_acc", "low_seconds"]] = np.nan
    return frame


@pytest.fixture
def table_csv(tmp_path: Path) -> Path:
    path = tmp_path / "table.csv"
    _table().to_csv(path, index=False)
    assert tuple(pd.read_csv(path).columns) == columns()
    return path


@pytest.fixture
def space(table_csv: Path) -> TabularSpace:
    return TabularSpace.from_table(table_csv)


def test_space_is_the_trained_rows_under_the_budget(space: TabularSpace) -> None:
    assert len(space.frame) == 44 - 8 and space.epochs == 4
    assert set(space.designs) == {f"{s}/{d}" for s in ("igc_cifar", "zoo") for d in ("GC+PWG", "PWG+GC", "IGC")}
    assert (space.params <= 156_000).all() and not np.isnan(space.accuracy).any()
    design = space.designs[0]
    rows = [r for r in range(len(space.frame)) if space.keys[r] == design]
    for x in np.linspace(space.log_low, space.log_high, 17):  # the nearest row of that design in log10 params
        got = space.lookup(design, float(x))
        assert space.keys[got] == design
        assert abs(space.log_params[got] - x) == pytest.approx(min(abs(space.log_params[r] - x) for r in rows))


def test_twelve_strategies_two_budgets_json_safe(table_csv: Path) -> None:
    rows = bench_strategies(table=table_csv, trials=N, seeds=2, proxy="vote")
    assert len(rows) == 24 and len(strategies()) == 12
    for budget, limit in (("trials", f"N={N}"), ("epochs", f"E={E}")):
        part = [r for r in rows if r["budget"] == budget]
        assert {r["strategy"] for r in part} == NAMES and {r["limit"] for r in part} == {limit}
    for row in rows:
        assert 0.0 < row["hv_mean"] <= 1.0 and 0.2 <= row["best_acc_mean"] <= 0.7
        assert row["hv_std"] >= 0.0 and row["best_acc_std"] >= 0.0
        assert row["space_rows"] == 36 and row["designs"] == 6 and row["seeds"] == 2
    json.dumps(rows, allow_nan=False)
    text = render(rows)
    assert "proxy vote" in text and all(name in text for name in NAMES) and "±" in text


def test_deterministic_for_a_seed(space: TabularSpace) -> None:
    scores = space.scores("naswot")
    for strategy in strategies():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Optuna's ExperimentalWarning is silenced
            a, b = (simulate(space, strategy, trials=N, seed=7, scores=scores) for _ in range(2))
        assert (a.trials, a.epochs) == (b.trials, b.epochs)
        assert [t.params for t in a.study.trials] == [t.params for t in b.study.trials]
    other = simulate(space, Strategy("tpe", 8, True), trials=N, seed=8, scores=scores)
    assert [t.params for t in other.study.trials] != [t.params for t in a.study.trials]


def test_a_perfect_proxy_makes_prescreening_find_better(space: TabularSpace) -> None:
    scores = space.scores("vote")  # = accuracy
    gains = []
    for sampler in SAMPLERS:
        def mean_best(k: int, sampler: str = sampler) -> float:
            runs = [simulate(space, Strategy(sampler, k), trials=N, seed=s, scores=scores) for s in range(3)]
            return float(np.mean([run.trials.best_acc for run in runs]))

        gains.append(mean_best(8) - mean_best(0))
    assert all(g >= 0.0 for g in gains) and max(gains) > 0.01


def test_pruning_uses_fewer_epochs_at_equal_candidates(space: TabularSpace) -> None:
    for sampler in SAMPLERS:
        plain = [simulate(space, Strategy(sampler), trials=N, seed=s).trials for s in range(3)]
        pruned = [simulate(space, Strategy(sampler, pruner=True), trials=N, seed=s).trials for s in range(3)]
        assert all(m.trained == N and m.epochs == E and m.pruned == 0 for m in plain)
        assert all(m.trained == N and m.epochs <= E for m in pruned)
        assert sum(m.epochs for m in pruned) < sum(m.epochs for m in plain)
        assert sum(m.pruned for m in pruned) > 0


def test_equal_epochs_never_exceed_the_budget(space: TabularSpace) -> None:
    scores = space.scores("naswot")
    more = 0
    for strategy in strategies():
        for seed in range(2):
            run = simulate(space, strategy, trials=N, seed=seed, scores=scores)
            assert run.epochs.epochs <= E and run.trials.epochs <= E
            assert run.epochs.trained >= run.trials.trained
            if not strategy.pruner:
                assert run.epochs == run.trials
            more += run.epochs.trained > N
    assert more > 0  # pruning freed epochs for more candidates


def test_screened_trials_are_pruned_with_their_proxy_score(space: TabularSpace) -> None:
    scores = space.scores("naswot")
    row_of = {spec: r for r, spec in enumerate(space.spec_ids)}
    run = simulate(space, Strategy("tpe", 8, True), trials=N, seed=1, scores=scores)
    trials = run.study.trials
    screened = [t for t in trials if t.user_attrs.get("igcnas_state") == "screened"]
    assert len(screened) == 7 * len(trials) // 8 and len(trials) == run.epochs.asks
    for trial in screened:
        assert trial.state == TrialState.PRUNED
        assert trial.user_attrs["proxy_score"] == pytest.approx(scores[row_of[trial.user_attrs["spec_id"]]])
    seen: set[int] = set()
    for start in range(0, len(trials), 8):  # the trained one is the best-scored non-twin of its batch
        batch = trials[start:start + 8]
        picked = [t for t in batch if t.user_attrs["igcnas_state"] != "screened"]
        assert len(picked) == 1
        fresh = [scores[row_of[t.user_attrs["spec_id"]]] for t in batch
                 if row_of[t.user_attrs["spec_id"]] not in seen]
        pick_row = row_of[picked[0].user_attrs["spec_id"]]
        if fresh:
            assert pick_row not in seen and scores[pick_row] == max(fresh)
        seen.add(pick_row)
    trained = [t for t in trials if t.user_attrs["igcnas_state"] in ("complete", "pruned")]
    assert len(trained) == run.epochs.trained == len(run.side.trials)
    assert {t.state for t in trained if t.user_attrs["igcnas_state"] == "pruned"} == {TrialState.PRUNED}
    assert sum(t.user_attrs["epochs"] for t in trained) == run.epochs.epochs
    assert any(t.user_attrs["igcnas_state"] == "pruned" for t in trained)


def test_hypervolume_matches_the_analysis_one() -> None:
    rng = np.random.default_rng(0)
    acc, params = rng.uniform(0.1, 0.9, 30), rng.uniform(1e3, 1.5e5, 30)
    frame = pd.DataFrame({"accuracy": acc, "params": params})
    expected = front_hypervolume(frame, ("accuracy:max", "params:min"), {"accuracy": 0.0, "params": 1.56e5})
    assert hypervolume(zip(acc, params, strict=True), max_params=1.56e5) == pytest.approx(expected / 1.56e5)
    assert expected > 0 and hypervolume([], max_params=1.0) == 0.0


def test_default_proxy_is_the_searchs_auto_proxy(space: TabularSpace, table_csv: Path) -> None:
    assert default_proxy(table_csv) == resolve_proxy("auto", table=table_csv)[0] == "vote"
    assert proxy_spearman(space, "vote") == pytest.approx(1.0)
    rows = bench_strategies(table=table_csv, trials=2, seeds=1)
    assert {r["proxy"] for r in rows} == {"vote"} and rows[0]["proxy_spearman"] == pytest.approx(1.0)


def test_high_fidelity_runs_ten_epochs(tmp_path: Path) -> None:
    frame = _table()
    for e, column in enumerate(epoch_columns("high"), start=1):
        frame[column] = frame["low_val_acc"] * e / 10
    frame["high_val_acc"] = frame["low_val_acc"]
    frame.loc[20:, [*epoch_columns("high"), "high_val_acc"]] = np.nan
    space = TabularSpace.from_table(frame, fidelity="high")
    assert space.epochs == 10 and len(space.frame) == 12
    run = simulate(space, Strategy("random"), trials=3, seed=0)
    assert run.trials.epochs == 30


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"trials": 0}, "--trials: 0"),
    ({"seeds": 0}, "--seeds: 0"),
    ({"seeds": True}, "--seeds: True"),
    ({"prescreen": 1}, "--prescreen: 1 .* >= 2"),
    ({"proxy": "accuracy"}, "--proxy: 'accuracy' .*choose from params, flops, .*vote"),
    ({"max_params": 5_000}, "--max-params: .* rows .* need at least 8"),
    ({"fidelity": "mid"}, "--target: 'mid'"),
])
def test_bad_options_are_one_line_user_errors(table_csv: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(UserError, match=match) as info:
        bench_strategies(table=table_csv, **{"seeds": 1, "trials": 2, **kwargs})
    assert "\n" not in str(info.value)


def test_missing_table(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--table: .*nope.csv does not exist"):
        bench_strategies(table=tmp_path / "nope.csv")


def test_cli_tabular_part(table_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "search", "--table", str(table_csv), "--seeds", "2", "--trials", "3",
                 "--prescreen", "4", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 24 and {r["prescreen"] for r in rows} == {0, 4} and {r["budget"] for r in rows} == {
        "trials", "epochs"}
    assert main(["bench", "search", "--table", str(table_csv), "--seeds", "1", "--trials", "2",
                 "--proxy", "naswot"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("search strategies on ") and "proxy naswot" in out and "nsga2+screen8+sha" in out


def test_cli_live_part_needs_a_data_dir(table_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for part in ("live", "both"):
        with pytest.raises(SystemExit) as info:
            main(["bench", "search", "--part", part, "--table", str(table_csv), "--seeds", "1", "--trials", "2",
                  "--format", "json"])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("igcnas: error: bench search: give --data-dir") and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):
        main(["bench", "search", "--table", str(table_csv), "--prescreen", "1"])
    assert "--prescreen: 1" in capsys.readouterr().err


def test_cli_default_parts_with_a_data_dir(table_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import igcnas.bench.search
    import igcnas.tabular

    calls: list[dict] = []

    def fake_live(**kwargs: object) -> list[dict]:
        calls.append(kwargs)
        return [{"run": "random", "hypervolume": 0.5}]

    monkeypatch.setattr(igcnas.bench.search, "bench_search", fake_live)
    monkeypatch.setattr(igcnas.tabular, "TABLE_FILE", tmp_path / "absent.csv")
    base = ["bench", "search", "--data-dir", str(tmp_path), "--seeds", "1", "--format", "json"]
    assert main(base) == 0  # no packaged table yet: the live part only, with a note
    captured = capsys.readouterr()
    assert json.loads(captured.out) == [{"run": "random", "hypervolume": 0.5}]
    assert "running the live part only" in captured.err
    assert calls[-1]["trials"] == 8 and calls[-1]["max_params"] == 50_000
    assert main([*base, "--table", str(table_csv), "--trials", "2"]) == 0  # both: tabular rows, then live
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 25 and rows[-1]["run"] == "random" and rows[0]["budget"] == "trials"
    assert calls[-1]["trials"] == 2 and len(calls) == 2
    assert main(["bench", "search", "--data-dir", str(tmp_path), "--part", "tabular", "--table", str(table_csv),
                 "--seeds", "1", "--trials", "2"]) == 0
    assert len(calls) == 2 and "live search" not in capsys.readouterr().out
