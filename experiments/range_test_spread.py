"""How far apart do range tests of the same setup land, one sweep against the median of three?

    python -m experiments.range_test_spread --batch-sizes 128,64 --seeds 8 --out experiments/range_test_spread_cpu.json

For each batch size and each of ``--seeds`` starting seeds s, the model built with seed s sweeps
``--repeats`` times (seeds s, s+1, ...; the tuner's stage 1 does this with ``--range-test-repeats``)
on the training split without its last 10,000 images. A single sweep's suggestion is the first
repeat's; a sweep "strays" when its suggestion is more than 3x from the median of all sweeps of
its batch size. A seed's median leaves out the shallow sweeps (``RangeTestResult.shallow``:
their loss fell less than 0.3 times as far as the deepest sweep's, most often because they broke down); ``median_of_all`` counts them.
The sweeps are measured as they are (``slow_down=False``); the summary lists the seeds whose sweeps
disagree (``repeats_disagree``), where ``find_lr`` would sweep again at half the pace. Prints a
line per seed and a summary, and writes the JSON (runs on CPU too).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lrfind import OptimizerConfig, find_lr, get_model, load_dataset  # noqa: E402
from lrfind.rangetest.result import describe_sweeps  # noqa: E402


def summary(runs: list[dict]) -> dict:
    """Range of single sweeps and of medians, and how many single sweeps strayed beyond 3x."""
    singles = np.array([r["seed_lrs"][0] for r in runs if r["seed_lrs"][0] is not None])
    every = np.array([lr for r in runs for lr in r["seed_lrs"] if lr is not None])
    medians = np.array([r["median"] for r in runs if r["median"] is not None])
    unclear = sum(lr is None for r in runs for lr in r["seed_lrs"])
    if not (every.size and singles.size and medians.size):
        return {"sweeps": int(every.size), "unclear_sweeps": unclear, "median_of_all_sweeps": None}
    centre = float(np.exp(np.median(np.log(every))))
    stray = lambda lrs: int(np.sum(np.abs(np.log(lrs / centre)) > np.log(3)))   # noqa: E731
    span = lambda lrs: [float(lrs.min()), float(lrs.max())]                     # noqa: E731
    disagree = [r["seed"] for r in runs if r["sweeps_again"]]       # where find_lr would sweep again, slower
    of_all = np.array([r["median_of_all"] for r in runs if r["median_of_all"] is not None])
    return {"median_of_all_sweeps": centre, "sweeps": int(every.size), "unclear_sweeps": unclear,
            "shallow_sweeps": sum(len(r["shallow"]) for r in runs), "seeds_whose_sweeps_disagree": disagree,
            "sweeps_strayed": stray(every), "sweep_range": span(every),
            "singles_range": span(singles), "singles_strayed": stray(singles),
            "medians_range": span(medians), "medians_strayed": stray(medians),
            "medians_of_all_range": span(of_all), "medians_of_all_strayed": stray(of_all)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "adamw"])
    ap.add_argument("--batch-sizes", default="128,64", help="comma-separated")
    ap.add_argument("--seeds", type=int, default=8, help="starting seeds 0..N-1")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num-iter", type=int, default=300)
    ap.add_argument("--start-lr", type=float, default=1e-6)
    ap.add_argument("--train-subset", type=int, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--one-after-another", action="store_true",
                    help="the repeats one after another (seeds s, s+1, ...), not side by side in one pass")
    ap.add_argument("--out", default=None, help="JSON file to write")
    args = ap.parse_args()
    device = torch.device(args.device)
    train, _ = load_dataset("mnist", "train", device=device).holdout(10_000)
    if args.train_subset:
        train = train.subset(args.train_subset)
    result = {"what": " ".join(sys.argv), "model": args.model, "optimizer": args.optimizer, "device": str(device),
              "num_iter": args.num_iter, "start_lr": args.start_lr, "repeats": args.repeats, "train_images": len(train), "by_batch_size": {},
              "fused": not args.one_after_another}
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        runs, clock = [], time.perf_counter()
        for s in range(args.seeds):
            model = get_model(args.model, seed=s).to(device)
            r = find_lr(model, train.loader(bs, seed=s), optimizer=OptimizerConfig(args.optimizer),
                        num_iter=args.num_iter, start_lr=args.start_lr, repeats=args.repeats, seed=s,
                        fused=False if args.one_after_another else None,
                        slow_down=False, progress=False, warn=False)        # this pace's sweeps, as they are
            falls = r.seed_falls
            found = [lr for lr in r.seed_lrs if lr is not None]
            runs.append({"seed": s, "seed_lrs": r.seed_lrs, "falls": falls, "shallow": r.shallow,
                         "median": r.suggested_lr, "median_of_all": float(f"{np.exp(np.median(np.log(found))):.3g}")
                         if found else None, "sweeps_again": r.repeats_disagree})
            print(f"batch {bs} seed {s}: sweeps {describe_sweeps(r.seed_lrs, r.shallow)}; falls "
                  + ", ".join("none" if f is None else f"{f:.2f}" for f in falls)
                  + f"; median {r.suggested_lr} (of all {runs[-1]['median_of_all']})"
                  + ("; would sweep again, slower" if r.repeats_disagree else ""), flush=True)
        result["by_batch_size"][str(bs)] = {"runs": runs, "summary": summary(runs),
                                            "seconds": round(time.perf_counter() - clock, 1)}
        s = result["by_batch_size"][str(bs)]["summary"]
        if s["median_of_all_sweeps"] is None:
            print(f"batch {bs}: too few sweeps gave a suggestion ({s['unclear_sweeps']} unclear)")
            continue
        print(f"batch {bs}: {s['sweeps_strayed']} of {s['sweeps']} sweeps more than 3x from the median of all "
              f"({s['median_of_all_sweeps']:.3g}); single sweeps {s['singles_range'][0]:.3g}..{s['singles_range'][1]:.3g}"
              f", medians of {args.repeats} {s['medians_range'][0]:.3g}..{s['medians_range'][1]:.3g} "
              f"({s['medians_strayed']} strayed; {s['medians_of_all_strayed']} with the {s['shallow_sweeps']} shallow "
              f"sweeps counted); would sweep again, slower, at seeds {s['seeds_whose_sweeps_disagree']}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
