"""One step of the sweep at a given LR: lrfind's own (``SweepStep``, replayed from a CUDA graph
where it can be) or ``EagerStep``, through the user's optimizer and step function."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Mapping
from typing import Callable

import torch
from torch import nn

from lrfind.engine.graph import SweepStep
from lrfind.rangetest.batches import Batches, StepFn, inputs_targets, step_errors, to_device
from lrfind.rangetest.config import AMP_DTYPES, RangeTestConfig
from lrfind.rangetest.distributed import gradient_clipper, grad_scaler
from lrfind.rangetest.lightning import LightningStep
from lrfind.rangetest.plan import SweepPlan

Step = Callable[[int, Batches, float], torch.Tensor]


def make_step(model: nn.Module, config: RangeTestConfig, plan: SweepPlan) -> tuple[SweepStep | EagerStep, Step]:
    """The step every repeat of the sweep takes, ``step(i, batches, lr)``, and what owns its state
    (``reset()`` before each repeat; ``replayed``: whether its steps came from a CUDA graph). One
    for all repeats: a graph is captured once (the model is restored in place). Reads the
    validation batches, onto the model's device."""
    if plan.use_own:
        own = SweepStep(model, plan.rule, plan.groups, plan.ratios, plan.checked_loss, graph=plan.use_graph,
                        strict=bool(config.cuda_graph), max_grad_norm=config.max_grad_norm)
        return own, own_step(own, plan.default_step)
    val = None
    if config.val_loader is not None:
        val = [to_device(b, plan.device) for b in itertools.islice(config.val_loader, config.val_batches)]
        if not val:
            raise ValueError("val_loader yields no batches")
    eager = EagerStep(model, plan.device, plan.optimizer, plan.ratios, plan.step_fn, config.accumulation_steps,
                      config.amp, config.max_grad_norm, val)
    return eager, eager


def own_step(own: SweepStep, default_step: StepFn) -> Step:
    """lrfind's step (forward, backward, update; replayed from a CUDA graph where it can be: on
    ``(x, y)`` batches; a dict batch's loss comes from ``default_step``, eagerly)."""
    def step(i: int, batches: Batches, lr: float) -> torch.Tensor:
        batch = next(batches)
        with step_errors(i, batch, batches.first_size, own.model):
            if isinstance(batch, Mapping):
                return own.eager(lambda: default_step(own.model, batch), lr)
            return own(*inputs_targets(batch), lr)
    return step


class EagerStep:
    """One optimizer step at a given LR through the user's optimizer and step function (with
    accumulation, autocast, a gradient scaler for fp16, clipping); returns the loss to record.
    ``reset()`` before each repeated sweep: its gradient scaler starts again as a fresh one, and a
    Lightning module's ``batch_idx`` from 0."""

    replayed = False                    # its steps never come from a CUDA graph

    def __init__(self, model: nn.Module, device: torch.device, optimizer: torch.optim.Optimizer, ratios: list[float],
                 step_fn: StepFn, accumulation_steps: int, amp: str | None, max_grad_norm: float | None,
                 val_batches: list | None) -> None:
        self.model, self.device, self.optimizer, self.ratios, self.step_fn = model, device, optimizer, ratios, step_fn
        self.accumulation_steps, self.max_grad_norm, self.val_batches = accumulation_steps, max_grad_norm, val_batches
        self.amp = amp
        self.autocast = (torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp]) if amp
                         else contextlib.nullcontext())
        self.clip = gradient_clipper(model) if max_grad_norm is not None else None
        self.reset()

    def reset(self) -> None:
        self.scaler = grad_scaler(self.model, self.device) if self.amp == "fp16" else None
        if isinstance(self.step_fn, LightningStep):
            self.step_fn.reset()

    def __call__(self, i: int, batches: Batches, lr: float) -> torch.Tensor:
        optimizer, scaler, k = self.optimizer, self.scaler, self.accumulation_steps
        for group, ratio in zip(optimizer.param_groups, self.ratios):
            group["lr"] = lr * ratio
        optimizer.zero_grad(set_to_none=True)
        total = None
        for _ in range(k):
            batch = next(batches)
            with self.autocast, step_errors(i, batch, batches.first_size, self.model):
                loss = self.step_fn(self.model, batch)
            if i == 0 and not (isinstance(loss, torch.Tensor) and loss.ndim == 0):
                raise TypeError(f"the step function must return a scalar loss tensor, got "
                                f"{type(loss).__name__}{tuple(loss.shape) if isinstance(loss, torch.Tensor) else ''}")
            scaled = loss / k if k > 1 else loss
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
            total = loss.detach() if total is None else total + loss.detach()
        if self.max_grad_norm is not None:
            if scaler is not None:
                scaler.unscale_(optimizer)      # clip the true gradients, as torch's AMP recipe does
            self.clip([p for g in optimizer.param_groups for p in g["params"]], self.max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if self.val_batches is not None:
            return _mean_loss(self.model, self.val_batches, self.step_fn, self.autocast)
        return total / k if k > 1 else total


def _mean_loss(model: nn.Module, batches: list, step_fn: StepFn, autocast) -> torch.Tensor:
    model.eval()
    with torch.no_grad(), autocast:
        total = sum(step_fn(model, b).detach().float() for b in batches)
    model.train()
    return total / len(batches)
