"""Stage 1 of ``tune``: the study's base LR, from a range test on its model and data (or given),
and how far above it schedules that warm up may peak. Workers starting together run one range
test, whose LR all use."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch

from lrfind.data.images import ImageData
from lrfind.data.losses import task_loss
from lrfind.rangetest.find import find_lr
from lrfind.rangetest.fused import TooManyCopies
from lrfind.rangetest.result import RangeTestResult
from lrfind.study import opening as _opening
from lrfind.study import report
from lrfind.study import workers as _workers
from lrfind.study.painter import Painter
from lrfind.study.result import interrupted_says
from lrfind.study.tune_config import TuneConfig

log = logging.getLogger(__name__)


class NoBaseLRError(ValueError):
    """The range test's curve gave no clear base LR."""


def settle(study: optuna.Study, cfg: TuneConfig, model: torch.nn.Module, train: ImageData, out: Path,
           painter: Painter) -> tuple[float, float]:
    """The study's base LR and its warming schedules' peak scale: those stored, else found now
    (the range test, unless ``cfg.base_lr`` gives the LR) and stored."""
    with _workers.claim(study), interrupted_says("during the range test (stage 1), which is not stored: run the "
                                                 "same command again to start it over"):
        # workers starting together: one range test, whose LR all use
        base_lr = _opening.stored_base_lr(study)
        if base_lr is None:
            found = None if cfg.base_lr is not None else _range_test(cfg, model, train, out, painter)
            base_lr = cfg.base_lr if found is None else found.suggested_lr
            _opening.store_base_lr(study, base_lr, found)
        if "max_peak" not in study.user_attrs:
            study.set_user_attr("max_peak", _max_peak(cfg, study, base_lr))
    max_peak = study.user_attrs["max_peak"]
    log.info("base LR %.3g (%s); warming schedules may peak up to %.3g", base_lr,
             study.user_attrs.get("base_lr_source"), base_lr * max_peak)
    return base_lr, max_peak


def _range_test(cfg: TuneConfig, model: torch.nn.Module, train: ImageData, out: Path,
                painter: Painter) -> RangeTestResult:
    """Stage 1's sweeps, written to ``out``; raises ``NoBaseLRError`` when they give no clear LR."""
    loader = train.loader(cfg.batch_size, seed=cfg.seed, augment=cfg.augment_fn)
    sweeps = sweeps_for(cfg.trials * cfg.epochs * len(loader), cfg.range_test_iters, cfg.range_test_repeats)
    if sweeps.note:
        log.info("range test: %s", sweeps.note)
    # the median of several sweeps (side by side where they can be); when they disagree, of as many
    # again at half the pace where the study's budget allows
    kw = dict(optimizer=cfg.optimizer_config, loss_fn=task_loss, num_iter=sweeps.num_iter, repeats=sweeps.repeats,
              seed=cfg.seed, max_grad_norm=cfg.max_grad_norm, progress=cfg.progress, warn=False, threads=cfg.threads,
              slow_down=sweeps.slow_down)
    try:
        result = find_lr(model, loader, **kw)
    except TooManyCopies:                 # copies of a large model side by side: the sweeps one after another
        log.info("range test: %d copies of the model do not fit in GPU memory side by side; they sweep one "
                 "after another", sweeps.repeats)
        result = find_lr(model, loader, fused=False, **kw)
    for text in result.warnings:                      # one log line each
        log.warning("range test: %s", text)
    # what `lrfind range-test` records too, so that `lrfind compare` tells two studies' sweeps apart
    # (the config holds the model, data set and augmentation by name: see TuneConfig.__post_init__)
    if sweeps.note:                                   # fewer or shorter sweeps than a long study's
        result.config["sized"] = sweeps.note
    result.config.update(model=cfg.model, dataset=cfg.dataset, augment=cfg.augment, train_examples=len(train),
                         batch_size=cfg.batch_size)
    out.mkdir(parents=True, exist_ok=True)
    result.to_json(out / "range_test.json")
    figure = painter.submit(report.draw_range_test, result, out / "range_test.png")
    if result.suggested_lr is None:
        figure.result()                       # the error points at it
        raise NoBaseLRError(f"the range test gave no clear base LR ({result.reason}); see {out / 'range_test.png'} "
                         "and pass --base-lr")
    return result


# Stage 1 by default: 3 sweeps of 300 steps, and 3 of 600 again when they disagree. A study whose
# search is short gets fewer: the sweeps take at most SHARE of the search's model steps (trials x
# epochs x steps per epoch; a sweep's step costs about one trial's, side by side or not), which
# keeps the range test under 30% of the study (its evaluations and start-up come on top).
ITERS, REPEATS, MIN_ITERS, SHARE = 300, 3, 100, 0.4


@dataclass(frozen=True)
class Sweeps:
    """How stage 1 sweeps: ``repeats`` sweeps of ``num_iter`` steps, swept again at half the pace
    when they disagree (``slow_down``); ``note``: how they were sized to the study ("" if not)."""

    repeats: int
    num_iter: int
    slow_down: bool
    note: str = ""


def sweeps_for(search_steps: int, iters: int | None = None, repeats: int | None = None) -> Sweeps:
    """Stage 1's sweeps for a search of ``search_steps`` model steps (trials x epochs x steps per
    epoch): ``iters`` and ``repeats`` where given; by default 3 of 300 steps, slowed down when they
    disagree, where that fits in the budget (``SHARE`` of the search's steps); else without the
    slower sweeps (a disagreement is reported), then fewer steps (down to ``MIN_ITERS``), then fewer
    sweeps (down to one). What the user set is kept; the rest is sized around it."""
    budget = int(SHARE * search_steps)
    n, k = iters or ITERS, repeats or REPEATS
    if 3 * k * n <= budget:                                  # the sweeps and the slower ones
        return Sweeps(k, n, slow_down=True)
    if iters is None and repeats is None and k * MIN_ITERS > budget:
        k = max(1, budget // MIN_ITERS)
    if iters is None:
        n = max(MIN_ITERS, min(ITERS, budget // k))
    if repeats is None:
        k = max(1, min(k, budget // n))
    return Sweeps(k, n, slow_down=False,
                  note=f"the search takes {search_steps:,} model steps and stage 1 at most {SHARE:.0%} as many: "
                       f"{k} sweep{'s' * (k > 1)} of {n} steps, none again slower if they disagree "
                       f"(--range-test-iters and --range-test-repeats set them)")


def _max_peak(cfg: TuneConfig, study: optuna.Study, base_lr: float) -> float:
    """How far above the base LR a schedule that warms up may peak.

    The base LR is right for a constant LR; a schedule that climbs from a low LR tolerates more (the
    range test's loss keeps falling up to its minimum, 3x the default suggestion). Default: the LR at
    the range test's lowest loss, over the base LR, between 1 and 10; 3 when the base LR was given.
    """
    if cfg.max_peak is not None:
        return cfg.max_peak
    falling = (study.user_attrs.get("range_test") or {}).get("falling_range")
    if not falling:
        return 3.0
    return float(min(10.0, max(1.0, falling[1] / base_lr)))


__all__ = ["NoBaseLRError"]
