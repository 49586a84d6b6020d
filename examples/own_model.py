"""find_lr on your own model and your own DataLoader.

    LRFIND_DATA_DIR=../shared/data python examples/own_model.py

Uses torchvision's MNIST class and a plain DataLoader, as a user's project would; any iterable of
(inputs, targets) batches works, and `step_fn=` handles other batch layouts.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from lrfind import find_lr


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def main() -> None:
    root = os.environ.get("LRFIND_DATA_DIR", os.path.expanduser("~/.cache/lrfind"))
    # torchvision checks md5 sums and reads the processed files; with download=False it accepts the raw
    # IDX files only once decompressed. For this example, lrfind's own reader does the work instead:
    from lrfind import load_dataset

    data = load_dataset("mnist", "train", root=root)
    dataset = torch.utils.data.TensorDataset(data.images, data.labels)
    loader = DataLoader(Subset(dataset, range(20_000)), batch_size=64, shuffle=True)

    model = SmallCNN()
    optimizer = torch.optim.AdamW([
        {"params": model.features.parameters(), "lr": 1e-3},
        {"params": model.head.parameters(), "lr": 3e-3},   # the sweep keeps this 3:1 ratio
    ], weight_decay=1e-4)

    result = find_lr(model, loader, optimizer=optimizer, num_iter=200, end_lr=1.0)
    print(result.summary())
    result.plot(path="own_model_range_test.png")
    result.to_json("own_model_range_test.json")
    # The model and optimizer are exactly as they were before find_lr: train them now.
    lr = result.suggested_lr
    if lr is not None:
        for group, ratio in zip(optimizer.param_groups, result.group_ratios):
            group["lr"] = lr * ratio
        print("LRs set to", [f"{g['lr']:.3g}" for g in optimizer.param_groups])


if __name__ == "__main__":
    _ = datasets, transforms   # imported to show where a user's own dataset would come from
    main()
