"""The LR range test (Smith, arXiv:1506.01186): ``find_lr(model, loader)``.

The LR grows from ``start_lr`` to ``end_lr`` over ``num_iter`` optimizer steps while the model
trains; the loss of every batch is recorded. The sweep stops early when the loss diverges. The
model, its optimizer and the RNGs are put back exactly as they were afterwards, also when the
sweep raises.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
import math
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from lrfind.rangetest import state as _state
from lrfind._args import check_names
from lrfind.rangetest.batches import (Batches, StepFn, check_loader, inputs_targets, make_default_step, one_shot,
    outputs_checked, step_errors, to_device)
from lrfind.rangetest.distributed import Processes, gradient_clipper, grad_scaler, processes
from lrfind._errors import warn_at_users_line
from lrfind.engine.graph import SweepStep
from lrfind.rangetest.lightning import LightningStep, is_lightning, lightning_optimizer
from lrfind._output import progress_bar
from lrfind.engine.update import check_max_grad_norm
from lrfind.engine.optimizer import OptimizerConfig, own_rule
from lrfind.rangetest.result import (RangeTestResult, RangeTestWarning, describe_sweeps, median_index,
    shallow_sweeps)
from lrfind.rangetest.suggest import DEFAULT_METHOD, get_method
from lrfind.rangetest.sweep import Sweep

log = logging.getLogger(__name__)

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _group_ratios(groups: list[dict]) -> list[float]:
    lrs = [float(g["lr"]) for g in groups]
    top = max(lrs)
    return [lr / top for lr in lrs] if top > 0 else [1.0] * len(lrs)


@dataclass
class _Run:
    losses: np.ndarray
    stop_reason: str


def _sweep_once(model: nn.Module, batches: Batches, step: Callable[[int, Batches, float], torch.Tensor],
                sweep: Sweep, bar: Any, shared: Processes | None = None) -> _Run:
    """One sweep: ``step(i, batches, lr)`` at every LR of ``sweep``, until it ends or diverges.
    ``shared``: the model's processes (DDP, FSDP), over which the losses are averaged at every check."""
    lrs = sweep.lrs()
    n = sweep.num_iter
    # The per-step losses stay on the device; the host reads them every `check_every` steps and
    # runs the divergence detector over the new ones then (one sync per check, no per-step kernels).
    losses = torch.full((n,), float("nan"), device=batches.device)
    detector = _Divergence(sweep.ema_beta, sweep.diverge_factor)
    checked = 0
    model.train()
    for i in range(n):
        losses[i] = step(i, batches, float(lrs[i]))
        bar.update(1)
        if (i + 1) % sweep.check_every == 0 or i == n - 1:
            if shared is not None:                          # every process then stops at the same step
                shared.mean(losses[checked: i + 1])
            new = losses[checked: i + 1].cpu().numpy()      # this is the host-device sync point
            stop = detector.first_stop(new)
            if stop is not None:
                return _stopped(losses, checked + stop, new[stop])
            checked = i + 1
            bar.set_postfix(lr=f"{lrs[i]:.2e}", loss=f"{new[-1]:.4g}", refresh=False)
    return _Run(losses.cpu().numpy(), "completed")


def _own_step(own: SweepStep, default_step: StepFn) -> Callable[[int, Batches, float], torch.Tensor]:
    """lrfind's step (forward, backward, update; replayed from a CUDA graph where it can be: on
    ``(x, y)`` batches; a dict batch's loss comes from ``default_step``, eagerly)."""
    def step(i: int, batches: Batches, lr: float) -> torch.Tensor:
        batch = next(batches)
        with step_errors(i, batch, batches.first_size, own.model):
            if isinstance(batch, Mapping):
                return own.eager(lambda: default_step(own.model, batch), lr)
            return own(*inputs_targets(batch), lr)
    return step


class _EagerStep:
    """One optimizer step at a given LR through the user's optimizer and step function (with
    accumulation, autocast, a gradient scaler for fp16, clipping); returns the loss to record.
    ``reset()`` before each repeated sweep: its gradient scaler starts again as a fresh one, and a
    Lightning module's ``batch_idx`` from 0."""

    def __init__(self, model: nn.Module, device: torch.device, optimizer: torch.optim.Optimizer, ratios: list[float],
                 step_fn: StepFn, accumulation_steps: int, amp: str | None, max_grad_norm: float | None,
                 val_batches: list | None) -> None:
        self.model, self.device, self.optimizer, self.ratios, self.step_fn = model, device, optimizer, ratios, step_fn
        self.accumulation_steps, self.max_grad_norm, self.val_batches = accumulation_steps, max_grad_norm, val_batches
        self.amp = amp
        self.autocast = (torch.autocast(device_type=device.type, dtype=_AMP_DTYPES[amp]) if amp
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


def _stopped(losses: torch.Tensor, j: int, value: float) -> _Run:
    return _Run(losses[: j + 1].cpu().numpy(), "diverged" if math.isfinite(value) else "loss became NaN/Inf")


class _Divergence:
    """The divergence rule of ``Sweep``, fed the losses in chunks: a bias-corrected EMA, its best
    value so far, and a stop where the EMA exceeds the best by ``(factor - 1) * |best|`` or a loss
    is not finite."""

    def __init__(self, beta: float, factor: float) -> None:
        self.beta, self.grow = beta, factor - 1.0
        self.ema, self.best, self.count = 0.0, math.inf, 0

    def first_stop(self, losses: np.ndarray) -> int | None:
        for j, value in enumerate(losses.astype(np.float64)):
            if not math.isfinite(value):
                return j
            self.count += 1
            self.ema = self.beta * self.ema + (1 - self.beta) * value
            smoothed = self.ema / (1 - self.beta ** self.count)
            self.best = min(self.best, smoothed)
            if smoothed > self.best + self.grow * abs(self.best):
                return j
        return None


def _mean_loss(model: nn.Module, batches: list, step_fn: StepFn, autocast) -> torch.Tensor:
    model.eval()
    with torch.no_grad(), autocast:
        total = sum(step_fn(model, b).detach().float() for b in batches)
    model.train()
    return total / len(batches)


def _start_persistent_workers(loader: Iterable) -> None:
    """A DataLoader with persistent workers draws one random number more on its first ``iter()``
    (its workers' base seed) than on the later ones, which reuse them: its first sweep would then
    take another batch order than the same seed gives any later sweep. Started here, before the
    seeded sweeps (the RNG is restored afterwards), its order follows the seed alone."""
    if (isinstance(loader, torch.utils.data.DataLoader) and loader.persistent_workers and loader.num_workers > 0
            and getattr(loader, "_iterator", False) is None):
        iter(loader)


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


def find_lr(model: nn.Module, loader: Iterable, *, optimizer: torch.optim.Optimizer | OptimizerConfig | None = None,
            loss_fn: Callable | None = None, step_fn: StepFn | None = None, sweep: Sweep | None = None,
            accumulation_steps: int = 1, max_grad_norm: float | None = None, amp: str | None = None,
            val_loader: Iterable | None = None,
            val_batches: int | None = None, repeats: int = 1, seed: int | None = None,
            method: str = DEFAULT_METHOD, progress: bool = True, cuda_graph: bool | None = None,
            slow_down: bool = True, warn: bool = True, **sweep_fields: Any) -> RangeTestResult:
    """Run an LR range test on ``model`` with batches from ``loader`` and suggest a base LR.

    Parameters
    ----------
    model: any ``nn.Module``, on the device the test should run on.
    loader: any iterable of batches (a DataLoader, a list, lrfind's ``DeviceLoader``); started
        again when it runs out before ``num_iter``.
    optimizer: a ``torch.optim`` optimizer: its parameter groups keep their LR ratios (one
        multiplier is swept). Or an ``OptimizerConfig`` ("sgd", "adam" or "adamw" with their
        hyper-parameters): the same update without creating a torch optimizer, which imports
        ``torch._dynamo`` (1-2 s, longer than a GPU's whole sweep). Default: SGD with momentum 0.9.
    loss_fn: applied as ``loss_fn(model(x), y)`` to ``(x, y)`` batches. Default: cross-entropy.
        Without it, a dict batch (a Hugging Face ``BatchEncoding`` too) is a Hugging Face model's:
        its items are the model's keyword arguments and the loss is ``model(**batch).loss``, which
        the model computes when the batch holds its ``labels``.
    step_fn: ``step_fn(model, batch) -> scalar loss`` for batches of any other layout (dicts,
        several inputs); batches arrive already moved to the model's device. A Lightning module
        (a ``LightningModule``) is swept by default as Lightning trains it: its ``training_step``
        (unless a ``loss_fn`` is given) and the optimizer of its ``configure_optimizers()`` (unless
        an ``optimizer`` is given).
    sweep: a ``Sweep``; or give its fields directly: ``start_lr`` (1e-6), ``end_lr`` (1.0),
        ``num_iter`` (100), ``mode`` ("exp" or "linear"), ``diverge_factor`` (5.0), ...
    accumulation_steps: batches whose gradients add up to one optimizer step.
    max_grad_norm: clip the gradients' total norm to this before every step
        (``torch.nn.utils.clip_grad_norm_``), as your training does: without the clipping your
        training has, the sweep's loss may blow up at a lower LR than your run's. None: no clipping.
    amp: None, "bf16" or "fp16" (fp16 uses a gradient scaler).
    val_loader, val_batches: record the mean loss over (the first ``val_batches`` of)
        ``val_loader`` after every step instead of the training loss. Slower; smoother curves.
    repeats, seed: run the test ``repeats`` times with seeds ``seed, seed+1, ...`` (from the same
        initial weights) and report the median suggestion and its spread; the curve kept in the
        result is the median repeat's, every repeat's losses are in ``seed_losses``. One sweep can
        land far from the others (a LeNet on MNIST: 2 sweeps in 24 suggested a tenth of the rest), so
        ``repeats=3`` is worth its cost where a sweep is cheap. A repeat whose loss fell less than
        0.3x as far as the deepest one's is left out of the median (``result.shallow``): most often it
        broke down before it could learn, and its minimum is not the cliff.
    slow_down: when the repeats that count span more than 3x, or fewer than two are left to agree,
        sweep ``repeats`` times again with twice ``num_iter`` (half the pace) and take those;
        ``result.config["faster_sweeps"]`` keeps the first ones' suggestions. A sweep that climbs too
        fast for the model breaks down now and then (LeNet with SGD at 300 steps: 2 of 24 on MNIST, 5
        of 24 on 5,000 images; at 600 none of 40); a slower one suggests a lower LR, so it is used only
        when the fast ones disagree.
    method: the suggestion reported as ``suggested_lr``; every method's is in ``suggestions``.
    cuda_graph: replay each step (forward, backward, update) from a CUDA graph, about 10x faster
        for small models. Default: on where it applies: a CUDA model, ``(x, y)`` batches with the
        default step, no accumulation, amp or validation loss, and an ``OptimizerConfig`` or a
        fresh SGD/Adam/AdamW; a model whose step cannot be captured (``.item()`` in forward, say)
        then runs eagerly, with a warning. ``True`` raises instead, ``False`` never captures.

    A model trained across processes (``DistributedDataParallel``, ``FullyShardedDataParallel``,
    ``fully_shard``): call ``find_lr`` in every process, each with its own batches (a
    ``DistributedSampler``); the losses are averaged across the processes at every divergence
    check, so all record the same curve, stop at the same step and suggest the same LR (a process
    that stopped alone would leave the others waiting in a collective). It steps through a torch
    optimizer (one is made from an ``OptimizerConfig``), never from a CUDA graph; clipping and
    fp16's gradient scaler agree across the shards.

    The model, buffers, gradients, optimizer and RNG states are restored afterwards, bit for bit,
    also when an exception is raised. Nothing is written to disk. A result that needs a second look
    (no suggestion: ``result.reason`` says why; the loss had not turned up by ``end_lr``; repeats
    that disagree) warns with a ``RangeTestWarning``, one for each of ``result.warnings``
    (``warn=False``: no warning, for callers that show them themselves).
    """
    check_loader(loader)
    if val_loader is not None:
        check_loader(val_loader, "val_loader")
    if val_batches is not None and not (isinstance(val_batches, int) and val_batches >= 1):
        raise ValueError(f"val_batches must be a positive integer or None (all of val_loader), got {val_batches!r}")
    if val_loader is not None and one_shot(val_loader):    # read once here, for every repeat and a slower sweep
        val_loader = list(itertools.islice(val_loader, val_batches))
    again = dict(optimizer=optimizer, loss_fn=loss_fn, step_fn=step_fn, accumulation_steps=accumulation_steps,
                 max_grad_norm=max_grad_norm,
                 amp=amp, val_loader=val_loader, val_batches=val_batches, repeats=repeats, seed=seed,
                 method=method, progress=progress, cuda_graph=cuda_graph)       # as given, for a slower sweep
    check_names("find_lr", sweep_fields, Sweep.__dataclass_fields__, aliases=_PEER_NAMES,
                others=inspect.signature(find_lr).parameters,
                takes=f"Besides its own (optimizer, loss_fn, step_fn, ...), it takes the Sweep fields "
                      f"{', '.join(Sweep.__dataclass_fields__)}")
    if sweep is not None and sweep_fields:
        raise TypeError(f"give either sweep=Sweep(...) or its fields, not both (got {sorted(sweep_fields)})")
    sweep = sweep or Sweep(**sweep_fields)
    if not (isinstance(accumulation_steps, int) and accumulation_steps >= 1):
        raise ValueError(f"accumulation_steps must be a positive integer, got {accumulation_steps!r}")
    check_max_grad_norm(max_grad_norm)
    if amp not in (None, *_AMP_DTYPES):
        raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
    if not (isinstance(repeats, int) and repeats >= 1):
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    if repeats > 1 and one_shot(loader):
        raise ValueError(f"repeats={repeats} sweeps the loader {repeats} times, but it is a "
                         f"{type(loader).__name__}, used up by one pass; pass something that can be iterated "
                         f"again (a DataLoader, a list of batches) or repeats=1")
    get_method(method)                          # an unknown name lists the choices
    device = _model_device(model)
    lit = is_lightning(model)               # swept as Lightning trains it, unless told otherwise
    if lit and optimizer is None:
        optimizer = lightning_optimizer(model)
    optimizer = OptimizerConfig("sgd", momentum=0.9) if optimizer is None else optimizer
    lightning = lit and step_fn is None and loss_fn is None
    step_fn = LightningStep() if lightning else step_fn
    rule, groups, own_unsupported = _rule(optimizer, model, sweep)
    settings = _optimizer_settings(optimizer, groups)
    procs = processes(model)
    own_unsupported = ("a Lightning module steps through its training_step" if lightning else "") or \
        _custom_step(step_fn, accumulation_steps, amp, val_loader) or own_unsupported or \
        (f"the model is {procs.kind}, whose gradients are reduced across processes in backward()" if procs else "")
    shared = procs if procs is not None and procs.size > 1 else None
    first = procs is None or procs.first    # one bar and one set of warnings, not one a process
    progress = progress and first
    graph_unsupported = own_unsupported or _not_on_cuda(groups)
    if cuda_graph and graph_unsupported:
        raise ValueError(f"cuda_graph=True cannot be used here: {graph_unsupported}")
    use_graph = not graph_unsupported and cuda_graph is not False
    # lrfind's own step replays a sweep from a graph, and runs an optimizer given as a config eagerly
    use_own = use_graph or (isinstance(optimizer, OptimizerConfig) and not own_unsupported)
    if isinstance(optimizer, OptimizerConfig):      # the torch optimizer it describes, for the eager path only
        optimizer = None if use_own else optimizer.torch_optimizer(model.parameters(), sweep.start_lr)
    checked_loss = outputs_checked(loss_fn)
    default_step = make_default_step(checked_loss, loss_fn is not None)
    step_fn = step_fn or default_step
    ratios = _group_ratios(groups)
    seeds: list[int | None] = ([seed + r for r in range(repeats)] if seed is not None
                               else [None] if repeats == 1 else list(range(repeats)))
    generator = getattr(loader, "generator", None)
    generator = generator if isinstance(generator, torch.Generator) else None

    snapshot = _state.take(model, optimizer)
    loader_rng = generator.get_state() if generator is not None else None
    runs: list[_Run] = []
    try:
        _start_persistent_workers(loader)
        val = None
        if val_loader is not None:
            val = [to_device(b, device) for b in itertools.islice(val_loader, val_batches)]
            if not val:
                raise ValueError("val_loader yields no batches")
        # one step for every repeat: a graph is captured once (the model is restored in place)
        own = SweepStep(model, rule, groups, ratios, checked_loss, graph=use_graph, strict=bool(cuda_graph),
                        max_grad_norm=max_grad_norm) \
            if use_own else None
        eager = None if use_own else \
            _EagerStep(model, device, optimizer, ratios, step_fn, accumulation_steps, amp, max_grad_norm, val)
        step = _own_step(own, default_step) if own is not None else eager
        with progress_bar(total=repeats * sweep.num_iter, desc="range test", disable=not progress,
                          leave=False, dynamic_ncols=True) as bar:
            for r, s in enumerate(seeds):
                if r:
                    _state.restore(snapshot, optimizer)
                    (own or eager).reset()
                if s is not None:
                    _seed_everything(s, generator)
                batches = Batches(loader, device)
                runs.append(_sweep_once(model, batches, step, sweep, bar, shared))
                if batches.restarts:
                    log.info("the loader ran out and was started again %d time(s)", batches.restarts)
    finally:
        _state.restore(snapshot, optimizer)
        if generator is not None:
            generator.set_state(loader_rng)

    result = _result(runs, sweep, ratios, method, seeds, accumulation_steps, amp, val_loader is not None)
    result.config["max_grad_norm"] = max_grad_norm
    result.config.update(settings)
    result.config["cuda_graph"] = own is not None and own.replayed
    if slow_down and result.repeats_disagree:
        log.warning("range test: the %d sweeps of %d steps disagree (%s); sweeping again at half the pace, %d steps",
                    repeats, sweep.num_iter, describe_sweeps(result.seed_lrs, result.shallow), 2 * sweep.num_iter)
        slower = find_lr(model, loader, sweep=replace(sweep, num_iter=2 * sweep.num_iter), slow_down=False,
                         warn=False, **again)
        slower.config["faster_sweeps"] = {"num_iter": sweep.num_iter, "seed_lrs": result.seed_lrs,
                                          "shallow": result.shallow}
        result = slower
    # one warning each, a missing suggestion first: `optimizer(lr=result.suggested_lr)` would fail far from here
    for text in result.warnings if warn and first else []:
        warn_at_users_line(text, RangeTestWarning)
    return result


# what the peers call find_lr's arguments (torch-lr-finder, fastai, Lightning), for users who come from them
_PEER_NAMES = {"criterion": "loss_fn", "num_it": "num_iter", "num_training": "num_iter", "min_lr": "start_lr",
               "max_lr": "end_lr", "step_mode": "mode", "diverge_th": "diverge_factor",
               "early_stop_threshold": "diverge_factor", "smooth_f": "ema_beta (= 1 - smooth_f)",
               "suggest_funcs": "method", "train_loader": "loader (the second positional argument)"}


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


def _custom_step(step_fn: StepFn | None, accumulation_steps: int, amp: str | None, val_loader: Iterable | None) -> str:
    """Why the sweep must step through a torch optimizer ("" if lrfind's own step can do it)."""
    if step_fn is not None or accumulation_steps > 1 or amp or val_loader is not None:
        return "a step_fn, accumulation_steps, amp or val_loader is given"
    return ""


def _not_on_cuda(groups: list[dict]) -> str:
    if not all(p.is_cuda for g in groups for p in g["params"]):
        return "the parameters are not all on a CUDA device"
    return ""


def _seed_everything(seed: int, generator: torch.Generator | None) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if generator is not None:
        generator.manual_seed(seed)


def _result(runs: list[_Run], sweep: Sweep, ratios: list[float], method: str, seeds: list[int | None],
            accumulation_steps: int, amp: str | None, validation: bool) -> RangeTestResult:
    lrs = sweep.lrs()
    seed_lrs = [RangeTestResult(lrs[: r.losses.size], r.losses, method=method).suggestions[method].lr for r in runs]
    shallow = set(shallow_sweeps([r.losses for r in runs])) if len(runs) > 1 else set()
    # the curve that agrees with the median suggestion, which leaves out the shallow sweeps
    shown = median_index([None if i in shallow else lr for i, lr in enumerate(seed_lrs)])
    run = runs[shown]
    return RangeTestResult(
        lrs=lrs[: run.losses.size], losses=run.losses, stop_reason=run.stop_reason,
        num_iter=sweep.num_iter, method=method, group_ratios=ratios, seed_lrs=seed_lrs,
        seed_losses=[r.losses for r in runs] if len(runs) > 1 else [], curve_index=shown,
        config={**asdict(sweep), "accumulation_steps": accumulation_steps, "amp": amp,
                "validation_loss": validation, "seeds": seeds},
    )
