"""One trial's row as ``trial.json`` holds it, its states, and what "complete and fully trained" means.

Example:
    >>> record = TrialRecord(trial=3, state="complete", accuracy=0.9, epochs=6, max_epochs=6)
    >>> fully_trained(record.to_dict()), TrialRecord.from_dict(record.to_dict()) == record
    (True, True)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["TrialRecord", "SETTLED_STATES", "TRAINED_STATES", "fully_trained", "fully_trained_mask"]

SETTLED_STATES: tuple[str, ...] = ("complete", "pruned", "failed", "infeasible", "screened")
"""States that say how a trial ended (``running`` is the only other one)."""
TRAINED_STATES: tuple[str, ...] = ("complete", "pruned", "failed")
"""States of a trial that was trained (counted by ``--trials``), unless it reused a duplicate's result."""


@dataclass
class TrialRecord:
    """One row of the trials table as written to ``trial.json`` (schema columns first, then extras)."""

    trial: int
    state: str
    accuracy: float | None = None
    test_accuracy: float | None = None
    params: int | None = None
    flops: int | None = None
    epochs: int | None = 0
    max_epochs: int = 0
    spec_id: str = ""
    design: str = ""
    widths: str = ""
    depths: str = ""
    arch_path: str = ""
    duration_s: float | None = None
    backend: str = ""
    study: str = ""
    reason: str = ""
    node: str = ""
    reused_from: int | None = None
    sampled: dict[str, Any] = field(default_factory=dict)
    baseline: str | None = None
    """The zoo network this trial trains as a study's baseline (its trial number is negative), else None."""
    screen: dict[str, Any] | None = None
    """Prescreening (``--prescreen``): the proxy, its score, the rank among how many, and ``chosen`` (a
    ``screened`` trial) or ``from_trial`` (the trained trial a screening chose), else None."""

    def to_dict(self) -> dict[str, Any]:
        """The row as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> TrialRecord:
        """A record from a trial.json row (unknown keys are ignored: rows of newer or older igcnas versions)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in known})

    @property
    def trained(self) -> bool:
        """True for a trial that was trained here (not decided before training, not a reused duplicate)."""
        return self.state in TRAINED_STATES and self.reused_from is None


def fully_trained(row: dict[str, Any]) -> bool:
    """True for a complete trial trained for its full fidelity (``epochs >= max_epochs``): a front candidate."""
    return row.get("state") == "complete" and int(row.get("epochs") or 0) >= int(row.get("max_epochs") or 0)


def fully_trained_mask(frame: Any) -> Any:
    """:func:`fully_trained` over a trials DataFrame: a boolean Series."""
    epochs = frame["epochs"].fillna(0)
    return (frame["state"].astype(str) == "complete") & (epochs >= frame["max_epochs"].fillna(0))
