"""A ``tune_loop`` trial run by Hugging Face's ``Trainer``: what its ``optimizers=`` takes, and a
callback that reports each epoch's evaluation. transformers is imported only when a callback is
made: it is not one of lrfind's dependencies."""

from __future__ import annotations

from typing import Any, Callable

import torch


class HeldLR(torch.optim.lr_scheduler.LRScheduler):
    """A scheduler that keeps the optimizer's LR as it is: the Trainer steps it after every
    optimizer step while ``LoopTrial.report`` steps the trial's reduce-on-plateau. (Handed the
    plateau itself, the Trainer would step it a second time, on its ``metric_for_best_model``.)"""

    def get_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]


def reporting_callback(report: Callable[..., None], metric: str, loss: str | None) -> Any:
    """A ``transformers.TrainerCallback`` that reports the evaluation's ``metric`` (and ``loss``)
    after every epoch of training, through ``LoopTrial.report_logged``. It needs
    ``eval_strategy="epoch"``: one report per epoch is what the pruner compares. An evaluation
    before or after training (``trainer.evaluate()``) is not an epoch's and is not reported."""
    try:
        from transformers import TrainerCallback
    except ImportError:
        raise ImportError("a Hugging Face Trainer callback needs transformers: pip install transformers") from None

    class ReportToLrfind(TrainerCallback):
        def __init__(self) -> None:
            self.training = False

        def on_train_begin(self, args, state, control, **kwargs) -> None:
            strategy = getattr(args, "eval_strategy", None) or getattr(args, "evaluation_strategy", None)  # < 4.41
            strategy = str(getattr(strategy, "value", strategy))
            if strategy != "epoch":
                raise ValueError(f"the trial reports one evaluation per epoch, but the Trainer evaluates with "
                                 f"eval_strategy={strategy!r}: pass TrainingArguments(eval_strategy='epoch', ...)")
            self.training = True

        def on_train_end(self, args, state, control, **kwargs) -> None:
            self.training = False

        def on_evaluate(self, args, state, control, metrics=None, **kwargs) -> None:
            if not self.training:                       # trainer.evaluate() before or after train()
                return
            report(metrics or {}, metric, loss, where="the Trainer's evaluation metrics",
                   how="a compute_metrics that returns it (the Trainer prefixes 'eval_')")

    return ReportToLrfind()
