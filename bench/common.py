"""Shared pieces of the benchmarks: the pipeline users would otherwise write, and timing."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lrfind.data import read_idx


class TorchvisionStyleMNIST(torch.utils.data.Dataset):
    """MNIST as torchvision serves it: a PIL image per sample, then ToTensor and Normalize.

    torchvision's own class would try to download the rebuilt training file (its md5 differs), so
    this reads the same IDX files and does the same per-sample work as ``datasets.MNIST``.
    """

    def __init__(self, split: str = "train", indices: Sequence[int] | None = None) -> None:
        from torchvision import transforms

        stem = "train" if split == "train" else "t10k"
        raw = Path(os.environ.get("LRFIND_DATA_DIR") or Path.home() / ".cache" / "lrfind").expanduser() / "MNIST" / "raw"
        self.images = torch.from_numpy(read_idx(raw / f"{stem}-images-idx3-ubyte.gz").copy())
        self.labels = torch.from_numpy(read_idx(raw / f"{stem}-labels-idx1-ubyte.gz").astype(np.int64))
        self.indices = indices if indices is not None else range(len(self.labels))
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        from PIL import Image

        j = self.indices[i]
        return self.transform(Image.fromarray(self.images[j].numpy(), mode="L")), int(self.labels[j])


def loader(split: str, batch_size: int, workers: int, indices: Sequence[int] | None = None, shuffle: bool = True):
    return torch.utils.data.DataLoader(TorchvisionStyleMNIST(split, indices), batch_size=batch_size, shuffle=shuffle,
                                       num_workers=workers, pin_memory=torch.cuda.is_available(),
                                       persistent_workers=workers > 0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Timer:
    """Wall time of a block, with the device synchronised at both ends."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds = device, 0.0

    def __enter__(self) -> "Timer":
        sync(self.device)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self.start


def engine_epoch_seconds(k: int, loader, device: torch.device, wrap_step=None, engine_class=None,
                         model: str = "lenet", **options) -> float:
    """Wall time of one epoch of K trials of ``model`` side by side in lrfind's engine, after 11 warm-up
    steps (kernels, allocator, the CUDA graph's capture). ``options`` go to ``FusedTrials`` (or to
    ``engine_class``, a variant of it); ``wrap_step`` replaces the engine's step function before
    the first step (``torch.compile``). The device's peak-memory counter is reset after the warm-up."""
    from lrfind.engine.trials import FusedTrials, TrialSpec

    specs = [TrialSpec("cosine", {"min_factor": 0.01}, seed=i) for i in range(k)]
    engine = (engine_class or FusedTrials)(model, specs, base_lr=0.05, total_steps=2 * len(loader) + 10,
                         steps_per_epoch=len(loader), device=device, **options)
    if wrap_step is not None:
        engine._step = wrap_step(engine._step)          # the CUDA graph then captures the wrapped step
    for i, (x, y) in enumerate(loader):
        engine.step(x, y)
        if i == 10:
            break
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with Timer(device) as t:
        for x, y in loader:
            engine.step(x, y)
    return t.seconds
