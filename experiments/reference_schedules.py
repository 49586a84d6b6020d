"""A fixed reference: how good is a one-cycle schedule peaking at 0.1 (a well-known good schedule for LeNet on MNIST), trained by lrfind's engine?

    python -m experiments.reference_schedules [--device cuda] [--seeds 3]

Trains LeNet on all 60,000 MNIST training images for 3 epochs at batch 128 (SGD momentum 0.9),
three seeds each, side by side: a one-cycle schedule peaking at 0.1 (known to reach about 99.0% test), the
same with its momentum cycled against the LR (torch's OneCycleLR default, 0.95 down to 0.85 and
back), and constant LRs at 0.0344 (the range test's suggestion at batch 128) and 0.056. Prints the
test accuracies; `lrfind tune` should find a schedule at least as good.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from lrfind import load_dataset  # noqa: E402
from lrfind.engine.trials import TrialSpec, run_trials  # noqa: E402

BASE = 0.0344
CANDIDATES = {
    "onecycle, peak 0.1": ("onecycle", {"pct_start": 0.25, "div_factor": 10.0, "final_div_factor": 100.0}, 0.1),
    "  momentum cycled": ("onecycle", {"pct_start": 0.25, "div_factor": 10.0, "final_div_factor": 100.0,
                                       "cycle_momentum": True}, 0.1),
    "constant 0.0344": ("constant", {}, 0.0344),
    "constant 0.056": ("constant", {}, 0.056),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=None, help="JSON file for the results")
    args = ap.parse_args()
    train = load_dataset("mnist", "train", device=args.device)
    test = load_dataset("mnist", "test", device=args.device)
    specs = [TrialSpec(name, params, seed=s, lr_scale=peak / BASE)
             for s in range(args.seeds) for name, params, peak in CANDIDATES.values()]
    records = run_trials("lenet", specs, train, None, epochs=3, batch_size=128, base_lr=BASE, seed=0, score_on=test)
    results = {}
    for i, label in enumerate(CANDIDATES):
        accs = [records[j].test_acc for j in range(i, len(records), len(CANDIDATES))]
        results[label] = {"test_acc_per_seed": accs, "test_acc_mean": float(np.mean(accs))}
        print(f"{label:<20} {100 * np.mean(accs):6.2f}%   ({', '.join(f'{100 * a:.2f}' for a in accs)})")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
