"""Stage 3 of ``tune``: the best schedule and the constant baseline retrained over several seeds,
and scored once on the test set."""

from __future__ import annotations

import logging
import math
from typing import Any

import optuna
import torch

from lrfind import _threads
from lrfind._output import progress_bar
from lrfind.data.builtin import load_dataset
from lrfind.data.images import ImageData
from lrfind.data.losses import is_regression
from lrfind.engine.trials import TrialRecord, TrialSpec, run_trials
from lrfind.schedules import get_schedule
from lrfind.study import workers as _workers
from lrfind.study import best as _best
from lrfind.study import final as _final
from lrfind.study import trials as _study
from lrfind.study.tune_config import TuneConfig

log = logging.getLogger(__name__)


def retrain(study: optuna.Study, cfg: TuneConfig, train: ImageData, val: ImageData, base_lr: float,
            max_peak: float) -> dict[str, Any]:
    """Stage 3: retrain the best schedule and the constant baseline on the whole training set,
    ``final_seeds`` times each (seed r of both starts from the same weights), and test once.

    One retrain is not enough to compare two good schedules: two runs of the same configuration
    differ by about 0.3 pp of test accuracy on MNIST. The fused engine trains all of them at once.
    A schedule that follows the validation loss (plateau) needs one in its retrain too, as in the
    search and in the user's run: then both retrain on the search's training part alone, and it
    steps on the loss of the validation part (a training loss keeps falling where a validation
    loss stalls).

    The constant is the best constant LR of the search (``trials.constant_baseline``), not the
    constant at the base LR, which suits a schedule's peak and would flatter decay. A retrain that
    diverged (NaN, or an accuracy at chance) is named, left out of its side's mean, and out of the
    gain: the difference seed by seed, its mean and standard error (``best.paired_gain``).
    """
    picked = _final.picked(study)            # the best, and the best constant LR of the search
    if not picked:
        log.warning("no trial completed: nothing to retrain")
        return {}
    follows_val = any(get_schedule(t.params["schedule"]).needs_metric for t in picked.values())
    # else the whole training set: the trials' train part and their validation images
    data, held = (train, val) if follows_val else (
        ImageData(torch.cat([train.images, val.images]), torch.cat([train.labels, val.labels]), train.name,
                  train.classes), None)
    test = load_dataset(cfg.dataset, "test", root=cfg.data_dir, device=train.images.device)
    per_epoch = len(data.loader(cfg.batch_size))
    total = cfg.epochs * per_epoch
    # the workers still running trials share the cores; those waiting for this one use none
    _threads.apply(cfg.threads, lambda: _workers.workers_here(study), "the final retrains")
    replayed = {label: _final.replayed(t, cfg, total, per_epoch, max_peak) for label, t in picked.items()}
    seeds = [cfg.seed + r for r in range(cfg.final_seeds)]
    specs = [TrialSpec(s.schedule, s.params, seed=seed, lr_scale=s.lr_scale) for s in replayed.values() for seed in seeds]
    on = "training part" if held else "full training set"
    bar = progress_bar(total=total, desc=f"final: {len(specs)} retrains on the {on}", leave=False,
                       disable=not cfg.progress)
    with bar:
        records = run_trials(cfg.model, specs, data, held, epochs=cfg.epochs, batch_size=cfg.batch_size,
                             base_lr=base_lr, optimizer=cfg.optimizer_config, seed=cfg.seed, progress=bar,
                             score_on=test, amp=cfg.amp, augment=cfg.augment_fn, channels_last=cfg.channels_last,
                             fold=cfg.fold, max_grad_norm=cfg.max_grad_norm)
    limit = _best.chance_limit(None if is_regression(train.labels) else train.classes)
    out: dict[str, Any] = {}
    for i, (label, trial) in enumerate(picked.items()):
        recs = records[i * len(seeds):(i + 1) * len(seeds)]
        spec = replayed[label]
        out[label] = {"trial": trial.number, "schedule": spec.schedule, "params": _study.jsonable(spec.params),
                      "peak_scale": spec.lr_scale, "lr": base_lr * spec.lr_scale,
                      "val_acc": _study.val_acc(trial, study), "val_loss": _study.val_loss(trial),
                      **_scores(recs, seeds, limit)}
    out["setup"] = {"train_images": len(data), "test_images": len(test), "steps": total, "seeds": len(seeds)}
    if held is not None:                         # the images plateau's retrain stepped on
        out["setup"]["val_images"] = len(held)
    if limit is not None:                        # at or below it, a retrain diverged
        out["setup"]["chance_acc"] = 1 / train.classes
        out["setup"]["diverged_at_or_below"] = limit
    return _final.compared(study, out, _best.final_key(study, out))


def _scores(recs: list[TrialRecord], seeds: list[int], limit: float | None) -> dict[str, Any]:
    """One side's test scores: per seed (None where a retrain ended on NaN), the seeds that
    diverged (no finite loss, or an accuracy at chance: ``best.diverged``), and the means of the
    others; a diverged retrain is counted apart, never averaged in."""
    accs = [r.test_acc if r.status != "failed" else None for r in recs]
    losses = [r.test_loss if r.status != "failed" and r.test_loss is not None and math.isfinite(r.test_loss)
              else None for r in recs]
    out = [s for s, r, loss, acc in zip(seeds, recs, losses, accs)
           if r.status == "failed" or _best.diverged(loss, acc, limit)]
    kept_accs = [a for s, a in zip(seeds, accs) if s not in out and a is not None]
    kept_losses = [x for s, x in zip(seeds, losses) if s not in out and x is not None]
    return {"test_acc": sum(kept_accs) / len(kept_accs) if kept_accs else None, "test_acc_per_seed": accs,
            "test_loss": sum(kept_losses) / len(kept_losses) if kept_losses else None, "test_loss_per_seed": losses,
            "seeds": seeds, "failed": sum(r.status == "failed" for r in recs), "diverged": out}
