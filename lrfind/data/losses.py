"""The loss of lrfind's own data sets: cross-entropy for class labels, mean squared error for
regression targets. A data set's labels say which: int64 class indices ``(N,)``, or float targets
``(N, k)`` (the user's own data; ``userdata`` turns ``(N,)`` into ``(N, 1)``).
"""

from __future__ import annotations

import torch
from torch import nn


def is_regression(labels: torch.Tensor) -> bool:
    return labels.is_floating_point()


def task_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean loss of a batch: ``cross_entropy(out, y)``, or ``mse_loss(out, y)`` for float targets."""
    if is_regression(y):
        return nn.functional.mse_loss(out, y)
    return nn.functional.cross_entropy(out, y)


def summed_losses(out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Of K trials' outputs ``(K, B, ...)`` on one batch: each trial's loss summed over the batch
    ``(K,)``, and its count of right answers ``(K,)`` (None for regression targets)."""
    if is_regression(y):
        return ((out - y) ** 2).flatten(2).mean(-1).sum(1), None
    loss = nn.functional.cross_entropy(out.transpose(1, 2), y.expand(len(out), -1), reduction="none").sum(1)
    return loss, (out.argmax(-1) == y).sum(1)
