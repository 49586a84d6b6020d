"""The same study two ways: ``lrfind.tune`` (trials fused in lrfind's engine) against
``lrfind.tune_loop`` over a plain training loop, on the same model, data, batch size, epochs, base
LR, search space and trial count. What the engine buys, and whether the loop finds as much.

    python -m bench.loop_vs_engine --trials 16 --subset 10000 --device cpu

The loop is a good hand-written one: the data already on the device, batches drawn with a device
permutation (no DataLoader), torch.optim and torch's scheduler, validation in batches of 1,000.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import lrfind  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--subset", type=int, default=10_000, help="training images (the validation set is 10,000)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--base-lr", type=float, default=0.05)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    train, val = lrfind.load_dataset("mnist", device=device).holdout(10_000)
    train = train.subset(args.subset)
    per_epoch = args.subset // args.batch_size
    common = dict(trials=args.trials, epochs=args.epochs, base_lr=args.base_lr, progress=False)
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "trials": args.trials, "epochs": args.epochs, "train_images": args.subset,
               "batch_size": args.batch_size, "base_lr": args.base_lr}

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        engine = lrfind.tune(train_subset=args.subset, batch_size=args.batch_size, final=False, device=str(device),
                             out=f"{tmp}/engine", **common)
        results["engine"] = _summary(engine.study, Path(tmp) / "engine", time.perf_counter() - start)

        def train_fn(trial: lrfind.LoopTrial) -> float:
            model = lrfind.get_model("lenet", seed=trial.seed).to(device)
            optimizer = trial.optimizer(model.parameters())
            scheduler = trial.scheduler(optimizer)
            g = torch.Generator(device=device).manual_seed(trial.seed)
            for _ in range(trial.epochs):
                order = torch.randperm(len(train), generator=g, device=device)
                for i in range(per_epoch):
                    idx = order[i * args.batch_size:(i + 1) * args.batch_size]
                    optimizer.zero_grad(set_to_none=True)
                    torch.nn.functional.cross_entropy(model(train.images[idx]), train.labels[idx]).backward()
                    optimizer.step()
                    scheduler.step()
                acc, loss = _evaluate(model, val)
                trial.report(acc, loss=loss)
            return acc

        start = time.perf_counter()
        loop = lrfind.tune_loop(train_fn, steps_per_epoch=per_epoch, metric="accuracy", out=f"{tmp}/loop",
                                same_seed=False, final_seeds=0, **common)     # the engine's side: final=False
        results["loop"] = _summary(loop.study, Path(tmp) / "loop", time.perf_counter() - start)

    results["loop_over_engine_seconds"] = results["loop"]["seconds"] / results["engine"]["seconds"]
    for side in ("engine", "loop"):
        r = results[side]
        print(f"{side:>6}: {r['seconds']:7.1f} s, {r['ms_per_trial_epoch']:7.1f} ms per trial-epoch run, "
              f"{r['complete']} complete / {r['pruned']} pruned / {r['failed']} failed; best {r['best_schedule']} "
              f"{100 * r['best_val_acc']:.2f}% validation, constant {100 * r['constant_val_acc']:.2f}%")
    print(f"loop / engine time: {results['loop_over_engine_seconds']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")


def _evaluate(model: torch.nn.Module, data) -> tuple[float, float]:
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(data), 1000):
            out = model(data.images[i:i + 1000])
            y = data.labels[i:i + 1000]
            loss += torch.nn.functional.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
    model.train()
    return correct / len(data), loss / len(data)


def _summary(study, out: Path, seconds: float) -> dict:
    """A side's time and what it found: the study's trials (Optuna's) and its ``best.json``."""
    trials = study.trials
    epochs_run = sum(t.user_attrs.get("epochs_run", 0) for t in trials)
    best = json.loads((out / "best.json").read_text())
    states = [t.state.name for t in trials]
    return {"seconds": round(seconds, 2), "trial_epochs_run": epochs_run,
            "ms_per_trial_epoch": round(1000 * seconds / max(1, epochs_run), 1),
            "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"), "failed": states.count("FAIL"),
            "best_schedule": best.get("schedule"), "best_val_acc": best.get("val_acc"),
            "constant_val_acc": (best.get("constant") or {}).get("val_acc")}


if __name__ == "__main__":
    main()
