"""The search benchmark on a tiny digits setup: every run's row, equal trials, equal epochs, sane shares."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from igcnas.bench.search import TimedTrain, bench_search
from igcnas.errors import UserError

SMALL = Path(__file__).resolve().parents[1] / "search" / "fixtures" / "small_igc.yaml"

_COLUMNS = {
    "run", "sampler", "pruner", "trials", "complete", "pruned", "infeasible", "epochs", "best_acc", "hypervolume",
    "train_s", "total_s", "setup_s", "overhead_s_per_trial", "overhead_share", "overhead_share_with_setup",
}


def test_bench_search_rows_on_digits(tmp_path: Path) -> None:
    # the small space: most of its candidates fit 50k (the paper-scale default's rarely do), so the test's time is
    # training, not sampling over-budget candidates
    rows = bench_search(dataset="digits", train_subset=400, trials=3, epochs=2, max_params=50_000,
                        space=str(SMALL), trials_dir=str(tmp_path))
    assert [r["run"] for r in rows] == ["random", "tpe", "nsga2", "nsga2+pareto"]
    assert [(r["sampler"], r["pruner"]) for r in rows] == [
        ("random", "none"), ("tpe", "none"), ("nsga2", "none"), ("nsga2", "pareto")]
    for row in rows:
        assert set(row) == _COLUMNS
        assert 0.0 <= row["overhead_share"] <= 1.0
        assert 0.0 <= row["overhead_share_with_setup"] <= 1.0
        assert 0.0 <= row["hypervolume"] <= 1.0
        assert 0.0 < row["train_s"] <= row["total_s"]
        assert row["setup_s"] <= row["total_s"]
        assert row["complete"] >= 1 and not math.isnan(row["best_acc"])
    unpruned = rows[:3]
    # Equal trial count, full fidelity: every trained trial ran all its epochs.
    assert all(r["trials"] == 3 and r["epochs"] == 6 and r["pruned"] == 0 for r in unpruned)
    pruned = rows[3]
    # Equal compute: the pruned run spends exactly the epochs of the unpruned NSGA-II run.
    assert pruned["epochs"] == rows[2]["epochs"]
    # Whether real training prunes depends on float rounding (the measured forms differ between machines); the
    # scripted test below pins that it does. Here: a pruned trial frees epochs for more trials, and only then.
    assert (pruned["pruned"] >= 1) == (pruned["trials"] > 3)
    # Each run has its own temporary study folder under trials_dir.
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 4


def test_pruning_at_equal_compute_trains_more_trials(tmp_path: Path, scripted_train: Any) -> None:
    # Scripted curves: every trial is less accurate than all before it, so one not smaller than the best so far
    # is dominated at rung 1 and stopped; the freed epochs go to extra trials.
    rows = bench_search(dataset="digits", train_subset=400, trials=3, epochs=2, max_params=50_000, space=str(SMALL),
                        samplers=("nsga2",), trials_dir=str(tmp_path), train_fn=scripted_train())
    unpruned, pruned = rows
    assert (unpruned["trials"], unpruned["epochs"], unpruned["pruned"]) == (3, 6, 0)
    assert pruned["epochs"] == 6
    assert pruned["pruned"] >= 1 and pruned["trials"] > 3


def test_a_pruned_run_that_finds_nothing_new_stops_short_instead_of_failing(
        tmp_path: Path, scripted_train: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The pruned run's second call of the search finds nothing new to train within its attempts (the search's
    # UserError, as under a tight budget in a small space): the row keeps what was trained and shows the
    # shortfall in its epochs.
    import igcnas.search

    real = igcnas.search.run_search
    pruned_calls = []

    def run_search(config: Any, **kwargs: Any) -> str:
        if config.pruner != "none":
            pruned_calls.append(config.trials)
            if len(pruned_calls) > 1:
                raise UserError(f"stopped after 80 sampled candidates with only 0 of {config.trials} trained")
        return real(config, **kwargs)

    monkeypatch.setattr(igcnas.search, "run_search", run_search)
    unpruned, pruned = bench_search(dataset="digits", train_subset=400, trials=4, epochs=2, max_params=50_000,
                                    space=str(SMALL), samplers=("nsga2",), trials_dir=str(tmp_path),
                                    train_fn=scripted_train())
    assert unpruned["epochs"] == 8
    assert pruned_calls[0] == 4 and len(pruned_calls) == 2
    assert 0 < pruned["epochs"] < 8 and pruned["complete"] + pruned["pruned"] == 4 and pruned["pruned"] >= 1


def test_timed_train_stops_at_the_budget() -> None:
    class Metrics:
        def __init__(self, epoch: int) -> None:
            self.epoch = epoch

    class Config:
        epochs = 3

    def fake_train(model: object, data: object, config: Config, *, on_epoch: object, **_: object) -> list[int]:
        done = []
        for epoch in range(1, config.epochs + 1):
            done.append(epoch)
            if on_epoch(Metrics(epoch)):  # type: ignore[operator]
                break
        return done

    timer = TimedTrain(budget=4, train_fn=fake_train)
    assert timer(None, None, Config(), on_epoch=lambda m: None) == [1, 2, 3]
    assert timer(None, None, Config(), on_epoch=lambda m: None) == [1]  # budget spent after 4 epochs
    assert (timer.calls, timer.epochs) == (2, 4)
    assert 0.0 <= timer.hook_s <= timer.train_s and timer.net_train_s >= 0.0


def test_bench_search_rejects_bad_counts() -> None:
    with pytest.raises(UserError, match="trials"):
        bench_search(dataset="digits", trials=0)
