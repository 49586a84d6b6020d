"""A training step captured once in a CUDA graph and replayed: one launch instead of a hundred.

LeNet-sized steps spend their time in Python and kernel launches, not arithmetic; replaying a
captured step removes both. The step must only update fixed tensors in place (weights, optimizer
state, counters on the device) and read its inputs from the tensors it was captured with.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Callable

import torch

from lrfind._device import exact_dtype
from lrfind._errors import ExplainedValueError, first_line
from lrfind.engine.update import adam_, clip_, sgd_

log = logging.getLogger(__name__)


class CapturedStep:
    """Calls ``step(*inputs)``: eagerly for the first ``warmup`` calls (real steps, during which
    cuDNN and cuBLAS set themselves up outside any capture), then from a CUDA graph captured on
    the next call, with the inputs copied into the tensors it was captured with. Inputs of another
    shape or dtype (a last, smaller batch) run eagerly. Returns what the step returns.

    A step that cannot be captured (a host synchronisation such as ``.item()``, data-dependent
    control flow, an op CUDA graphs do not support) runs eagerly from then on, with a warning;
    with ``strict`` the capture's error is raised instead. Nothing of the step runs during a
    capture, so a failed one leaves weights and optimizer state as they were.

    The capture runs on the inputs' GPU, whichever is the current one: kernels launched on another
    GPU than the capturing stream's would run there and then, once, and leave an empty graph whose
    replays do nothing. A graph that comes out empty all the same (a step that runs its work on
    streams of its own) counts as a failed capture; its step did run once, so its output is
    returned and the next steps run eagerly.
    """

    def __init__(self, step: Callable[..., Any], warmup: int = 2, strict: bool = False) -> None:
        self.step, self.warmup, self.strict = step, warmup, strict
        self.inputs: tuple[torch.Tensor, ...] | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.output: Any = None
        self.failure: str | None = None          # why the step runs eagerly after all

    def __call__(self, *inputs: torch.Tensor) -> Any:
        if self.warmup or self.failure:
            self.warmup = max(0, self.warmup - 1)
            return self.step(*inputs)
        if self.inputs is None:
            self.inputs = tuple(x.clone() for x in inputs)
        elif any(a.shape != b.shape or a.dtype != b.dtype for a, b in zip(inputs, self.inputs)):
            return self.step(*inputs)
        for static, x in zip(self.inputs, inputs):
            static.copy_(x)
        if self.graph is None:
            if not self._capture():
                return self.step(*inputs)
            if self.failure:                  # an empty graph: its capture ran the step once
                return self.output
        self.graph.replay()
        return self.output

    def _capture(self) -> bool:
        device = self.inputs[0].device
        with torch.cuda.device(device):       # the capturing stream is the current GPU's
            graph = torch.cuda.CUDAGraph()
            torch.cuda.synchronize(device)
            try:
                with warnings.catch_warnings(record=True) as said:
                    warnings.simplefilter("always")
                    with torch.cuda.graph(graph):
                        self.output = self.step(*self.inputs)          # recorded, not run
            except RuntimeError as e:
                if self.strict:
                    raise
                self._fail(first_line(e))
                torch.cuda.synchronize(device)
                return False
        empty = False
        for w in said:                # torch's warning of an empty graph is acted on; others pass on
            if "Graph is empty" in str(w.message):
                empty = True
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if empty:
            failure = ("the graph came out empty: the step ran its work on another GPU or stream than the "
                       f"capture's ({device})")
            if self.strict:
                raise RuntimeError(f"the training step could not be captured in a CUDA graph: {failure}")
            self._fail(failure)
            return True                       # the step ran once, eagerly: self.output is its output
        self.graph = graph
        return True

    def _fail(self, failure: str) -> None:
        self.failure = failure
        log.warning("the training step could not be captured in a CUDA graph (%s); it runs eagerly", failure)


class SweepStep:
    """One training step of a plain model for the range test, replayable from a CUDA graph.

    The update is torch's SGD (momentum, Nesterov, weight decay) or Adam/AdamW (``rule``) from
    ``_update``, on the parameters of ``groups`` (torch's param-group layout) with the LR read
    from a device tensor, so that one captured graph serves every LR of the sweep. Its optimizer
    state starts empty, as a fresh optimizer's does; the sweep's end state is thrown away by the
    range test's restore. ``max_grad_norm`` clips the gradients first, as
    ``torch.nn.utils.clip_grad_norm_`` does. With ``graph`` (CUDA only) the step is replayed from a CUDA graph;
    without, it runs eagerly: a fresh optimizer's steps without a ``torch.optim`` object.
    """

    def __init__(self, model: torch.nn.Module, rule: str, groups: list[dict], ratios: list[float],
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, graph: bool,
                 strict: bool = False, max_grad_norm: float | None = None) -> None:
        self.model, self.loss_fn, self.max_grad_norm = model, loss_fn, max_grad_norm
        self.adam, self.decoupled = rule in ("adam", "adamw"), rule == "adamw"
        self.groups = [(g, [p for p in g["params"] if p.requires_grad], ratio) for g, ratio in zip(groups, ratios)]
        self.params = [p for _, ps, _ in self.groups for p in ps]
        device = self.params[0].device
        self.lr = torch.zeros((), device=device)
        self.t = torch.zeros((), dtype=exact_dtype(device), device=device)
        zeros = lambda: [torch.zeros_like(p) for p in self.params]   # noqa: E731
        self.state = {"exp_avg": zeros(), "exp_avg_sq": zeros()} if self.adam else {"momentum": zeros()}
        self.captured = CapturedStep(self._step, strict=strict) if graph else self._step
        self.eager_steps = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        self.lr.fill_(lr)
        return self.captured(x, y)

    def eager(self, loss_of: Callable[[], torch.Tensor], lr: float) -> torch.Tensor:
        """The same step on the loss ``loss_of()`` computes, never from the graph: for batches the
        graph cannot copy into the tensors it was captured with (a dict of inputs)."""
        if isinstance(self.captured, CapturedStep) and self.captured.strict:
            raise ExplainedValueError("cuda_graph=True cannot replay steps on dict batches (a graph copies each "
                                      "step's tensors into the inputs it was captured with); leave cuda_graph out")
        self.lr.fill_(lr)
        self.eager_steps += 1
        return self._descend(loss_of())

    @property
    def replayed(self) -> bool:
        """Whether the sweep's steps came from a CUDA graph."""
        return isinstance(self.captured, CapturedStep) and self.captured.graph is not None and not self.eager_steps

    def reset(self) -> None:
        """Empty the optimizer state again, in place: a repeated sweep replays the graph it captured."""
        with torch.no_grad():
            self.t.zero_()
            for buffers in self.state.values():
                torch._foreach_zero_(buffers)

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._descend(self.loss_fn(self.model(x), y))

    def _descend(self, loss: torch.Tensor) -> torch.Tensor:
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        with torch.no_grad():
            if self.max_grad_norm is not None:
                clip_([g for g in grads if g is not None], self.max_grad_norm)
            self.t.add_(1)
            offset = 0
            for group, params, ratio in self.groups:
                n = len(params)
                self._update(group, params, list(grads[offset:offset + n]), offset, self.lr * ratio)
                offset += n
        return loss.detach()

    def _update(self, group: dict, params: list[torch.Tensor], grads: list, offset: int, lr: torch.Tensor) -> None:
        keep = [i for i, g in enumerate(grads) if g is not None]      # torch skips parameters without grads
        ps, gs = [params[i] for i in keep], [grads[i] for i in keep]
        if not ps:
            return
        state = {name: [bufs[offset + i] for i in keep] for name, bufs in self.state.items()}
        if self.adam:
            adam_(ps, gs, state["exp_avg"], state["exp_avg_sq"], lr, self.t, betas=group["betas"], eps=group["eps"],
                  weight_decay=group["weight_decay"], decoupled=self.decoupled)
        else:
            sgd_(ps, gs, state["momentum"], lr, momentum=group["momentum"], nesterov=group["nesterov"],
                 weight_decay=group["weight_decay"])
