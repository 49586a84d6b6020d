"""Stage 3 of ``tune``: the best schedule and the constant baseline retrained over several seeds,
and scored once on the test set."""

from __future__ import annotations

import logging
from typing import Any

import optuna
import torch

from lrfind._output import progress_bar
from lrfind.data.builtin import load_dataset
from lrfind.data.images import ImageData
from lrfind.engine.trials import TrialSpec, run_trials
from lrfind.schedules import get_schedule, stored_choices
from lrfind.study import trials as _study
from lrfind.study.space import trial_spec
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
    """
    best = _study.best(study)
    constant = _study.constant_baseline(study)
    if best is None:
        log.warning("no trial completed: nothing to retrain")
        return {}
    picked = {"best": best}
    if constant is not None and constant.number != best.number:
        picked["constant"] = constant
    follows_val = any(get_schedule(t.params["schedule"]).needs_metric for t in picked.values())
    # else the whole training set: the trials' train part and their validation images
    data, held = (train, val) if follows_val else (
        ImageData(torch.cat([train.images, val.images]), torch.cat([train.labels, val.labels]), train.name,
                  train.classes), None)
    test = load_dataset(cfg.dataset, "test", root=cfg.data_dir, device=train.images.device)
    per_epoch = len(data.loader(cfg.batch_size))
    total = cfg.epochs * per_epoch
    # The search space is relative to the run, so replaying a trial's choices rescales its steps.
    replayed = {label: trial_spec(optuna.trial.FixedTrial(stored_choices(t.params)), cfg, total, per_epoch, max_peak)
                for label, t in picked.items()}
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
    out: dict[str, Any] = {}
    for i, (label, trial) in enumerate(picked.items()):
        recs = records[i * len(seeds):(i + 1) * len(seeds)]
        accs = [r.test_acc for r in recs if r.test_acc is not None]    # a NaN retrain has none
        losses = [r.test_loss for r in recs if r.test_loss is not None]
        spec = replayed[label]
        out[label] = {"trial": trial.number, "schedule": spec.schedule, "params": _study.jsonable(spec.params),
                      "peak_scale": spec.lr_scale, "lr": base_lr * spec.lr_scale,
                      "val_acc": _study.val_acc(trial, study), "val_loss": _study.val_loss(trial),
                      "test_acc": sum(accs) / len(accs) if accs else None, "test_acc_per_seed": accs,
                      "test_loss": sum(losses) / len(losses) if losses else None, "test_loss_per_seed": losses,
                      "seeds": seeds, "failed": sum(r.status == "failed" for r in recs)}
    if constant is not None and constant.number == best.number:     # the baseline itself won
        out["constant"] = dict(out["best"])
    out["setup"] = {"train_images": len(data), "test_images": len(test), "steps": total, "seeds": len(seeds)}
    if held is not None:                         # the images plateau's retrain stepped on
        out["setup"]["val_images"] = len(held)
    return out
