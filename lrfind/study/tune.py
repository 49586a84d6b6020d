"""The study: pick the LR first (a range test), the decay second (Optuna over the schedule registry).

Stage 1 runs a range test on the model and data of the study and fixes the base LR (or takes
``base_lr``). Stage 2 asks Optuna for trials in batches of ``parallel``, trains each batch fused on
one device (``train.run_trials``), reports the validation accuracy after every epoch so that the
pruner can stop hopeless trials, and tells Optuna how each ended. The constant-LR trials are
enqueued first, at the base LR, half and twice it, and the constant's LR (0.2x to 2x) is searched
like a schedule's parameters: the report says whether decay helps at all, against the best constant LR.
Stage 3 retrains the best schedule and the best constant on the whole training set and scores them
once on the test set, seed by seed: decay's gain, its standard error, and any retrain that diverged.

Trials are scored on a validation split carved from the training set; the test set is read only in
stage 3. The study lives in Optuna's storage (a journal file by default, which several processes
on one machine may share; SQLite or PostgreSQL by URL), so running the same command again resumes
it and runs only the missing trials.

Each stage has its module: ``tune_lr`` (1), ``tune_search`` (2), ``tune_final`` (3); this one loads
the data, opens the study, runs them in turn and writes the report.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import optuna
import torch

from lrfind import _threads
from lrfind._args import check_names
from lrfind._device import on_device, resolve_device
from lrfind.data.augment import check_augment
from lrfind.data.builtin import check_dataset, load_dataset
from lrfind.data.images import DataSizeError, ImageData, check_batch_fits
from lrfind.data.losses import is_regression
from lrfind.data.user import DataSetError
from lrfind.models import check_fits, get_model
from lrfind.study import opening as _opening
from lrfind.study import report
from lrfind.study import search as _search_loop
from lrfind.study import storage as _storage
from lrfind.study import trials as _study
from lrfind.study import tune_final as _tune_final
from lrfind.study import tune_lr as _tune_lr
from lrfind.study import tune_search as _tune_search
from lrfind.study import workers as _workers
from lrfind.study.painter import Painter
from lrfind.study.result import TuneResult, interrupted_says
from lrfind.study.tune_config import TuneConfig

log = logging.getLogger(__name__)


def _data(cfg: TuneConfig, device: torch.device) -> tuple[ImageData, ImageData]:
    """(train, validation): the last ``val_size`` training images validate (by default 10,000, at
    most a sixth of the set); ``train_subset`` trims the rest."""
    data = load_dataset(cfg.dataset, "train", root=cfg.data_dir, device=device)
    if cfg.val_size is None:
        train, val = data.holdout()
    elif cfg.val_size < len(data):
        train, val = data.split(cfg.val_size)
    else:
        raise DataSizeError("val_size", f"val_size {cfg.val_size:,} leaves none of the {len(data):,} training examples of "
                            f"{cfg.dataset} to train on: give fewer (a sixth, {len(data) // 6:,}, is usual), or "
                            "leave it out for 10,000, at most a sixth of the set")
    if cfg.train_subset is not None:
        train = train.subset(cfg.train_subset)
    check_batch_fits(cfg.batch_size, train, val)       # a small data set of the user's: before anything is written
    return train, val


# other spellings of TuneConfig's fields (Optuna's among them)
_OTHER_NAMES = {"n_trials": "trials", "lr": "base_lr", "timeout_s": "timeout", "n_jobs": "parallel",
                "storage_url": "storage", "mixed_precision": "amp", "subset": "train_subset", "num_threads": "threads"}


def tune(config: TuneConfig | None = None, **fields: Any) -> TuneResult:
    """Run (or resume) a study: range test, then Optuna over decay schedules, then the final test.

    Give a ``TuneConfig`` or its fields: ``tune(trials=50, epochs=3)``.
    """
    check_names("tune", fields, TuneConfig.__dataclass_fields__, aliases=_OTHER_NAMES,
                takes="Its arguments are TuneConfig's fields: see help(lrfind.TuneConfig)")
    if config is not None and fields:
        raise TypeError("give either a TuneConfig or its fields, not both")
    cfg = config or TuneConfig(**fields)
    clock = time.perf_counter()
    deadline = _search_loop.now() + cfg.timeout if cfg.timeout else None      # no batch of trials starts after it
    check_dataset(cfg.dataset)                # an unknown name, a missing file: before anything is loaded
    cfg.augment_fn                            # a built-in augmentation's name, or the user's function
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    train, val = _data(cfg, device)           # a missing data set fails before the storage is touched
    regression = is_regression(train.labels)
    cfg = _with_metric(cfg, regression)
    model = get_model(cfg.model, seed=cfg.seed).to(device)     # the range test's, checked before the storage too
    check_fits(model, train.images, train.classes, cfg.model, regression=regression, labels=train.labels)
    if cfg.augment:
        check_augment(cfg.augment_fn, train.images, cfg.augment)
    url = cfg.storage or _storage.default_storage(out)
    # Figures are drawn while the device trains: beside a GPU in a process of their own (in a thread
    # they would take the GIL from the loop that feeds the GPU), beside a CPU in a thread.
    with _storage.run_lock(url), Painter(process=device.type == "cuda") as painter, on_device(device), \
            _threads.restored():            # the CPU threads lrfind sets are put back when it returns
        study, cfg = open_settled(cfg, out)   # checks storage, setup and base LR before anything is written
        per_epoch = len(train.loader(cfg.batch_size))
        total = cfg.epochs * per_epoch
        study.set_user_attr("steps", total)
        data = {"name": cfg.dataset, "train": len(train), "val": len(val), "shape": list(train.images.shape[1:]),
                "classes": train.classes, "augment": cfg.augment}
        if not train.images.is_floating_point():
            data["tokens"] = True                    # integer inputs: token ids for a model that embeds them
        if regression:
            data["regression"] = True                # float targets: the model returns ``classes`` values
        study.set_user_attr("data", data)
        study.set_user_attr("steps_per_epoch", per_epoch)

        seconds: dict[str, float] = {"setup": time.perf_counter() - clock}     # data and storage
        clock = time.perf_counter()
        base_lr, max_peak = _tune_lr.settle(study, cfg, model, train, out, painter)

        seconds["range_test"], clock = time.perf_counter() - clock, time.perf_counter()
        parallel = cfg.parallel or _tune_search.auto_parallel(cfg, device, train)
        _tune_search.search(study, cfg, train, val, base_lr, max_peak, total, per_epoch, parallel,
                            single=_storage.single_process(url), deadline=deadline)
        seconds["search"], clock = time.perf_counter() - clock, time.perf_counter()
        figures = painter.submit(report.draw_figures, report.snapshot(study), out)   # stage 3 adds no trials

        final: dict[str, Any] = {}
        if cfg.final:
            # workers of one study finish together: the first retrains, the others take its results
            with _workers.claim(study), interrupted_says("during the final retrains (stage 3); the search is stored: "
                                                         "run the same command again to retrain"):
                final = report.final_of(study, _study.best(study), seeds=cfg.final_seeds)
                if not final:
                    final = _tune_final.retrain(study, cfg, train, val, base_lr, max_peak)
                    study.set_user_attr("final", final)
            seconds["final"] = time.perf_counter() - clock
        seconds = {k: round(v, 2) for k, v in seconds.items()}
        study.set_user_attr("seconds", seconds)                      # of the last run
        if device.type == "cuda":
            study.set_user_attr("peak_gpu_bytes", torch.cuda.max_memory_allocated(device))
        with interrupted_says(f"while writing the report; the study is stored: lrfind show --out {out} writes it"):
            files = report.write(study, out, figures=False)
            waited = time.perf_counter()
            log.info("report written; waiting for its figures")
            files += figures.result()
        log.info("waited %.2f s for the report's figures", time.perf_counter() - waited)
    log.info("figure process and storage closed")
    return TuneResult(study, base_lr, out, final, seconds, files)


def _with_metric(cfg: TuneConfig, regression: bool) -> TuneConfig:
    """The config with its metric settled: accuracy for class labels, loss for regression targets
    (which have no accuracy)."""
    if regression and cfg.metric == "accuracy":
        raise DataSetError(f"--metric accuracy needs class labels, and dataset {cfg.dataset} has float regression "
                           "targets; leave --metric out (loss is its default) or give integer class indices")
    return cfg if cfg.metric is not None else _settled(cfg, metric="loss" if regression else "accuracy")


def open_settled(cfg: TuneConfig, out: Path) -> tuple[optuna.Study, TuneConfig]:
    """The study (``opening.open_study``), and the config with what it leaves to the stored study settled."""
    study = _opening.open_study(cfg, out)
    for name in _opening.AS_STORED:
        if getattr(cfg, name) is None:
            cfg = _settled(cfg, **{name: _opening.stored_setup(study, name)})
    return study, cfg


def _settled(cfg: TuneConfig, **values: Any) -> TuneConfig:
    """The config with ``values`` that were left open settled."""
    settled = copy.copy(cfg)          # not dataclasses.replace: its checks would build the user's model again
    for name, value in values.items():
        object.__setattr__(settled, name, value)
    return settled


__all__ = ["tune"]
