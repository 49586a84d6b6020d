"""The trial engine's step at K trials under its options, and where its GPU time goes.

    python -m bench.engine_variants --k 50
    python -m bench.engine_variants --device cpu --k 8 --train-images 10000 --out bench/engine_variants_cpu.json

On a GPU, prints ms per trial-epoch for: eager and CUDA graph (float32 and bf16), each with the
trials folded into the channels (the default) and vmapped whole (``fold=False``), the graph of the former vmap(grad)
gradients, graph + cudnn.benchmark, graph + bf16 autocast, graph + TF32 matmuls, graph +
channels-last convolution weights, the looped engine (the CPU's default) from a graph, and the
step compiled by ``torch.compile`` then captured (with its warm-up time: compiling is paid once
per process unless Inductor's cache has it); then the top CUDA kernels of a few eager steps
(torch.profiler). On a CPU: looped and vmapped, with channels-last weights (the CPU's default)
and without, and the seconds per trial to score 10,000 validation images, each timed ``--rounds``
times in turn (the best is kept: a shared CPU is noisy).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench.common import engine_epoch_seconds  # noqa: E402

from lrfind import load_dataset  # noqa: E402
from lrfind.engine.trials import FusedTrials, TrialSpec  # noqa: E402


class GradOfVmap(FusedTrials):
    """The engine's gradients as they were until 2026-11: ``vmap(grad_and_value(loss))`` (torch.func
    transforms the backward), where the engine now runs one ``autograd.grad`` through the vmapped
    forward (and so never imports torch._dynamo, which torch.func.grad does)."""

    def _gradients(self, x: torch.Tensor, y: torch.Tensor,
                   buffers: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        from torch.func import grad_and_value, vmap

        grad_of = vmap(grad_and_value(self._loss), in_dims=(0, 0, None, None), randomness="different")
        with self.autocast:
            grads, losses = grad_of(self.params, self.buffers if buffers is None else buffers, x, y)
        return losses, self._flatten({name: grads[name] for name in self._shapes})


def epoch_ms(k: int, loader, device, model: str, **options) -> float:
    return 1000 * engine_epoch_seconds(k, loader, device, model=model, **options) / k


def eval_seconds_per_trial(k: int, val, device, model: str, **options) -> float:
    """Seconds per trial for K trials to score ``val`` (after one warm-up evaluation)."""
    specs = [TrialSpec("constant", {}, seed=i) for i in range(k)]
    engine = FusedTrials(model, specs, base_lr=0.05, total_steps=10, steps_per_epoch=10, device=device, **options)
    engine.evaluate(val)
    start = time.perf_counter()
    engine.evaluate(val)
    return (time.perf_counter() - start) / k


def cpu_rows(k: int, loader, val, device, model: str, rounds: int) -> dict[str, float]:
    """The CPU's variants, each timed ``rounds`` times in turn; the best of each."""
    variants = {
        "looped, channels-last (the CPU default)": lambda: epoch_ms(k, loader, device, model),
        "looped, usual layout": lambda: epoch_ms(k, loader, device, model, channels_last=False),
        "vmap, channels-last": lambda: epoch_ms(k, loader, device, model, vectorize=True),
        "vmap, usual layout": lambda: epoch_ms(k, loader, device, model, vectorize=True, channels_last=False),
        "vmap whole (fold=False), channels-last": lambda: epoch_ms(k, loader, device, model, vectorize=True, fold=False),
        "vmap whole (fold=False), usual layout":
            lambda: epoch_ms(k, loader, device, model, vectorize=True, channels_last=False, fold=False),
        "evaluate 10,000 images, s per trial, channels-last": lambda: eval_seconds_per_trial(k, val, device, model),
        "evaluate 10,000 images, s per trial, usual layout":
            lambda: eval_seconds_per_trial(k, val, device, model, channels_last=False),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            times[name].append(run())
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, nargs="+", default=[50])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--train-images", type=int, default=None, help="train on the first N images (an epoch's length)")
    ap.add_argument("--rounds", type=int, default=3, help="CPU: times each variant is timed, in turn")
    ap.add_argument("--model", default="lenet", help="a built-in model or file.py:function, for MNIST's 1x28x28")
    ap.add_argument("--quick", action="store_true",
                    help="GPU: folded against vmapped whole, float32 and bf16, from a graph only (no profile)")
    ap.add_argument("--out", default=None, help="JSON file to write")
    args = ap.parse_args()
    model = args.model
    device = torch.device(args.device)
    train, val = load_dataset("mnist", "train", device=device).holdout(10_000)
    if args.train_images:
        train = train.subset(args.train_images)
    loader = train.loader(args.batch_size, seed=0)
    if device.type != "cuda":
        result = {"device": f"{device} ({torch.get_num_threads()} threads)", "torch": torch.__version__, "model": model,
                  "train_images": len(train), "batch_size": args.batch_size, "rounds": args.rounds, "by_k": {}}
        for k in args.k:
            rows = result["by_k"][str(k)] = cpu_rows(k, loader, val, device, model, args.rounds)
            for name, value in rows.items():
                unit = "s" if name.startswith("evaluate") else "ms per trial-epoch"
                print(f"K={k:<4} {name:<52} {value:8.2f} {unit}")
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1))
            print(f"wrote {args.out}")
        return
    if args.quick:
        result = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__, "model": model,
                  "train_images": len(train), "batch_size": args.batch_size, "by_k": {}}
        for k in args.k:
            rows = result["by_k"][str(k)] = {
                "graph": epoch_ms(k, loader, device, model),
                "graph, vmapped whole (fold=False)": epoch_ms(k, loader, device, model, fold=False),
                "graph + bf16": epoch_ms(k, loader, device, model, amp="bf16"),
                "graph + bf16, vmapped whole (fold=False)": epoch_ms(k, loader, device, model, amp="bf16", fold=False)}
            for name, ms in rows.items():
                print(f"K={k:<4} {name:<40} {ms:7.1f} ms per trial-epoch")
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1))
        return
    for k in args.k:
        rows = {"eager": epoch_ms(k, loader, device, model, cuda_graph=False),
                "eager, vmapped whole (fold=False)": epoch_ms(k, loader, device, model, cuda_graph=False, fold=False),
                "graph": epoch_ms(k, loader, device, model),
                "graph, vmapped whole (fold=False)": epoch_ms(k, loader, device, model, fold=False),
                "graph + bf16": epoch_ms(k, loader, device, model, amp="bf16"),
                "graph + bf16, vmapped whole (fold=False)": epoch_ms(k, loader, device, model, amp="bf16", fold=False),
                "graph, vmap(grad) as before 2026-11": epoch_ms(k, loader, device, model, engine_class=GradOfVmap)}
        torch.backends.cudnn.benchmark = True
        rows["graph + cudnn.benchmark"] = epoch_ms(k, loader, device, model)
        rows["graph + cudnn.benchmark + bf16"] = epoch_ms(k, loader, device, model, amp="bf16")
        torch.set_float32_matmul_precision("high")
        rows["graph + cudnn.benchmark + tf32 matmul"] = epoch_ms(k, loader, device, model)
        torch.set_float32_matmul_precision("highest")
        torch.backends.cudnn.benchmark = False
        rows["graph, looped (vectorize=False)"] = epoch_ms(k, loader, device, model, vectorize=False)
        rows["graph + channels-last weights"] = epoch_ms(k, loader, device, model, channels_last=True)
        rows["graph, looped + channels-last weights"] = epoch_ms(k, loader, device, model, vectorize=False,
                                                                 channels_last=True)
        start = time.perf_counter()
        try:
            rows["torch.compile, then graph"] = epoch_ms(k, loader, device, model, wrap_step=torch.compile)
            total = time.perf_counter() - start
            print(f"K={k:<4} torch.compile: {total - k * rows['torch.compile, then graph'] / 1000:.1f} s of warm-up "
                  "(compile and capture) before the timed epoch")
        except Exception as e:       # an experiment: report it and go on to the profile
            print(f"K={k:<4} torch.compile failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}")
        for name, ms in rows.items():
            print(f"K={k:<4} {name:<40} {ms:7.1f} ms per trial-epoch")
    from torch.profiler import ProfilerActivity, profile

    k = args.k[0]
    specs = [TrialSpec("constant", {}, seed=i) for i in range(k)]
    batches = [b for _, b in zip(range(8), loader)]
    for fold in (True, False):
        engine = FusedTrials(model, specs, base_lr=0.05, total_steps=40, steps_per_epoch=20, device=device,
                             cuda_graph=False, fold=fold)
        for x, y in batches[:3]:
            engine.step(x, y)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for x, y in batches[3:]:
                engine.step(x, y)
            torch.cuda.synchronize()
        print(f"K={k}, 5 eager steps, " + ("trials folded into the channels" if fold else "vmapped whole"))
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=70))


if __name__ == "__main__":
    main()
