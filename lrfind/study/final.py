"""The last step both kinds of study share: the best schedule and the best constant LR of the
search, run again over several seeds (``tune``'s stage 3 on the test set, ``tune_loop``'s runs with
new seeds), and what their paired runs say about decay."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial

from lrfind.engine.records import TrialSpec
from lrfind.schedules import stored_choices
from lrfind.study import trials as _study
from lrfind.study.best import paired_gain
from lrfind.study.space import trial_spec
from lrfind.study.spec import StudySpec


def picked(study: optuna.Study) -> dict[str, FrozenTrial]:
    """The trials to run again: the best (``"best"``) and the best constant LR (``"constant"``),
    one trial where the constant itself was the best; empty where no trial completed."""
    best, constant = _study.best(study), _study.constant_baseline(study)
    if best is None:
        return {}
    return {"best": best} if constant is None or constant.number == best.number else \
        {"best": best, "constant": constant}


def replayed(trial: FrozenTrial, spec: StudySpec, total: int, per_epoch: int, max_peak: float) -> TrialSpec:
    """The trial's schedule for a run of ``total`` steps (the search space is relative to the run,
    so replaying its choices rescales its steps)."""
    return trial_spec(optuna.trial.FixedTrial(stored_choices(trial.params)), spec, total, per_epoch, max_peak)


def compared(study: optuna.Study, out: dict[str, Any], key: str) -> dict[str, Any]:
    """``out`` (each side's runs) with the constant's side filled in where the constant was the best
    trial itself, and the paired gain on ``key`` where there are two sides."""
    if "constant" not in out and "best" in out and _study.constant_baseline(study) is not None:
        out["constant"] = dict(out["best"])
    gain = paired_gain(out, key, _study.sign(study))
    if gain is not None:
        out["gain"] = gain
    return out
