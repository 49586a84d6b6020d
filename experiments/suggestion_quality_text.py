"""Does the suggested LR land near the best for a Transformer, and does the sweep need the
training's gradient clipping? The language model of ``examples/own_loop_text.py`` (AdamW, clipped
at norm 1): three sweeps with and without the clipping, then the example's own training loop at a
constant LR on a grid around the suggestions, scored on the validation loss (lower is better).

    python -m experiments.suggestion_quality_text --seeds 2 --out experiments/suggestion_quality_cpu_text.json

Runs on CPU (about 8 minutes on 2 cores with the defaults) or on CUDA.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
import lrfind  # noqa: E402
import examples.own_loop_text as text  # noqa: E402


def sweeps(train_loader, vocab: int, num_iter: int, clip: float | None) -> lrfind.RangeTestResult:
    torch.manual_seed(0)
    model = text.TinyGPT(vocab).to(text.DEVICE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    return lrfind.find_lr(model, train_loader, optimizer=optimizer, loss_fn=text.loss_fn, num_iter=num_iter,
                          max_grad_norm=clip, repeats=3, seed=0, progress=False, warn=False)


def val_loss_at(lr: float, seed: int, loaders, vocab: int, epochs: int) -> float:
    """The example's loop (clipped at 1) at a constant ``lr``; inf where the loss is not finite."""
    train_loader, val_loader = loaders
    torch.manual_seed(seed)
    model = text.TinyGPT(vocab).to(text.DEVICE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    text.fit(model, optimizer, None, train_loader, epochs, seed)
    loss = text.evaluate(model, val_loader)
    return loss if np.isfinite(loss) else float("inf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chars", type=int, default=200_000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=2, help="training runs at each LR")
    ap.add_argument("--num-iter", type=int, default=300)
    ap.add_argument("--factors", default="0.3,1,2,3,6,10", help="grid: multiples of the clipped sweeps' suggestion")
    ap.add_argument("--out", default=str(Path(__file__).with_name("suggestion_quality_text.json")))
    args = ap.parse_args()
    t0 = time.perf_counter()
    train_loader, val_loader, _, vocab = text.data(args.chars, args.batch_size)
    found = {}
    for label, clip in (("clipped", 1.0), ("unclipped", None)):
        result = sweeps(train_loader, vocab, args.num_iter, clip)
        if result.suggested_lr is None:
            sys.exit(f"{label} sweeps gave no suggestion: {result.reason}")
        found[label] = {"suggested_lr": result.suggested_lr, "seed_lrs": result.seed_lrs,
                        "steps_swept": [len(losses) for losses in result.seed_losses],
                        "suggestions": {k: v.lr for k, v in result.suggestions.items()}}
        print(f"{label:>9}: suggested {result.suggested_lr:.3g} (sweeps "
              f"{', '.join(f'{lr:.3g}' for lr in result.seed_lrs if lr)}; steps swept "
              f"{found[label]['steps_swept']})", flush=True)
    base = found["clipped"]["suggested_lr"]
    grid = {f"{f}x": float(f) * base for f in args.factors.split(",")}
    grid["unclipped suggestion"] = found["unclipped"]["suggested_lr"]
    rows = {}
    for label, lr in grid.items():
        losses = [val_loss_at(lr, seed, (train_loader, val_loader), vocab, args.epochs) for seed in range(args.seeds)]
        rows[label] = {"lr": lr, "val_loss_mean": float(np.mean(losses)), "val_loss_all": losses}
        print(f"{label:>22} lr={lr:9.4g}  val loss {np.mean(losses):.4f}  "
              f"({', '.join(f'{x:.4f}' for x in losses)})", flush=True)
    best = min(rows, key=lambda k: rows[k]["val_loss_mean"])
    print(f"best: {best} (lr {rows[best]['lr']:.3g}), {rows[best]['val_loss_mean']:.4f}; at the suggestion "
          f"{rows['1x']['val_loss_mean']:.4f}")
    out = {"model": "examples/own_loop_text.py TinyGPT", "optimizer": "adamw (weight decay 0.01)",
           "training": f"constant LR, {args.epochs} epochs, gradients clipped at 1", "batch_size": args.batch_size,
           "chars": args.chars, "seeds": args.seeds,
           "device": torch.cuda.get_device_name() if text.DEVICE == "cuda" else "cpu",
           "sweeps": found, "rows": rows, "best": best, "seconds": time.perf_counter() - t0}
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
