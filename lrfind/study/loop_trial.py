"""``LoopTrial``: one trial of ``tune_loop``, handed to the user's training function: its schedule,
peak LR, optimizer and torch scheduler, and ``report`` for its score after every epoch (in a
distributed training, process 0's score and verdict count in every process)."""

from __future__ import annotations

import math
import numbers
import weakref
from collections.abc import Mapping
from typing import Any

import optuna
import torch

from lrfind.engine.trials import TrialSpec
from lrfind.schedules import get_schedule
from lrfind.study import trials as _study
from lrfind.study.best import check_optimizer_lr
from lrfind.study.loop_config import LoopConfig
from lrfind.study.peers import Peers


class TrialDiverged(ArithmeticError):
    """Raised by ``LoopTrial.report`` on a NaN or infinite score: the trial failed, the study goes on."""


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


class Unstudied:
    """Stands in for the Optuna trial in the confirming runs: nothing is stored, nothing pruned."""

    def __init__(self, number: int) -> None:
        self.number = number

    def set_user_attr(self, key: str, value: Any) -> None:
        pass

    def report(self, value: float, step: int) -> None:
        pass

    def should_prune(self) -> bool:
        return False


__all__ = ["LoopTrial", "TrialDiverged"]
