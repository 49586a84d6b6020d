"""A trial's place in the search space: its schedule, the schedule's parameters, how high it peaks,
and its seed; for ``tune`` and ``tune_loop`` alike, asked or replayed from stored choices."""

from __future__ import annotations

from typing import Any

import optuna

from lrfind.engine.trials import TrialSpec
from lrfind.schedules import get_schedule
from lrfind.study import retries as _retries
from lrfind.study import trials as _study


def trial_spec(trial: optuna.trial.BaseTrial, cfg: Any, total: int, per_epoch: int,
               max_peak: float) -> TrialSpec:
    """A trial's schedule, its parameters and, for schedules that warm up, how high it peaks; for
    the plain constant, its LR around the base LR (``cfg``: a ``TuneConfig`` or a ``LoopConfig``;
    its ``search_constant_lr`` False: the constant at the base LR, as studies stored before lrfind
    searched it)."""
    name = trial.suggest_categorical("schedule", cfg.choices)
    schedule = get_schedule(name)
    params = schedule.suggest(trial, total, per_epoch)
    scale = 1.0
    if schedule.warms_up(params) and max_peak > 1:
        scale = trial.suggest_float("peak_scale", 1.0, max_peak, log=True)
    elif name == "constant" and not schedule.warms_up(params) and cfg.search_constant_lr is not False:
        scale = trial.suggest_float(_study.LR_SCALE, *_study.lr_scales(max_peak), log=True)
    # a retry is the run that was cut short: the same seed, its original trial's number
    seed = cfg.seed if cfg.same_init else \
        cfg.seed + (_retries.original_number(trial) if hasattr(trial, "number") else 0)
    return TrialSpec(name, params, seed=seed, lr_scale=scale)


def asked_spec(trial: optuna.Trial, cfg: Any, total: int, per_epoch: int, max_peak: float) -> TrialSpec:
    """An asked trial's spec (``trial_spec``), recorded with it for the report: schedule, parameters in
    steps, peak scale, and the seed of its initial weights."""
    spec = trial_spec(trial, cfg, total, per_epoch, max_peak)
    trial.set_user_attr("seed", spec.seed)
    trial.set_user_attr("schedule", spec.schedule)
    trial.set_user_attr("params", _study.jsonable(spec.params))
    trial.set_user_attr("peak_scale", spec.lr_scale)
    return spec
