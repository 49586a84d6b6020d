"""What a set of sweeps steps with, resolved against the model: ``SweepPlan``. The model's
device, the optimizer (the one given, a Lightning module's, or SGD with momentum) and the update
rule lrfind's own step would apply in its place, whether that step takes over (replayed from a
CUDA graph where it can be) or the user's optimizer steps eagerly, and the processes of a model
trained across several."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from lrfind.engine.optimizer import OptimizerConfig, own_rule
from lrfind.rangetest.batches import StepFn, make_default_step, outputs_checked
from lrfind.rangetest.config import RangeTestConfig
from lrfind.rangetest.distributed import Processes, processes
from lrfind.rangetest.lightning import LightningStep, is_lightning, lightning_optimizer
from lrfind.rangetest.sweep import Sweep


@dataclass(frozen=True)
class SweepPlan:
    """``device``: the model's. ``optimizer``: the torch optimizer the eager step steps through
    (None when lrfind's own step runs: an ``OptimizerConfig``'s, or a fresh SGD/Adam/AdamW's whose
    update it replays); ``rule``, ``groups`` and ``ratios``: its update rule, parameter groups and
    their LRs' ratios to the largest; ``settings``: its name, momentum and weight decay, for the
    result. ``shared``: the processes the losses are averaged over (None: one); ``first``: whether
    this process shows the bar and warns. ``use_own``, ``use_graph``: whether lrfind's own step
    runs, and from a CUDA graph. ``checked_loss``, ``default_step``, ``step_fn``: the loss of
    ``(x, y)`` batches, the default step (a dict batch's loss too), and the step the eager path runs.
    ``why_not_own``: why lrfind's own update cannot take the optimizer's steps ("" if it can)."""

    device: torch.device
    optimizer: torch.optim.Optimizer | None
    rule: str | None
    groups: list[dict]
    ratios: list[float]
    settings: dict[str, Any]
    shared: Processes | None
    first: bool
    use_own: bool
    use_graph: bool
    checked_loss: Callable
    default_step: StepFn
    step_fn: StepFn
    why_not_own: str

    @classmethod
    def of(cls, model: nn.Module, config: RangeTestConfig) -> SweepPlan:
        device = _model_device(model)
        lit = is_lightning(model)               # swept as Lightning trains it, unless told otherwise
        optimizer = config.optimizer
        if lit and optimizer is None:
            optimizer = lightning_optimizer(model)
        optimizer = OptimizerConfig("sgd", momentum=0.9) if optimizer is None else optimizer
        lightning = lit and config.step_fn is None and config.loss_fn is None
        rule, groups, own_unsupported = _rule(optimizer, model, config.sweep)
        settings = _optimizer_settings(optimizer, groups)
        procs = processes(model)
        own_unsupported = ("a Lightning module steps through its training_step" if lightning else "") or \
            config.eager_only or own_unsupported or \
            (f"the model is {procs.kind}, whose gradients are reduced across processes in backward()" if procs else "")
        graph_unsupported = own_unsupported or _not_on_cuda(groups)
        if config.cuda_graph and graph_unsupported:
            raise ValueError(f"cuda_graph=True cannot be used here: {graph_unsupported}")
        use_graph = not graph_unsupported and config.cuda_graph is not False
        # lrfind's own step replays a sweep from a graph, and runs an optimizer given as a config eagerly
        use_own = use_graph or (isinstance(optimizer, OptimizerConfig) and not own_unsupported)
        if isinstance(optimizer, OptimizerConfig):      # the torch optimizer it describes, for the eager path only
            optimizer = None if use_own else optimizer.torch_optimizer(model.parameters(), config.sweep.start_lr)
        checked_loss = outputs_checked(config.loss_fn)
        default_step = make_default_step(checked_loss, config.loss_fn is not None)
        return cls(device=device, optimizer=optimizer, rule=rule, groups=groups, ratios=_group_ratios(groups),
                   settings=settings, shared=procs if procs is not None and procs.size > 1 else None,
                   first=procs is None or procs.first,      # one bar and one set of warnings, not one a process
                   use_own=use_own, use_graph=use_graph, checked_loss=checked_loss, default_step=default_step,
                   step_fn=(LightningStep() if lightning else config.step_fn) or default_step,
                   why_not_own=own_unsupported)


def _model_device(model: nn.Module) -> torch.device:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    try:
        device = next(model.parameters()).device
    except StopIteration:
        raise ValueError("the model has no parameters to train") from None
    if device.type == "meta":
        raise ValueError("the model's parameters are on the meta device, without values: give them some first "
                         "(model.to_empty(device=...) and initialise them, or load its weights)")
    return device


def _group_ratios(groups: list[dict]) -> list[float]:
    lrs = [float(g["lr"]) for g in groups]
    top = max(lrs)
    return [lr / top for lr in lrs] if top > 0 else [1.0] * len(lrs)


def _rule(optimizer: torch.optim.Optimizer | OptimizerConfig, model: nn.Module,
          sweep: Sweep) -> tuple[str | None, list[dict], str]:
    """The update rule lrfind's own step would apply, the parameter groups it trains, and why it
    cannot take over the optimizer's steps ("" if it can)."""
    if isinstance(optimizer, OptimizerConfig):
        rule, groups, why_not = optimizer.name, optimizer.param_groups(model.parameters(), sweep.start_lr), ""
    elif isinstance(optimizer, torch.optim.Optimizer):
        _check_steps_per_batch(optimizer)
        (rule, why_not), groups = own_rule(optimizer), optimizer.param_groups
    elif isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer is the class {optimizer.__name__}, not an optimizer: pass "
                        f"{optimizer.__name__}(model.parameters(), lr=...), or OptimizerConfig(...)")
    elif isinstance(optimizer, str):
        raise TypeError(f"optimizer={optimizer!r} is a name: pass OptimizerConfig({optimizer!r}), or a torch.optim "
                        f"optimizer")
    elif isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):      # an LR scheduler
        raise TypeError(f"optimizer is a {type(optimizer).__name__}, an LR scheduler: pass the optimizer it "
                        f"drives (its .optimizer); the sweep sets the LR itself")
    else:
        raise TypeError(f"optimizer must be a torch.optim optimizer or an lrfind OptimizerConfig, "
                        f"got {type(optimizer).__name__}")
    if not any(p.requires_grad for g in groups for p in g["params"]):
        raise ValueError("nothing to train: every parameter the optimizer holds has requires_grad=False")
    own = {id(p) for p in model.parameters()}
    if not any(id(p) in own for g in groups for p in g["params"]):
        raise ValueError("the optimizer holds none of the model's parameters (was it made for another model, or "
                         "for this one before it was built again?): make it from model.parameters()")
    return rule, groups, why_not


def _check_steps_per_batch(optimizer: torch.optim.Optimizer) -> None:
    """A TypeError for an optimizer whose ``step`` needs a closure (``LBFGS``): it evaluates the loss
    several times per step, where the sweep steps once per batch on the loss it computed. A
    ValueError for ``Rprop``, which reads the LR once only."""
    if isinstance(optimizer, torch.optim.Rprop):
        raise ValueError("Rprop reads lr once, as every weight's first step size, and then sizes its steps itself "
                         "(growing or shrinking them by etas as the gradient's sign holds or flips): the LRs a range "
                         "test sets after its first step change nothing, so its curve would say nothing about lr. "
                         "Rprop's lr seldom matters much (torch's default is 0.01); to sweep, use an optimizer whose "
                         "every step follows the LR (SGD, Adam, ...)")
    try:
        closure = inspect.signature(optimizer.step).parameters.get("closure")
    except (TypeError, ValueError):          # a step without a signature to read: try it as it is
        return
    if closure is not None and closure.default is inspect.Parameter.empty:
        lbfgs = (" L-BFGS seldom needs an LR search: with line_search_fn='strong_wolfe' and lr=1 it picks each "
                 "step's length itself" if isinstance(optimizer, torch.optim.LBFGS) else "")
        raise TypeError(f"{type(optimizer).__name__}.step needs a closure (it evaluates the loss again, "
                        f"several times per step), but a range test steps once per batch on the loss it has just "
                        f"computed: sweep with an optimizer that steps without one (SGD, Adam, ...).{lbfgs}")


def _optimizer_settings(optimizer: torch.optim.Optimizer | OptimizerConfig, groups: list[dict]) -> dict[str, Any]:
    """What the sweep stepped with, for the result's config: the optimizer's name and its first
    group's momentum and weight decay (None where it has none), which ``compare`` tells apart."""
    name = optimizer.name if isinstance(optimizer, OptimizerConfig) else type(optimizer).__name__
    first = groups[0] if groups else {}
    plain = lambda v: v if isinstance(v, (bool, int, float, str)) else None  # noqa: E731  (a tensor LR, say)
    return {"optimizer": name, "momentum": plain(first.get("momentum")),
            "weight_decay": plain(first.get("weight_decay"))}


def _not_on_cuda(groups: list[dict]) -> str:
    if not all(p.is_cuda for g in groups for p in g["params"]):
        return "the parameters are not all on a CUDA device"
    return ""
