"""Registry of the built-in models, all for 1x28x28 inputs and 10 classes."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F


class LeNet(nn.Module):
    """The LeNet of seeds/003: conv 1-8-16 (3x3) with 2x2 max-pooling, then fc 400-128-64-10.

    The seed wrote ``16*3*3`` as the flatten size, which does not run on 28x28 input:
    28 -conv-> 26 -pool-> 13 -conv-> 11 -pool-> 5, so the flatten size is 16*5*5 = 400.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, kernel_size=3)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3)
        self.pool = nn.MaxPool2d(kernel_size=2)
        self.fc1 = nn.Linear(16 * 5 * 5, 128)
        self.fc2 = nn.Linear(128, 64)
        self.fc3 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class MLP(nn.Module):
    """The fully connected net of seeds/000: 784-256-128-10 with ReLU."""

    def __init__(self, in_features: int = 28 * 28, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, 256)
        self.fc2 = nn.Linear(256, 128)
        self.out = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.out(x)


MODELS: dict[str, Callable[..., nn.Module]] = {"lenet": LeNet, "mlp": MLP}


def get_model(name: str, *, seed: int | None = None, **kwargs) -> nn.Module:
    """Build a registered model; with ``seed``, its initial weights are reproducible."""
    try:
        factory = MODELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(sorted(MODELS))}") from None
    if seed is None:
        return factory(**kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory(**kwargs)
