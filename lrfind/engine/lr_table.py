"""Each trial's LR, and momentum where its schedule cycles it, at every step of the run: tables
that stay on the device, read by the step at the device's step counter (no host sync)."""

from __future__ import annotations

import numpy as np
import torch

from lrfind._device import exact_dtype
from lrfind.engine.optimizer import OptimizerConfig
from lrfind.engine.records import TrialSpec
from lrfind.schedules import Schedule


def trial_lrs(schedule: Schedule, spec: TrialSpec, base_lr: float, total: int, metrics: list[float]) -> np.ndarray:
    """One trial's LR at every step: base LR x its peak scale x its schedule's factor."""
    return base_lr * spec.lr_scale * schedule.factor(np.arange(total), total, metrics=metrics, **spec.params)


def lr_table(schedules: list[Schedule], specs: list[TrialSpec], base_lr: float, total: int,
             device: torch.device) -> torch.Tensor:
    """LR of every trial at every step, (K, total); metric-driven rows start at their first level."""
    rows = [trial_lrs(sched, spec, base_lr, total, metrics=[]) for sched, spec in zip(schedules, specs)]
    return torch.as_tensor(np.stack(rows), dtype=torch.float32, device=device)


def momentum_table(schedules: list[Schedule], specs: list[TrialSpec], total: int, opt: OptimizerConfig,
                   device: torch.device) -> torch.Tensor | None:
    """The momentum (Adam's beta1) of every trial at every step, (K, total) in ``exact_dtype``, where
    some trial's schedule cycles it (``cycle_momentum``); the other rows hold the optimizer's own.
    None where no trial cycles it."""
    steps = np.arange(total)
    rows = [sched.momentum(steps, total, **spec.params) for sched, spec in zip(schedules, specs)]
    if all(row is None for row in rows):
        return None
    own = opt.momentum if opt.name == "sgd" else opt.betas[0]
    return torch.as_tensor(np.stack([np.full(total, own) if row is None else row for row in rows]),
                           dtype=exact_dtype(device), device=device)
