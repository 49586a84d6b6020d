"""Does `lrfind compare` point at the better weight decay? Smith's rule (arXiv:1803.09820): sweep
once per value; the one whose loss falls lowest, and keeps falling to the highest LR, trains best.

    python -m experiments.weight_decay_compare --out experiments/weight_decay_compare_cpu.json

For each weight decay: a range test (median of 3 sweeps of ``--num-iter`` steps, all at one pace),
then LeNet trained at that sweep's own
suggestion (constant LR, SGD with momentum 0.9) for ``--epochs`` epochs with ``--seeds`` seeds,
side by side in lrfind's engine; validation accuracy on the last 10k training images. Prints the
comparison's table and the accuracies, and writes both to the JSON (runs on the CPU in minutes).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from lrfind import OptimizerConfig, compare, find_lr, get_model, load_dataset  # noqa: E402
from lrfind.engine.trials import TrialSpec, run_trials  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--decays", default="0,5e-4,5e-3,5e-2", help="comma-separated weight decays")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--num-iter", type=int, default=600, help="steps of every sweep (one pace for all: no slower "
                                                                "second sweeps, which would make their losses lower)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(Path(__file__).with_name("weight_decay_compare.json")))
    args = ap.parse_args()

    train, val = load_dataset("mnist", "train", device=args.device).holdout()       # the last 10k (a sixth of fewer)
    t0 = time.perf_counter()
    decays = [float(x) for x in args.decays.split(",")]
    model = get_model("lenet", seed=0).to(args.device)
    sweeps = {f"wd {wd:g}": find_lr(model, train.loader(args.batch_size, seed=0), progress=False, warn=False,
                                    optimizer=OptimizerConfig("sgd", momentum=0.9, weight_decay=wd),
                                    num_iter=args.num_iter, repeats=3, seed=0, slow_down=False)
              for wd in decays}
    comparison = compare(sweeps)
    print(comparison.table())
    accs = {}
    for (label, result), wd in zip(sweeps.items(), decays):
        specs = [TrialSpec("constant", {}, seed=s) for s in range(args.seeds)]
        records = run_trials("lenet", specs, train, val, epochs=args.epochs, batch_size=args.batch_size,
                             base_lr=result.suggested_lr, seed=0,
                             optimizer=OptimizerConfig("sgd", momentum=0.9, weight_decay=wd))
        accs[label] = [r.val_acc[-1] if r.val_acc and r.status != "failed" else 0.0 for r in records]
        print(f"{label}: trained at {result.suggested_lr:.3g} for {args.epochs} epochs: validation accuracy "
              f"{np.mean(accs[label]):.2%} (seeds {', '.join(f'{a:.2%}' for a in accs[label])})")
    lowest = comparison.lowest()
    report = {"device": str(args.device), "torch": torch.__version__, "batch_size": args.batch_size,
              "num_iter": args.num_iter,
              "epochs": args.epochs, "seeds": args.seeds, "seconds": round(time.perf_counter() - t0, 1),
              "runs": {label: {"weight_decay": wd, "suggested_lr": sweeps[label].suggested_lr,
                               "falling_range": sweeps[label].falling_range, "lowest_loss": lowest[label],
                               "val_acc": accs[label], "mean_val_acc": float(np.mean(accs[label]))}
                       for label, wd in zip(sweeps, decays)},
              "table": comparison.table()}
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"{report['seconds']} s; wrote {args.out}")


if __name__ == "__main__":
    main()
