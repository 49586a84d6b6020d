"""Stage 1 of ``tune``: the study's base LR, from a range test on its model and data (or given),
and how far above it schedules that warm up may peak. Workers starting together run one range
test, whose LR all use."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
import torch

from lrfind.data.images import ImageData
from lrfind.data.losses import task_loss
from lrfind.rangetest.find import find_lr
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
    # the median of several sweeps; when they disagree, of as many again at half the pace
    result = find_lr(model, loader, optimizer=cfg.optimizer_config, loss_fn=task_loss, num_iter=cfg.range_test_iters,
                     repeats=cfg.range_test_repeats, seed=cfg.seed, max_grad_norm=cfg.max_grad_norm,
                     progress=cfg.progress, warn=False, threads=cfg.threads)
    for text in result.warnings:                      # one log line each
        log.warning("range test: %s", text)
    # what `lrfind range-test` records too, so that `lrfind compare` tells two studies' sweeps apart
    # (the config holds the model, data set and augmentation by name: see TuneConfig.__post_init__)
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
