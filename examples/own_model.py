"""find_lr on your own model and your own DataLoader.

    LRFIND_DATA_DIR=~/data python examples/own_model.py

A small CNN with batch norm, AdamW with two parameter groups, and a plain DataLoader over a
TensorDataset, as a user's project would have; any iterable of (inputs, targets) batches works,
and `step_fn=` handles other batch layouts. Writes own_model_range_test.png and .json here.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from lrfind import find_lr, load_dataset


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def main() -> None:
    # Your own Dataset goes here; lrfind's reader just provides MNIST tensors on the CPU.
    data = load_dataset("mnist", "train")            # $LRFIND_DATA_DIR, else ~/.cache/lrfind
    subset = Subset(TensorDataset(data.images, data.labels), range(min(20_000, len(data))))
    loader = DataLoader(subset, batch_size=64, shuffle=True)

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
    main()
