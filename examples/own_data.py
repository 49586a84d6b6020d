"""Your own data set in the tuner and the range test: a function that returns it.

    LRFIND_DATA_DIR=~/data lrfind range-test --dataset examples/own_data.py:digits
    lrfind tune --dataset examples/own_data.py:cifar10 --model examples/own_data.py:CifarNet --augment flip-crop
    LRFIND_DATA_DIR=~/data python examples/own_data.py       # the same from Python, a quick study
    lrfind tune --dataset examples/own_data.py:digit_values --model examples/own_data.py:DigitRegressor   # regression

A data set function takes no arguments and returns the training set, or (train, test): torch
Datasets of (image tensor, label) items, as torchvision's are with transform=ToTensor(), or
(images, labels) pairs of tensors or numpy arrays. Integer labels are classes; float labels are
regression targets, trained and scored with the mean squared error. Integer inputs other than uint8
pixels are token ids, for a model that embeds them. lrfind reads it once and keeps it whole on the device. Without
a test set, the last sixth of the training set (at most 10,000 examples) is held out as one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn


def digits():
    """Arrays you already hold, here MNIST's read by hand: uint8 (N, 28, 28) pixels and their labels.

    lrfind takes uint8 arrays as pixels: adds the channel, scales them to [0, 1] and standardises
    them with the training set's mean and std.
    """
    from lrfind.data import read_idx

    raw = Path(os.environ.get("LRFIND_DATA_DIR", "~/.cache/lrfind")).expanduser() / "MNIST" / "raw"
    if not raw.is_dir():
        raise FileNotFoundError(f"no folder {raw}: set LRFIND_DATA_DIR to the folder that holds MNIST/raw/")
    def pair(prefix: str) -> tuple[np.ndarray, np.ndarray]:
        return read_idx(raw / f"{prefix}-images-idx3-ubyte.gz"), read_idx(raw / f"{prefix}-labels-idx1-ubyte.gz")
    return pair("train"), pair("t10k")


def digit_values():
    """Regression on real images: MNIST's digits with their value as a float target (0 .. 1 for 0 .. 9).

    Float labels make it a regression: lrfind trains and scores it with the mean squared error, and
    a model returns one value per image (``DigitRegressor``).

        lrfind tune --dataset examples/own_data.py:digit_values --model examples/own_data.py:DigitRegressor
    """
    (x, y), (tx, ty) = digits()
    return (x, y.astype(np.float32) / 9), (tx, ty.astype(np.float32) / 9)


def DigitRegressor() -> nn.Module:
    """LeNet with one output: the digit's value."""
    from lrfind.models import LeNet

    return LeNet(num_classes=1)


def cifar10():
    """CIFAR-10, 3x32x32 (downloads 170 MB into $CIFAR_DIR, else ~/.cache/lrfind, the first time)."""
    from torchvision import datasets, transforms

    root = os.path.expanduser(os.environ.get("CIFAR_DIR", "~/.cache/lrfind"))
    to_tensor = transforms.Compose([transforms.ToTensor(),
                                    transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))])
    return (datasets.CIFAR10(root, train=True, transform=to_tensor, download=True),
            datasets.CIFAR10(root, train=False, transform=to_tensor, download=True))


class CifarNet(nn.Module):
    """A small CNN for 3x32x32 images and 10 classes."""

    def __init__(self) -> None:
        super().__init__()
        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                                 nn.MaxPool2d(2))
        self.features = nn.Sequential(block(3, 32), block(32, 64), block(64, 128))
        self.head = nn.Linear(128 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def main() -> None:
    from lrfind import tune

    out = sys.argv[1] if len(sys.argv) > 1 else "own_data_out"
    # A function of this script is stored as __main__:digits: running the script again resumes the study.
    result = tune(dataset=digits, model="lenet", trials=4, epochs=1, train_subset=4000, val_size=1000,
                  schedules=("cosine", "onecycle"), final_seeds=1, range_test_iters=100, out=out, progress=False)
    best = result.final["best"]
    print(f"base LR {result.base_lr:.3g}; best schedule {best['schedule']}: {best['test_acc']:.2%} test accuracy")
    print(f"wrote {', '.join(str(p) for p in result.files)}")


if __name__ == "__main__":
    main()
