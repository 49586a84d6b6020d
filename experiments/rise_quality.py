"""A model trained already sweeps flat, then up: is a tenth of where the loss rises a good LR to
train it on? LeNet trained for one epoch (SGD 0.05, momentum 0.9), then swept with SGD and with
Adam; then one more epoch at each LR of a grid (2 seeds), validation accuracy on the last 10,000
training images, beside the LR the sweep's reason names.

    python -m experiments.rise_quality --out experiments/rise_quality_cpu.json      # about 3 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from lrfind import OptimizerConfig, find_lr, get_model, load_dataset  # noqa: E402

GRIDS = {"sgd": [0.001, 0.003, 0.01, 0.02, 0.05, 0.1], "adam": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]}


def accuracy(model, val) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in val.loader(1000, shuffle=False, drop_last=False):
            correct += (model(x).argmax(1) == y).sum().item()
    model.train()
    return correct / len(val)


def epoch(model, optimizer, train, seed: int, steps: int | None = None) -> None:
    for i, (x, y) in enumerate(train.loader(128, seed=seed)):
        if steps is not None and i == steps:
            break
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-images", type=int, default=None, help="a subset, for a smoke test")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--num-iter", type=int, default=300)
    ap.add_argument("--out", default=str(Path(__file__).with_name("rise_quality.json")))
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    train, val = load_dataset("mnist", "train", device="cpu").holdout(10_000)
    if args.train_images:
        train = train.subset(args.train_images)
    trained = get_model("lenet", seed=0)
    epoch(trained, torch.optim.SGD(trained.parameters(), lr=0.05, momentum=0.9), train, seed=0)
    out = {"start_accuracy": accuracy(trained, val), "optimizers": {}}
    print(f"LeNet after one epoch: {100 * out['start_accuracy']:.2f}% validation")
    for name in ("sgd", "adam"):
        config = OptimizerConfig(name, momentum=0.9) if name == "sgd" else OptimizerConfig(name)
        result = find_lr(trained, train.loader(128, seed=1), optimizer=config, num_iter=args.num_iter,
                         progress=False)
        rise = None
        if "rises from LR " in result.reason:
            rise = float(result.reason.split("rises from LR ")[1].split(":")[0])
        print(f"{name}: {result.reason}")
        rows = {}
        for lr in GRIDS[name]:
            scores = []
            for seed in range(1, args.seeds + 1):
                model = copy.deepcopy(trained)
                epoch(model, config.torch_optimizer(model.parameters(), lr), train, seed=seed)
                scores.append(accuracy(model, val))
            rows[str(lr)] = {"lr": lr, "val_acc_mean": float(np.mean(scores)), "val_acc_all": scores}
            print(f"   lr {lr:<7g} {100 * np.mean(scores):.2f}%", flush=True)
        out["optimizers"][name] = {"suggested_lr": result.suggested_lr, "reason": result.reason, "rise_lr": rise,
                                   "start_lr": rise / 10 if rise else None, "stop_lr": result.stop_lr, "grid": rows}
    out["seconds"] = time.perf_counter() - t0
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
