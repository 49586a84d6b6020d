"""The decay search for a training loop of your own: ``tune_loop(train, base_lr=..., epochs=..., ...)``.

``tune`` trains its trials side by side in lrfind's engine: fast, for a model that maps a tensor of
examples to class scores or values, on data that fits on the device. Any other training (your
DataLoader, a detection or language model, a loss of your own, a Trainer) goes through
``tune_loop``: your function trains one trial with the optimizer and torch scheduler the trial
hands it, reports its validation score after every epoch, and returns the last one. The study is
``tune``'s: the same decay types and search spaces, the constant LR as trial 0, the median pruner,
a stored and resumable Optuna study, the same report (best.json, best_schedule.py, figures;
``lrfind show --out OUT``) and ``load_best(OUT)`` for a run of another length. Trials run one after
another (several processes may share the study: on one machine its journal file, across machines
a PostgreSQL ``storage``; the processes of one distributed training run each trial together).

    def train(trial):
        model = Net().to(device)
        optimizer = trial.optimizer(model.parameters())     # at the trial's peak LR
        scheduler = trial.scheduler(optimizer)              # torch's own; step() after every optimizer.step()
        for epoch in range(trial.epochs):
            for x, y in loader:
                ...; optimizer.step(); scheduler.step()
            trial.report(accuracy(model, val_loader))       # Optuna may stop a hopeless trial here
        return accuracy(model, val_loader)

    result = lrfind.tune_loop(train, base_lr=0.05, epochs=10, steps_per_epoch=len(loader), metric="accuracy")
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from lrfind import _threads
from lrfind._args import check_names
from lrfind._errors import warn_at_users_line
from lrfind._imports import callable_name
from lrfind.engine.trials import TrialSpec
from lrfind.rangetest.result import RangeTestResult
from lrfind.study import loop_confirm as _loop_confirm
from lrfind.study import opening as _opening
from lrfind.study import peers as _peers
from lrfind.study import report
from lrfind.study import retries as _retries
from lrfind.study import search as _search_loop
from lrfind.study import storage as _storage
from lrfind.study import trials as _study
from lrfind.study import workers as _workers
from lrfind.study.loop_config import LoopConfig
from lrfind.study.loop_trial import LoopTrial, TrialDiverged, Unstudied
from lrfind.study.peers import Peers
from lrfind.study.result import TuneInterrupted, TuneResult, interrupted_says, interrupted_text
from lrfind.study.space import asked_spec


def tune_loop(train: Callable[[LoopTrial], float | None], *, base_lr: float | RangeTestResult | None, epochs: int,
              steps_per_epoch: int, metric: str, trials: int = 30, **fields: Any) -> TuneResult:
    """Search the LR decay for your own training function; returns what ``tune`` returns (no test
    scores: evaluate ``result.best`` on your test set yourself).

    train: ``train(trial) -> score``: builds a model, trains it for ``trial.epochs`` epochs of
        ``trial.steps_per_epoch`` optimizer steps with ``trial.optimizer(...)`` and
        ``trial.scheduler(...)``, calls ``trial.report(score)`` after every epoch, and returns the
        last score (or None: the last reported). A Lightning module: ``trial.lightning(optimizer)``
        from its ``configure_optimizers``, and ``trial.lightning_callback(...)`` in the Trainer;
        Hugging Face's Trainer: ``trial.hugging_face(optimizer)`` and ``trial.hugging_face_callback(...)``.
    base_lr: the LR of the constant baseline and of every schedule's peak (``find_lr``'s suggestion);
        or ``find_lr``'s result itself: its suggestion, and the report shows its curve, its sweeps
        and its warnings as ``tune``'s does; None resumes a stored study at its own.
    metric: "accuracy" (a fraction in [0, 1], maximised) or "loss" (minimised).
    Other fields (``LoopConfig``): ``optimizer`` ("sgd", "adam", "adamw"), ``momentum``,
    ``weight_decay``, ``schedules`` (names; the constant is always trial 0), ``max_peak`` (how far
    above the base LR warming schedules may peak, 3), ``pruner`` ("median", "hyperband", "none"),
    ``storage``, ``study_name``, ``out`` (report folder, "lrfind_out"), ``seed``, ``same_seed``
    (True: ``trial.seed`` is ``seed`` for every trial, and a trial that repeats an earlier one's
    choices takes its score without running and does not count towards ``trials``, at most
    ``trials`` such; False: ``seed`` + the trial's number), ``timeout``
    (seconds or "20m": no trial starts after it), ``final_seeds`` (3: after the search, the best
    schedule and the best constant LR run again that many times with seeds the search did not use,
    and the verdict gives both means, the difference per seed and its mean with its standard error,
    leaving out a run that diverged; 0: not), ``search_constant_lr`` (True: the constant's LR is
    searched too, 0.2x to 2x ``base_lr``, at most ``max_peak``; False: the constant at ``base_lr``
    only; None: the stored study's, True for a new one), ``progress``.

    Running it again resumes the study: only missing trials run. A trial your function raises in is
    stored as failed and runs again next time; Ctrl-C keeps the finished trials.

    Inside a distributed training (a default process group of several processes, as under
    torchrun with DDP or FSDP), call it in every process with the same arguments: every process
    runs every trial, together. Process 0 keeps the study, and its reported scores count (reduce
    them across the processes first, as a distributed evaluation does). Every process returns
    the result: the others with an in-memory copy of the study (``result.best`` for the real run).
    """
    if not callable(train):
        raise TypeError(f"train must be a function train(trial) -> score, got {type(train).__name__}")
    range_test = None
    if isinstance(base_lr, RangeTestResult):
        range_test, base_lr = base_lr, base_lr.suggested_lr
        if base_lr is None:
            raise ValueError(f"the range test gave no clear base LR ({range_test.reason}): look at its plot "
                             "(result.plot(path=...)) and pass base_lr as a number")
    check_names("tune_loop", fields, LoopConfig.__dataclass_fields__, aliases={"n_trials": "trials", "lr": "base_lr"},
                takes="Its other arguments are LoopConfig's fields: see help(lrfind.LoopConfig)")
    name = fields.pop("study_name", None) or f"lrfind-loop-{getattr(train, '__name__', 'train')}"
    cfg = LoopConfig(train=_name(train), base_lr=base_lr, epochs=epochs, steps_per_epoch=steps_per_epoch,
                     metric=metric, trials=trials, study_name=name, **fields)
    peers = _peers.default_group()
    if peers is None:
        return _study_loop(train, cfg, range_test)
    if not peers.leader:
        return _follow(train, cfg, peers)
    told = _Telling(train, peers)
    try:
        result = _study_loop(told, cfg, range_test)
    except BaseException as e:
        if not told.failed:              # else the others failed in the same run, or wait in its collectives
            peers.share(_peers.Ended(error=f"{type(e).__name__}: {e}"))
            peers.close()
        raise
    peers.share(_peers.Ended(result=dataclasses.replace(result, study=report.snapshot(result.study))))
    peers.close()
    return result


def _study_loop(train: Callable[[LoopTrial], Any], cfg: LoopConfig, range_test: RangeTestResult | None) -> TuneResult:
    """The study: opened or resumed, searched, confirmed with new seeds, reported."""
    clock = time.perf_counter()
    deadline = _search_loop.now() + cfg.timeout if cfg.timeout else None
    out = Path(cfg.out)
    url = cfg.storage or _storage.default_storage(out)
    new = f"study {cfg.study_name!r} is new and needs a base_lr: find_lr(model, loader).suggested_lr, say " \
          "(base_lr=None resumes a stored study at its own)"
    if cfg.base_lr is None and _storage.local_storage(url) and not _storage.local_file(url).is_file():
        raise ValueError(new)                   # before the storage is made
    with _storage.run_lock(url), _threads.restored():
        study = _opening.open_study(cfg, out)     # refuses a stored study of another setup, before any write
        if cfg.search_constant_lr is None:        # the stored study's
            cfg = dataclasses.replace(cfg, search_constant_lr=_opening.stored_setup(study, "search_constant_lr"))
        if _opening.stored_base_lr(study) is None:
            if cfg.base_lr is None:
                raise ValueError(new)
            _opening.store_base_lr(study, cfg.base_lr, range_test)
        study.set_user_attr("max_peak", cfg.max_peak)
        study.set_user_attr("steps", cfg.epochs * cfg.steps_per_epoch)
        study.set_user_attr("steps_per_epoch", cfg.steps_per_epoch)
        _run(study, cfg, train, _storage.single_process(url), deadline)
        seconds = {"search": round(time.perf_counter() - clock, 2)}
        clock = time.perf_counter()
        # workers of one study: the first runs them, the others take its results
        with interrupted_says("during the runs with new seeds: the search is stored; call tune_loop again to "
                              "run them"), _workers.claim(study):
            final = _loop_confirm.confirm(study, cfg, train)
        if final:
            seconds["final"] = round(time.perf_counter() - clock, 2)
        study.set_user_attr("seconds", seconds)
        files = report.write(study, out)
    return TuneResult(study, float(study.user_attrs["base_lr"]), out, final, seconds, files)


class _Telling:
    """The user's function in process 0 of a distributed training: before each run it tells the
    other processes which trial to run with it, and the trial reports to them too."""

    def __init__(self, train: Callable[[LoopTrial], Any], peers: Peers) -> None:
        self.train, self.peers, self.failed = train, peers, False

    def __call__(self, handed: LoopTrial) -> Any:
        self.peers.share((handed.number, handed._spec, handed._base_lr))
        handed._peers = self.peers
        try:
            return self.train(handed)
        except (optuna.TrialPruned, TrialDiverged):
            raise
        except BaseException:
            self.failed = True
            raise


def _follow(train: Callable[[LoopTrial], Any], cfg: LoopConfig, peers: Peers) -> TuneResult:
    """The other processes of a distributed training: run each trial process 0 names, until it
    says the study is over, and return its result. They keep no study: process 0 does."""
    while not isinstance(told := peers.share(), _peers.Ended):
        number, spec, base_lr = told
        try:
            train(LoopTrial(Unstudied(number), spec, cfg, base_lr, peers=peers))
        except (optuna.TrialPruned, TrialDiverged):
            pass                                     # as process 0's trial ended
    peers.close()
    if told.error is not None:
        raise RuntimeError(f"process 0's tune_loop failed ({told.error}); this process stopped with it")
    return told.result


def _name(train: Callable) -> str:
    try:
        return callable_name(train, "train", TypeError)
    except TypeError:                 # a lambda or a closure: its qualified name will do
        return getattr(train, "__qualname__", type(train).__name__)


def _run(study: optuna.Study, cfg: LoopConfig, train: Callable, single: bool, deadline: float | None) -> None:
    """The search, one trial at a time: ``tune``'s asking and counting, the user's function as the run."""
    def run(asked: list[optuna.Trial], specs: list[TrialSpec], bar) -> None:
        for trial, spec in zip(asked, specs):
            _one(study, cfg, train, trial, LoopTrial(trial, spec, cfg, float(study.user_attrs["base_lr"])))
            bar.update(1)

    def describe(trial: optuna.Trial) -> TrialSpec:
        return asked_spec(trial, cfg, cfg.epochs * cfg.steps_per_epoch, cfg.steps_per_epoch, cfg.max_peak)

    threads = _threads.Keeper(cfg.threads, lambda: _workers.workers_here(study))
    _search_loop.search_trials(study, cfg, describe, run, 1, single=single, deadline=deadline, threads=threads)


def _one(study: optuna.Study, cfg: LoopConfig, train: Callable, trial: optuna.Trial, handed: LoopTrial) -> None:
    """Run one trial of the user's function and tell Optuna how it ended."""
    try:
        value = train(handed)
    except optuna.TrialPruned:
        trial.set_user_attr("epochs_run", len(handed.scores))
        study.tell(trial, state=TrialState.PRUNED)
        return
    except TrialDiverged:
        value = None                              # its NaN is the last score reported
    except BaseException as e:
        _retries.abandon(study, trial, e)        # the next run tries it again
        if isinstance(e, KeyboardInterrupt):
            raise TuneInterrupted(interrupted_text(study, cfg.trials, "call tune_loop again")) from None
        taken = handed.steps_taken()
        if taken is not None and taken >= handed.total_steps:       # torch's one-cycle refuses to go on
            raise ValueError(handed.wrong_steps() or f"trial {trial.number} ran past its last step") from e
        raise
    wrong = handed.wrong_steps()
    if wrong:
        warn_at_users_line(wrong)
    try:
        value = handed.result(value)
    except (TypeError, ValueError) as e:
        study.tell(trial, state=TrialState.FAIL)
        raise type(e)(f"{e} (trial {trial.number} is stored as failed)") from None
    reported = len(handed.scores)
    if not reported:                             # one message for the whole study (Python shows it once)
        warn_at_users_line("train returned a score without calling trial.report(score) after its epochs: "
                           "Optuna cannot stop hopeless trials early, and the report shows no history per epoch; "
                           "report the validation score after every epoch")
    last = handed.scores[-1] if handed.scores else None
    if last is None or not (last == value or math.isnan(last) and math.isnan(value)):
        handed.scores.append(value)               # the history ends with the score Optuna gets
        trial.set_user_attr(_study.METRICS[cfg.metric][0], handed.scores)
    trial.set_user_attr("epochs_run", len(handed.scores) if reported else handed.epochs)   # unreported: a whole run
    if not math.isfinite(value):
        trial.set_user_attr("failure", "nan")     # diverged: finished, and no score
        study.tell(trial, state=TrialState.FAIL)
        return
    study.tell(trial, value)


__all__ = ["tune_loop"]
