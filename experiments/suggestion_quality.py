"""Does the suggested LR land near the best? Training at the suggestion and at 3x and 10x above
and below it (and at every method's suggestion), validation accuracy on the last 10k training images.

    python -m experiments.suggestion_quality --model lenet --optimizer sgd --seeds 3
    python -m experiments.suggestion_quality --epochs 3 --schedule cosine --out bench/sq_lenet_sgd_cos3.json

``--epochs`` (1) and ``--schedule`` (constant; any registered one with its default parameters,
e.g. cosine) set the training at each LR: the question is the base LR of a run of that length
and decay. Every LR x seed is one trial of lrfind's fused engine (held equal to torch.optim by
the tests), all trained side by side. Prints a table and writes the JSON (runs on CPU too, slowly).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lrfind import OptimizerConfig, find_lr, get_model, get_schedule, load_dataset  # noqa: E402
from lrfind.engine.trials import TrialSpec, run_trials  # noqa: E402


def train_grid(args, grid: dict[str, float], base_lr: float, train, val) -> dict[str, list[float]]:
    """Validation accuracy of every grid LR x seed after ``args.epochs`` epochs under ``args.schedule``."""
    per_epoch = len(train.loader(args.batch_size))
    params = get_schedule(args.schedule).example(args.epochs * per_epoch, per_epoch)
    specs = [TrialSpec(args.schedule, params, seed=seed, lr_scale=lr / base_lr)
             for lr in grid.values() for seed in range(args.seeds)]
    records = run_trials(args.model, specs, train, val, epochs=args.epochs, batch_size=args.batch_size,
                         base_lr=base_lr, optimizer=OptimizerConfig(args.optimizer), seed=0)
    accs = [r.val_acc[-1] if r.val_acc and r.status != "failed" else 0.0 for r in records]   # diverged: 0
    return {label: accs[i * args.seeds:(i + 1) * args.seeds] for i, label in enumerate(grid)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--num-iter", type=int, default=300)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--grid", default="", help="extra comma-separated LRs to train at")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--schedule", default="constant", help="decay of the training at each LR (default parameters)")
    ap.add_argument("--one-after-another", action="store_true",
                    help="the range test's repeats one after another, not side by side in one pass")
    ap.add_argument("--out", default=str(Path(__file__).with_name("suggestion_quality.json")))
    args = ap.parse_args()

    data = load_dataset("mnist", "train", device=args.device)
    train, val = data.split(10_000)
    t0 = time.perf_counter()
    model = get_model(args.model, seed=0).to(args.device)
    result = find_lr(model, train.loader(args.batch_size, seed=0), optimizer=OptimizerConfig(args.optimizer),
                     num_iter=args.num_iter, repeats=args.seeds, seed=0, progress=False,
                     fused=False if args.one_after_another else None)
    lr = result.suggested_lr
    print(result.summary())
    if lr is None:
        sys.exit("no suggestion")
    grid = {"lr/10": lr / 10, "lr/3": lr / 3, "lr": lr, "3*lr": 3 * lr, "10*lr": 10 * lr}
    for v in filter(None, args.grid.split(",")):
        grid[v] = float(v)
    for name, s in result.suggestions.items():
        if s.lr is not None and name != result.method:        # the suggestion itself is "lr"
            grid.setdefault(f"{name}", s.lr)
    rows = {}
    for label, accs in train_grid(args, grid, lr, train, val).items():
        value = grid[label]
        rows[label] = {"lr": value, "val_acc_mean": float(np.mean(accs)), "val_acc_all": accs}
        seeds = ", ".join(f"{100 * a:.2f}" for a in accs)
        print(f"{label:>10} lr={value:9.4g}  val acc {100 * np.mean(accs):6.2f}%  ({seeds})", flush=True)
    out = {"model": args.model, "optimizer": args.optimizer, "batch_size": args.batch_size, "epochs": args.epochs,
           "schedule": args.schedule,
           "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
           "fused": bool(result.config.get("fused")), "suggested_lr": lr, "spread": result.spread, "suggestions": {k: v.lr for k, v in result.suggestions.items()},
           "rows": rows, "seconds": time.perf_counter() - t0}
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
