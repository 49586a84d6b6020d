"""The study's pruner: Optuna's median rule, judging only trials whose LR has annealed, and its
verdict on a whole batch of trials from one read of the study."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from lrfind.schedules import get_schedule


# A trial whose LR will still fall by more than this factor before its run ends has not annealed:
# its validation score says little yet about where it will end, so the median rule waits.
STILL_FALLING = 2.0


class AnnealedFirst(optuna.pruners.BasePruner):
    """``inner``'s verdict, on trials whose LR has annealed: a trial whose schedule will still cut
    its LR by more than ``STILL_FALLING`` times before the end is not pruned yet. Without this, the
    median rule judges a warmup-stable-decay, a late multistep or a one-cycle before its decay, at
    its worst, and prunes the schedules that would have finished best; with it, fewer trials are
    pruned and none of the best (``experiments/pruning_replay.py`` replays whole studies both ways)."""

    def __init__(self, inner: optuna.pruners.BasePruner) -> None:
        self.inner = inner

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return self.inner.prune(study, trial) and not lr_still_falling(study, trial)


def lr_still_falling(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Whether the trial's LR, where it last reported, is more than ``STILL_FALLING`` times its LR
    at the end of the run (the schedule and run length the study recorded; a metric-driven
    schedule as if it made no further cut). False where any of that is missing."""
    total, per_epoch = study.user_attrs.get("steps"), study.user_attrs.get("steps_per_epoch")
    name, params, epoch = trial.user_attrs.get("schedule"), trial.user_attrs.get("params"), trial.last_step
    if None in (total, per_epoch, name, params, epoch):
        return False
    done = min(total, (epoch + 1) * per_epoch)                 # steps trained when it reported
    now, end = get_schedule(name).factor(np.array([done - 1, total - 1]), total, metrics=[], **params)
    return bool(now > STILL_FALLING * end)


# Each takes the number of epochs a trial trains. The median rule judges a trial from its second
# report on when there are three epochs or more: schedules that climb to a high peak (one-cycle,
# cyclic, warmup) are at their worst after the first epoch, and they are the ones that win at 3.
# It judges only trials that have annealed (``AnnealedFirst``).
PRUNERS: dict[str, Callable[[int], optuna.pruners.BasePruner]] = {
    "median": lambda epochs: AnnealedFirst(optuna.pruners.MedianPruner(n_startup_trials=5,
                                                                       n_warmup_steps=1 if epochs >= 3 else 0)),
    "hyperband": lambda epochs: optuna.pruners.HyperbandPruner(min_resource=1),
    "none": lambda epochs: optuna.pruners.NopPruner(),
}


class _Snapshot:
    """The study as read once, for a pruner that judges a whole batch: ``Trial.should_prune`` reads
    every trial from the storage again for each trial it judges (40 ms a call on SQLite)."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study
        self._trials = study.get_trials(deepcopy=False)

    def get_trials(self, deepcopy: bool = False, states=None) -> list[FrozenTrial]:
        return [t for t in self._trials if states is None or t.state in states]

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


def should_prune(study: optuna.Study, trials: list[optuna.Trial]) -> list[bool]:
    """The pruner's verdict on each trial of a batch that has just reported. Pruners that only
    read the study's trials (median, percentile, none) judge all of them from one read."""
    judge = study.pruner.inner if isinstance(study.pruner, AnnealedFirst) else study.pruner
    if not isinstance(judge, (optuna.pruners.PercentilePruner, optuna.pruners.NopPruner)):
        return [t.should_prune() for t in trials]
    snapshot = _Snapshot(study)
    frozen = {t.number: t for t in snapshot.trials}
    return [study.pruner.prune(snapshot, frozen[t.number]) for t in trials]
