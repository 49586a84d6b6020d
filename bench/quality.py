"""The quality at equal budget: `lrfind tune` and the sequential Optuna + DataLoader loop, each
searching the same number of trials and epochs.

    python bench/quality.py --json bench/quality_h100.json     # 50 trials x 3 epochs a side (GPU: ~7 min)
    python bench/quality.py --trials 2 --epochs 1 --train-subset 2048    # a smoke run, any machine

`bench/run.py` times 3 of the loop's trials and extrapolates; its best of 3 is no match for a
50-trial search. Here both sides search the same space (lrfind's schedule registry, the constant
LR first) at the same base LR (the one lrfind's range test found), batch size, epochs, training
images and validation split, and retrain their best trial on the whole training set with 3 seeds,
tested each time. It prints both means, their difference and its standard error, and each
side's seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import sequential_study  # noqa: E402
from run import accuracy_difference, run_tune  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--train-subset", type=int, default=None, help="train on the first N of the 50,000 images")
    ap.add_argument("--seeds", type=int, default=3, help="retrains of each side's best")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    if args.seeds < 2:
        ap.error(f"--seeds must be at least 2 (a standard error needs two retrains a side), got {args.seeds}")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        ours = run_tune(args, Path(tmp) / "tune", "--final-seeds", str(args.seeds))
    ours.pop("report")
    theirs = sequential_study(args.trials, args.epochs, args.batch_size, ours["base_lr"], torch.device(args.device),
                              retrain_seeds=args.seeds, train_size=args.train_subset)
    results = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
               "torch": torch.__version__, "trials": args.trials, "epochs": args.epochs,
               "batch_size": args.batch_size, "train_subset": args.train_subset, "seeds": args.seeds,
               "lrfind": ours, "baseline": theirs,
               **accuracy_difference(ours["best_test_acc_per_seed"], theirs["best_test_acc_per_seed"])}
    print(f"{args.trials} trial{'s' * (args.trials != 1)} x {args.epochs} epoch{'s' * (args.epochs != 1)} a side "
          f"on {results['device']}, best retrained {args.seeds} times:")
    loop_seconds = theirs["seconds"] + theirs["retrain_seconds"]
    for name, side, seconds in (("lrfind tune", ours, f"{ours['seconds']:.1f} s end to end"),
                                ("sequential loop", theirs, f"{loop_seconds:.1f} s (search and retrains)")):
        per_seed = ", ".join(f"{100 * a:.2f}" for a in side["best_test_acc_per_seed"])
        print(f"  {name:<16} {side['best_schedule']:<12} test {100 * side['best_test_acc']:.2f}% ({per_seed}); "
              f"{seconds}")
    print(f"  difference, lrfind - loop: {results['acc_difference_pp']:+.2f} pp +- {results['acc_difference_se_pp']:.2f} "
          "(1 s.e.)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
