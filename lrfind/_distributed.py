"""A range test of a DistributedDataParallel model: every process sweeps, and all stop together.

Each process trains on its own batches and DDP averages the gradients, so the processes' losses
differ while their weights stay equal. Were each to stop on its own loss, one would stop while the
others wait in the next step's all-reduce, for ever (fastai's lr_find deadlocked so). So the
losses are averaged across the processes at every divergence check (one all-reduce per check):
every process then records the same curve, stops at the same step and suggests the same LR.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def ddp_world(model: nn.Module) -> int:
    """The number of processes a DistributedDataParallel ``model`` trains in; 1 for any other model."""
    if not isinstance(model, nn.parallel.DistributedDataParallel):
        return 1
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(model.process_group)


def mean_across(model: nn.Module, losses: torch.Tensor) -> None:
    """Replace ``losses`` (a slice of the recorded curve, on the model's device) by their mean over
    the processes of ``model``'s group, in place. A NaN anywhere is a NaN everywhere."""
    dist.all_reduce(losses, op=dist.ReduceOp.SUM, group=model.process_group)
    losses.div_(dist.get_world_size(model.process_group))


def is_first_process(model: nn.Module) -> bool:
    """Only the first process of the group shows a progress bar."""
    return ddp_world(model) == 1 or dist.get_rank(model.process_group) == 0
