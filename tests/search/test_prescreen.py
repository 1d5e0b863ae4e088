"""``igcnas search --prescreen K``: the best of K feasible candidates by a proxy is trained, the rest are screened."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import torch

from igcnas.data import DataBundle
from igcnas.errors import UserError
from igcnas.search import SearchConfig, load_study, run_search
from igcnas.search._prescreen import (
    DEFAULT_K,
    MEASURED_DATASETS,
    MIN_TABLE_ROWS,
    SCREENING,
    default_prescreen,
    resolve_proxy,
    stale_screening,
)
from igcnas.tabular import PROXY_COLUMNS, columns

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")


def _config(tmp_path: Path, **changes: Any) -> SearchConfig:
    base = {"space": str(REPO / "search_spaces/igc_cifar.yaml"), "trials": 3, "epochs": 1, "baselines": "none",
            "trials_dir": str(tmp_path / "trials"), "device": "cpu", "progress": False, "train_subset": 400,
            "pruner": "none", "sampler": "tpe", "max_params": 25_000}
    return SearchConfig(**{**base, **changes})


def test_optuna_trains_the_best_of_k_and_records_the_rest_screened(tmp_path: Path, digits400: DataBundle,
                                                                   flat_train: Any) -> None:
    config = _config(tmp_path, prescreen=4, prescreen_proxy="params")  # params: the largest candidate wins
    name = run_search(config, data=digits400, train_fn=flat_train)
    frame = load_study(name, trials_dir=config.trials_dir)
    trained = frame[frame.state == "complete"]
    screened = frame[frame.state == "screened"]
    assert len(trained) == 3 == len(flat_train.archs)  # --trials counts trained trials; screening never trains
    assert len(screened) == 3 * 4
    assert (frame[frame.state == "infeasible"].params > 25_000).all()
    previous = -1
    for row in trained.itertuples():
        info = row.screen
        assert info["proxy"] == "params" and info["rank"] == 1 and info["of"] == 4
        source = screened[screened.trial == info["from_trial"]].iloc[0]
        assert source.screen["chosen"] and source.spec_id == row.spec_id and source.params == row.params
        # the chosen one is the largest of its screening's four candidates (sampled since the last trained one)
        mine = screened[(screened.trial > previous) & (screened.trial < row.trial)]
        previous = row.trial
        assert len(mine) == 4 and source.params == mine.params.max()
        assert sorted(s["rank"] for s in mine.screen) == [1, 2, 3, 4]
        assert sum(bool(s["chosen"]) for s in mine.screen) == 1
    trained_ids = {row.spec_id for row in trained.itertuples()}
    assert all(isinstance(s["score"], float) for s in screened.screen)
    assert "prescreen: params" in screened.reason.iloc[0]
    # Optuna knows them as PRUNED (TPE learns from them); the front never holds them
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'trials' / 'igcnas.db'}")
    by_number = {t.number: t for t in study.trials}
    for number in screened.trial:
        t = by_number[int(number)]
        assert t.state == optuna.trial.TrialState.PRUNED and t.user_attrs["igcnas_state"] == "screened"
        assert t.user_attrs["screen"]["proxy"] == "params"
    from igcnas.analysis import pareto_front

    assert set(pareto_front(frame).spec_id) <= trained_ids


def test_prescreen_off_by_default_on_digits_and_errors_name_the_option(tmp_path: Path) -> None:
    assert SearchConfig().prescreen == 0
    with pytest.raises(UserError, match=r"--prescreen-proxy: 'zen' is not a proxy; choose from auto, params"):
        _config(tmp_path, prescreen=4, prescreen_proxy="zen")
    with pytest.raises(UserError, match=r"--prescreen: -1 must be auto or an integer >= 0"):
        _config(tmp_path, prescreen=-1)


def test_cli_refuses_a_negative_prescreen(capsys: pytest.CaptureFixture[str]) -> None:
    from igcnas.cli import main

    with pytest.raises(SystemExit):
        main(["search", "--prescreen", "-2"])
    assert "--prescreen: '-2' is not auto or an integer >= 0" in capsys.readouterr().err


def test_auto_prescreens_only_the_dataset_the_table_measured() -> None:
    assert SearchConfig(dataset="cifar10").prescreen == DEFAULT_K == 8
    assert "cifar10" in MEASURED_DATASETS and SearchConfig(dataset="digits").prescreen == 0
    assert SearchConfig(dataset="cifar10", prescreen=0).prescreen == 0
    assert SearchConfig(dataset="digits", prescreen=3).prescreen == 3
    assert SearchConfig(dataset="cifar10", prescreen="AUTO").prescreen == 8 and default_prescreen(" CIFAR10 ") == 8
    with pytest.raises(UserError, match="--prescreen: 'many' must be auto or an integer >= 0"):
        SearchConfig(prescreen="many")


def test_cli_prescreen_takes_auto_or_a_count() -> None:
    from igcnas.cli.search import _prescreen_k

    assert _prescreen_k("auto") == "auto" and _prescreen_k("AUTO") == "auto" and _prescreen_k("5") == 5


def _table(tmp_path: Path, n: int, best: str) -> Path:
    """A tabular benchmark CSV of ``n`` trained rows where ``best`` equals the accuracy and the rest are noise."""
    gen = torch.Generator().manual_seed(0)
    acc = torch.rand(n, generator=gen).tolist()
    data: dict[str, Any] = {c: [None] * n for c in columns()}
    for proxy in PROXY_COLUMNS:
        data[proxy] = acc if proxy == best else torch.rand(n, generator=gen).tolist()
    data.update(spec_id=[f"s{i}" for i in range(n)], name=[f"n{i}" for i in range(n)], source="igc_cifar",
                design="GC+PWG", size_bin="20k-50k", arch="{}", low_val_acc=acc, low_val_acc_1=acc,
                low_fidelity="x", low_seconds=1.0)
    path = tmp_path / "table.csv"
    pd.DataFrame(data).to_csv(path, index=False)
    return path


def test_auto_takes_the_tables_best_proxy_once_it_has_enough_rows(tmp_path: Path) -> None:
    proxy, why = resolve_proxy("auto", table=_table(tmp_path, MIN_TABLE_ROWS, "synflow"))
    assert proxy == "synflow" and "best Spearman (1.00)" in why
    small = resolve_proxy("auto", table=_table(tmp_path, MIN_TABLE_ROWS - 1, "synflow"))
    assert small[0] == "vote" and f"{MIN_TABLE_ROWS - 1} trained rows" in small[1]
    assert resolve_proxy("auto", table=tmp_path / "missing.csv")[0] == "vote"


def test_only_old_screening_trials_are_stale() -> None:
    study = optuna.create_study()
    trial = study.ask()
    trial.set_user_attr("igcnas_state", SCREENING)
    frozen = study.trials[0]
    assert not stale_screening(frozen)  # a live process is scoring it
    assert stale_screening(frozen, now=time.time() + 3600)
    other = study.ask()
    assert not stale_screening(study.trials[1], now=time.time() + 3600) and other.number == 1


@pytest.mark.slow
@pytest.mark.xdist_group("ray")
def test_ray_trains_the_chosen_candidates_own_trial(tmp_path: Path, digits400: DataBundle) -> None:
    pytest.importorskip("ray")
    config = _config(tmp_path, backend="ray", trials=2, prescreen=3, prescreen_proxy="params", pruner="none",
                     max_params=30_000)
    name = run_search(config, data=digits400)
    frame = load_study(name, trials_dir=config.trials_dir)
    assert not (frame.state == "running").any()
    trained = frame[frame.state.isin(["complete", "pruned", "failed"]) & frame.reused_from.isna()]
    screened = frame[frame.state == "screened"]
    assert len(trained) >= 2 and len(screened) >= 2 * 2
    for row in trained.itertuples():
        info = row.screen
        assert info["proxy"] == "params" and info["from_trial"] == row.trial and info["of"] == 3
        assert row.params <= 30_000
    assert not any(s["chosen"] for s in screened.screen)  # on Ray the chosen trial is trained itself
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'trials' / 'igcnas.db'}")
    for number in screened.trial:
        t = study.trials[int(number)]
        assert t.state == optuna.trial.TrialState.PRUNED and t.user_attrs["igcnas_state"] == "screened"


def test_an_architecture_trained_before_ranks_after_every_new_one(tmp_path: Path, digits400: DataBundle) -> None:
    from igcnas.search import load_space
    from igcnas.search._prescreen import Screener
    from igcnas.search.runner import TrialContext
    from igcnas.store import StudyStore

    config = _config(tmp_path, max_params=None, prescreen=3, prescreen_proxy="params")
    space = load_space(config.space)
    ctx = TrialContext(config, space, StudyStore(config.trials_dir, "unit"), data=digits400)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    told: list[tuple[int, str]] = []

    def ask() -> tuple[Any, dict[str, Any]]:
        trial = study.ask()
        return trial, space.define(trial)

    def screen(trained: Any) -> Any:
        return Screener(ctx, k=3, proxy="params").screen(
            ask, lambda t, p: told.append((t.number, "settled")),
            lambda t, r: (told.append((t.number, r.state)), study.tell(t, state=optuna.trial.TrialState.PRUNED)),
            limit=10, trained=trained)

    first = screen(set)
    assert first is not None and first.rank == 1 and told == [(n, "screened") for n in (0, 1, 2)]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))  # the same three candidates
    again = screen(lambda: {first.spec.id})  # ... with the best one trained before
    assert again is not None and again.spec.id != first.spec.id and again.score < first.score
