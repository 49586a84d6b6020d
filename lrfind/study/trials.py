"""The stored trials of a study: what each says (its scores, its twin), ranked and counted.

A trial's record is its user attributes (per-epoch ``val_acc``, ``val_loss``, ...) and its state;
``tell`` writes it once a run ends, ``tell_twin`` copies a finished twin's. Everything else here
reads it back: the study's metric and which way is better, the best trial, the constant baseline.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from lrfind.engine.trials import TrialRecord


# The constant baseline's choices: the plain constant LR, without a warmup.
CONSTANT = {"schedule": "constant", "constant.use_warmup": False}

# The plain constant's LR, over the base LR, is searched too (its Optuna parameter ``lr_scale``, on a
# log scale from LR_SCALES[0] to LR_SCALES[1], or the warming schedules' max peak if lower): the
# range test's LR suits a schedule's peak, and the best constant LR lies where the run's length
# puts it. On MNIST, 3 epochs of 50,000 images, the best of a grid of constants lay at 0.3x-0.55x
# the base LR; 2 epochs of 22,000 (LeNet, an MLP), at 0.9x-1.3x (bench/verdict_cpu.json).
# BASELINE_SCALES are the baselines queued first, so that even a small study knows its best
# constant (a factor of 2 each side of the base LR; 2x no higher than the range allows); a study
# stored before lrfind searched the constant's LR keeps its one constant at the base LR.
LR_SCALE = "lr_scale"
LR_SCALES = (0.2, 2.0)
BASELINE_SCALES = (1.0, 0.5, 2.0)


def lr_scales(max_peak: float) -> tuple[float, float]:
    """The plain constant's LR scales searched: ``LR_SCALES``, up to the warming schedules' max peak
    where that is lower (and at least up to the base LR)."""
    low, high = LR_SCALES
    return low, max(1.0, min(high, max_peak))

# What trials are scored on: the record's per-epoch list, and which way is better.
METRICS = {"accuracy": ("val_acc", "maximize"), "loss": ("val_loss", "minimize")}


def objective(rec: "TrialRecord", metric: str) -> float:
    """A trial's score after its latest epoch: validation accuracy or loss."""
    return getattr(rec, METRICS[metric][0])[-1]


def metric_of(study: optuna.Study) -> str:
    """The study's metric: ``loss`` for a study that minimises, else accuracy (every older study)."""
    return "loss" if study.direction == optuna.study.StudyDirection.MINIMIZE else "accuracy"


def sign(study: optuna.Study) -> float:
    """+1 when a higher score is better (accuracy), -1 when lower is (loss): ``sign * (a - b) > 0``
    says a beat b."""
    return -1.0 if metric_of(study) == "loss" else 1.0


def val_acc(t: FrozenTrial, study: optuna.Study | None = None) -> float | None:
    """A trial's validation accuracy after its last epoch, whatever the study's metric (its value in
    a study scored on accuracy, when the per-epoch record is missing)."""
    accs = t.user_attrs.get("val_acc")
    if accs:
        return accs[-1]
    return t.value if study is not None and metric_of(study) == "accuracy" else None


def val_loss(t: FrozenTrial) -> float | None:
    """A trial's validation loss after its last epoch (None before its first)."""
    losses = t.user_attrs.get("val_loss")
    return losses[-1] if losses else None


def ranked(study: optuna.Study, trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Best first by the study's metric; trials without a value (pruned, failed) by their last
    report, after those with one."""
    key, better = METRICS[metric_of(study)][0], sign(study)

    def score(t: FrozenTrial) -> tuple[int, float]:
        if t.value is not None:
            return 1, better * t.value
        last = (t.user_attrs.get(key) or [None])[-1]
        return 0, better * last if last is not None and math.isfinite(last) else -math.inf
    return sorted(trials, key=score, reverse=True)


def is_finished(t: FrozenTrial) -> bool:
    """Finished trials count towards the requested number: complete, pruned, or failed on NaN."""
    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        t.state == TrialState.FAIL and t.user_attrs.get("failure") == "nan")


def finished(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if is_finished(t)]


def counts(study: optuna.Study) -> tuple[int, int, int]:
    """(finished runs, finished twins, running) trials. A twin (``is_twin``) does not count as a run."""
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if is_finished(t)]
    twins = sum(map(is_twin, finished))
    return len(finished) - twins, twins, sum(t.state == TrialState.RUNNING for t in trials)


def tell(study: optuna.Study, trial: optuna.Trial, rec: "TrialRecord", metric: str = "accuracy") -> None:
    """Store a trial's history and tell Optuna how it ended, scored by ``metric``."""
    trial.set_user_attr("val_acc", rec.val_acc)
    trial.set_user_attr("val_loss", rec.val_loss)
    trial.set_user_attr("train_loss", rec.train_loss)
    trial.set_user_attr("epochs_run", max(len(rec.val_loss), len(rec.val_acc)))   # regression: no accuracy
    if rec.status == "complete":
        study.tell(trial, objective(rec, metric))
    elif rec.status == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        trial.set_user_attr("failure", "nan")
        trial.set_user_attr("failed_at_step", rec.failed_at)
        study.tell(trial, state=TrialState.FAIL)


def twin_of(study: optuna.Study, trial: optuna.Trial,
            complete: Sequence[FrozenTrial | optuna.Trial] | None = None) -> FrozenTrial | optuna.Trial | None:
    """A complete trial that made the same choices (Optuna's samplers repeat a good one), found in
    ``complete`` (the study's complete trials, read once for a batch; or the batch's trials before
    it) or else in the study."""
    if complete is None:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return next((t for t in complete if t.params == trial.params), None)


def is_twin(trial: FrozenTrial) -> bool:
    """Whether the trial repeated an earlier one's choices from the same weights, and took its
    score without running (``tell_twin``)."""
    return "duplicate_of" in trial.user_attrs


def tell_twin(study: optuna.Study, trial: optuna.Trial, twin: FrozenTrial) -> None:
    """Score ``trial`` as its finished ``twin`` ended, without running it: the same schedule from the
    same weights on the same batches is the same run (complete with its score, pruned, or failed on
    NaN). Twins do not count towards the trials asked for."""
    for key in ("val_acc", "val_loss", "train_loss", "epochs_run", "failure", "failed_at_step"):
        if key in twin.user_attrs:
            trial.set_user_attr(key, twin.user_attrs[key])
    trial.set_user_attr("duplicate_of", twin.number)
    for epoch, value in sorted(twin.intermediate_values.items()):    # its curve, for optuna-dashboard too
        trial.report(value, epoch)
    if twin.state == TrialState.COMPLETE:
        study.tell(trial, twin.value)
    else:
        study.tell(trial, state=twin.state)


def best(study: optuna.Study, where: Callable[[FrozenTrial], bool] = lambda t: True) -> FrozenTrial | None:
    """The complete trial with the best score, by the study's metric (of those ``where`` accepts)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if where(t)]
    return ranked(study, done)[0] if done else None


def is_plain_constant(t: FrozenTrial) -> bool:
    """Whether a trial ran the plain constant LR: no warmup, at the base LR or a fraction of it. A
    constant LR after a warmup is a schedule like the others."""
    # a run too short for a warmup (fewer than 4 steps) is never asked whether to warm up
    return (t.params.get("schedule") == "constant" and not t.params.get("constant.use_warmup", False)
            and set(t.params) <= {*CONSTANT, LR_SCALE})


def constant_baseline(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial of the plain constant LR, whatever its LR: the baseline every schedule
    is judged against (the best constant LR, not the constant at the base LR, which suits a peak)."""
    return best(study, where=is_plain_constant)


def constants(study: optuna.Study) -> list[FrozenTrial]:
    """The complete trials of the plain constant LR, best first."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return ranked(study, [t for t in done if is_plain_constant(t) and not is_twin(t)])


def baselines(trials: int, searched: bool | None, max_peak: float) -> dict[float, dict[str, Any]]:
    """The constant trials queued before any is asked, by their LR scale: with the constant's LR
    searched, up to 3 of ``BASELINE_SCALES`` (one per 4 trials asked for, at least the base LR's;
    none above ``lr_scales(max_peak)``); else the constant at the base LR alone (a study stored
    before lrfind searched it)."""
    if searched is False:
        return {1.0: dict(CONSTANT)}
    high = lr_scales(max_peak)[1]
    scales = list(dict.fromkeys(min(s, high) for s in BASELINE_SCALES))
    return {s: {**CONSTANT, LR_SCALE: s} for s in scales[:min(len(scales), max(1, trials // 4))]}


def baseline_scale(t: FrozenTrial) -> float | None:
    """The LR scale of a queued constant baseline (its ``baseline`` attribute: True for the base
    LR's, in studies stored before lrfind searched the constant's LR), or None for another trial."""
    mark = t.user_attrs.get("baseline")
    return None if not mark else 1.0 if mark is True else float(mark)


def peak_lr(study: optuna.Study, trial: FrozenTrial) -> float:
    """The highest LR of a trial's schedule: the base LR, times its peak scale if it warms up (the
    plain constant's: its LR scale)."""
    return study.user_attrs.get("base_lr", float("nan")) * trial.user_attrs.get("peak_scale", 1.0)


def jsonable(value: Any) -> Any:
    """Plain Python for JSON and Optuna attributes: numpy scalars and tuples converted."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
