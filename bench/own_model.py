"""The engine on a model and data of the kind users bring: examples/own_data.py's CifarNet (conv
32-64-128 with batch norm, 0.3 M parameters) on CIFAR-shaped 3x32x32 images with flip-crop.

    python -m bench.own_model               # on the GPU machine (bench/gpu_all.sh runs it)
    python -m bench.own_model --quick       # tiny sizes, anywhere: a smoke test

Prints, per epoch of 50,000 images at batch 128: ms per trial-epoch of K trials side by side in
lrfind's engine (CUDA graph on a GPU), and of one model trained by the loop a user writes over the
same device-resident, augmented batches (torch.optim SGD with momentum); their ratio; the K that
`lrfind tune` would pick for it (``_auto_parallel``); the engine's peak GPU memory. The images are
random (no CIFAR on the machines here): this measures speed, not accuracy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bench.common import Timer, engine_epoch_seconds  # noqa: E402

from lrfind import get_augment, get_model
from lrfind.data import ImageData

MODEL = str(Path(__file__).resolve().parents[1] / "examples" / "own_data.py") + ":CifarNet"


def plain_epoch_seconds(loader, device: torch.device) -> float:
    """One model, the usual loop: forward, cross-entropy, backward, torch.optim step (after 11 warm-up steps)."""
    model = get_model(MODEL, seed=0).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    for i, (x, y) in enumerate(loader):
        step(x, y)
        if i == 10:
            break
    with Timer(device) as t:
        for x, y in loader:
            step(x, y)
    return t.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--quick", action="store_true", help="1,024 images, K = 1 and 2")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    device = torch.device(args.device)
    n, ks = (1024, [1, 2]) if args.quick else (50_000, args.k)
    g = torch.Generator().manual_seed(0)
    data = ImageData(torch.randn(n, 3, 32, 32, generator=g).to(device), torch.randint(10, (n,), generator=g).to(device))
    loader = data.loader(128, seed=0, augment=get_augment("flip-crop"))

    plain = plain_epoch_seconds(loader, device)
    rows = {"plain torch loop, 1 model": 1000 * plain}
    peaks = {}
    for k in ks:
        rows[f"lrfind engine, K={k}"] = 1000 * engine_epoch_seconds(k, loader, device, model=MODEL) / k
        if device.type == "cuda":
            peaks[k] = torch.cuda.max_memory_allocated(device) / 2**30
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "images": n,
              "ms_per_trial_epoch": {name: round(ms, 1) for name, ms in rows.items()},
              "speedup_vs_plain": {f"K={k}": round(plain * 1000 / rows[f"lrfind engine, K={k}"], 2) for k in ks}}
    if device.type == "cuda":
        result["peak_gib"] = {f"K={k}": round(v, 2) for k, v in peaks.items()}
    for name, ms in rows.items():
        print(f"{name:<28} {ms:9.1f} ms per trial-epoch")
    print(json.dumps({k: v for k, v in result.items() if k != "ms_per_trial_epoch"}))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
