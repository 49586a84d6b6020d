"""Which default finds the better schedule over whole studies: every trial from the same initial
weights (`--same-init`), or each trial from its own seed (`--seed-each`, the default)?

    python -m experiments.init_studies --studies 6 --json experiments/init_studies_h100.json     # a GPU job

``experiments/same_init.py`` measures what the shared start does to one comparison of two trials; this
runs whole studies, ``--studies`` with each default (study seeds 0, 1, ...; each seed's range test
and data alike for both), and compares what stage 3 found: the best schedule's test accuracy,
retrained with 3 seeds, and its gain over the constant LR's. All studies share the base LR of the
first one's range test, so that only the search differs. About 15 s a study on an H100; on a
2-core CPU about 30 s with ``--trials 16 --train-subset 10000``, or ``--quick`` for a smoke test.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from lrfind import tune  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=6, help="studies with each default")
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-subset", type=int, default=None, help="first N training images (default: all)")
    ap.add_argument("--quick", action="store_true", help="tiny studies: a smoke test on any machine")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    size = dict(trials=4, epochs=1, train_subset=1024, range_test_iters=60, final_seeds=2) if args.quick else \
        dict(trials=args.trials, epochs=args.epochs, train_subset=args.train_subset)

    results: dict = {"studies": args.studies, **size, "runs": {"same": [], "each": []}}
    with tempfile.TemporaryDirectory() as tmp:
        base_lr = None
        for seed in range(args.studies):
            for mode in ("same", "each"):
                start = time.perf_counter()
                result = tune(seed=seed, same_init=mode == "same", base_lr=base_lr, progress=False,
                              out=str(Path(tmp) / f"{mode}{seed}"), **size)
                base_lr = base_lr or result.study.user_attrs["base_lr"]
                final = result.final
                run = {"seed": seed, "seconds": time.perf_counter() - start, "base_lr": base_lr,
                       "best": final["best"]["schedule"], "best_val_acc": final["best"]["val_acc"],
                       "best_test_acc": final["best"]["test_acc"],
                       "constant_test_acc": final.get("constant", {}).get("test_acc")}
                results["runs"][mode].append(run)
                print(f"study {seed} {mode:<4}: best {run['best']:<16} validation {100 * run['best_val_acc']:.2f}%, "
                      f"test {100 * run['best_test_acc']:.2f}% against the constant's "
                      f"{100 * run['constant_test_acc']:.2f}% ({run['seconds']:.0f} s)", flush=True)
    for mode, label in (("same", "the same weights"), ("each", "a seed each")):
        runs = results["runs"][mode]
        test = np.array([r["best_test_acc"] for r in runs])
        gain = test - np.array([r["constant_test_acc"] for r in runs])
        results[mode] = {"best_test_acc_mean": float(test.mean()), "gain_mean": float(gain.mean()),
                         "best_val_minus_test_mean": float(np.mean([r["best_val_acc"] for r in runs]) - test.mean())}
        print(f"{label:<16}: best schedule {100 * test.mean():.2f}% test on average (min {100 * test.min():.2f}%), "
              f"{100 * gain.mean():+.2f} pp over the constant; validation overstated it by "
              f"{100 * results[mode]['best_val_minus_test_mean']:.2f} pp")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
