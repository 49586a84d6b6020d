"""A Lightning module swept as Lightning trains it: its ``training_step`` and ``configure_optimizers``.

Recognised by its class (a ``LightningModule`` subclass), without importing Lightning. Outside a
``Trainer``, ``self.log`` in ``training_step`` does nothing (its warning is silenced); a step that
needs ``self.trainer`` fails on the first batch, named, and wants a ``step_fn`` instead.

And the other way round, a schedule inside Lightning: what ``configure_optimizers`` returns for a
tuned schedule or a ``tune_loop`` trial, and the callback that reports a trial's validation
metrics. Lightning is imported only when such a callback is made.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lrfind._errors import Explained


def is_lightning(model: nn.Module) -> bool:
    return any(cls.__name__ == "LightningModule" for cls in type(model).__mro__)


# Lightning's warning for ``self.log`` without a Trainer: expected in a range test (the README says so)
NO_TRAINER_LOG = r"You are trying to `self\.log\(\)` but the `self\.trainer` reference is not registered"


class TrainerNeeded(Explained, RuntimeError):
    """``training_step`` asked for the Trainer, which a range test does not have."""


class LightningStep:
    """The loss of ``model.training_step(batch, batch_idx)``, a tensor or a dict's ``"loss"``, with
    ``batch_idx`` counting the batches of the sweep as Lightning counts an epoch's (``reset`` before
    a repeated sweep starts again from 0)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.batch_idx = 0

    def __call__(self, model: nn.Module, batch: Any) -> torch.Tensor:
        loss = _training_step(model, batch, self.batch_idx)
        self.batch_idx += 1
        return loss


def _training_step(model: nn.Module, batch: Any, batch_idx: int) -> torch.Tensor:
    try:
        with warnings.catch_warnings():         # its self.log calls: Lightning warns that no Trainer is there
            warnings.filterwarnings("ignore", message=NO_TRAINER_LOG)
            out = model.training_step(batch, batch_idx)
    except RuntimeError as e:
        if "Trainer" not in str(e):
            raise
        raise TrainerNeeded(f"training_step needs a Trainer ({e}), which a range test does not have; pass "
                            f"step_fn=lambda model, batch: <loss>, say cross_entropy(model(batch[0]), batch[1])") from e
    loss = out.get("loss") if isinstance(out, Mapping) else out
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"training_step returned {type(out).__name__}, not the loss: find_lr sweeps on the loss "
                        f"it returns (a tensor, or a dict with 'loss'); with manual optimization pass "
                        f"step_fn=lambda model, batch: <loss>")
    return loss


def lightning_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """The one optimizer ``configure_optimizers()`` returns, in any of Lightning's forms (an
    optimizer, a list of them, ``([optimizers], [schedulers])``, a dict with ``"optimizer"`` or a
    list of such dicts). Its schedulers are left out: the sweep sets the LR itself."""
    try:
        found = model.configure_optimizers()
    except Exception as e:          # it may ask the Trainer (estimated_stepping_batches, say)
        raise RuntimeError(f"configure_optimizers() failed outside a Trainer ({type(e).__name__}: {e}); pass "
                           f"optimizer= the optimizer to sweep") from e
    if isinstance(found, (list, tuple)) and len(found) == 2 and all(isinstance(x, (list, tuple)) for x in found):
        found = found[0]                                    # ([optimizers], [schedulers])
    found = list(found) if isinstance(found, (list, tuple)) else [found]
    optimizers = [x.get("optimizer") if isinstance(x, Mapping) else x for x in found]
    if len(optimizers) != 1 or not isinstance(optimizers[0], torch.optim.Optimizer):
        kinds = ", ".join(type(x).__name__ for x in optimizers) or "nothing"
        raise ValueError(f"configure_optimizers() gave {kinds}; find_lr sweeps one optimizer: pass "
                         f"optimizer= the one to sweep")
    return optimizers[0]


def set_lightning_lr(model: nn.Module, lr: float) -> str:
    """Set the LR a Lightning module's ``configure_optimizers`` reads: its ``lr`` or
    ``learning_rate`` attribute, else that key of its ``hparams`` (Lightning's own LR finder looks in
    the same places). Returns where it was set."""
    for name in ("lr", "learning_rate"):
        if isinstance(getattr(model, name, None), (int, float)) and not isinstance(getattr(model, name), bool):
            setattr(model, name, lr)
            return name
    hparams = getattr(model, "hparams", None)
    for name in ("lr", "learning_rate"):
        if isinstance(hparams, Mapping) and name in hparams:
            hparams[name] = lr
            return f"hparams.{name}"
    raise AttributeError(f"{type(model).__name__} has no lr or learning_rate (attribute or hparams key) for "
                         f"configure_optimizers to read: give it one (self.lr = lr in __init__), or apply the "
                         f"result to the optimizer configure_optimizers makes")


def scheduler_config(optimizer: torch.optim.Optimizer, scheduler: Any, *, monitor: str | None = None) -> dict:
    """What ``configure_optimizers()`` returns for a per-step schedule: the scheduler stepped after
    every optimizer step (``"interval": "step"``; Lightning's default, once an epoch, would hold it
    nearly still), or, with ``monitor``, a plateau schedule stepped after each epoch on that metric."""
    config = {"scheduler": scheduler, "interval": "epoch" if monitor else "step", "frequency": 1}
    if monitor:
        config["monitor"] = monitor
    return {"optimizer": optimizer, "lr_scheduler": config}


def _callback_base() -> type:
    """Lightning's ``Callback``, from the package the user's code imported (``lightning`` or the
    older ``pytorch_lightning``: a Trainer takes only its own package's callbacks)."""
    import importlib
    import sys

    names = sorted(("lightning.pytorch", "pytorch_lightning"), key=lambda name: name.split(".")[0] not in sys.modules)
    for name in names:
        try:
            return importlib.import_module(name).Callback
        except ImportError:
            continue
    raise ImportError("a Lightning callback needs Lightning: pip install lightning")


def reporting_callback(report: Any, monitor: str, loss: str | None) -> Any:
    """A Lightning callback that reports the metrics logged as ``monitor`` (and ``loss``) after
    every validation epoch of ``trainer.fit`` (through ``LoopTrial.report_logged``), the sanity
    check's left out, as Optuna's own Lightning pruning callback does; a ``trainer.validate()`` is
    not an epoch."""

    class ReportToLrfind(_callback_base()):
        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            fn = getattr(getattr(trainer, "state", None), "fn", None)        # TrainerFn, a str enum
            if getattr(trainer, "sanity_checking", False) or fn not in (None, "fit"):
                return
            report(trainer.callback_metrics, monitor, loss, where="the Trainer's metrics after validation",
                   how="self.log(name, value) in validation_step")

    return ReportToLrfind()
