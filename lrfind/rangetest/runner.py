"""The sweeps of a range test: ``range_test(model, loader, config)`` sweeps ``config.repeats``
times from the same start, stops each where the loss diverges, puts the model, its optimizer and
the RNGs back afterwards (also when a sweep raises), and, when the repeats disagree, sweeps as
many times again at half the pace and takes those."""

from __future__ import annotations

import logging
import math
import random
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from lrfind import _threads
from lrfind._errors import warn_at_users_line
from lrfind._output import progress_bar
from lrfind.rangetest import state as _state
from lrfind.rangetest.batches import Batches, one_shot
from lrfind.rangetest.config import RangeTestConfig
from lrfind.rangetest.distributed import Processes
from lrfind.rangetest.plan import SweepPlan
from lrfind.rangetest.result import (RangeTestResult, RangeTestWarning, describe_sweeps, median_index,
    shallow_sweeps)
from lrfind.rangetest.steps import Step, make_step
from lrfind.rangetest.sweep import Sweep

log = logging.getLogger(__name__)


def range_test(model: nn.Module, loader: Iterable, config: RangeTestConfig) -> RangeTestResult:
    """``find_lr``'s sweeps, its result and its warnings. With ``slow_down``, repeats that
    disagree are swept again at half the pace, with the optimizer and steps resolved again."""
    if config.repeats > 1 and one_shot(loader):
        raise ValueError(f"repeats={config.repeats} sweeps the loader {config.repeats} times, but it is a "
                         f"{type(loader).__name__}, used up by one pass; pass something that can be iterated "
                         f"again (a DataLoader, a list of batches) or repeats=1")
    with _threads.restored():          # lrfind's count of CPU threads, put back after the sweeps
        _threads.apply(config.threads, what="the range test")
        return _slowed_if_they_disagree(model, loader, config)


def _slowed_if_they_disagree(model: nn.Module, loader: Iterable, config: RangeTestConfig) -> RangeTestResult:
    plan = SweepPlan.of(model, config)
    result = _sweeps(model, loader, config, plan)
    if config.slow_down and result.repeats_disagree:
        sweep = config.sweep
        log.warning("range test: the %d sweeps of %d steps disagree (%s); sweeping again at half the pace, %d steps",
                    config.repeats, sweep.num_iter, describe_sweeps(result.seed_lrs, result.shallow),
                    2 * sweep.num_iter)
        slower = config.slower()
        slower_result = _sweeps(model, loader, slower, SweepPlan.of(model, slower))
        slower_result.config["faster_sweeps"] = {"num_iter": sweep.num_iter, "seed_lrs": result.seed_lrs,
                                                 "shallow": result.shallow}
        result = slower_result
    # one warning each, a missing suggestion first: `optimizer(lr=result.suggested_lr)` would fail far from here
    for text in result.warnings if config.warn and plan.first else []:
        warn_at_users_line(text, RangeTestWarning)
    return result


def _sweeps(model: nn.Module, loader: Iterable, config: RangeTestConfig, plan: SweepPlan) -> RangeTestResult:
    """Every repeat's sweep, each from the state the model, its optimizer and the RNGs had before
    the first (and restored to it afterwards); their result."""
    generator = getattr(loader, "generator", None)
    generator = generator if isinstance(generator, torch.Generator) else None
    snapshot = _state.take(model, plan.optimizer)
    loader_rng = generator.get_state() if generator is not None else None
    runs: list[_Run] = []
    try:
        _start_persistent_workers(loader)
        stepper, step = make_step(model, config, plan)
        with progress_bar(total=config.repeats * config.sweep.num_iter, desc="range test",
                          disable=not (config.progress and plan.first), leave=False, dynamic_ncols=True) as bar:
            for r, s in enumerate(config.seeds):
                if r:
                    _state.restore(snapshot, plan.optimizer)
                    stepper.reset()
                if s is not None:
                    _seed_everything(s, generator)
                batches = Batches(loader, plan.device)
                runs.append(_sweep_once(model, batches, step, config.sweep, bar, plan.shared))
                if batches.restarts:
                    log.info("the loader ran out and was started again %d time(s)", batches.restarts)
    finally:
        _state.restore(snapshot, plan.optimizer)
        if generator is not None:
            generator.set_state(loader_rng)
    return _result(runs, config, plan, stepper.replayed)


@dataclass
class _Run:
    losses: np.ndarray
    stop_reason: str


def _sweep_once(model: nn.Module, batches: Batches, step: Step, sweep: Sweep, bar: Any,
                shared: Processes | None = None) -> _Run:
    """One sweep: ``step(i, batches, lr)`` at every LR of ``sweep``, until it ends or diverges.
    ``shared``: the model's processes (DDP, FSDP), over which the losses are averaged at every check."""
    lrs = sweep.lrs()
    n = sweep.num_iter
    # The per-step losses stay on the device; the host reads them every `check_every` steps and
    # runs the divergence detector over the new ones then (one sync per check, no per-step kernels).
    losses = torch.full((n,), float("nan"), device=batches.device)
    detector = _Divergence(sweep.ema_beta, sweep.diverge_factor)
    checked = 0
    model.train()
    for i in range(n):
        losses[i] = step(i, batches, float(lrs[i]))
        bar.update(1)
        if (i + 1) % sweep.check_every == 0 or i == n - 1:
            if shared is not None:                          # every process then stops at the same step
                shared.mean(losses[checked: i + 1])
            new = losses[checked: i + 1].cpu().numpy()      # this is the host-device sync point
            stop = detector.first_stop(new)
            if stop is not None:
                return _stopped(losses, checked + stop, new[stop])
            checked = i + 1
            bar.set_postfix(lr=f"{lrs[i]:.2e}", loss=f"{new[-1]:.4g}", refresh=False)
    return _Run(losses.cpu().numpy(), "completed")


def _stopped(losses: torch.Tensor, j: int, value: float) -> _Run:
    return _Run(losses[: j + 1].cpu().numpy(), "diverged" if math.isfinite(value) else "loss became NaN/Inf")


class _Divergence:
    """The divergence rule of ``Sweep``, fed the losses in chunks: a bias-corrected EMA, its best
    value so far, and a stop where the EMA exceeds the best by ``(factor - 1) * |best|`` or a loss
    is not finite."""

    def __init__(self, beta: float, factor: float) -> None:
        self.beta, self.grow = beta, factor - 1.0
        self.ema, self.best, self.count = 0.0, math.inf, 0

    def first_stop(self, losses: np.ndarray) -> int | None:
        for j, value in enumerate(losses.astype(np.float64)):
            if not math.isfinite(value):
                return j
            self.count += 1
            self.ema = self.beta * self.ema + (1 - self.beta) * value
            smoothed = self.ema / (1 - self.beta ** self.count)
            self.best = min(self.best, smoothed)
            if smoothed > self.best + self.grow * abs(self.best):
                return j
        return None


def _start_persistent_workers(loader: Iterable) -> None:
    """A DataLoader with persistent workers draws one random number more on its first ``iter()``
    (its workers' base seed) than on the later ones, which reuse them: its first sweep would then
    take another batch order than the same seed gives any later sweep. Started here, before the
    seeded sweeps (the RNG is restored afterwards), its order follows the seed alone."""
    if (isinstance(loader, torch.utils.data.DataLoader) and loader.persistent_workers and loader.num_workers > 0
            and getattr(loader, "_iterator", False) is None):
        iter(loader)


def _seed_everything(seed: int, generator: torch.Generator | None) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if generator is not None:
        generator.manual_seed(seed)


def _result(runs: list[_Run], config: RangeTestConfig, plan: SweepPlan, replayed: bool) -> RangeTestResult:
    sweep, method = config.sweep, config.method
    lrs = sweep.lrs()
    seed_lrs = [RangeTestResult(lrs[: r.losses.size], r.losses, method=method).suggestions[method].lr for r in runs]
    shallow = set(shallow_sweeps([r.losses for r in runs])) if len(runs) > 1 else set()
    # the curve that agrees with the median suggestion, which leaves out the shallow sweeps
    shown = median_index([None if i in shallow else lr for i, lr in enumerate(seed_lrs)])
    run = runs[shown]
    return RangeTestResult(
        lrs=lrs[: run.losses.size], losses=run.losses, stop_reason=run.stop_reason,
        num_iter=sweep.num_iter, method=method, group_ratios=plan.ratios, seed_lrs=seed_lrs,
        seed_losses=[r.losses for r in runs] if len(runs) > 1 else [], curve_index=shown,
        config={**asdict(sweep), "accumulation_steps": config.accumulation_steps, "amp": config.amp,
                "validation_loss": config.val_loader is not None, "seeds": config.seeds,
                "max_grad_norm": config.max_grad_norm, **plan.settings, "cuda_graph": replayed},
    )
