"""A range test's repeats side by side: ``fused_sweeps`` trains K copies of the model in one pass
of the trial engine (``engine.fused.FusedTrials``: the copies' weights stacked, one step for all,
each copy at the sweep's LR of the step). Every copy starts from the model's weights and takes its
batches in the order the repeat one after another with its seed takes them (the loader iterated
once per copy, its shuffling seeded with ``seed + r``), so that each sweep is the one that repeat
would be. A loader whose order no seed moves (a list of batches, an iterator) is read once instead,
a batch to each copy in turn. A sweep that diverges leaves the pass at the next check; the others
go on until every sweep has stopped or reached ``end_lr``. ``fusion_blocker`` says why a set of
repeats must run one after another instead."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Iterable

import numpy as np
import torch
from torch import nn

from lrfind._errors import FieldError
from lrfind._output import progress_bar
from lrfind.engine.fused import FusedTrials
from lrfind.engine.optimizer import OptimizerConfig
from lrfind.engine.records import TrialSpec
from lrfind.rangetest import state as _state
from lrfind.rangetest.batches import Batches, one_shot, start_persistent_workers
from lrfind.rangetest.config import RangeTestConfig
from lrfind.rangetest.plan import SweepPlan
from lrfind.rangetest.result import RangeTestResult
from lrfind.rangetest.runs import Divergence, Run, sweeps_result

log = logging.getLogger(__name__)

SIDE_BY_SIDE = 3        # the sweeps of the default on a GPU, where they run side by side for about one's cost


class NotFusable(Exception):
    """The batches are not ``(inputs, targets)`` tensors of one size that the copies can each take."""


class TooManyCopies(FieldError):
    """The copies side by side do not fit in GPU memory (``repeats``'s error, which says how many do)."""


def fusion_blocker(model: nn.Module, loader: Iterable, config: RangeTestConfig, plan: SweepPlan) -> str:
    """Why the repeats of ``config`` run one after another rather than side by side ("" if they can
    run side by side). A loader with fewer batches than the sweeps take in one step is an error
    when ``fused=True`` asked for the pass, and a reason otherwise."""
    if config.fused is False:
        return "fused=False"
    reason = plan.why_not_own or _optimizer_blocker(model, plan)
    repeats = config.repeats or SIDE_BY_SIDE
    if not reason and _too_short(loader, repeats):
        reason = (f"the loader has {len(loader)} batches, fewer than the {repeats} sweeps side by side take "
                  f"in one step (a batch each)")
        if config.fused:
            raise FieldError("fused", f"fused: {reason}: give the loader more batches (a smaller batch_size), or "
                                      f"fewer repeats, or fused=False to sweep one after another")
    if reason and config.fused:
        raise FieldError("fused", f"fused cannot be used here: {reason}; leave it out to sweep one after another")
    return reason


def _optimizer_blocker(model: nn.Module, plan: SweepPlan) -> str:
    if len(plan.groups) > 1:
        return (f"the optimizer has {len(plan.groups)} parameter groups, and the copies side by side train at one "
                f"LR each")
    held = {id(p) for p in plan.groups[0]["params"]}
    if any(p.requires_grad and id(p) not in held for p in model.parameters()):
        return "the optimizer trains only some of the model's trainable parameters"
    return ""


def _too_short(loader: Iterable, repeats: int) -> bool:
    try:
        return 0 < len(loader) < repeats
    except TypeError:                      # an iterable without a length: found out as the pass draws
        return False


def fused_sweeps(model: nn.Module, loader: Iterable, config: RangeTestConfig, plan: SweepPlan) -> RangeTestResult:
    """``config.repeats`` sweeps in one pass of copies of ``model`` (which itself is not trained);
    their result. The RNG streams (and the loader's generator) are put back afterwards. Raises
    ``NotFusable`` before the first step for batches the copies cannot each take."""
    generator = _state.loader_generator(loader)
    streams = _state.take_streams(generator)
    try:
        start_persistent_workers(loader)
        runs, replayed = _pass(model, loader, config, plan, generator)
    finally:
        _state.restore_streams(streams, generator)
    return sweeps_result(runs, config, plan, replayed, fused=True)


def optimizer_config(plan: SweepPlan) -> OptimizerConfig:
    """The ``OptimizerConfig`` of the plan's one parameter group: the update its own step applies."""
    g = plan.groups[0]
    if plan.rule == "sgd":
        return OptimizerConfig("sgd", momentum=float(g.get("momentum", 0.0)), nesterov=bool(g.get("nesterov")),
                               weight_decay=float(g.get("weight_decay", 0.0)))
    return OptimizerConfig(plan.rule, betas=tuple(float(b) for b in g["betas"]), eps=float(g["eps"]),
                           weight_decay=float(g.get("weight_decay", 0.0)))


def _engine(model: nn.Module, config: RangeTestConfig, plan: SweepPlan) -> FusedTrials:
    try:
        return _build(model, config, plan, config.repeats)
    except torch.cuda.OutOfMemoryError:
        k, fit = config.repeats, _most_that_fit(model, config, plan)
        raise TooManyCopies("repeats", f"repeats {k}: {k} copies of the model side by side do not fit in GPU "
                                       f"memory; at most {fit} do: pass that many repeats, or sweep one after another "
                                       f"(fused=False, --one-after-another)") from None


def _build(model: nn.Module, config: RangeTestConfig, plan: SweepPlan, k: int) -> FusedTrials:
    n = config.sweep.num_iter
    return FusedTrials(lambda: copy.deepcopy(model), [TrialSpec("constant", {}, seed=0)] * k, base_lr=1.0,
                       total_steps=n, steps_per_epoch=n, optimizer=optimizer_config(plan), device=plan.device,
                       cuda_graph=config.cuda_graph, max_grad_norm=config.max_grad_norm, own_batches=True,
                       loss_fn=plan.checked_loss, lrs=config.sweep.lrs())


def _most_that_fit(model: nn.Module, config: RangeTestConfig, plan: SweepPlan) -> int:
    """The most copies of ``model`` whose stacked weights and optimizer state fit, halving from ``repeats``."""
    k = config.repeats // 2
    while k > 1:
        torch.cuda.empty_cache()
        try:
            _build(model, config, plan, k)          # built and let go: only whether it fits counts
            return k
        except torch.cuda.OutOfMemoryError:
            k //= 2
    return 1


def _pass(model: nn.Module, loader: Iterable, config: RangeTestConfig, plan: SweepPlan,
          generator: torch.Generator | None) -> tuple[list[Run], bool]:
    """Every sweep's losses, up to where it stopped, and whether the steps were replayed from a CUDA graph."""
    sweep, k = config.sweep, config.repeats
    n = sweep.num_iter
    draw = _Draw(loader, plan.device, config.seeds, generator)
    x, y = draw.first                   # before the engine, so that batches it cannot take are said first
    engine = _engine(model, config, plan)
    losses = torch.full((k, n), float("nan"), device=plan.device)      # read by the host at every check
    detectors = [Divergence(sweep.ema_beta, sweep.diverge_factor) for _ in range(k)]
    stops: dict[int, int] = {}                                          # sweep -> the step it stopped at
    lrs = sweep.lrs()
    checked = 0
    with progress_bar(total=n, desc=f"range test, {k} sweeps side by side",
                      disable=not (config.progress and plan.first), leave=False, dynamic_ncols=True) as bar:
        for i in range(n):
            if i:
                x, y = draw(engine.running)
            try:
                engine.step(x, y)
            except torch.cuda.OutOfMemoryError:
                raise TooManyCopies("repeats", f"repeats {k}: {k} copies of the model side by side ran out of GPU "
                                               f"memory at step {i + 1}; pass fewer repeats, or sweep one after "
                                               f"another (fused=False, --one-after-another)") from None
            losses[engine.index, i] = engine.step_losses
            bar.update(1)
            if (i + 1) % sweep.check_every and i < n - 1:
                continue
            new = losses[engine.index, checked: i + 1].cpu().numpy()        # the host-device sync point
            keep = [_goes_on(detectors[s], new[row], checked, stops, s) for row, s in enumerate(engine.running)]
            if not any(keep):                   # every sweep has stopped (the engine keeps no empty batch)
                break
            engine.keep(keep)
            checked = i + 1
            bar.set_postfix(lr=f"{lrs[i]:.2e}", sweeps=engine.trials, refresh=False)
    if draw.restarts:
        log.info("the loader ran out and was started again %d time(s)", draw.restarts)
    if draw.skipped:
        log.info("%d batch(es) of another size than the first (%d examples) were left out", draw.skipped, draw.size)
    host = losses.cpu().numpy()
    return [Run.ended(host[s], stops.get(s)) for s in range(k)], engine.cuda_graph


def _goes_on(detector: Divergence, new: np.ndarray, checked: int, stops: dict[int, int], s: int) -> bool:
    """Feed sweep ``s``'s new losses to its detector; record where it stopped. Whether it goes on."""
    j = detector.first_stop(new)
    if j is not None:
        stops[s] = checked + j
    return j is None


class _Draw:
    """A batch for each sweep still going, stacked: ``(inputs, targets)`` of shape (K, B, ...).
    Sweep r reads the loader in the order seed ``seeds[r]`` gives it (as the repeat one after
    another with that seed reads it); a loader whose order no seed moves (a list, an iterator, a
    DataLoader whose persistent workers serve one iterator) is read once, a batch to each sweep in
    turn. Batches of another size than the first (a loader's short last batch) are left out."""

    def __init__(self, loader: Iterable, device: torch.device, seeds: list[int | None],
                 generator: torch.Generator | None) -> None:
        self.size, self.skipped = None, 0
        own = []
        for seed in seeds:
            if seed is not None:
                _state.seed_streams(seed, generator)
            own.append(Batches(loader, device))
            own[-1].first = _pair(next(own[-1]))       # its order is drawn as it starts
        firsts = [b.first for b in own]
        one_iterator = len({id(b._it) for b in own}) < len(own)
        if len(own) > 1 and (one_iterator or all(torch.equal(f[0], firsts[0][0]) for f in firsts[1:])):
            if one_shot(loader) or one_iterator:      # the first batches came from one stream, in turn
                self.sources = [own[0]] * len(own)
                own[0].count += len(own) - 1
            else:                                       # the same order for every seed: one stream
                if seeds[0] is not None:
                    _state.seed_streams(seeds[0], generator)
                shared = Batches(loader, device, per_step=len(own))
                self.sources = [shared] * len(own)
                firsts = [_pair(next(shared)) for _ in own]
            self.sources[0].per_step = len(own)
        else:
            self.sources = own
        self.size = len(firsts[0][0])
        self.first = self._stacked(firsts)

    @property
    def restarts(self) -> int:
        return sum(b.restarts for b in {id(b): b for b in self.sources}.values())

    def __call__(self, running: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch of every sweep in ``running`` (their indices), in that order."""
        return self._stacked([self._next(self.sources[r]) for r in running])

    def _next(self, batches: Batches) -> tuple[torch.Tensor, torch.Tensor]:
        while True:
            x, y = _pair(next(batches))
            if len(x) == self.size:
                return x, y
            self.skipped += 1

    def _stacked(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        sizes = {len(x) for x, _ in pairs}
        if len(sizes) > 1:                # a first batch shorter than another's: the loader's own sizes vary
            raise NotFusable(f"the first batches differ in size ({', '.join(map(str, sorted(sizes)))} examples)")
        return torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])


def _pair(batch) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, Mapping) or not (isinstance(batch, Sequence) and len(batch) == 2
                                          and all(isinstance(t, torch.Tensor) for t in batch)):
        raise NotFusable(f"the batches are not (inputs, targets) tensors but {type(batch).__name__}s")
    return batch[0], batch[1]
