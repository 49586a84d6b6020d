"""Does the suggested LR land near the best? One epoch of training at the suggestion and at 3x and
10x above and below it, validation accuracy on the last 10k training images.

    python bench/suggestion_quality.py --model lenet --optimizer sgd --seeds 3

Prints a table and writes bench/suggestion_quality.json (runs on CPU too, slowly).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lrfind import find_lr, get_model, load_dataset  # noqa: E402


def make_optimizer(name: str, params, lr: float):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return torch.optim.Adam(params, lr=lr)


def train_one_epoch(model_name, optimizer_name, lr, train, val, batch_size, seed):
    model = get_model(model_name, seed=seed).to(train.images.device)
    opt = make_optimizer(optimizer_name, model.parameters(), lr)
    model.train()
    for x, y in train.loader(batch_size, seed=seed):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        batches = val.loader(1000, shuffle=False, drop_last=False)       # every image, the last batch too
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches)
    return correct / len(val)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--num-iter", type=int, default=300)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--grid", default="", help="extra comma-separated LRs to train at")
    ap.add_argument("--out", default=str(Path(__file__).with_name("suggestion_quality.json")))
    args = ap.parse_args()

    data = load_dataset("mnist", "train", device=args.device)
    train, val = data.split(10_000)
    t0 = time.perf_counter()
    model = get_model(args.model, seed=0).to(args.device)
    opt = make_optimizer(args.optimizer, model.parameters(), 1e-6)
    result = find_lr(model, train.loader(args.batch_size, seed=0), optimizer=opt, num_iter=args.num_iter,
                     repeats=args.seeds, seed=0, progress=False)
    lr = result.suggested_lr
    print(result.summary())
    if lr is None:
        sys.exit("no suggestion")
    grid = {"lr/10": lr / 10, "lr/3": lr / 3, "lr": lr, "3*lr": 3 * lr, "10*lr": 10 * lr}
    for v in filter(None, args.grid.split(",")):
        grid[v] = float(v)
    for name, s in result.suggestions.items():
        if s.lr is not None:
            grid.setdefault(f"{name}", s.lr)
    rows = {}
    for label, value in grid.items():
        accs = [train_one_epoch(args.model, args.optimizer, value, train, val, args.batch_size, s)
                for s in range(args.seeds)]
        rows[label] = {"lr": value, "val_acc_mean": float(np.mean(accs)), "val_acc_all": accs}
        print(f"{label:>10} lr={value:9.4g}  val acc {100 * np.mean(accs):6.2f}%  ({', '.join(f'{100*a:.2f}' for a in accs)})",
              flush=True)
    out = {"model": args.model, "optimizer": args.optimizer, "batch_size": args.batch_size,
           "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
           "suggested_lr": lr, "spread": result.spread, "suggestions": {k: v.lr for k, v in result.suggestions.items()},
           "rows": rows, "seconds": time.perf_counter() - t0}
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
