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
import numbers
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
import torch
from optuna.trial import TrialState

from lrfind.study import peers as _peers
from lrfind.study import search as _search_loop
from lrfind.study import storage as _storage
from lrfind.study import trials as _study
from lrfind.study import report
from lrfind.study import tune as tuner
from lrfind._args import check_names, check_positive, unknown
from lrfind._duration import timeout_seconds
from lrfind._errors import warn_at_users_line
from lrfind._imports import callable_name
from lrfind._output import progress_bar
from lrfind.study.peers import Peers
from lrfind.rangetest.result import RangeTestResult
from lrfind.schedules import get_schedule, stored_choices
from lrfind.engine.trials import TrialSpec
from lrfind.study.best import check_optimizer_lr
from lrfind.study.spec import StudySpec
from lrfind.study.tune import TuneInterrupted, TuneResult, _interrupted_says, _spec


class TrialDiverged(ArithmeticError):
    """Raised by ``LoopTrial.report`` on a NaN or infinite score: the trial failed, the study goes on."""


@dataclass(frozen=True)
class LoopConfig(StudySpec):
    """What a ``tune_loop`` study is made of; the fields that shape its search are stored with it."""

    train: str                                   # the training function's name (module:function)
    base_lr: float | None                        # None: the stored study's
    epochs: int
    steps_per_epoch: int
    metric: str                                  # "accuracy" (a fraction, higher is better) or "loss"
    trials: int = 30
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float | None = None
    schedules: tuple[str, ...] | None = None
    max_peak: float = 3.0
    pruner: str = "median"
    storage: str | None = None
    study_name: str | None = None
    out: str = "lrfind_out"
    seed: int = 0
    timeout: float | str | None = None
    heartbeat: int = 10
    progress: bool = True
    same_seed: bool = True                       # trial.seed: the same for every trial, or seed + trial number
    final_seeds: int = 3                         # after the search: best and constant run again with new seeds

    def __post_init__(self) -> None:
        for name in ("epochs", "steps_per_epoch", "trials", "heartbeat", "final_seeds"):
            value = getattr(self, name)
            least = 0 if name == "final_seeds" else 1
            if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= least):
                kind = "an integer >= 0" if least == 0 else "a positive integer"
                raise ValueError(f"{name} must be {kind}, got {value!r}")
        if self.base_lr is not None:
            check_positive("base_lr", self.base_lr, then=" (find_lr(...).suggested_lr is one)")
        if self.metric not in _study.METRICS:
            raise ValueError(f"metric must be 'accuracy' (a fraction in [0, 1], higher is better) or 'loss' (lower is "
                             f"better), got {self.metric!r}")
        check_positive("max_peak", self.max_peak, least=1)
        if self.pruner not in _study.PRUNERS:
            raise ValueError(unknown("pruner", self.pruner, _study.PRUNERS))
        object.__setattr__(self, "timeout", timeout_seconds(self.timeout))
        self.check_schedules()
        self.check_out()
        self.optimizer_config                                # checks the optimizer's name and settings

    @property
    def scoring(self) -> str:
        return self.metric

    @property
    def same_init(self) -> bool:                 # what ``tuner._spec`` and ``_search_loop.search_trials`` read
        return self.same_seed

    def setup(self) -> dict[str, Any]:
        setup = {"model": self.train, "dataset": None, "loop": True, "epochs": self.epochs,
                 "steps_per_epoch": self.steps_per_epoch, "batch_size": None, "optimizer": self.optimizer,
                 "momentum": self.momentum, "max_peak": self.max_peak, "schedules": self.choices,
                 "metric": self.metric, "same_seed": self.same_seed}
        if self.optimizer_config.weight_decay:
            setup["weight_decay"] = self.optimizer_config.weight_decay
        return setup


class LoopTrial:
    """One trial, handed to your training function: its schedule, peak LR, optimizer and scheduler.

    ``lr`` is the trial's peak LR (the base LR, times up to ``max_peak`` for schedules that warm
    up); ``scheduler(optimizer)`` multiplies the optimizer's LR, so build the optimizer with
    ``optimizer(params)`` or at ``lr=trial.lr``. ``seed`` is the study's seed, the same for every
    trial unless ``same_seed=False``: seed the weights and the batch order with it, and trials
    differ by their schedules only, not by the luck of the draw. Call ``report(score)`` after every
    epoch; ``scores`` holds what was reported. A trial run by Lightning's or Hugging Face's Trainer
    takes ``lightning(optimizer)`` / ``hugging_face(optimizer)`` and their reporting callbacks.
    """

    def __init__(self, trial: optuna.Trial, spec: TrialSpec, cfg: LoopConfig, base_lr: float,
                 peers: Peers | None = None) -> None:
        self._trial, self._cfg = trial, cfg
        self._spec, self._base_lr, self._peers = spec, base_lr, peers     # peers: the processes running it too
        self.number, self.seed = trial.number, spec.seed
        self.schedule, self.params = spec.schedule, dict(spec.params)
        self.lr = base_lr * spec.lr_scale
        self.epochs, self.steps_per_epoch = cfg.epochs, cfg.steps_per_epoch
        self.total_steps = cfg.epochs * cfg.steps_per_epoch
        self.scores: list[float] = []
        self.losses: list[float] = []
        self._plateau: Any = None
        self._built: Any = None                  # the scheduler handed out, to count its steps
        self._scheduled: weakref.WeakSet = weakref.WeakSet()      # the optimizers given one

    def optimizer(self, params) -> torch.optim.Optimizer:
        """The study's ``torch.optim`` optimizer over ``params``, at this trial's peak LR."""
        return self._cfg.optimizer_config.torch_optimizer(params, lr=self.lr)

    def scheduler(self, optimizer: torch.optim.Optimizer):
        """torch's own scheduler for this trial's ``epochs`` x ``steps_per_epoch`` steps: call
        ``scheduler.step()`` after every ``optimizer.step()``. Reduce-on-plateau follows the
        validation loss that ``report`` is given, and ignores those per-step calls."""
        return self._scheduler(optimizer)

    def _scheduler(self, optimizer: torch.optim.Optimizer):
        """``scheduler``, warning at the line that called the public method that called this."""
        if optimizer in self._scheduled:
            raise ValueError(f"trial {self.number} asked for a second scheduler of the same optimizer: it would "
                             "start from the LR the first one set and both would move it; make one scheduler per "
                             "optimizer (a second optimizer, a GAN's, may have its own)")
        self._scheduled.add(optimizer)
        check_optimizer_lr(optimizer, self.lr)
        built = get_schedule(self.schedule).build(optimizer, self.total_steps, **self.params)
        if get_schedule(self.schedule).needs_metric:
            self._plateau = _Reported(built)
            return self._plateau
        self._built = built
        return built

    def lightning(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """What a LightningModule's ``configure_optimizers()`` returns for this trial: the optimizer,
        and its scheduler stepped after every optimizer step (``"interval": "step"``). A plateau
        trial's scheduler is left out: ``report`` steps it with the validation loss. With
        ``lightning_callback``, a Lightning run is one trial::

            class LitNet(L.LightningModule):                 # given the trial in __init__
                def configure_optimizers(self):
                    return self.trial.lightning(self.trial.optimizer(self.parameters()))

            def train(trial):
                trainer = L.Trainer(max_epochs=trial.epochs,
                                    callbacks=[trial.lightning_callback("val_acc", loss="val_loss")])
                trainer.fit(LitNet(trial), train_loader, val_loader)
                return trial.scores[-1]
        """
        from lrfind.rangetest.lightning import scheduler_config

        scheduler = self._scheduler(optimizer)
        return {"optimizer": optimizer} if self._plateau is not None else scheduler_config(optimizer, scheduler)

    def lightning_callback(self, monitor: str, *, loss: str | None = None) -> Any:
        """A Lightning ``Callback`` that calls ``report`` after every validation epoch with the
        metric logged as ``monitor`` (``self.log(monitor, ...)`` in ``validation_step``) and, for a
        plateau trial, the validation loss logged as ``loss``. A pruned trial's
        ``optuna.TrialPruned`` goes up through ``trainer.fit``: let it propagate."""
        from lrfind.rangetest.lightning import reporting_callback

        return reporting_callback(self.report_logged, monitor, loss)

    def hugging_face(self, optimizer: torch.optim.Optimizer) -> tuple[torch.optim.Optimizer, Any]:
        """What Hugging Face's ``Trainer(optimizers=...)`` takes for this trial: the optimizer and
        its scheduler, which the Trainer steps after every optimizer step. A plateau trial's is
        stepped by ``report``: the Trainer gets a scheduler that keeps the LR as it is. With
        ``hugging_face_callback``, a Trainer run is one trial::

            def train(trial):
                model = make_model()
                args = TrainingArguments(out, num_train_epochs=trial.epochs, eval_strategy="epoch", ...)
                Trainer(model, args, train_dataset=..., eval_dataset=..., compute_metrics=...,
                        optimizers=trial.hugging_face(trial.optimizer(model.parameters())),
                        callbacks=[trial.hugging_face_callback("eval_accuracy", loss="eval_loss")]).train()
        """
        from lrfind.study.hugging_face import HeldLR

        scheduler = self._scheduler(optimizer)
        return optimizer, HeldLR(optimizer) if self._plateau is not None else scheduler

    def hugging_face_callback(self, metric: str, *, loss: str | None = None) -> Any:
        """A ``transformers.TrainerCallback`` that calls ``report`` after every epoch's evaluation
        (``eval_strategy="epoch"``) with its ``metric`` (``compute_metrics``' keys, prefixed
        ``eval_`` by the Trainer) and, for a plateau trial, ``loss`` (``"eval_loss"``). A pruned
        trial's ``optuna.TrialPruned`` goes up through ``trainer.train()``: let it propagate."""
        from lrfind.study.hugging_face import reporting_callback

        return reporting_callback(self.report_logged, metric, loss)

    def steps_taken(self) -> int | None:
        """How many times the scheduler handed out was stepped (None: none was, or it follows a metric)."""
        return None if self._built is None else self._built.last_epoch

    def wrong_steps(self) -> str | None:
        """Why the scheduler's steps do not match the run tune_loop was told of, or None."""
        taken = self.steps_taken()
        if taken is None or taken == self.total_steps:
            return None
        return (f"trial {self.number}'s scheduler was stepped {taken} times, but tune_loop was told of epochs="
                f"{self.epochs} x steps_per_epoch={self.steps_per_epoch} = {self.total_steps} optimizer steps: call "
                "scheduler.step() after every optimizer.step(), and pass steps_per_epoch=len(train_loader) (the "
                "optimizer steps of an epoch)")

    def report(self, score: float, *, loss: float | None = None) -> None:
        """The validation score after an epoch (the study's metric: an accuracy in [0, 1], or a loss);
        ``loss``: the validation loss too, when the metric is accuracy and the schedule reduces on
        plateau. Raises ``optuna.TrialPruned`` when Optuna's pruner stops the trial (let it
        propagate; never after the last epoch, when the run is complete), and ``TrialDiverged`` on
        a NaN or infinite score. In a distributed training every process calls it, and process 0's
        score and verdict count in all of them."""
        if self._peers is None:
            self._report(score, loss)
        elif self._peers.leader:
            self._report_and_tell(score, loss)
        else:
            self._as_told()

    def report_logged(self, logged: Mapping[str, Any], metric: str, loss: str | None, *, where: str,
                      how: str) -> None:
        """``report`` with the values a framework logged as ``metric`` (and ``loss``): the reporting
        callbacks' way. A name not logged is a KeyError that lists those that were (``where``) and
        says how to log it (``how``)."""
        for name in (metric, loss):
            if name is not None and name not in logged:
                raise KeyError(f"{where} have no {name!r} (there are: {', '.join(sorted(logged)) or 'none'}): "
                               f"{how}, or name one of those")
        self.report(logged[metric], loss=None if loss is None else logged[loss])

    def _report_and_tell(self, score: float, loss: float | None) -> None:
        """``report`` in process 0: then the others hear its score, loss and verdict, also when it
        raises (pruned, diverged, a mistake), so that every process stops together."""
        scores, losses, verdict = len(self.scores), len(self.losses), "error"
        try:
            self._report(score, loss)
            verdict = None
        except optuna.TrialPruned:
            verdict = "pruned"
            raise
        except TrialDiverged:
            verdict = "diverged"
            raise
        except Exception as e:
            verdict = f"error: {type(e).__name__}: {e}"
            raise
        finally:
            self._peers.share((self.scores[-1] if len(self.scores) > scores else None,
                               self.losses[-1] if len(self.losses) > losses else None, verdict))

    def _as_told(self) -> None:
        """``report`` in the other processes: process 0's score, loss and verdict."""
        score, loss, verdict = self._peers.share()
        if score is not None:
            self.scores.append(score)
        if loss is not None:
            self.losses.append(loss)
        if self._plateau is not None and loss is not None and verdict in (None, "pruned"):
            self._plateau.step(loss)                 # as process 0 stepped its own
        if verdict == "pruned":
            raise optuna.TrialPruned(f"trial {self.number} pruned after epoch {len(self.scores)}")
        if verdict == "diverged":
            raise TrialDiverged(f"trial {self.number} reported {score} after epoch {len(self.scores)}")
        if verdict:
            raise RuntimeError(f"trial {self.number}: process 0's report failed ({verdict})")

    def _report(self, score: float, loss: float | None) -> None:
        score = self._checked(score, "score")
        metric = self._cfg.metric
        loss = score if metric == "loss" else (None if loss is None else _number(loss, "loss"))
        self.scores.append(score)
        if loss is not None:
            self.losses.append(loss)
        self._trial.set_user_attr(_study.METRICS[metric][0], self.scores)
        if metric == "accuracy" and self.losses:
            self._trial.set_user_attr("val_loss", self.losses)
        if not math.isfinite(score):
            raise TrialDiverged(f"trial {self.number} reported {score} after epoch {len(self.scores)}")
        if self._plateau is not None:
            if loss is None:
                raise ValueError(f"trial {self.number} reduces the LR on plateau of the validation loss: call "
                                 "trial.report(accuracy, loss=validation_loss)")
            self._plateau.step(loss)
        self._trial.report(score, len(self.scores) - 1)
        # after the last epoch there is nothing left to save: the trial is complete, as in ``tune``
        if len(self.scores) < self.epochs and self._trial.should_prune():
            raise optuna.TrialPruned(f"trial {self.number} pruned after epoch {len(self.scores)}")

    def result(self, value: Any) -> float:
        """The score a run ends with: what the training function returned, else the last reported."""
        if value is None:
            if not self.scores:
                raise ValueError(f"train returned None and never called trial.report(score): return the validation "
                                 f"{self._cfg.metric}")
            return self.scores[-1]
        return self._checked(value, "value train returns")

    def _checked(self, value: Any, what: str) -> float:
        value = _number(value, what)
        if self._cfg.metric == "accuracy" and math.isfinite(value) and not 0.0 <= value <= 1.0:
            raise ValueError(f"metric='accuracy' takes a fraction in [0, 1], got {value!r}: report correct / total "
                             "(or use metric='loss' for a score where lower is better)")
        return value

    def __repr__(self) -> str:
        params = " ".join(f"{k}={v}" for k, v in self.params.items())
        return f"<trial {self.number}: {self.schedule} peaking at LR {self.lr:.3g} {params}>".replace(" >", ">")


class _Reported(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """torch's ReduceLROnPlateau (the same object's state), stepped by ``LoopTrial.report`` with the
    validation loss; a ``step()`` without a metric, as a loop written for any scheduler calls after
    every optimizer step, does nothing."""

    def __init__(self, scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau) -> None:
        self.__dict__.update(scheduler.__dict__)

    def step(self, metrics: Any = None, epoch: Any = None) -> None:
        if metrics is not None:
            super().step(metrics)


def _number(value: Any, what: str) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"the {what} must be a number (a float, or a one-element tensor), got {type(value).__name__}")
    return float(value)


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
    schedule and the constant LR run again that many times with seeds the search did not use, and
    the verdict gives both means and the difference per seed; 0: not), ``progress``.

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
    with _storage.run_lock(url):
        study = _study.open_study(cfg, out)     # refuses a stored study of another setup, before any write
        if _study.stored_base_lr(study) is None:
            if cfg.base_lr is None:
                raise ValueError(new)
            _study.store_base_lr(study, cfg.base_lr, range_test)
        study.set_user_attr("max_peak", cfg.max_peak)
        study.set_user_attr("steps", cfg.epochs * cfg.steps_per_epoch)
        study.set_user_attr("steps_per_epoch", cfg.steps_per_epoch)
        _run(study, cfg, train, _storage.single_process(url), deadline)
        seconds = {"search": round(time.perf_counter() - clock, 2)}
        clock = time.perf_counter()
        # workers of one study: the first runs them, the others take its results
        with _interrupted_says("during the runs with new seeds: the search is stored; call tune_loop again to "
                               "run them"), _study.claim(study):
            final = _confirm(study, cfg, train)
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
            train(LoopTrial(_Unstudied(number), spec, cfg, base_lr, peers=peers))
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
        return tuner.asked_spec(trial, cfg, cfg.epochs * cfg.steps_per_epoch, cfg.steps_per_epoch, cfg.max_peak)

    _search_loop.search_trials(study, cfg, describe, run, 1, single=single, deadline=deadline)


class _Unstudied:
    """Stands in for the Optuna trial in the confirming runs: nothing is stored, nothing pruned."""

    def __init__(self, number: int) -> None:
        self.number = number

    def set_user_attr(self, key: str, value: Any) -> None:
        pass

    def report(self, value: float, step: int) -> None:
        pass

    def should_prune(self) -> bool:
        return False


def _confirm(study: optuna.Study, cfg: LoopConfig, train: Callable) -> dict[str, Any]:
    """The search compared schedules at one seed. Run the best schedule and the constant LR again,
    ``final_seeds`` times each with seeds the search did not use (seed r of both the same), so that
    the verdict does not rest on one draw. Stored as the study's ``final``, kept while its best
    trial stays the best."""
    best, constant = _study.best(study), _study.constant_baseline(study)
    if best is None or not cfg.final_seeds:
        return {}
    stored = report.final_of(study, best, seeds=cfg.final_seeds)
    if stored:
        return stored                               # a resumed study whose best is the same
    total, base_lr = cfg.epochs * cfg.steps_per_epoch, float(study.user_attrs["base_lr"])
    picked = {"best": best} if constant is None or constant.number == best.number else \
        {"best": best, "constant": constant}
    seeds = [cfg.seed + 1 + r for r in range(cfg.final_seeds)]
    out: dict[str, Any] = {}
    bar = progress_bar(total=len(picked) * len(seeds), desc="best and constant with new seeds", unit="run",
                       leave=False, disable=not cfg.progress, dynamic_ncols=True)
    with bar:
        for label, t in picked.items():
            spec = _spec(optuna.trial.FixedTrial(stored_choices(t.params)), cfg, total, cfg.steps_per_epoch,
                         cfg.max_peak)
            scores = []
            for seed in seeds:
                handed = LoopTrial(_Unstudied(t.number), dataclasses.replace(spec, seed=seed), cfg, base_lr)
                try:
                    value = train(handed)
                except TrialDiverged:
                    value = None                    # its NaN is the last score reported
                scores.append(handed.result(value))
                bar.update(1)
            finite = [v for v in scores if math.isfinite(v)]
            out[label] = {"trial": t.number, "schedule": spec.schedule, "params": _study.jsonable(spec.params),
                          "lr": base_lr * spec.lr_scale, "seeds": seeds, "score_per_seed": scores,
                          "score": sum(finite) / len(finite) if finite else None}
    if "constant" not in out and constant is not None:
        out["constant"] = dict(out["best"])         # the constant itself was the best
    out["setup"] = {"kind": "seeds", "seeds": len(seeds), "metric": cfg.metric}
    study.set_user_attr("final", out)
    return out


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
        _study.abandon(study, trial, e)          # the next run tries it again
        if isinstance(e, KeyboardInterrupt):
            raise TuneInterrupted(_study.interrupted_text(study, cfg.trials, "call tune_loop again")) from None
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


__all__ = ["tune_loop", "LoopTrial", "LoopConfig", "TrialDiverged"]
