"""Scoring the trials on held-out data, batched over the trials, with a batch size that keeps the
activations' memory the same at any number of trials."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from lrfind.data.images import ImageData
from lrfind.data.losses import is_regression, summed_losses

EVAL_IMAGE_TRIALS = 32_768      # images x trials per forward pass of evaluate(): about 1.5 GB for LeNet
EVAL_IMAGES_CPU = 512           # images per trial and forward pass of evaluate() on a CPU (see there)


def eval_batch_size(trials: int, device: torch.device) -> int:
    """Images per forward pass of ``FusedTrials.evaluate`` (see there)."""
    return max(64, EVAL_IMAGE_TRIALS // max(1, trials)) if device.type == "cuda" else EVAL_IMAGES_CPU


def scores(forward: Callable[[torch.Tensor], torch.Tensor], base: nn.Module, autocast, data: ImageData,
           batch_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean loss and accuracy of every trial on ``data`` (accuracy None for regression targets):
    ``forward(x)`` gives every trial's outputs, (K, B, ...), for ``base`` in eval mode (dropout off,
    batch norm from its running statistics). One host sync, at the end."""
    loss = correct = 0.0
    base.eval()
    try:
        for x, y in data.loader(batch_size, shuffle=False, drop_last=False):
            with autocast:
                logits = forward(x).float()   # (K, B, C)
            batch_loss, batch_correct = summed_losses(logits, y)
            loss = loss + batch_loss                      # (K,) on the device
            if batch_correct is not None:
                correct = correct + batch_correct
    finally:
        base.train()
    n = len(data)
    acc = None if is_regression(data.labels) else (correct / n).cpu().numpy()    # regression: no accuracy
    return (loss / n).cpu().numpy(), acc
