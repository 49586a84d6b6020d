"""``FusedTrials``: K trials of one model in lockstep on one device, with stacked weights, one
forward for all (looped, vmapped or folded: ``engine.mode``), and torch.optim's update on the rows."""

from __future__ import annotations

import copy
import logging
import weakref
from dataclasses import replace
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from lrfind._device import exact_float32
from lrfind._errors import message
from lrfind.engine.folded import FoldedForward, NotFoldable
from lrfind.engine.graph import CapturedStep
from lrfind.engine.scoring import eval_batch_size, scores
from lrfind.engine.lr_table import lr_table, momentum_table, trial_lrs
from lrfind.engine.mode import Mode, ModeRequest, choose
from lrfind.engine.records import TrialRecord, TrialSpec
from lrfind.engine.rows import Rows, aligned_rows
from lrfind.engine.update import clip_rows
from lrfind.data.images import ImageData
from lrfind.data.losses import task_loss
from lrfind.models import get_model, seeded
from lrfind.engine.optimizer import OptimizerConfig
from lrfind.schedules import get_schedule

log = logging.getLogger(__name__)


class FusedTrials:
    """K trials of one model in lockstep. Use ``step`` per batch and ``end_epoch`` per epoch.

    ``model`` is a registered model name or a zero-argument factory returning an ``nn.Module``.
    ``amp="bf16"`` runs forward and backward under bfloat16 autocast (weights and the update stay
    float32). ``cuda_graph`` (default: on for CUDA devices) replays each step from a CUDA graph: the
    step updates fixed tensors in place only (step counter, LRs and optimizer state live on the
    device), so a replayed step is the same arithmetic as an eager one. ``vectorize``, ``fold`` and
    ``channels_last`` ask how the trials' forward runs (``engine.mode``: vmapped, folded into the
    channels, or trial after trial; convolution weights channels-last), checked on the first batch
    with a fallback that is said; the optimizer update is fused over all trials either way.
    Parameters the model froze (``requires_grad=False``) stay as they are, as torch.optim leaves them.
    ``own_batches``: every trial trains on a batch of its own, ``step(x, y)`` with ``x`` (K, B, ...)
    and ``y`` (K, B, ...), a row per trial still in the batch (looped or vmapped, never folded).
    ``loss_fn(outputs, targets)``: the loss trained on (default: ``task_loss``). ``lrs``: every
    trial's LR at every step, (K, total_steps) or (total_steps,) for all, instead of its schedule's
    (a range test's sweeps). ``step_losses`` holds every trial's loss of the last step, on the device.
    """

    def __init__(self, model: str | Callable[[], nn.Module], specs: list[TrialSpec], *, base_lr: float,
                 total_steps: int, steps_per_epoch: int, optimizer: OptimizerConfig = OptimizerConfig(),
                 device: str | torch.device = "cpu", same_init: bool = False,
                 cuda_graph: bool | None = None, amp: str | None = None, vectorize: bool | None = None,
                 channels_last: bool | None = None, max_grad_norm: float | None = None, fold: bool = True,
                 own_batches: bool = False, loss_fn: Callable | None = None, lrs: np.ndarray | None = None) -> None:
        if not specs:
            raise ValueError("need at least one trial")
        self.device = torch.device(device)
        self.specs = list(specs)
        self.records = [TrialRecord(s) for s in specs]
        self.schedules = [get_schedule(s.schedule) for s in specs]
        self.base_lr, self.total, self.per_epoch = base_lr, total_steps, steps_per_epoch
        self.opt, self.max_grad_norm = optimizer, max_grad_norm
        self.own_batches, self.loss_fn = own_batches, loss_fn or task_loss
        for sched, spec in zip(self.schedules, specs):
            sched.validate(total_steps, **spec.params)     # fail before any work

        factory = (lambda seed: get_model(model, seed=seed)) if isinstance(model, str) else seeded(model)
        models = [factory(specs[0].seed if same_init else s.seed).to(self.device) for s in specs]
        params, buffers = stack_module_state(models)
        # Parameters the model froze (requires_grad=False) are not trained: they ride with the buffers.
        frozen = {name for name, q in models[0].named_parameters() if not q.requires_grad}
        buffers.update({name: params.pop(name).detach() for name in frozen})
        if not params:
            raise ValueError("the model has no trainable parameters (every one has requires_grad=False)")
        # All weights of a trial live in one row of a (K, P) tensor; the model sees views into it.
        # The optimizer then updates every tensor of every trial in a handful of kernels.
        self.base = copy.deepcopy(models[0]).to("meta").train()       # trials train; evaluate() switches
        # The mode to try first; ``choose_mode`` checks it on the first batch, before training.
        self.request = ModeRequest(vectorize=vectorize, fold=fold and not own_batches, channels_last=channels_last)
        guess = self.request.first_guess(self.device, convolutions=any(v.ndim == 5 for v in params.values()),
                                         foldable=True)
        self._folded = self._folded_forward() if guess.forward == "folded" else None
        self.guess = replace(guess, forward="vmapped") if guess.forward == "folded" and self._folded is None else guess
        self.mode: Mode | None = None
        # the convolution weights, (K, out, in, h, w), stored channels-last if the guess says so
        convolutions = {k for k, v in params.items() if v.ndim == 5} if guess.channels_last else set()
        self.rows = Rows({k: v.shape[1:] for k, v in params.items()}, convolutions)
        self.flat = self.rows.flatten(params)
        self.params = self.rows.views(self.flat)
        self.buffers = self._laid_out(buffers)
        self.index = torch.arange(len(specs), device=self.device)   # rows still in the batch -> records
        self.momentum_table = momentum_table(self.schedules, self.specs, self.total, self.opt, self.device)                  # None: no trial cycles its momentum
        self.state = optimizer.initial_state(self.flat, cycled=self.momentum_table is not None)   # (K, P) each
        self.step_count = 0                                           # the host's count ...
        self.step_t = torch.zeros((), dtype=torch.long, device=self.device)   # ... and the device's
        self.alive = torch.ones(len(specs), dtype=torch.bool, device=self.device)
        self.loss_sum = torch.zeros(len(specs), device=self.device)
        self.first_bad = torch.full((len(specs),), -1, dtype=torch.long, device=self.device)
        self.step_losses = torch.zeros(len(specs), device=self.device)
        self.lr_table = lr_table(self.schedules, self.specs, self.base_lr, self.total, self.device) if lrs is None \
            else torch.tensor(np.broadcast_to(lrs, (len(specs), total_steps)), dtype=torch.float32, device=self.device)

        self.cuda_graph = self.device.type == "cuda" if cuda_graph is None else cuda_graph
        self._strict_graph = bool(cuda_graph)        # asked for explicitly: a failed capture raises
        if self.cuda_graph and self.device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs a CUDA device, got {self.device}")
        self._graph: CapturedStep | None = None
        self._eval_batch: int | None = None          # set when the default ran out of memory
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp == "bf16")

    # -- forward and gradients of every trial -----------------------------------------------------
    def _logits(self, p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (p, b), (x,))

    def _loss(self, p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor,
              y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self._logits(p, b, x), y)

    @staticmethod
    def _rows(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor]):
        """Each trial's parameters and buffers, as views of the stacked ones."""
        for k in range(len(next(iter(p.values())))):
            yield {name: v[k] for name, v in p.items()}, {name: v[k] for name, v in b.items()}

    # The engine keeps no bound method of its own (a vmapped one, the CUDA graph's step): such a
    # reference cycle would hold its weights, optimizer state and graph until the garbage collector
    # runs, not until the last reference to it goes.
    @property
    def vectorize(self) -> bool:
        """Whether the trials' forward runs batched (vmapped or folded), not trial after trial."""
        return (self.mode or self.guess).vectorized

    @property
    def trials(self) -> int:
        """Trials still in the batch."""
        return len(self.index)

    def _losses(self, p, b, x, y, mode: Mode) -> torch.Tensor:
        """Every trial's loss, (K,): folded into the channels, or vmapped."""
        if mode.forward == "folded":
            return vmap(self.loss_fn, in_dims=(0, None))(self._folded(p, b, x), y)
        # randomness="different": each trial draws its own dropout masks, as if trained alone
        batch = 0 if self.own_batches else None
        return vmap(self._loss, in_dims=(0, 0, batch, batch), randomness="different")(p, b, x, y)

    def _forward(self, p, b, x) -> torch.Tensor:
        """Every trial's outputs, (K, B, ...)."""
        mode = self.mode or self.guess
        if mode.forward == "looped":
            return self._looped_forward(p, b, x)
        if mode.forward == "folded":
            return self._folded(p, b, x)
        return vmap(self._logits, in_dims=(0, 0, None), randomness="different")(p, b, x)

    def _gradients(self, x: torch.Tensor, y: torch.Tensor, buffers: dict[str, torch.Tensor] | None = None,
                   mode: Mode | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every trial's loss (K,) and gradient (K, P) on one batch (``buffers``: instead of the
        trials' own, which batch norm updates; ``mode``: instead of the engine's).

        The trials are independent, so the gradient of their summed losses is each trial's own
        gradient. One backward pass through the (vmapped or looped) forward gives them all; unlike
        ``torch.func.grad`` it does not import ``torch._dynamo`` (1-2 s of a study's start-up).
        """
        buffers = self.buffers if buffers is None else buffers
        mode = mode or self.mode or self.guess
        if mode.forward == "looped":
            return self._looped_gradients(x, y, buffers)
        flat = self.flat.detach().requires_grad_()       # a leaf sharing the weights' memory
        with self.autocast:
            losses = self._losses(self.rows.views(flat), buffers, x, y, mode)
        # The views' backward fills the rows of a parameter the loss does not use with zeros, as torch.func
        (grad,) = torch.autograd.grad(losses.sum(), flat)
        return losses.detach(), grad

    def _looped_gradients(self, x: torch.Tensor, y: torch.Tensor,
                          buffers: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``_gradients`` trial after trial (on a CPU the batched kernels vmap makes, grouped
        convolutions, are slower than K plain ones). Each trial's gradient is taken with respect
        to its own row of the weights: through the stacked (K, P) weights, each trial's backward
        would fill a (K, P) gradient with zeros but for its row, K times a step."""
        rows = [row.detach().requires_grad_() for row in self.flat]     # leaves sharing the weights' memory
        with self.autocast:
            losses = torch.stack([self._loss(self.rows.row_views(row), {name: v[k] for name, v in buffers.items()},
                                             *((x[k], y[k]) if self.own_batches else (x, y)))
                                  for k, row in enumerate(rows)])
        grads = torch.autograd.grad(losses.sum(), rows)
        return losses.detach(), torch.stack(grads)

    def _buffer_copies(self) -> dict[str, torch.Tensor]:
        """The trials' buffers cloned, for a trial run that must leave batch norm's statistics as they are."""
        return {k: v.clone() for k, v in self.buffers.items()}

    # -- the mode, chosen on the first batch (``engine.mode``) ----------------------------------------
    def choose_mode(self, x: torch.Tensor, y: torch.Tensor) -> Mode:
        """Settle how the trials run (``engine.mode.choose``) on a first batch, before training: the
        guess is tried on copies, and the weights and buffers laid out for what is chosen. Once."""
        if self.mode is None:
            self._use(choose(self, self.request, self.guess, x.contiguous(), y))
        return self.mode

    def step_fails(self, x: torch.Tensor, y: torch.Tensor, mode: Mode) -> Exception | None:
        """The error of one step's forward and backward in ``mode``, tried on copies (the weights,
        buffers and RNG stay as they were); None when it runs."""
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                self._gradients(x, y, buffers=self._buffer_copies(), mode=mode)
        except Exception as e:            # vmap says RuntimeError or NotImplementedError, models anything
            return e
        return None

    def folded_disagreement(self, x: torch.Tensor) -> tuple[str | None, bool]:
        """Why the folded forward cannot stand for the trials' own on ``x`` (run one after another;
        compared in eval mode, where dropout draws nothing), and whether their outputs differ (rather
        than the folded forward failing); (None, False) when it can."""
        self.base.eval()
        try:
            with torch.no_grad(), exact_float32():        # TF32's rounding would differ between the two
                got = self._folded(self.params, self._buffer_copies(), x).float()
                want = self._looped_forward(self.params, self._buffer_copies(), x).float()
            if got.shape != want.shape:
                return f"its outputs' shape differs from the trials' own: {tuple(got.shape)}", True
            tolerance = 1e-4 + 1e-3 * want.nan_to_num().abs().max().item()
            if not torch.allclose(got, want, rtol=1e-3, atol=tolerance, equal_nan=True):
                return f"its outputs differ from the trials' own (by {(got - want).abs().max().item():.3g})", True
        except Exception as e:            # an operator neither the rules nor vmap can run, say
            return f"{type(e).__name__}: {message(e)}", False
        finally:
            self.base.train()
        return None, False

    def _folded_forward(self) -> FoldedForward | None:
        """The trials' forward folded into the channels, or None for a model that cannot be traced
        or holds an operation folding cannot take (then it is vmapped whole)."""
        try:
            return FoldedForward(self.base)
        except NotFoldable as e:
            log.info("the trials' forward is vmapped whole: %s", e)
            return None

    def unfolded_operations(self) -> list[str]:
        """The folded forward's operations without a folding rule, run under vmap."""
        return self._folded.vmapped

    def _use(self, mode: Mode) -> None:
        """Lay the weights and buffers out for ``mode``, before the first step."""
        if self.rows.channels_last and not mode.channels_last:
            weights = self.rows.views(self.flat)
            self.rows = Rows(self.rows.shapes, set())
            self.flat = self.rows.flatten(weights)
            self.params = self.rows.views(self.flat)
            self.state = self.opt.initial_state(self.flat, cycled=self.momentum_table is not None)   # all zeros
        if mode.forward != "folded":
            self._folded = None
        self.mode = mode
        self.buffers = self._laid_out(self.buffers)

    def _laid_out(self, buffers: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The (K, ...) buffers as this engine keeps them. Trained one after another, each trial gets
        views of its own rows, which must then start where a fresh tensor would (``aligned_rows``).
        Under vmap they stay contiguous: its batch norm updates the running statistics of a strided
        buffer in a copy, which is lost."""
        return buffers if self.vectorize else {name: aligned_rows(v) for name, v in buffers.items()}

    def _looped_forward(self, p, b, x) -> torch.Tensor:
        return torch.stack([self._logits(pk, bk, x) for pk, bk in self._rows(p, b)])

    def _refresh_metric_driven(self) -> None:
        """Plateau-like trials: recompute their LRs from their own validation losses so far."""
        for row, k in enumerate(self.index.tolist()):
            sched, rec = self.schedules[k], self.records[k]
            if sched.needs_metric:
                lr = trial_lrs(sched, rec.spec, self.base_lr, self.total, metrics=rec.val_loss or rec.train_loss)
                self.lr_table[row] = torch.as_tensor(lr, dtype=torch.float32, device=self.device)

    def current_lrs(self) -> torch.Tensor:
        return self.lr_table[:, min(self.step_count, self.total - 1)]

    # -- one optimizer step for every trial ---------------------------------------------------
    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.step_count >= self.total:
            raise RuntimeError(f"all {self.total} steps are done")
        # A crop (lrfind.augment's, or a user's) can hand over channels-last images. Under vmap on
        # CUDA, batch norm then asks the batched activations their layout, which vmap cannot answer
        # ("NYI: querying is_contiguous inside of vmap"): the trials would train one after another.
        x = x.contiguous()
        if self.own_batches and (x.shape[0] != self.trials or y.shape[0] != self.trials):
            raise ValueError(f"own_batches: a batch per trial in the batch, {self.trials}, got {x.shape[0]} inputs "
                             f"and {y.shape[0]} targets")
        self.choose_mode(x, y)                  # on the first batch, unless run_trials chose already
        if self.cuda_graph:
            self._graph = self._graph or CapturedStep(_weak_step(self), strict=self._strict_graph)
            self._graph(x, y)
        else:
            self._step(x, y)
        self.step_count += 1

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One step of every trial, in place: safe to capture in a CUDA graph and replay."""
        losses, grad = self._gradients(x, y)
        self.step_losses.copy_(losses)
        finite = torch.isfinite(losses)
        self.first_bad.copy_(torch.where(self.alive & ~finite, self.step_t, self.first_bad))
        self.alive &= finite
        self.loss_sum.add_(torch.where(self.alive, losses, 0.0))
        lr = self.lr_table.index_select(1, self.step_t.view(1)).squeeze(1) * self.alive   # failed trials stop
        momentum = None if self.momentum_table is None else self.momentum_table.index_select(1, self.step_t.view(1))
        self.step_t.add_(1)
        with torch.no_grad():
            g = torch.where(self.alive.unsqueeze(1), grad, 0.0)     # NaN gradients of failed trials go nowhere
            if self.max_grad_norm is not None:      # each trial's own gradient, as clip_grad_norm_ clips it
                g = clip_rows(g, self.max_grad_norm)
            self.opt.step_rows(self.flat, g, self.state, lr, momentum, self.step_t)

    # -- per epoch ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, data: ImageData, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Mean loss and accuracy of every trial still in the batch on ``data``, computed batched
        (accuracy None for regression targets).

        Default batch: ``EVAL_IMAGE_TRIALS`` images x trials at a time, so that the activations of
        a forward pass take the same memory at any K (they grow with images x trials). On a CPU,
        ``EVAL_IMAGES_CPU`` images: activations that stay in its caches. A batch that runs out of
        GPU memory is halved until one fits, and that size kept.
        """
        batch_size = batch_size or self._eval_batch or eval_batch_size(len(self.index), self.device)
        while True:
            try:
                return scores(lambda x: self._forward(self.params, self.buffers, x), self.base, self.autocast, data,
                              batch_size)
            except torch.cuda.OutOfMemoryError:
                # A model larger than LeNet (the user's own) has more activations per image than the
                # default batch assumes: halve it until it fits, and keep that size for the next epochs.
                if batch_size == 1:
                    raise
                batch_size = self._eval_batch = batch_size // 2
                torch.cuda.empty_cache()
                log.info("evaluation ran out of GPU memory: %d images per forward pass from now on", batch_size)

    def end_epoch(self, val: ImageData | None, steps_in_epoch: int) -> None:
        """Record the epoch's metrics in every live trial's record; mark the failed ones."""
        train = (self.loss_sum / max(1, steps_in_epoch)).cpu().numpy()
        alive = self.alive.cpu().numpy()
        first_bad = self.first_bad.cpu().numpy()
        self.loss_sum.zero_()
        val_loss, val_acc = self.evaluate(val) if val is not None else (None, None)
        for row, k in enumerate(self.index.tolist()):
            rec = self.records[k]
            if not alive[row]:
                if rec.status == "running":
                    rec.status, rec.failed_at = "failed", int(first_bad[row])
                continue
            rec.train_loss.append(float(train[row]))
            if val_loss is not None:
                rec.val_loss.append(float(val_loss[row]))
                if val_acc is not None:                      # regression targets have no accuracy
                    rec.val_acc.append(float(val_acc[row]))
        self._refresh_metric_driven()

    def keep(self, keep: list[bool]) -> None:
        """Drop the trials (rows of the batch) where ``keep`` is False: they leave the batch."""
        mask = torch.as_tensor(keep, dtype=torch.bool, device=self.device)
        if bool(mask.all()):
            return
        self.flat = self.flat[mask]
        self.params = self.rows.views(self.flat)
        self.buffers = self._laid_out({k: v[mask] for k, v in self.buffers.items()})
        self.state = {k: v[mask] for k, v in self.state.items()}
        for name in ("index", "alive", "loss_sum", "first_bad", "lr_table", "step_losses"):
            setattr(self, name, getattr(self, name)[mask])
        if self.momentum_table is not None:
            self.momentum_table = self.momentum_table[mask]
        self._graph = None                  # the captured step points at the old tensors

    @property
    def running(self) -> list[int]:
        """Record indices of the trials still in the batch."""
        return self.index.tolist()

    def state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """The weights of trial ``k`` (its index in ``specs``), as a model's state dict."""
        rows = (self.index == k).nonzero()
        if not rows.numel():
            raise KeyError(f"trial {k} has left the batch")
        row = int(rows[0, 0])
        return {**{n: v[row].clone() for n, v in self.params.items()},
                **{n: v[row].clone() for n, v in self.buffers.items()}}


def _weak_step(engine: FusedTrials) -> Callable[..., None]:
    """``engine._step`` without a reference to the engine (see ``FusedTrials._losses``)."""
    ref = weakref.ref(engine)
    return lambda *inputs: ref()._step(*inputs)
