"""How much does the trials' starting point blur a comparison of two schedules? The question behind
`lrfind tune`'s default of one set of initial weights for every trial (`--same-init`).

    python -m experiments.same_init --pairs 12 --out experiments/same_init_cpu.json

Trains ``--pairs`` pairs of LeNet trials side by side in lrfind's engine (SGD, momentum 0.9,
batch 128, the same batches in the same order for all): a constant-LR trial and a cosine-decay
trial, both from the weights of seed i ("same"), or the cosine trial from seed 1000 + i
("different"). The gap between the two, the cosine's validation accuracy minus the constant's,
is what a study's search reads; its spread over the pairs is the noise the starting point adds
to that reading. Where the two trials of a pair rise and fall together (their accuracies
correlate over the pairs), the start's share cancels out of the gap. Runs on the CPU in minutes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from lrfind import load_dataset  # noqa: E402
from lrfind.engine.trials import TrialSpec, run_trials  # noqa: E402


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (no ties expected among float accuracies)."""
    return float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("--train-subset", type=int, default=None, help="first N training images (default: all 60,000)")
    ap.add_argument("--val-size", type=int, default=None, help="validation images, the last of the training set "
                                                                "(default: 10,000, at most a sixth)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--base-lr", type=float, default=0.05)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(Path(__file__).with_name("same_init.json")))
    args = ap.parse_args()

    full = load_dataset("mnist", "train", device=args.device)
    data = full.subset(args.train_subset) if args.train_subset else full
    train, val = data.split(args.val_size) if args.val_size else data.holdout()
    results = {"pairs": args.pairs, "train_images": len(train), "val_images": len(val), "epochs": args.epochs,
               "base_lr": args.base_lr, "device": args.device}
    for mode in ("same", "different"):
        specs = []
        for i in range(args.pairs):
            specs += [TrialSpec("constant", {}, seed=i),
                      TrialSpec("cosine", {"min_factor": 0.0}, seed=i if mode == "same" else 1000 + i)]
        start = time.perf_counter()
        records = run_trials("lenet", specs, train, val, epochs=args.epochs, batch_size=128, base_lr=args.base_lr,
                             seed=0)
        acc = np.array([r.val_acc[-1] for r in records]).reshape(args.pairs, 2)
        gap = acc[:, 1] - acc[:, 0]
        quartiles = np.percentile(gap, [25, 75])
        results[mode] = {"constant_val_acc": acc[:, 0].tolist(), "cosine_val_acc": acc[:, 1].tolist(),
                         "gap_mean": float(gap.mean()), "gap_std": float(gap.std(ddof=1)),
                         "gap_iqr": float(quartiles[1] - quartiles[0]), "rank_correlation": rank_correlation(*acc.T),
                         "seconds": time.perf_counter() - start}
        print(f"{mode:<9} initial weights: cosine - constant = {100 * gap.mean():+.2f} pp on average, standard "
              f"deviation {100 * gap.std(ddof=1):.2f} pp, interquartile range {100 * (quartiles[1] - quartiles[0]):.2f} "
              f"pp over {args.pairs} pairs; the two trials' rank correlation {results[mode]['rank_correlation']:+.2f}",
              flush=True)
    ratio = (results["different"]["gap_std"] / results["same"]["gap_std"]) ** 2
    results["variance_ratio"] = ratio
    print(f"the same weights {'shrink' if ratio >= 1 else 'widen'} the gap's variance "
          f"{ratio if ratio >= 1 else 1 / ratio:.1f}x (its standard deviation; one break-down weighs heavily)")
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
