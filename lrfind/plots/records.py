"""What the study figures are drawn from: plain values, read out of a study by ``lrfind.study.figures``.

The figures never see an Optuna study, so they draw the same from a stored study, an in-memory
copy, or values made up in a test; the records pickle, for a painter that draws in another
process. Records that hold numpy arrays compare by identity (``eq=False``): two curves are alike
or not by what they draw, not by ``==``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TrialPoints:
    """One trial's validation scores after each of its epochs (empty where it reported none), in
    the order it was asked. ``state`` is Optuna's state name: COMPLETE, PRUNED, FAIL, RUNNING..."""
    number: int
    schedule: str
    state: str
    val_acc: tuple[float, ...] = ()
    val_loss: tuple[float, ...] = ()

    @property
    def complete(self) -> bool:
        return self.state == "COMPLETE"


@dataclass(frozen=True)
class StudyPoints:
    """Every trial of a study, for the history and the per-epoch figures. ``schedules`` is the order
    that gives each schedule its colour in every figure (the registry's); ``loss_label`` names the
    validation loss (lrfind's cross-entropy, a regression's squared error, a loop's own)."""
    trials: tuple[TrialPoints, ...]
    schedules: tuple[str, ...]
    loss_label: str


@dataclass(frozen=True, eq=False)
class LRCurve:
    """A trial's LR at every optimizer step (its peak LR times its schedule's factor), and what its
    legend entry says: the schedule, whether it cycled the momentum, and its last validation
    accuracy, or its loss where it has none."""
    number: int
    schedule: str
    lrs: np.ndarray
    momentum_cycled: bool
    val_acc: float | None
    val_loss: float | None


@dataclass(frozen=True, eq=False)
class RangeTestCurve:
    """The study's range test: its smoothed loss (NaN where it had none) at each LR it swept, and
    the LR range over which the loss fell."""
    lrs: np.ndarray
    smoothed: np.ndarray
    falling_range: tuple[float, float] | None = None


@dataclass(frozen=True)
class LRCurves:
    """The top trials' LR curves, best first, over a run of ``steps`` optimizer steps; beside them
    the range test the base LR came from (None when the base LR was given). ``metric`` is what
    ranked them: "accuracy" or "loss"."""
    curves: tuple[LRCurve, ...]
    schedules: tuple[str, ...]
    base_lr: float
    steps: int
    steps_per_epoch: int | None
    metric: str
    range_test: RangeTestCurve | None = None


@dataclass(frozen=True)
class Importances:
    """Parameter importances, most important first, as ``(name, importance)`` pairs; over how many
    complete trials, for which metric, and by which evaluator."""
    values: tuple[tuple[str, float], ...]
    complete: int
    metric: str
    evaluator: str = "PED-ANOVA"


__all__ = ["TrialPoints", "StudyPoints", "LRCurve", "RangeTestCurve", "LRCurves", "Importances"]
