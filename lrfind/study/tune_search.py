"""Stage 2 of ``tune``: batches of trials trained fused on one device (``run_trials``), reporting
after every epoch so that the pruner can stop hopeless trials; the batch size measured on CUDA,
and halved when a batch runs out of its memory."""

from __future__ import annotations

import logging

import optuna
import torch

from lrfind import _threads
from lrfind._output import progress_bar
from lrfind.data.images import ImageData
from lrfind.engine.trials import TrialRecord, TrialSpec, run_trials
from lrfind.study import pruner as _pruner
from lrfind.study import retries as _retries
from lrfind.study import search as _search_loop
from lrfind.study import trials as _study
from lrfind.study import workers as _workers
from lrfind.study.result import TuneInterrupted, interrupted_text
from lrfind.study.space import asked_spec
from lrfind.study.tune_config import TuneConfig

log = logging.getLogger(__name__)


def auto_parallel(cfg: TuneConfig, device: torch.device, train: ImageData) -> int:
    """As many trials at once as fit on CUDA (measured). 8 on the CPU: there the trials are looped, so
    a batch's size does not change the cost per trial, and smaller batches give the sampler and the
    pruner more finished trials to learn from (a 50-trial CPU study found one-cycle, 98.98% test, in
    batches of 8, and multistep, 98.83%, in batches of 16; 7% more time)."""
    if device.type != "cuda":
        return min(cfg.trials, 8)
    from lrfind.engine.trials import FusedTrials

    x, y = train.images[:cfg.batch_size], train.labels[:cfg.batch_size]
    used = []
    for k in (2, 4):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        engine = FusedTrials(cfg.model, [TrialSpec("constant", {}, seed=i) for i in range(k)], base_lr=1e-3,
                             total_steps=2, steps_per_epoch=1, optimizer=cfg.optimizer_config, device=device)
        engine.step(x, y)
        torch.cuda.synchronize()
        used.append(torch.cuda.max_memory_allocated() - start)
        del engine
    per_trial = max(1, (used[1] - used[0]) // 2)
    free, _ = torch.cuda.mem_get_info()
    return max(1, min(cfg.trials, 256, int(0.5 * free // per_trial)))


def search(study: optuna.Study, cfg: TuneConfig, train: ImageData, val: ImageData, base_lr: float,
           max_peak: float, total: int, per_epoch: int, parallel: int, *, single: bool,
           deadline: float | None = None) -> None:
    """Stage 2: batches of ``parallel`` trials trained fused (``_search_loop.search_trials`` asks and counts)."""
    threads = _threads.Keeper(cfg.threads, lambda: _workers.workers_here(study))

    def run(asked: list[optuna.Trial], specs: list[TrialSpec], bar) -> int | None:
        return _run_or_halve(study, cfg, asked, specs, train, val, base_lr, total, bar, threads.tick)

    _search_loop.search_trials(study, cfg, lambda trial: asked_spec(trial, cfg, total, per_epoch, max_peak), run,
                               parallel, single=single, deadline=deadline, threads=threads)


def _run_or_halve(study, cfg, asked, *args) -> int | None:
    """Run a batch of trials; after CUDA ran out of memory, the smaller size its requeued trials run at.

    The size came from a two-step probe (``auto_parallel``); a model of the user's may need more
    at evaluation or in cuDNN's workspaces than those two steps showed."""
    try:
        _run_batch(study, cfg, asked, *args)
        return None
    except torch.cuda.OutOfMemoryError:
        if len(asked) == 1:
            raise
    torch.cuda.empty_cache()               # out of the except clause: the failed batch's tensors are free
    log.warning("out of GPU memory with %d trials side by side: they run again, %d at a time",
                len(asked), len(asked) // 2)
    return len(asked) // 2


def _run_batch(study, cfg, asked, specs, train, val, base_lr, total, bar, on_step=None) -> None:
    told: set[int] = set()
    try:
        steps = progress_bar(total=total, desc=f"{len(asked)} trials, epoch 1/{cfg.epochs}", leave=False,
                             unit="step", disable=not cfg.progress, dynamic_ncols=True)

        def report(epoch: int, records: list[TrialRecord], running: list[int]) -> set[int]:
            steps.set_description(f"{len(running)} trials, epoch {min(epoch + 2, cfg.epochs)}/{cfg.epochs}")
            for k in running:
                asked[k].report(_study.objective(records[k], cfg.scoring), epoch)
            if epoch == cfg.epochs - 1:       # every epoch is reported, but a finished trial is complete
                return set()
            verdicts = _pruner.should_prune(study, [asked[k] for k in running])
            return {k for k, prune in zip(running, verdicts) if prune}

        for trial in asked:                         # the trials it trained beside: those of its batch
            trial.set_user_attr("batch", asked[0].number)
        with steps:
            records = run_trials(cfg.model, specs, train, val, epochs=cfg.epochs, batch_size=cfg.batch_size,
                                 base_lr=base_lr, optimizer=cfg.optimizer_config, seed=cfg.seed,
                                 same_init=cfg.same_init, on_epoch=report, progress=steps, amp=cfg.amp,
                                 channels_last=cfg.channels_last, fold=cfg.fold, max_grad_norm=cfg.max_grad_norm,
                                 augment=cfg.augment_fn, on_step=on_step)
        for k, (trial, rec) in enumerate(zip(asked, records)):
            _study.tell(study, trial, rec, cfg.scoring)
            told.add(k)
            bar.update(1)
    except BaseException as e:
        with _workers.claim(study):
            for k, trial in enumerate(asked):
                if k not in told:
                    _retries.abandon(study, trial, e)   # whoever goes on runs it again
        if isinstance(e, KeyboardInterrupt):
            raise TuneInterrupted(interrupted_text(study, cfg.trials, "run the same command again")) from None
        raise
