"""Where the range test's time goes: lrfind's sweep as `python -m bench.run` times it (LeNet, MNIST, batch
64, 300 steps, SGD with momentum), cut into its parts.

    python -m experiments.range_test_profile                      # on the GPU machine
    python -m experiments.range_test_profile --device cpu --iters 60   # a smoke run anywhere

The goal, 10x torch-lr-finder, was met in 3 of 6 H100 runs, with lrfind at 0.100-0.103 s a sweep
(0.33 ms a step). What is in that time was never measured. This prints:

1. ``find_lr`` end to end (median of 5), then once with its parts timed, the device synchronised
   around each: the snapshot, the eager warm-up steps, the CUDA graph's capture, the sweep's steps,
   the restore and the suggestion;
2. one step as the sweep takes it (a batch from the loader, the LR, the replay, the loss kept),
   against the replayed graph alone (CUDA events around back-to-back replays: the device's time),
   the loader's batches alone, and the host's time to issue a step. A step that takes about as
   long as its replay alone is bound by the GPU's kernels; one that takes longer, by the host.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import Timer, sync  # noqa: E402

from lrfind import OptimizerConfig, find_lr, get_model, load_dataset  # noqa: E402


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def find_lr_parts(model, loader, device, iters: int) -> dict:
    """One ``find_lr`` with its parts timed: each wrapped, the device synchronised around it."""
    from lrfind.engine import graph as _graph
    from lrfind.rangetest import state as _state
    from lrfind.rangetest import runner

    spent: dict[str, float] = collections.defaultdict(float)
    calls: dict[str, int] = collections.defaultdict(int)
    originals = []

    def wrap(owner, name: str, part: str) -> None:
        real = getattr(owner, name)
        originals.append((owner, name, real))

        def timed(*args, **kwargs):
            if _capturing():                       # a step being recorded: no synchronisation possible
                return real(*args, **kwargs)
            sync(device)
            start = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                sync(device)
                spent[part] += time.perf_counter() - start
                calls[part] += 1
        setattr(owner, name, timed)

    wrap(_state, "take", "snapshot")
    wrap(_state, "restore", "restore")
    wrap(runner, "_sweep_once", "sweep")
    wrap(_graph.CapturedStep, "_capture", "capture")
    wrap(_graph.SweepStep, "_step", "eager steps")           # outside a capture: the warm-up steps
    wrap(runner, "sweeps_result", "suggestion and result")     # as the runner calls it
    try:
        with Timer(device) as t:
            result = find_lr(model, loader, num_iter=iters, progress=False, warn=False)
    finally:
        for owner, name, real in reversed(originals):
            setattr(owner, name, real)
    parts = {part: round(1000 * s, 3) for part, s in spent.items()}
    # the sweep less the capture and the eager steps inside it: its replays, batches, LRs and checks
    parts["rest of the sweep"] = round(parts["sweep"] - parts.get("capture", 0) - parts.get("eager steps", 0), 3)
    return {"ms": parts, "calls": dict(calls), "total_ms": round(1000 * t.seconds, 3),
            "iterations": len(result.losses), "replayed_from_a_graph": result.config["cuda_graph"]}


def step_parts(model, loader, device, iters: int) -> dict:
    """ms per step: the sweep's path, the replay alone, the loader alone, the host's issue time."""
    from lrfind.rangetest.batches import Batches
    from lrfind.engine.graph import SweepStep

    graph = device.type == "cuda"
    groups = OptimizerConfig("sgd", momentum=0.9).param_groups(model.parameters(), 1e-6)
    step = SweepStep(model, "sgd", groups, [1.0], torch.nn.functional.cross_entropy, graph=graph)
    batches = Batches(loader, device)
    lrs = np.geomspace(1e-6, 1e-3, iters)          # low LRs: the weights barely move, nothing diverges
    losses = torch.full((iters,), float("nan"), device=device)
    for i in range(5):                             # warm-up steps and the capture
        losses[i] = step(*next(batches), float(lrs[i]))
    out: dict[str, float] = {}

    def per_step(body) -> tuple[float, float]:
        """(wall, host) ms per step: to the device's end, and to the last call's return."""
        sync(device)
        start = time.perf_counter()
        for i in range(iters):
            body(i)
        issued = time.perf_counter()
        sync(device)
        return 1000 * (time.perf_counter() - start) / iters, 1000 * (issued - start) / iters

    def sweep_step(i: int) -> None:
        losses[i] = step(*next(batches), float(lrs[i]))

    def checked_step(i: int) -> None:
        sweep_step(i)
        if (i + 1) % 10 == 0:                      # the sweep's divergence check: one sync every 10 steps
            losses[i - 9: i + 1].cpu()

    out["sweep_step_ms"], out["sweep_step_host_ms"] = per_step(sweep_step)
    out["sweep_step_with_checks_ms"], _ = per_step(checked_step)
    out["batches_alone_ms"], _ = per_step(lambda i: next(batches))
    if graph and step.captured.graph is not None:
        x, y = next(batches)
        out["copy_inputs_and_lr_ms"], _ = per_step(lambda i: (step.lr.fill_(1e-6), step.captured.inputs[0].copy_(x),
                                                              step.captured.inputs[1].copy_(y)))
        replay = step.captured.graph.replay
        for _ in range(10):
            replay()
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(iters):
            replay()
        end.record()
        torch.cuda.synchronize()
        out["replay_alone_gpu_ms"] = begin.elapsed_time(end) / iters
        out["kernels_per_step"] = _kernels_per_replay(replay)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def _kernels_per_replay(replay) -> int | None:
    """Kernels the profiler sees in one replay (None where it sees none inside a graph)."""
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            replay()
            torch.cuda.synchronize()
        n = sum(1 for e in prof.events() if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA)
    except Exception as e:                     # a profiler that cannot run here: the rest still counts
        print(f"(no kernel count: {type(e).__name__}: {e})")
        return None
    return n or None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--json", default=None, help="write the figures here too")
    args = ap.parse_args()
    device = torch.device(args.device)
    train, _ = load_dataset("mnist", "train", device=device).holdout(10_000)
    model = get_model("lenet", seed=0).to(device)
    loader = train.loader(args.batch_size, seed=0)
    find_lr(model, loader, num_iter=20, progress=False, warn=False)          # kernels, allocator, imports
    totals = []
    for _ in range(5):
        with Timer(device) as t:
            find_lr(model, loader, num_iter=args.iters, progress=False, warn=False)
        totals.append(1000 * t.seconds)
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "iters": args.iters, "batch_size": args.batch_size,
               "find_lr_ms_median": round(statistics.median(totals), 3), "find_lr_ms_runs": [round(t, 3) for t in totals],
               "parts": find_lr_parts(model, loader, device, args.iters),
               "per_step": step_parts(model, loader, device, args.iters)}
    print(f"find_lr, {args.iters} steps at batch {args.batch_size} on {results['device']}: "
          f"{results['find_lr_ms_median']:.1f} ms (median of 5: {', '.join(f'{t:.1f}' for t in totals)})")
    print(f"once more, its parts timed ({results['parts']['total_ms']:.1f} ms with the synchronisations):")
    for part, ms in results["parts"]["ms"].items():
        print(f"  {part:24s} {ms:9.2f} ms  ({results['parts']['calls'].get(part, '-')} calls)")
    print("per step (ms):")
    for name, value in results["per_step"].items():
        print(f"  {name:28s} {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
