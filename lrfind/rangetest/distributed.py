"""A range test of a model trained across processes: every process sweeps, and all stop together.

DistributedDataParallel, FullyShardedDataParallel and ``fully_shard`` (FSDP2; any model whose
parameters are DTensors) all train one model in many processes: each process on its own batches,
with the gradients reduced across them in ``backward()``. The processes' losses differ while their
weights stay one model. Were each to stop on its own loss, one would stop while the others wait in
the next step's collective, for ever (fastai's lr_find deadlocked so). So the losses are averaged
across the processes at every divergence check (one all-reduce per check): every process then
records the same curve, stops at the same step and suggests the same LR.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def _fsdp(model: nn.Module) -> nn.Module | None:
    """The outermost FullyShardedDataParallel (FSDP1) module in ``model``, if any, in processes
    that share a group. (Asked only where its module is loaded: no model can be one otherwise,
    and loading it takes 0.4 s.)"""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    if fsdp is None or not _initialized():
        return None
    return next((m for m in model.modules() if isinstance(m, fsdp.FullyShardedDataParallel)), None)


def _sharded(model: nn.Module) -> bool:
    """Whether some parameter is a DTensor (``fully_shard``, tensor parallelism)."""
    kinds = tuple(module.DTensor for name in ("torch.distributed.tensor", "torch.distributed._tensor")  # 2.4: _tensor
                  if (module := sys.modules.get(name)) is not None and hasattr(module, "DTensor"))
    return bool(kinds) and any(isinstance(p, kinds) for p in model.parameters())


@dataclass(frozen=True)
class Processes:
    """The processes one model trains in: what makes it so (in words), their group (None: the
    default group, all processes), how many, and this one's rank in it."""

    kind: str
    group: Any
    size: int
    rank: int

    @property
    def first(self) -> bool:
        """Only the first process shows a progress bar and warns."""
        return self.rank == 0

    def mean(self, losses: torch.Tensor) -> None:
        """Replace ``losses`` (a slice of the recorded curve, on the model's device) by their mean
        over the processes, in place. A NaN anywhere is a NaN everywhere."""
        dist.all_reduce(losses, op=dist.ReduceOp.SUM, group=self.group)
        losses.div_(self.size)


def processes(model: nn.Module) -> Processes | None:
    """The processes ``model`` trains in as one model; None for a model of one process. Such a
    model steps through a torch optimizer: the collectives live in its backward."""
    if not _initialized():                  # none of them can be built without a process group
        return None
    if isinstance(model, nn.parallel.DistributedDataParallel):
        kind, group = "a DistributedDataParallel", model.process_group
    elif (fsdp := _fsdp(model)) is not None:
        kind, group = "a FullyShardedDataParallel", fsdp.process_group
    elif _sharded(model):
        kind, group = "sharded (its parameters are DTensors: fully_shard, tensor parallelism)", None
    else:
        return None
    return Processes(kind, group, dist.get_world_size(group), dist.get_rank(group))


def gradient_clipper(model: nn.Module) -> Callable[[list[torch.Tensor], float], Any]:
    """``torch.nn.utils.clip_grad_norm_`` for ``model``, over the gradients of all its processes.

    DTensor gradients (``fully_shard``) make torch's own function reduce the norm across the
    shards. FSDP1's flat parameters hold each process's shard as a plain tensor: there the norm is
    the root module's ``clip_grad_norm_``, which only a model wrapped at its root has."""
    fsdp = _fsdp(model)
    if fsdp is None:
        return nn.utils.clip_grad_norm_
    if fsdp is not model:
        raise ValueError("max_grad_norm with a FullyShardedDataParallel inside the model: FSDP clips the "
                         "gradients of a model wrapped at its root only (FullyShardedDataParallel."
                         "clip_grad_norm_); wrap the whole model, or leave max_grad_norm out")
    return lambda parameters, max_norm: model.clip_grad_norm_(max_norm)


def grad_scaler(model: nn.Module, device: torch.device) -> torch.amp.GradScaler:
    """fp16's gradient scaler. FSDP1's shards need the one that agrees across processes on whether
    a step overflowed (each process sees only its shard's gradients)."""
    fsdp = _fsdp(model)
    if fsdp is None:
        return torch.amp.GradScaler(device.type)
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

    return ShardedGradScaler(device.type, process_group=fsdp.process_group)
