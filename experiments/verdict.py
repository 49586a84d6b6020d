"""Is lrfind's verdict on decay honest? Its reported gain against the constant LR, beside the gain
against the best constant of a grid of LRs trained here, the way stage 3 retrains.

For each study folder (``lrfind tune --out DIR``), the constant LRs of ``--lrs`` are retrained as
stage 3 retrained the study's best schedule and its constant: the same training images (the
search's training part and its validation images), the same epochs and batch size, the same seeds
(``seed``, ``seed + 1``, ...: the initial weights) and batch order (the study's seed), scored once
on the test set. The grid's best constant is the LR with the highest mean test accuracy over the
seeds (a run at chance counts as it scored: an LR that diverges now and then is no best). The
gain against it is the best schedule's test accuracy minus the grid constant's, seed by seed: its
mean and standard error, beside the study's reported ``final.gain``. Picked on the runs it is
scored on, the grid's best is flattered by its luck; so the gain is also given against the grid's
best picked for each seed on the other seeds' runs (``gain_vs_grid_best_held_out``).

    python -m experiments.verdict --lrs 0.0177,0.025,0.035,0.05,0.07,0.1 --cache grid.json --json records.json \
        --label after DIR [DIR ...]
    python -m experiments.verdict --summary records.json ... > summary.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from lrfind.data.builtin import load_dataset
from lrfind.data.images import ImageData
from lrfind.engine.trials import TrialSpec, run_trials
from lrfind.study.tune import _data
from lrfind.study.tune_config import TuneConfig


def mean_se(values: list[float]) -> tuple[float | None, float | None]:
    n = len(values)
    if not n:
        return None, None
    return sum(values) / n, statistics.stdev(values) / math.sqrt(n) if n >= 2 else None


def train_grid(setup: dict, seeds: list[int], lrs: list[float]) -> dict[float, list[float | None]]:
    """Test accuracy of each constant LR at each seed, retrained as stage 3 retrains (the loader's
    batch order from the study's seed, ``seeds[0]``; a NaN run scores None)."""
    cfg = TuneConfig(model=setup["model"], dataset=setup["dataset"], epochs=setup["epochs"],
                     batch_size=setup["batch_size"], train_subset=setup["train_subset"], val_size=setup["val_size"],
                     device="cpu", progress=False, seed=seeds[0])
    device = torch.device("cpu")
    train, val = _data(cfg, device)
    data = ImageData(torch.cat([train.images, val.images]), torch.cat([train.labels, val.labels]), train.name,
                     train.classes)
    test = load_dataset(cfg.dataset, "test", device=device)
    specs = [TrialSpec("constant", {}, seed=s, lr_scale=lr / lrs[0]) for lr in lrs for s in seeds]
    records = run_trials(cfg.model, specs, data, None, epochs=cfg.epochs, batch_size=cfg.batch_size, base_lr=lrs[0],
                         optimizer=cfg.optimizer_config, seed=cfg.seed, score_on=test, channels_last=cfg.channels_last)
    return {lr: [r.test_acc if r.status != "failed" else None for r in records[i * len(seeds):(i + 1) * len(seeds)]]
            for i, lr in enumerate(lrs)}


def grid(folder: Path, lrs: list[float], cache: Path | None = None) -> dict:
    """The grid's constants retrained as the study's stage 3 retrained (or taken from ``cache``,
    which holds them by model, setup and seeds), and the gains against them."""
    best = json.loads((folder / "best.json").read_text())
    setup, final = best["setup"], best["final"]
    seeds = final["best"]["seeds"]
    key = json.dumps([setup["model"], setup["dataset"], setup["epochs"], setup["batch_size"], setup["train_subset"],
                      setup["val_size"], seeds])
    stored = json.loads(cache.read_text()) if cache is not None and cache.is_file() else {}
    known = {float(lr): v for lr, v in stored.get(key, {}).items()}
    clock = time.perf_counter()
    missing = [lr for lr in lrs if lr not in known]
    if missing:
        known.update(train_grid(setup, seeds, missing))
        if cache is not None:
            stored = json.loads(cache.read_text()) if cache.is_file() else {}
            stored[key] = {str(lr): v for lr, v in sorted(known.items())}
            cache.write_text(json.dumps(stored, indent=1))
    accs = {lr: known[lr] for lr in lrs}
    means = {lr: sum(a or 0.0 for a in v) / len(v) for lr, v in accs.items()}
    top = max(lrs, key=lambda lr: means[lr])
    ours = final["best"]["test_acc_per_seed"]
    gains = [b - c for b, c in zip(ours, accs[top])]
    g, se = mean_se(gains)
    # the best of a grid picked on the very runs it is scored on is flattered by its luck: the grid's
    # best again, picked for each seed on the other seeds' runs
    held = []
    for i, b in enumerate(ours):
        pick = max(lrs, key=lambda lr: sum(a or 0.0 for j, a in enumerate(accs[lr]) if j != i))
        held.append((pick, b - (accs[pick][i] or 0.0)))
    g_held, se_held = mean_se([d for _, d in held])
    reported = final.get("gain")
    if reported is None:            # a study of an lrfind before the gain was kept: its report's numbers
        d, d_se = mean_se([b - c for b, c in zip(ours, final["constant"]["test_acc_per_seed"])])
        reported = {"difference": d, "se": d_se, "pairs": len(ours), "verdict": "(not judged)"}
    return {"study": str(folder), "model": setup["model"], "seed": seeds[0], "seeds": seeds, "base_lr": best["base_lr"],
            "best": {"schedule": final["best"]["schedule"], "lr": final["best"]["lr"], "test_acc": final["best"]["test_acc"],
                     "test_acc_per_seed": ours},
            "constant": {k: final["constant"].get(k) for k in ("trial", "lr", "test_acc", "test_acc_per_seed", "diverged")},
            "reported_gain": {k: reported.get(k) for k in ("difference", "se", "pairs", "verdict", "diverged")},
            "grid": {str(lr): accs[lr] for lr in lrs}, "grid_best_lr": top, "grid_best_test_acc": means[top],
            "gain_vs_grid_best": {"difference": g, "se": se, "per_seed": gains},
            "gain_vs_grid_best_held_out": {"difference": g_held, "se": se_held, "per_seed": [d for _, d in held],
                                           "lrs": [lr for lr, _ in held]},
            **_gap(reported, g, se), "held_out": _gap(reported, g_held, se_held),
            "grid_seconds": round(time.perf_counter() - clock, 1)}


def _gap(reported: dict, grid_gain: float | None, grid_se: float | None) -> dict:
    """How far the reported gain lies from the gain against the grid's best, in either's standard error."""
    if reported.get("difference") is None or grid_gain is None:
        return {"gap": None, "within_reported_se": None, "within_grid_se": None}
    gap = reported["difference"] - grid_gain
    return {"gap": gap, "within_reported_se": reported.get("se") is not None and abs(gap) <= reported["se"],
            "within_grid_se": grid_se is not None and abs(gap) <= grid_se}


def summary(records: list[dict]) -> dict:
    """Per model: the chosen schedule's test accuracy before and after (paired by seed), and how
    often the reported gain lay within one standard error of the gain against the grid's best."""
    out = {}
    for model in sorted({r["model"] for r in records}):
        mine = [r for r in records if r["model"] == model]
        sides = {label: {r["seed"]: r for r in mine if r.get("label") == label} for label in ("before", "after")}
        seeds = sorted(set(sides["before"]) & set(sides["after"]))
        accs = {label: [sides[label][s]["best"]["test_acc"] for s in seeds] for label in sides}
        change = [a - b for a, b in zip(accs["after"], accs["before"])]
        m, se = mean_se(change)
        out[model] = {"seeds": seeds,
                      "chosen_test_acc_mean": {label: sum(v) / len(v) if v else None for label, v in accs.items()},
                      "chosen_test_acc_change": {"mean": m, "se": se, "per_seed": change}}
        for label, runs in sides.items():
            gaps = [r for r in runs.values() if r["gap"] is not None]
            out[model][label] = {
                "runs": len(runs), "within_reported_se": sum(bool(r["within_reported_se"]) for r in gaps),
                "within_grid_se": sum(bool(r["within_grid_se"]) for r in gaps),
                "mean_gap_pp": 100 * sum(r["gap"] for r in gaps) / len(gaps) if gaps else None,
                "held_out_within_reported_se": sum(bool(r["held_out"]["within_reported_se"]) for r in gaps),
                "held_out_mean_gap_pp": 100 * sum(r["held_out"]["gap"] for r in gaps) / len(gaps) if gaps else None,
                "diverged_retrains": sum(len(v) for r in runs.values()
                                         for v in ((r["reported_gain"].get("diverged") or {}).values()))}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, help="study folders (lrfind tune --out)")
    parser.add_argument("--lrs", help="the grid's constant LRs, comma-separated")
    parser.add_argument("--label", help="what the folders' studies are (before, after): kept in their records")
    parser.add_argument("--json", type=Path, help="append each folder's record to this JSON list")
    parser.add_argument("--cache", type=Path, help="a JSON file of the grid's runs, shared by studies of one seed")
    parser.add_argument("--summary", type=Path, nargs="+", help="summarise these JSON lists of records instead")
    args = parser.parse_args(argv)
    if args.summary:
        records = [r for f in args.summary for r in json.loads(f.read_text())]
        print(json.dumps({"records": records, "summary": summary(records)}, indent=1))
        return
    lrs = sorted(float(x) for x in args.lrs.split(","))
    for folder in args.folders:
        record = {"label": args.label, **grid(folder, lrs, args.cache)}
        if args.json:
            done = json.loads(args.json.read_text()) if args.json.is_file() else []
            args.json.write_text(json.dumps(done + [record], indent=1))
        r, g = record["reported_gain"], record["gain_vs_grid_best"]
        pp = lambda x: "-" if x is None else f"{100 * x:+.2f}"      # noqa: E731
        se = lambda x: "-" if x is None else f"{100 * x:.2f}"        # noqa: E731
        print(f"{folder}: reported {pp(r['difference'])} ± {se(r['se'])} pp against the constant at "
              f"{record['constant']['lr']:.3g}; against the grid's best ({record['grid_best_lr']:.3g}) "
              f"{pp(g['difference'])} ± {se(g['se'])} pp; within the reported s.e.: {record['within_reported_se']}",
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
