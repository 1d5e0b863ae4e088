"""A seeded study gives the same trials table and front as the committed fixture (the search's behaviour pinned).

The trainer is a deterministic stand-in: a trial's accuracy curve is a function of its architecture's spec id and
parameter count only, so the table depends on the sampler, the space, counting, budgets, duplicates and the
pruner, not on floating-point training. Regenerate the fixture (after a deliberate behaviour change) with
``IGCNAS_REGENERATE_FIXTURES=1 pytest tests/search/test_seeded_front.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from igcnas.analysis import pareto_front
from igcnas.data import load_data
from igcnas.search import SearchConfig, load_study, run_search
from igcnas.testing import replay_curve
from igcnas.train import TrainResult

FIXTURE = Path(__file__).with_name("fixtures") / "seeded_front.json"
COLUMNS = ("trial", "state", "spec_id", "params", "flops", "epochs", "accuracy", "reused_from")


def _curve(arch: dict[str, Any], epochs: int) -> list[float]:
    """Accuracy per epoch: rises with the size of the network, with a spread fixed by its spec id."""
    from igcnas.arch import ArchSpec
    from igcnas.cost import count

    spec = ArchSpec.from_dict(arch)
    final = 0.5 + 0.3 * min(1.0, count(spec).params / 50_000) + 0.15 * (int(spec.id[:4], 16) / 0xFFFF)
    return [round(final * (e / epochs) ** 0.5, 6) for e in range(1, epochs + 1)]


def _train(model: Any, data: Any, config: Any, *, on_epoch: Any, checkpoint_dir: Any, arch: Any,
           progress: bool) -> TrainResult:
    """A deterministic stand-in for igcnas.train.train."""
    return replay_curve(_curve(arch, config.epochs), on_epoch=on_epoch, checkpoint_dir=checkpoint_dir)


def _row(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row[k] for k in COLUMNS}
    out["accuracy"] = None if out["accuracy"] != out["accuracy"] else round(float(out["accuracy"]), 6)
    out["reused_from"] = None if row["reused_from"] is None or str(row["reused_from"]) == "<NA>" \
        else int(row["reused_from"])
    return out


@pytest.mark.parametrize("pruner", ["pareto"])
def test_a_seeded_study_reproduces_the_committed_front(tmp_path: Path, pruner: str) -> None:
    config = SearchConfig(trials=10, epochs=4, max_params=40_000, seed=3, pruner=pruner, device="cpu",
                          progress=False, trials_dir=str(tmp_path / "trials"), train_subset=200)
    name = run_search(config, data=load_data("digits", train_subset=200, seed=3), train_fn=_train)
    frame = load_study(name, trials_dir=config.trials_dir)
    table = [_row(r) for r in frame.to_dict("records")]
    front = sorted(int(t) for t in pareto_front(frame).trial)
    got = {"study": name, "trials": table, "front": front}
    if os.environ.get("IGCNAS_REGENERATE_FIXTURES"):
        FIXTURE.parent.mkdir(exist_ok=True)
        FIXTURE.write_text(json.dumps(got, indent=1) + "\n")
    expected = json.loads(FIXTURE.read_text())
    assert got["trials"] == expected["trials"]
    assert got["front"] == expected["front"] and got["study"] == expected["study"]
    assert {"complete", "pruned", "infeasible"} <= {r["state"] for r in table}  # the fixture exercises all three
