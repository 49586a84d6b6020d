"""The report's figures of a study: the records ``lrfind.plots`` draws, read out of the study.

Everything here reads the stored study (trial attributes, the study's user attributes) and
nothing else, so ``lrfind show`` draws the same figures from any machine that reaches the
storage. The study wing knows what a trial's attributes mean (which trials rank top, a twin,
a peak LR, a schedule's curve); ``lrfind.plots`` only draws the plain records built here.

``plot_history`` and its siblings take the study and a path, as ``report.draw_figures`` calls
them; the ``*_points``, ``lr_curves`` and ``importances`` functions give the records alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import optuna.importance
from optuna.trial import FrozenTrial

from lrfind.plots import lr_curves as _lr_figure
from lrfind.plots import study as _study_figures
from lrfind.plots.records import Importances, LRCurve, LRCurves, RangeTestCurve, StudyPoints, TrialPoints
from lrfind.schedules import SCHEDULES, get_schedule
from lrfind.study.trials import is_twin, metric_of, peak_lr, ranked, val_acc, val_loss


def loss_label(study: optuna.Study) -> str:
    """What the loss is: lrfind's own for its data (cross-entropy, or mean squared error for
    regression targets); a ``tune_loop`` study's is the user's loss, named as such."""
    if (study.user_attrs.get("lrfind_setup") or {}).get("loop"):
        return "validation loss (your loop's)"
    regression = (study.user_attrs.get("data") or {}).get("regression")
    return f"validation loss ({'mean squared error' if regression else 'cross-entropy'})"


def study_points(study: optuna.Study) -> StudyPoints:
    """Every trial's validation scores per epoch, its schedule and state, in the order asked."""
    trials = tuple(TrialPoints(number=t.number, schedule=t.user_attrs.get("schedule", "?"), state=t.state.name,
                               val_acc=tuple(t.user_attrs.get("val_acc") or ()),
                               val_loss=tuple(t.user_attrs.get("val_loss") or ()))
                   for t in study.get_trials(deepcopy=False))
    return StudyPoints(trials=trials, schedules=tuple(SCHEDULES), loss_label=loss_label(study))


def top_trials(study: optuna.Study, n: int) -> list[FrozenTrial]:
    """The ``n`` best complete trials by the study's metric; a twin (a repeat of an earlier trial's
    choices, scored without running) would draw the same curve again."""
    return ranked(study, [t for t in study.get_trials(deepcopy=False)
                          if t.state.name == "COMPLETE" and not is_twin(t)])[:n]


def _curve(study: optuna.Study, t: FrozenTrial, total: int) -> LRCurve:
    """A trial's LR at each of the run's ``total`` steps: its schedule's factor, fed its own
    validation losses (plateau steps on them), times its peak LR."""
    schedule = get_schedule(t.user_attrs["schedule"])
    factor = schedule.factor(np.arange(total), total, metrics=t.user_attrs.get("val_loss", []), **t.user_attrs["params"])
    return LRCurve(number=t.number, schedule=schedule.name, lrs=peak_lr(study, t) * np.maximum(factor, 1e-12),
                   momentum_cycled=bool(t.user_attrs["params"].get("cycle_momentum")),
                   val_acc=val_acc(t), val_loss=val_loss(t))


def _range_test(stored: dict | None) -> RangeTestCurve | None:
    """The range test stored with the study (its JSON form), or None where the base LR was given."""
    if not stored:
        return None
    smoothed = np.array([np.nan if v is None else v for v in stored["smoothed"]])
    falling = stored.get("falling_range")
    return RangeTestCurve(lrs=np.asarray(stored["lrs"], dtype=float), smoothed=smoothed,
                          falling_range=tuple(falling) if falling else None)


def lr_curves(study: optuna.Study, n: int = 6) -> LRCurves:
    """The LR curves of the ``n`` best complete trials, and the range test beside them."""
    top = top_trials(study, n)
    if not top:
        raise ValueError("no complete trial")
    attrs = study.user_attrs
    total = attrs["steps"]
    return LRCurves(curves=tuple(_curve(study, t, total) for t in top), schedules=tuple(SCHEDULES),
                    base_lr=attrs["base_lr"], steps=total, steps_per_epoch=attrs.get("steps_per_epoch"),
                    metric=metric_of(study), range_test=_range_test(attrs.get("range_test")))


def importances(study: optuna.Study) -> Importances:
    """Optuna's parameter importances over the complete trials, by PED-ANOVA: it needs no model
    fit (fANOVA's random forest and scikit-learn's import cost seconds) and reads which parameter
    values set the top trials apart."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(complete) < 3:
        raise ValueError(f"importances need at least 3 complete trials, got {len(complete)}")
    values = optuna.importance.get_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    if not values:
        raise ValueError("no parameter is shared by all complete trials")
    return Importances(values=tuple((name, float(v)) for name, v in values.items()), complete=len(complete),
                       metric=metric_of(study), evaluator="PED-ANOVA")


# -- the report's figures: a study and a path in, the figure out ------------------------------------------
def plot_history(study: optuna.Study, *, path: str | Path):
    """Every trial's last validation score in the order asked, and the best so far."""
    return _study_figures.plot_history(study_points(study), path=path)


def plot_val_acc(study: optuna.Study, *, path: str | Path):
    """Every trial's validation accuracy after each epoch."""
    return _study_figures.plot_val_acc(study_points(study), path=path)


def plot_val_loss(study: optuna.Study, *, path: str | Path):
    """Every trial's validation loss after each epoch (studies scored on it)."""
    return _study_figures.plot_val_loss(study_points(study), path=path)


def plot_top_lr_curves(study: optuna.Study, *, path: str | Path, n: int = 6):
    """The LR of the ``n`` best trials at every step, beside the range test."""
    return _lr_figure.plot_top_lr_curves(lr_curves(study, n), path=path)


def plot_importances(study: optuna.Study, *, path: str | Path):
    """The parameters' importances for the study's metric."""
    return _study_figures.plot_importances(importances(study), path=path)


__all__ = ["loss_label", "study_points", "top_trials", "lr_curves", "importances", "plot_history", "plot_val_acc",
           "plot_val_loss", "plot_top_lr_curves", "plot_importances"]
