"""torch.optim's update rules, written once for both of lrfind's captured training steps.

SGD (momentum, Nesterov, weight decay), Adam and AdamW with torch's semantics, and
``clip_grad_norm_``'s clipping before them, in place, on lists of tensors with foreach ops, the LR
and the step count read from device tensors: a CUDA graph that captured an update replays it at
whatever LR the tensor holds. Two callers:

- the trial engine (``train.FusedTrials``): one (K, P) tensor of every trial's weights, and an LR
  of shape (K, 1), one per trial;
- the range test (``_graph.SweepStep``): a model's parameters, and one 0-dim LR for all of them.

Both are checked against ``torch.optim`` by the tests.
"""

from __future__ import annotations

import torch

from lrfind._args import check_positive

Tensors = list[torch.Tensor]


def _times(tensors: Tensors, factor: torch.Tensor) -> Tensors:
    """``t * factor`` for each tensor. Foreach ops take a 0-dim tensor only; a per-row factor
    (the engine's (K, 1) LRs) broadcasts tensor by tensor."""
    if factor.dim() == 0:
        return torch._foreach_mul(tensors, factor)
    return [t * factor for t in tensors]


def _scale_(tensors: Tensors, factor: torch.Tensor) -> None:
    """``t *= factor`` for each tensor, in place; the factor 0-dim or per row, as in ``_times``."""
    if factor.dim() == 0:
        torch._foreach_mul_(tensors, factor)
    else:
        for t in tensors:
            t.mul_(factor)


def sgd_(params: Tensors, grads: Tensors, momentum_buffers: Tensors, lr: torch.Tensor, *,
         momentum: float | torch.Tensor, nesterov: bool, weight_decay: float) -> None:
    """torch.optim.SGD's step (no dampening). Momentum buffers start at zero: torch's first step
    sets ``buf = g``, which ``0 * momentum + g`` equals exactly. ``momentum`` may be a tensor, per
    row as the LR is: the engine's trials that cycle it (one-cycle's ``cycle_momentum``)."""
    if weight_decay:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    if isinstance(momentum, torch.Tensor):
        _scale_(momentum_buffers, momentum)
        torch._foreach_add_(momentum_buffers, grads)
        grads = torch._foreach_add(grads, _times(momentum_buffers, momentum)) if nesterov else momentum_buffers
    elif momentum:
        torch._foreach_mul_(momentum_buffers, momentum)
        torch._foreach_add_(momentum_buffers, grads)
        grads = torch._foreach_add(grads, momentum_buffers, alpha=momentum) if nesterov else momentum_buffers
    torch._foreach_sub_(params, _times(grads, lr))


def adam_(params: Tensors, grads: Tensors, exp_avgs: Tensors, exp_avg_sqs: Tensors, lr: torch.Tensor,
          step: torch.Tensor, *, betas: tuple[float | torch.Tensor, float], eps: float, weight_decay: float,
          decoupled: bool) -> None:
    """torch.optim.Adam's step, or AdamW's with ``decoupled``. ``step`` counts this step (1 on the
    first), a float64 tensor (float32 on MPS, which has no double): the bias corrections are
    computed in double, as torch does. beta1 may be a tensor of that dtype per row, as the LR is
    (trials that cycle it); torch then corrects the bias with each step's beta1, and so does this."""
    b1, b2 = betas
    if decoupled and weight_decay:
        _scale_(params, 1 - lr * weight_decay)
    elif weight_decay:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    if isinstance(b1, torch.Tensor):
        weight = (1 - b1).float()
        for avg, g in zip(exp_avgs, grads):
            avg.lerp_(g, weight)
    else:
        torch._foreach_lerp_(exp_avgs, grads, 1 - b1)
    torch._foreach_mul_(exp_avg_sqs, b2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - b2)
    step_size = lr / (1 - b1 ** step).float()
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, (1 - b2 ** step).sqrt().float())
    torch._foreach_add_(denom, eps)
    torch._foreach_sub_(params, _times(torch._foreach_div(exp_avgs, denom), step_size))


def _clip_factor(norm: torch.Tensor, max_norm: float) -> torch.Tensor:
    """torch's ``clip_grad_norm_`` factor: ``max_norm / (norm + 1e-6)``, at most 1."""
    return torch.clamp(max_norm / (norm + 1e-6), max=1.0)


def clip_(grads: Tensors, max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_`` on one model's gradients, in place, without a host sync:
    their total 2-norm scaled down to ``max_norm`` where it is larger."""
    device = grads[0].device                    # a model split over devices: the norms meet on the first
    factor = _clip_factor(torch.linalg.vector_norm(
        torch.stack([n.to(device) for n in torch._foreach_norm(grads, 2)]), 2), max_norm)
    for on in {g.device for g in grads}:
        torch._foreach_mul_([g for g in grads if g.device == on], factor.to(on))


def clip_rows(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """The engine's (K, P) gradients, each trial's row clipped to its own norm as ``clip_`` clips a model's."""
    return grad * _clip_factor(torch.linalg.vector_norm(grad, dim=1, keepdim=True), max_norm)


def check_max_grad_norm(max_grad_norm: float | None) -> None:
    """A clipping norm is a positive number, or None: no clipping."""
    if max_grad_norm is not None:
        check_positive("max_grad_norm", max_grad_norm, then="; leave it out for no clipping")
