"""Does a tuned schedule carry over to a longer run? The best of a study, stretched by load_best.

    lrfind tune --trials 16 --epochs 3 --device cpu --no-final --out runs/study
    python -m experiments.stretch runs/study --epochs 3 9 [--seeds 2] [--out stretch.json]

Trains the study's model on all of MNIST's training images (as stage 3 does), for each number of
epochs: the best schedule stretched to that run by ``load_best(...).params`` and the constant LR at
the study's base LR, ``--seeds`` times each side by side in lrfind's engine, and scores the test
set. Prints the test accuracies per run length.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from lrfind import load_best, load_dataset  # noqa: E402
from lrfind.engine.trials import TrialSpec, run_trials  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", help="the --out folder of `lrfind tune` (its best.json)")
    ap.add_argument("--epochs", type=int, nargs="+", default=[3, 9])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--train-subset", type=int, default=None, help="first N training images (quick runs)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None, help="JSON file for the results")
    args = ap.parse_args()

    data = json.loads((Path(args.study) / "best.json").read_text())
    best, setup = load_best(args.study), data["setup"]
    if setup["dataset"] != "mnist" or setup["model"] not in ("lenet", "mlp"):
        sys.exit(f"this benchmark retrains built-in models on MNIST; the study is {setup['model']} on {setup['dataset']}")
    base_lr, batch = data["base_lr"], setup["batch_size"]
    train = load_dataset("mnist", "train", device=args.device)
    if args.train_subset:
        train = train.subset(args.train_subset)
    test = load_dataset("mnist", "test", device=args.device)
    per_epoch = len(train.loader(batch))
    print(f"{best}; base LR {base_lr:.3g}; {len(train)} training images, batch {batch}, {per_epoch} steps per epoch")
    results = []
    for epochs in args.epochs:
        params = best.params(epochs=epochs, steps_per_epoch=per_epoch)
        specs = [TrialSpec(best.schedule, params, seed=s, lr_scale=best.lr / base_lr) for s in range(args.seeds)]
        specs += [TrialSpec("constant", {}, seed=s) for s in range(args.seeds)]
        records = run_trials(setup["model"], specs, train, None, epochs=epochs, batch_size=batch, base_lr=base_lr,
                             optimizer=best.optimizer_config, seed=0, score_on=test)
        tuned = [r.test_acc for r in records[:args.seeds]]
        constant = [r.test_acc for r in records[args.seeds:]]
        results.append({"epochs": epochs, "params": params, "best_test_acc": tuned, "constant_test_acc": constant})
        print(f"{epochs:>3} epochs: {best.schedule} {100 * np.mean(tuned):.2f}% "
              f"({', '.join(f'{100 * a:.2f}' for a in tuned)}) vs constant {100 * np.mean(constant):.2f}% "
              f"({', '.join(f'{100 * a:.2f}' for a in constant)}); {params}")
    if args.out:
        Path(args.out).write_text(json.dumps({"study": data["study"], "schedule": best.schedule, "lr": best.lr,
                                              "base_lr": base_lr, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
