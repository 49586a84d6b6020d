"""Would the median pruner have cut the trials that finished best? A replay on a study run without pruning.

    lrfind tune --trials 50 --pruner none --out runs/nopr        # every trial trained to its end
    python -m experiments.pruning_replay runs/nopr [--epoch 2]

Goes through the trials in the order the study ran them, in its batches of ``--batch`` (8 on a CPU),
and judges each after ``--epoch`` epochs as the median rule would have: below the median of the
reports seen by then (from the 6th trial on, as ``n_startup_trials=5``). Then again with lrfind's
rule on top (``pruner.AnnealedFirst``): a trial whose LR will still fall by more than
``STILL_FALLING`` times is not judged. Prints how many each would prune, the rank correlation of the
judged epoch with the last, and where the top trials by final score stand. No GPU needed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna

from lrfind.study import storage as _storage
from lrfind.study import pruner as _pruner  # noqa: E402
from lrfind.study import trials as _study  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="the --out folder of a study run with --pruner none")
    ap.add_argument("--epoch", type=int, default=2, help="the epoch after which trials are judged (1-based)")
    ap.add_argument("--batch", type=int, default=8, help="trials that report together")
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = _storage.find_default_storage(args.out)
    if url is None:
        raise SystemExit(f"no study in {args.out}")
    storage = _storage.connect(url, create=False)
    study = optuna.load_study(study_name=storage.get_all_studies()[0].study_name, storage=storage)
    key, better = _study.METRICS[_study.metric_of(study)][0], _study.sign(study)
    trials = [t for t in study.trials if len(t.user_attrs.get(key) or []) >= args.epoch + 1]
    if len(trials) < len(study.trials):
        print(f"{len(study.trials) - len(trials)} trials did not train past epoch {args.epoch} and are left out")
    judged = {t.number: better * t.user_attrs[key][args.epoch - 1] for t in trials}
    final = {t.number: better * t.user_attrs[key][-1] for t in trials}
    median_cuts, spared = set(), set()
    for t in trials:
        if t.number < 5:
            continue
        seen = [judged[u.number] for u in trials if u.number // args.batch <= t.number // args.batch and u is not t]
        if judged[t.number] < np.median(seen):
            median_cuts.add(t.number)
            at = SimpleNamespace(user_attrs=t.user_attrs, last_step=args.epoch - 1)
            if _pruner.lr_still_falling(study, at):
                spared.add(t.number)
    numbers = [t.number for t in trials]
    ranks = [np.argsort(np.argsort([d[n] for n in numbers])) for d in (judged, final)]
    print(f"{len(trials)} trials; rank correlation of epoch {args.epoch} with the last: "
          f"{np.corrcoef(*ranks)[0, 1]:.2f}")
    print(f"the median rule prunes {len(median_cuts)}; waiting for the decay ({_pruner.STILL_FALLING:g}x), "
          f"{len(median_cuts - spared)}")
    top = []
    for rank, n in enumerate(sorted(numbers, key=lambda n: -final[n])[:args.top], 1):
        t = study.trials[n]
        verdict = ("pruned by both" if n in median_cuts - spared else "pruned by the median rule alone"
                   if n in spared else "")
        print(f"  #{rank} trial {n:3d} {t.user_attrs['schedule']:16s} epoch {args.epoch}: "
              f"{better * judged[n]:.4f}  last: {better * final[n]:.4f}  {verdict}")
        top.append({"trial": n, "schedule": t.user_attrs["schedule"], "judged": better * judged[n],
                    "last": better * final[n], "verdict": verdict})
    if args.json:
        args.json.write_text(json.dumps({
            "trials": len(trials), "epoch": args.epoch, "rank_correlation": float(np.corrcoef(*ranks)[0, 1]),
            "pruned_median": len(median_cuts), "pruned_waiting_for_decay": len(median_cuts - spared),
            "still_falling": _pruner.STILL_FALLING, "top": top}, indent=2))


if __name__ == "__main__":
    main()
