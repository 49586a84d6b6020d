"""Several range-test sweeps side by side in one pass, against the same number one after another
and against torch-lr-finder's one sweep: same model (LeNet), data (MNIST), batch size and steps.

    python -m bench.fused_sweeps --device cpu --num-iter 300 --out bench/fused_sweeps_cpu.json
    python -m bench.fused_sweeps --device cuda --num-iter 300 --out bench/fused_sweeps_h100.json

For each K in ``--ks``: ``find_lr(model, loader, repeats=K)`` with ``fused=True`` (K copies of the
model side by side in one pass, each on batches of its own) and ``fused=False`` (K sweeps one after
another), both without the slower sweeps (``slow_down=False``), interleaved over ``--rounds``
rounds after a warm-up, the fastest of each kept. The peer: torch-lr-finder's ``range_test`` over a
DataLoader of the same tensors (said, and left out, where it is not installed:
``pip install torch-lr-finder``). Prints the ratios and writes the JSON. Uses lrfind's public API only.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

from lrfind import OptimizerConfig, find_lr, get_model, load_dataset


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {torch.get_num_threads()} threads"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def lrfind_sweeps(loader, k: int, fused: bool, device: torch.device, num_iter: int) -> dict:
    """One ``find_lr`` call of ``k`` sweeps, side by side or one after another: seconds, steps, suggestions."""
    net = get_model("lenet", seed=0).to(device)
    sync(device)
    start = time.perf_counter()
    result = find_lr(net, loader, optimizer=OptimizerConfig("sgd", momentum=0.9), num_iter=num_iter, repeats=k,
                     seed=0, fused=fused, slow_down=False, progress=False, warn=False)
    sync(device)
    seconds = time.perf_counter() - start
    curves = result.seed_losses or [result.losses]
    return {"seconds": seconds, "steps": int(sum(c.size for c in curves)), "suggested_lr": result.suggested_lr,
            "seed_lrs": result.seed_lrs or [result.suggested_lr], "fused": bool(result.config.get("fused")),
            "cuda_graph": bool(result.config.get("cuda_graph"))}


def peer_sweep(images: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device,
               num_iter: int) -> dict | None:
    """torch-lr-finder's one sweep over the same tensors, batch size and steps; None where it is absent."""
    try:
        from torch_lr_finder import LRFinder
    except ImportError:
        return None
    model = get_model("lenet", seed=0).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=batch_size,
                                         shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0))
    finder = LRFinder(model, opt, torch.nn.CrossEntropyLoss(), device=device)
    sync(device)
    start = time.perf_counter()
    finder.range_test(loader, start_lr=1e-6, end_lr=1.0, num_iter=num_iter, diverge_th=5)
    sync(device)
    seconds = time.perf_counter() - start
    steps = len(finder.history["loss"])
    finder.reset()
    return {"seconds": seconds, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", default="1,3,8", help="sweeps per pass, comma-separated")
    parser.add_argument("--num-iter", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-subset", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    args = parser.parse_args()
    device = torch.device(args.device)
    train = load_dataset("mnist", "train", device=device).subset(args.train_subset)
    loader = train.loader(args.batch_size, seed=0)
    ks = [int(k) for k in args.ks.split(",")]
    lrfind_sweeps(loader, max(ks), True, device, 20)                   # warm-up: kernels, allocator
    rows = []
    for k in ks:
        # rounds interleaved, side by side then one after another, so that a busy spell hits both
        pairs = [(lrfind_sweeps(loader, k, True, device, args.num_iter),
                  lrfind_sweeps(loader, k, False, device, args.num_iter)) for _ in range(args.rounds)]
        fused = min((p[0] for p in pairs), key=lambda r: r["seconds"])
        sequential = min((p[1] for p in pairs), key=lambda r: r["seconds"])
        row = {"k": k, "fused": fused, "sequential": sequential,
               "sequential_over_fused": sequential["seconds"] / fused["seconds"]}
        rows.append(row)
        print(f"K={k}: side by side {fused['seconds']:.2f}s ({fused['steps']} sweep steps), one after another "
              f"{sequential['seconds']:.2f}s ({sequential['steps']}): one after another / side by side "
              f"{row['sequential_over_fused']:.2f}x; median LR {fused['suggested_lr']} vs {sequential['suggested_lr']}",
              flush=True)
    one = next((r["fused"]["seconds"] for r in rows if r["k"] == 1), None)
    for row in rows:
        if one:
            row["fused_over_one_sweep"] = row["fused"]["seconds"] / one
    peers = [peer_sweep(train.images.cpu(), train.labels.cpu(), args.batch_size, device, args.num_iter)
             for _ in range(args.rounds)]
    peer = min(peers, key=lambda r: r["seconds"]) if peers[0] is not None else None
    if peer is None:
        print("torch-lr-finder is not installed (pip install torch-lr-finder): no peer timing")
    else:
        for row in rows:
            row["peer_one_sweep_over_fused"] = peer["seconds"] / row["fused"]["seconds"]
            print(f"K={row['k']}: torch-lr-finder's one sweep ({peer['seconds']:.2f}s, {peer['steps']} steps) / "
                  f"lrfind's {row['k']} side by side: {row['peer_one_sweep_over_fused']:.2f}x"
                  + (f"; {row['k']} side by side / one: {row['fused_over_one_sweep']:.2f}x"
                     if "fused_over_one_sweep" in row else ""))
    out = {"date": time.strftime("%Y-%m-%d"), "machine": machine(device), "device": device.type,
           "torch": torch.__version__, "python": platform.python_version(), "model": "lenet",
           "data": f"mnist[:{args.train_subset}]", "batch_size": args.batch_size, "num_iter": args.num_iter,
           "rounds": args.rounds, "rows": rows, "torch_lr_finder_one_sweep": peer,
           "command": f"python -m bench.fused_sweeps --device {args.device} --ks {args.ks} --num-iter {args.num_iter} "
                      f"--batch-size {args.batch_size} --train-subset {args.train_subset} --rounds {args.rounds}"}
    args.out.write_text(json.dumps(out, indent=1, default=lambda v: None if isinstance(v, float) and math.isnan(v)
                                   else str(v)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
