"""The quality at equal budget: `lrfind tune` and the sequential Optuna + DataLoader loop, each
searching the same number of trials and epochs.

    python -m bench.quality --json bench/quality_h100.json     # 50 trials x 3 epochs a side (GPU: ~7 min)
    python -m bench.quality --studies 3 --device cpu           # three pairs, seeds 0-2 (CPU: ~12 min a pair)
    python -m bench.quality --trials 2 --epochs 1 --train-subset 2048 --range-test-iters 60   # a smoke run

`bench/run.py` times 3 of the loop's trials and extrapolates; its best of 3 is no match for a
50-trial search. Here both sides search the same space (lrfind's schedule registry, the constant
LR first) at the same base LR (the one lrfind's range test found), batch size, epochs, training
images and validation split, and retrain their best trial on the whole training set with 3 seeds,
tested each time. Which schedule a study finds varies more than its retrains do, so ``--studies N``
runs N pairs (seeds ``--seed`` to ``--seed + N - 1``: the study's seed on both sides) and reports
the paired differences' mean and standard error as well.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path

import torch

from bench.baseline import sequential_study  # noqa: E402
from bench.run import accuracy_difference, run_tune  # noqa: E402


def one_pair(args, seed: int) -> dict:
    """lrfind's study and the loop's, with study seed ``seed``."""
    with tempfile.TemporaryDirectory() as tmp:
        ours = run_tune(args, Path(tmp) / "tune", "--final-seeds", str(args.seeds), "--seed", str(seed))
    ours.pop("report")
    theirs = sequential_study(args.trials, args.epochs, args.batch_size, ours["base_lr"], torch.device(args.device),
                              seed=seed, retrain_seeds=args.seeds, train_size=args.train_subset)
    pair = {"seed": seed, "lrfind": ours, "baseline": theirs,
            **accuracy_difference(ours["best_test_acc_per_seed"], theirs["best_test_acc_per_seed"])}
    loop_seconds = theirs["seconds"] + theirs["retrain_seconds"]
    print(f"seed {seed}:")
    for name, side, seconds in (("lrfind tune", ours, f"{ours['seconds']:.1f} s end to end"),
                                ("sequential loop", theirs, f"{loop_seconds:.1f} s (search and retrains)")):
        per_seed = ", ".join(f"{100 * a:.2f}" for a in side["best_test_acc_per_seed"])
        print(f"  {name:<16} {side['best_schedule']:<12} test {100 * side['best_test_acc']:.2f}% ({per_seed}); "
              f"{seconds}")
    print(f"  difference, lrfind - loop: {pair['acc_difference_pp']:+.2f} pp +- {pair['acc_difference_se_pp']:.2f} "
          "(1 s.e. over the retrains)", flush=True)
    return pair


def summary(pairs: list[dict]) -> dict:
    """Each side's mean over the studies, and the paired differences' mean and standard error
    (None for one study)."""
    ours = [100 * p["lrfind"]["best_test_acc"] for p in pairs]
    theirs = [100 * p["baseline"]["best_test_acc"] for p in pairs]
    diffs = [a - b for a, b in zip(ours, theirs)]
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
    return {"lrfind_mean_pp": round(statistics.mean(ours), 3), "baseline_mean_pp": round(statistics.mean(theirs), 3),
            "difference_mean_pp": round(statistics.mean(diffs), 3),
            "difference_se_pp": None if se is None else round(se, 3),
            "lrfind_ahead": sum(d > 0 for d in diffs), "studies": len(pairs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--train-subset", type=int, default=None, help="train on the first N of the 50,000 images")
    ap.add_argument("--seeds", type=int, default=3, help="retrains of each side's best")
    ap.add_argument("--studies", type=int, default=1, help="pairs of studies, one seed each")
    ap.add_argument("--seed", type=int, default=0, help="the first pair's study seed")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--range-test-iters", type=int, default=None,
                    help="steps of lrfind's stage-1 sweeps (default: lrfind tune's, 300): fewer for a smoke run; "
                         "the loop trains at the base LR they find too")
    args = ap.parse_args()
    if args.seeds < 2:
        ap.error(f"--seeds must be at least 2 (a standard error needs two retrains a side), got {args.seeds}")
    if args.studies < 1:
        ap.error(f"--studies must be at least 1, got {args.studies}")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"{args.trials} trial{'s' * (args.trials != 1)} x {args.epochs} epoch{'s' * (args.epochs != 1)} a side "
          f"on {device}, best retrained {args.seeds} times")
    pairs = [one_pair(args, seed) for seed in range(args.seed, args.seed + args.studies)]
    results = {"device": device, "torch": torch.__version__, "trials": args.trials, "epochs": args.epochs,
               "batch_size": args.batch_size, "train_subset": args.train_subset, "seeds": args.seeds,
               "pairs": pairs, **summary(pairs)}
    if len(pairs) > 1:
        print(f"over {len(pairs)} studies a side: lrfind {results['lrfind_mean_pp']:.2f}%, loop "
              f"{results['baseline_mean_pp']:.2f}%; difference {results['difference_mean_pp']:+.2f} pp +- "
              f"{results['difference_se_pp']:.2f} (1 s.e. over the studies); lrfind ahead in "
              f"{results['lrfind_ahead']} of {len(pairs)}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
