"""The range test of torch-lr-finder 0.2.2 on the same model, data and batch size (DataLoader, workers)."""

from __future__ import annotations

import numpy as np
import torch

from bench.common import Timer, loader
from lrfind import get_model


def torch_lr_finder_range_test(num_iter: int, batch_size: int, workers: int, device: torch.device) -> dict:
    from torch_lr_finder import LRFinder

    model = get_model("lenet", seed=0).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    finder = LRFinder(model, opt, torch.nn.CrossEntropyLoss(), device=device)
    train = loader("train", batch_size, workers, indices=range(50_000))
    next(iter(train))                                     # start the workers outside the timing
    with Timer(device) as t:
        finder.range_test(train, start_lr=1e-6, end_lr=1.0, num_iter=num_iter)
    lrs, losses = np.array(finder.history["lr"]), np.array(finder.history["loss"])
    # its suggestion, as its plot() computes it: steepest slope of the EMA curve, ends skipped
    core = slice(10, len(losses) - 5)
    steepest = float(lrs[core][np.gradient(losses[core]).argmin()]) if len(losses) > 20 else None
    finder.reset()
    return {"seconds": t.seconds, "iterations": len(losses), "suggested_lr": steepest}
