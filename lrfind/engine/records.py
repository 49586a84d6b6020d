"""One trial as the engine takes it (``TrialSpec``) and what happened to it (``TrialRecord``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrialSpec:
    """One trial: a schedule from the registry with its parameters, the seed of its weights, and
    ``lr_scale``, its peak LR relative to the base LR (above 1 only for schedules that warm up)."""

    schedule: str
    params: dict[str, Any]
    seed: int = 0
    lr_scale: float = 1.0


@dataclass
class TrialRecord:
    """What happened to one trial: per-epoch metrics, and how it ended."""

    spec: TrialSpec
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    status: str = "running"        # running, complete, pruned, failed
    failed_at: int | None = None   # global step of the first non-finite loss
    test_loss: float | None = None  # set by run_trials(score_on=...) at the end
    test_acc: float | None = None
