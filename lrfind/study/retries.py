"""Trials cut short (a worker killed, an error, Ctrl-C): failed, and a copy queued to run again
with the same seed, until one has been cut short ``MAX_RETRIES`` times and is given up."""

from __future__ import annotations

import logging
from typing import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)


# A trial cut short this many times (its worker killed, an error) is not run again.
MAX_RETRIES = 3


def original_number(trial: FrozenTrial | optuna.Trial) -> int:
    """The number of the trial that ``trial`` retries (its own when it retries none): a retry runs
    with that trial's seed, so that it is the same run as the one cut short."""
    return trial.user_attrs.get("retry_of", trial.number)


def requeue(study: optuna.Study, trial: FrozenTrial | optuna.Trial, counted: bool = True) -> None:
    """Put a copy of a trial that did not finish back in the queue (same parameters, same role, same
    seed), unless it was cut short ``MAX_RETRIES`` times already: a configuration that kills its
    worker (out of memory, say) is given up then, and the study records it (``given_up``).
    ``counted=False``: the user stopped it (Ctrl-C), which is no fault of the configuration's."""
    retries = trial.user_attrs.get("retries", 0) + counted
    number = original_number(trial)
    if retries > MAX_RETRIES:
        log.warning("trial %d (%s) was cut short %d times; it is not run again (the study goes on with other "
                    "trials)", number, trial.user_attrs.get("schedule", "?"), retries)
        study.set_user_attr("given_up", sorted({*study.user_attrs.get("given_up", []), number}))
        return
    attrs = {"baseline": trial.user_attrs["baseline"]} if trial.user_attrs.get("baseline") else {}
    study.enqueue_trial(trial.params, user_attrs={**attrs, "retry_of": number, "retries": retries})


def retry_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna's callback for a trial failed for its silent heartbeat (an RDB storage): requeued as
    on every other storage."""
    say_retried([trial], "its worker stopped beating")
    requeue(study, trial)


def abandon(study: optuna.Study, trial: optuna.Trial, error: BaseException) -> None:
    """A trial cut short by an exception (Ctrl-C, an error): failed, and a copy queued for whoever
    goes on. It does not count as finished."""
    trial.set_user_attr("interrupted", type(error).__name__)
    study.tell(trial, state=TrialState.FAIL)
    requeue(study, trial, counted=not isinstance(error, KeyboardInterrupt))


def fail_and_requeue(study: optuna.Study, t: FrozenTrial, reason: str) -> None:
    """Fail a running trial whose worker is gone (it does not count as finished) and queue a copy."""
    study._storage.set_trial_user_attr(t._trial_id, "interrupted", reason)
    study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    requeue(study, t)


def say_retried(trials: Sequence[FrozenTrial | int], why: str) -> None:
    """One line for the trials found cut short: they run again, each with its own seed."""
    if trials:
        numbers = sorted(t if isinstance(t, int) else t.number for t in trials)
        log.warning("%d interrupted trial%s (%s) run%s again from the start, with %s seed%s: %s",
                    len(numbers), "s" if len(numbers) != 1 else "", ", ".join(map(str, numbers)),
                    "" if len(numbers) != 1 else "s", "their" if len(numbers) != 1 else "its",
                    "s" if len(numbers) != 1 else "", why)
