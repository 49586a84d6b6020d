"""The sweeps of a range test: ``range_test(model, loader, config)`` sweeps ``config.repeats``
times from the same start, stops each where the loss diverges, puts the model, its optimizer and
the RNGs back afterwards (also when a sweep raises), and, when the repeats disagree, sweeps as
many times again at half the pace and takes those."""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

import torch
from torch import nn

from lrfind import _threads
from lrfind._errors import FieldError, warn_at_users_line
from lrfind._output import progress_bar
from lrfind.rangetest import state as _state
from lrfind.rangetest.batches import Batches, one_shot, start_persistent_workers
from lrfind.rangetest.config import RangeTestConfig
from lrfind.rangetest.distributed import Processes
from lrfind.rangetest.plan import SweepPlan
from lrfind.rangetest.fused import SIDE_BY_SIDE, NotFusable, TooManyCopies, fused_sweeps, fusion_blocker
from lrfind.rangetest.result import RangeTestResult, RangeTestWarning, describe_sweeps
from lrfind.rangetest.runs import Divergence, Run, sweeps_result
from lrfind.rangetest.steps import Step, make_step
from lrfind.rangetest.sweep import Sweep

log = logging.getLogger(__name__)


def range_test(model: nn.Module, loader: Iterable, config: RangeTestConfig) -> RangeTestResult:
    """``find_lr``'s sweeps, its result and its warnings: side by side in one pass where they can
    run so (``fused.fusion_blocker``), else one after another. ``repeats=None`` is 3 side by side
    on a GPU and 1 elsewhere. With ``slow_down``, repeats that disagree are swept again at half the
    pace, with the optimizer and steps resolved again."""
    with _threads.restored():          # lrfind's count of CPU threads, put back after the sweeps
        _threads.apply(config.threads, what="the range test")
        plan = SweepPlan.of(model, config)
        blocker = fusion_blocker(model, loader, config, plan)
        repeats, why = _repeats(config, plan, blocker)
        asked, config = config.repeats is not None, config.with_repeats(repeats)
        sweeps = _sweeps if blocker or (repeats == 1 and not config.fused) else fused_sweeps
        if sweeps is _sweeps and repeats > 1:
            why = f"{repeats} one after another ({blocker})"
            if one_shot(loader):
                raise ValueError(f"repeats={repeats} sweeps the loader {repeats} times, but it is a "
                                 f"{type(loader).__name__}, used up by one pass; pass something that can be "
                                 f"iterated again (a DataLoader, a list of batches) or repeats=1")
        if why:
            log.info("range test: %s", why)
        try:
            result = _slowed_if_they_disagree(model, loader, config, plan, sweeps)
        except TooManyCopies:
            if asked:                           # the user's count: the error says how many fit
                raise
            why = f"1 sweep by default: {repeats} copies of the model do not fit in GPU memory side by side"
            log.info("range test: %s", why)
            config = config.with_repeats(1)
            result = _slowed_if_they_disagree(model, loader, config, plan, _sweeps)
        result.config.setdefault("how", f"{repeats} side by side in one pass" if result.config["fused"] else why)
        return result


def _repeats(config: RangeTestConfig, plan: SweepPlan, blocker: str) -> tuple[int, str]:
    """``config.repeats``, or by default 3 side by side on a GPU (about the cost of one), else 1;
    and why there is one only ("" when asked for)."""
    if config.repeats is not None:
        return config.repeats, ""
    why = blocker or ("" if plan.device.type == "cuda" else
                      "off a GPU, sweeps side by side cost as much as one after another")
    if why:
        return 1, f"1 sweep by default: {why}; 3 repeats give the median of 3 and their spread"
    return SIDE_BY_SIDE, ""


def _slowed_if_they_disagree(model: nn.Module, loader: Iterable, config: RangeTestConfig, plan: SweepPlan,
                             sweeps: Callable[..., RangeTestResult]) -> RangeTestResult:
    result = _run_sweeps(sweeps, model, loader, config, plan)
    if config.slow_down and result.repeats_disagree:
        sweep = config.sweep
        log.warning("range test: the %d sweeps of %d steps disagree (%s); sweeping again at half the pace, %d steps",
                    config.repeats, sweep.num_iter, describe_sweeps(result.seed_lrs, result.shallow),
                    2 * sweep.num_iter)
        slower = config.slower()
        slower_result = _run_sweeps(sweeps, model, loader, slower, SweepPlan.of(model, slower))
        slower_result.config["faster_sweeps"] = {"num_iter": sweep.num_iter, "seed_lrs": result.seed_lrs,
                                                 "shallow": result.shallow}
        result = slower_result
    # one warning each, a missing suggestion first: `optimizer(lr=result.suggested_lr)` would fail far from here
    for text in result.warnings if config.warn and plan.first else []:
        warn_at_users_line(text, RangeTestWarning)
    return result


def _run_sweeps(sweeps: Callable[..., RangeTestResult], model: nn.Module, loader: Iterable, config: RangeTestConfig,
                plan: SweepPlan) -> RangeTestResult:
    """The sweeps side by side; one after another where the batches turn out not to suit that."""
    if sweeps is _sweeps:
        return _sweeps(model, loader, config, plan)
    try:
        return sweeps(model, loader, config, plan)
    except NotFusable as e:
        if config.fused:
            raise FieldError("fused", f"fused cannot be used here: {e}; leave it out to sweep one after "
                                      f"another") from None
        how = f"{config.repeats} one after another ({e})"
        log.info("range test: %s", how)
        result = _sweeps(model, loader, config, plan)
        result.config["how"] = how
        return result


def _sweeps(model: nn.Module, loader: Iterable, config: RangeTestConfig, plan: SweepPlan) -> RangeTestResult:
    """Every repeat's sweep, each from the state the model, its optimizer and the RNGs had before
    the first (and restored to it afterwards); their result."""
    generator = _state.loader_generator(loader)
    snapshot = _state.take(model, plan.optimizer)
    loader_rng = generator.get_state() if generator is not None else None
    runs: list[Run] = []
    try:
        start_persistent_workers(loader)
        stepper, step = make_step(model, config, plan)
        with progress_bar(total=config.repeats * config.sweep.num_iter, desc="range test",
                          disable=not (config.progress and plan.first), leave=False, dynamic_ncols=True) as bar:
            for r, s in enumerate(config.seeds):
                if r:
                    _state.restore(snapshot, plan.optimizer)
                    stepper.reset()
                if s is not None:
                    _state.seed_streams(s, generator)
                batches = Batches(loader, plan.device)
                runs.append(_sweep_once(model, batches, step, config.sweep, bar, plan.shared))
                if batches.restarts:
                    log.info("the loader ran out and was started again %d time(s)", batches.restarts)
    finally:
        _state.restore(snapshot, plan.optimizer)
        if generator is not None:
            generator.set_state(loader_rng)
    return sweeps_result(runs, config, plan, stepper.replayed)


def _sweep_once(model: nn.Module, batches: Batches, step: Step, sweep: Sweep, bar: Any,
                shared: Processes | None = None) -> Run:
    """One sweep: ``step(i, batches, lr)`` at every LR of ``sweep``, until it ends or diverges.
    ``shared``: the model's processes (DDP, FSDP), over which the losses are averaged at every check."""
    lrs = sweep.lrs()
    n = sweep.num_iter
    # The per-step losses stay on the device; the host reads them every `check_every` steps and
    # runs the divergence detector over the new ones then (one sync per check, no per-step kernels).
    losses = torch.full((n,), float("nan"), device=batches.device)
    detector = Divergence(sweep.ema_beta, sweep.diverge_factor)
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
                return Run.ended(losses.cpu().numpy(), checked + stop)
            checked = i + 1
            bar.set_postfix(lr=f"{lrs[i]:.2e}", loss=f"{new[-1]:.4g}", refresh=False)
    return Run.ended(losses.cpu().numpy(), None)
