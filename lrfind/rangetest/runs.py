"""What a set of sweeps leaves, however it ran: each sweep's losses and why it stopped (``Run``),
the divergence rule that stops it (``Divergence``), and their result (``sweeps_result``)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from lrfind.rangetest.config import RangeTestConfig
from lrfind.rangetest.plan import SweepPlan
from lrfind.rangetest.result import RangeTestResult, median_index, shallow_sweeps


@dataclass
class Run:
    """One sweep's loss at every step it took, and why it stopped."""

    losses: np.ndarray
    stop_reason: str

    @classmethod
    def ended(cls, losses: np.ndarray, stop: int | None) -> Run:
        """A sweep's run from its recorded losses: whole where it never stopped (``stop`` None), else
        up to its stop, which diverged or hit a loss that is not finite."""
        if stop is None:
            return cls(losses, "completed")
        return cls(losses[: stop + 1], "diverged" if math.isfinite(losses[stop]) else "loss became NaN/Inf")


class Divergence:
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


def sweeps_result(runs: list[Run], config: RangeTestConfig, plan: SweepPlan, replayed: bool,
                  fused: bool = False) -> RangeTestResult:
    """The result of a set of sweeps: the median suggestion and its spread, the median sweep's curve,
    every sweep's losses, and what they swept with (``fused``: side by side in one pass)."""
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
                "max_grad_norm": config.max_grad_norm, **plan.settings, "cuda_graph": replayed, "fused": fused},
    )
