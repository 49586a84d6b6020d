"""lrfind's benchmark suite: lrfind against what users would otherwise run, in one run, on one device.

    python -m bench.run                 # the full suite, on the GPU machine (writes bench/results.json)
    python -m bench.run --quick         # a smoke run with tiny sizes, any machine (writes nothing by default)

Measures, on the same model (LeNet), data (MNIST), batch size, epochs and search space:
  1. `lrfind tune --trials 50` (3 epochs) end to end from the shell, against a sequential Optuna +
     DataLoader loop (at least 3 of its trials measured; per trial-epoch and extrapolated to 50);
  2. `lrfind range-test` (300 iterations) against torch-lr-finder 0.2.2 (DataLoader, 4 workers);
  3. the best test accuracy of each side: its best trial retrained on the whole training set with
     3 seeds and tested each time, the mean, and the difference with its standard error (one
     retrain's spread, about 0.1 pp, is as large as the differences measured);
  4. the trial engine alone: ms per trial-epoch at K = 1, 10, 50, 100, achieved FLOP/s, peak memory
     (on a GPU also eager, bf16 and channels-last weights; and `lrfind tune` with `--amp bf16` and
     with `--channels-last`);
  5. the study's bookkeeping alone (Optuna's storage for 50 trials): journal file against SQLite;
  6. the report's figures beside a training loop: drawn in a thread against lrfind's child process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import Timer, engine_epoch_seconds  # noqa: E402

from lrfind import find_lr, get_model, load_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


_WARMED_UP: set[str] = set()        # devices a warm-up study has run on, from this process


def run_tune(args, out: Path, *extra: str) -> dict:
    """`lrfind tune` end to end, timed from outside like a user's shell."""
    # a smoke run's shorter stage 1 (bench/quality.py --range-test-iters), in the warm-up study too
    sweep = ["--range-test-iters", str(args.range_test_iters)] if getattr(args, "range_test_iters", None) else []
    cmd = [sys.executable, "-m", "lrfind", "tune", "--trials", str(args.trials), "--epochs", str(args.epochs),
           "--batch-size", str(args.batch_size), "--device", args.device, "--out", str(out), "-q", *sweep, *extra]
    if args.train_subset:
        cmd += ["--train-subset", str(args.train_subset)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    if env.pop("PYTHONDONTWRITEBYTECODE", None):
        # The GPU image ships torch without bytecode and forbids writing it: every process would
        # compile torch's sources again (7.6 s measured). A pip-installed torch has its bytecode.
        env.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / "lrfind-bench-pycache"))
    # A user's second run: bytecode compiled, matplotlib's font cache built, the data files read once
    # (all kept on disk, so once a device and process: bench/quality.py times several studies).
    if args.device not in _WARMED_UP:
        subprocess.run([sys.executable, "-m", "lrfind", "tune", "--trials", "2", "--epochs", "1", "--train-subset",
                        "2048", "--no-final", "--device", args.device, "--out", str(out.with_name("warmup")), "-q",
                        *sweep],
                       cwd=REPO, capture_output=True, env=env, check=True)
        _WARMED_UP.add(args.device)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"lrfind tune failed:\n{proc.stdout}\n{proc.stderr}")
    best = json.loads((out / "best.json").read_text())
    final = best.get("final", {})
    return {"seconds": seconds, "base_lr": best["base_lr"], "best_schedule": best.get("schedule"),
            "best_val_acc": best.get("val_acc"), "constant_val_acc": best.get("constant", {}).get("val_acc"),
            # every retrain, as the baseline averages its own: a retrain at chance counts against the pick
            "best_test_acc": _mean(final.get("best", {}).get("test_acc_per_seed")),
            "best_test_acc_per_seed": final.get("best", {}).get("test_acc_per_seed"),
            "constant_test_acc": final.get("constant", {}).get("test_acc"),
            "peak_gpu_bytes": best.get("peak_gpu_bytes"), "stage_seconds": best.get("seconds"),
            "time_line": next((line for line in proc.stdout.splitlines() if line.startswith("time:")), None),
            "report": proc.stdout}


def accuracy_difference(ours: list[float] | None, theirs: list[float]) -> dict:
    """lrfind's mean test accuracy minus the baseline's, in percentage points, and the standard error
    of that difference from the two sides' spreads over their retrains (None with fewer than two)."""
    if not ours or len(ours) < 2 or len(theirs) < 2:
        return {"acc_difference_pp": None, "acc_difference_se_pp": None}
    a, b = np.array(ours) * 100, np.array(theirs) * 100
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    return {"acc_difference_pp": round(float(a.mean() - b.mean()), 3), "acc_difference_se_pp": round(se, 3)}


def range_test_lrfind(args, device) -> dict:
    train, _ = load_dataset("mnist", "train", device=device).holdout(10_000)
    model = get_model("lenet", seed=0).to(device)
    loader = train.loader(args.range_batch, seed=0)
    find_lr(model, loader, num_iter=20, progress=False)              # warm-up: kernels, allocator
    with Timer(device) as t:
        result = find_lr(model, loader, num_iter=args.range_iters, progress=False)
    return {"seconds": t.seconds, "iterations": len(result.losses), "suggested_lr": result.suggested_lr}


def engine_figures(args, device) -> dict:
    """ms per trial-epoch with K trials side by side, FLOP/s and peak memory."""
    from torch.utils.flop_counter import FlopCounterMode

    train, _ = load_dataset("mnist", "train", device=device).holdout(10_000)
    if args.train_subset:
        train = train.subset(args.train_subset)
    loader = train.loader(args.batch_size, seed=0)
    model = get_model("lenet")
    x = torch.zeros(args.batch_size, 1, 28, 28)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(x), torch.zeros(args.batch_size, dtype=torch.long)).backward()
    flops_per_step = counter.get_total_flops()           # forward + backward of one model on one batch
    rows = {}
    modes = {"graph": {}, "eager": {"cuda_graph": False}, "bf16": {"amp": "bf16"},
             "channels_last": {"channels_last": True},
             "vmapped_whole": {"fold": False}} if device.type == "cuda" else {"eager": {}}   # before folding
    for k in args.ks:
        for mode, options in modes.items():
            seconds = engine_epoch_seconds(k, loader, device, **options)
            if k in rows:
                rows[k][f"{mode}_ms_per_trial_epoch"] = 1000 * seconds / k
                continue
            rows[k] = {"epoch_seconds": seconds, "ms_per_trial_epoch": 1000 * seconds / k,
                       "tflops": flops_per_step * k * len(loader) / seconds / 1e12,
                       "peak_gpu_bytes": torch.cuda.max_memory_allocated() if device.type == "cuda" else None}
    return {"flops_per_step_one_model": flops_per_step, "steps_per_epoch": len(loader), "by_k": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the suite itself")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None, help="results file (default: bench/results.json; none with --quick)")
    args = ap.parse_args()
    full = not args.quick
    args.trials, args.epochs, args.batch_size = (50, 3, 128) if full else (4, 1, 128)
    args.train_subset = None if full else 2048
    args.baseline_trials = 3 if full else 1
    args.range_iters, args.range_batch = (300, 64) if full else (40, 64)
    args.ks = [1, 10, 50, 100] if full else [1, 4]
    device = torch.device(args.device)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                     "torch": torch.__version__, "quick": args.quick}

    with tempfile.TemporaryDirectory() as tmp:
        tune = run_tune(args, Path(tmp) / "tune")
        print(tune.pop("report"))
        results["tune"] = tune
        if device.type == "cuda":
            results["tune_bf16"] = run_tune(args, Path(tmp) / "tune_bf16", "--amp", "bf16")
            results["tune_bf16"].pop("report")
            # channels-last convolution weights: the CPU's default, measured here before a GPU's
            results["tune_channels_last"] = run_tune(args, Path(tmp) / "tune_channels_last", "--channels-last")
            results["tune_channels_last"].pop("report")
            # the trials' forward vmapped whole, as before they were folded into the channels
            results["tune_no_fold"] = run_tune(args, Path(tmp) / "tune_no_fold", "--no-fold")
            results["tune_no_fold"].pop("report")

    from bench.baseline import sequential_study
    base = sequential_study(args.baseline_trials, args.epochs, args.batch_size, tune["base_lr"], device,
                            retrain_seeds=3 if full else 2, train_size=args.train_subset)
    results["baseline"] = base
    baseline_50 = base["seconds_per_trial_epoch"] * args.epochs * 50

    ours = range_test_lrfind(args, device)
    from bench.peer_range_test import torch_lr_finder_range_test
    peer = torch_lr_finder_range_test(args.range_iters, args.range_batch, 4, device)
    results["range_test"] = {"lrfind": ours, "torch_lr_finder": peer}

    results["engine"] = engine_figures(args, device)
    from storage import compare
    results["storage"] = compare(args.trials, args.epochs, parallel=args.trials, repeats=3 if full else 1)
    import painter
    results["painter"] = painter.compare(k=6, emulate=device.type != "cuda", repeats=3 if full else 1)
    k50 = results["engine"]["by_k"].get(50) or results["engine"]["by_k"][max(results["engine"]["by_k"])]
    results.update(
        tune_seconds=tune["seconds"],
        baseline_seconds_per_trial_epoch=base["seconds_per_trial_epoch"],
        baseline_seconds_for_50_trials=baseline_50,
        tune_speedup=baseline_50 / tune["seconds"] if full else None,
        range_test_speedup=peer["seconds"] / ours["seconds"],
        ms_per_trial_epoch_k50=k50["ms_per_trial_epoch"],
        ms_per_trial_epoch_k50_bf16=k50.get("bf16_ms_per_trial_epoch"),
        tune_seconds_bf16=results.get("tune_bf16", {}).get("seconds"),
        tune_seconds_channels_last=results.get("tune_channels_last", {}).get("seconds"),
        tune_seconds_no_fold=results.get("tune_no_fold", {}).get("seconds"),
        ms_per_trial_epoch_k50_channels_last=k50.get("channels_last_ms_per_trial_epoch"),
        ms_per_trial_epoch_k50_vmapped_whole=k50.get("vmapped_whole_ms_per_trial_epoch"),
        best_test_acc_lrfind_bf16=results.get("tune_bf16", {}).get("best_test_acc"),
        best_test_acc_lrfind=tune["best_test_acc"],
        best_test_acc_baseline=base["best_test_acc"],
        **accuracy_difference(tune.get("best_test_acc_per_seed"), base["best_test_acc_per_seed"]),
    )
    rows = [
        (f"lrfind tune, {args.trials} trials x {args.epochs} epochs (s)", f"{tune['seconds']:.1f}"),
        ("sequential Optuna + DataLoader, per trial-epoch (s)", f"{base['seconds_per_trial_epoch']:.2f}"),
        ("  extrapolated to 50 trials (s)", f"{baseline_50:.0f}"),
        ("tune speed-up", f"{results['tune_speedup']:.0f}x" if results["tune_speedup"] else "n/a (quick)"),
        ("range test: lrfind / torch-lr-finder (s)", f"{ours['seconds']:.2f} / {peer['seconds']:.2f}"),
        ("range test speed-up", f"{results['range_test_speedup']:.1f}x"),
        ("suggested LR: lrfind / torch-lr-finder", f"{ours['suggested_lr']} / {peer['suggested_lr']}"),
        ("best test acc, mean of retrains: lrfind / baseline", f"{tune['best_test_acc']} / {base['best_test_acc']:.4f}"),
    ]
    if results.get("acc_difference_pp") is not None:
        rows.append(("  difference, lrfind - baseline (pp, 1 s.e.)",
                     f"{results['acc_difference_pp']:+.2f} +- {results['acc_difference_se_pp']:.2f}"))
    for key, option in (("tune_no_fold", "--no-fold"), ("tune_channels_last", "--channels-last"),
                        ("tune_bf16", "--amp bf16")):
        if key in results:
            rows.insert(1, (f"  with {option}: seconds, best test acc",
                            f"{results[key]['seconds']:.1f}, {results[key]['best_test_acc']}"))
    st = results["storage"]
    rows.append((f"storage bookkeeping, {args.trials} trials: journal / SQLite (s)",
                 f"{st['journal']['seconds_median']:.2f} / {st['sqlite']['seconds_median']:.2f} "
                 f"({st['sqlite_over_journal']:.1f}x)"))
    pt = results["painter"]
    rows.append((f"{pt['loop']}: alone / figures in a thread / in a process (s)",
                 f"{pt['alone']['loop_seconds']:.2f} / {pt['thread']['loop_seconds']:.2f} / "
                 f"{pt['process']['loop_seconds']:.2f}"))
    for k, row in results["engine"]["by_k"].items():
        others = ", ".join(f"{m} {row[f'{m}_ms_per_trial_epoch']:.1f}"
                           for m in ("eager", "bf16", "channels_last", "vmapped_whole") if f"{m}_ms_per_trial_epoch" in row)
        rows.append((f"engine K={k}: ms per trial-epoch ({'graph' if device.type == 'cuda' else 'eager'}, fp32), TFLOP/s",
                     f"{row['ms_per_trial_epoch']:.1f}{f' ({others})' if others else ''}, {row['tflops']:.2f}"))
    width = max(len(r[0]) for r in rows)
    print(f"\nbenchmarks on {results['device']} (torch {torch.__version__})")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    out = args.out or (None if args.quick else Path(__file__).with_name("results.json"))
    if out:
        Path(out).write_text(json.dumps(results, indent=2, default=str))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()


def _mean(values: list[float | None] | None) -> float | None:
    """The mean of the finite values (a retrain that ended on NaN has none), or None."""
    kept = [v for v in values or [] if v is not None and v == v]
    return sum(kept) / len(kept) if kept else None
