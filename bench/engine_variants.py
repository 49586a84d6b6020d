"""The trial engine's step at K trials under its options, and where its GPU time goes.

    python bench/engine_variants.py --k 50

Prints ms per trial-epoch for: eager, CUDA graph, the graph of the former vmap(grad) gradients,
graph + cudnn.benchmark, graph + bf16 autocast, graph + TF32 matmuls, the looped engine (the
CPU's default) from a graph, and the step compiled by ``torch.compile`` then captured (with its
warm-up time: compiling is paid once per process unless Inductor's cache has it); then the top
CUDA kernels of a few eager steps (torch.profiler).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import engine_epoch_seconds  # noqa: E402

from lrfind import load_dataset  # noqa: E402
from lrfind.train import FusedTrials, TrialSpec  # noqa: E402


class GradOfVmap(FusedTrials):
    """The engine's gradients as they were until 2026-11: ``vmap(grad_and_value(loss))`` (torch.func
    transforms the backward), where the engine now runs one ``autograd.grad`` through the vmapped
    forward (and so never imports torch._dynamo, which torch.func.grad does)."""

    def _gradients(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from torch.func import grad_and_value, vmap

        grad_of = vmap(grad_and_value(self._loss), in_dims=(0, 0, None, None), randomness="different")
        with self.autocast:
            grads, losses = grad_of(self.params, self.buffers, x, y)
        return losses, torch.cat([grads[name].reshape(len(self.flat), -1) for name in self._shapes], 1)


def epoch_ms(k: int, loader, device, **options) -> float:
    return 1000 * engine_epoch_seconds(k, loader, device, **options) / k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, nargs="+", default=[50])
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("engine_variants.py compares CUDA-graph and bf16 variants: it needs a CUDA device "
                         "(bench/run.py --quick runs anywhere)")
    device = torch.device("cuda")
    train, _ = load_dataset("mnist", "train", device=device).holdout(10_000)
    loader = train.loader(args.batch_size, seed=0)
    for k in args.k:
        rows = {"eager": epoch_ms(k, loader, device, cuda_graph=False),
                "graph": epoch_ms(k, loader, device),
                "graph, vmap(grad) as before 2026-11": epoch_ms(k, loader, device, engine_class=GradOfVmap)}
        torch.backends.cudnn.benchmark = True
        rows["graph + cudnn.benchmark"] = epoch_ms(k, loader, device)
        rows["graph + cudnn.benchmark + bf16"] = epoch_ms(k, loader, device, amp="bf16")
        torch.set_float32_matmul_precision("high")
        rows["graph + cudnn.benchmark + tf32 matmul"] = epoch_ms(k, loader, device)
        torch.set_float32_matmul_precision("highest")
        torch.backends.cudnn.benchmark = False
        rows["graph, looped (vectorize=False)"] = epoch_ms(k, loader, device, vectorize=False)
        start = time.perf_counter()
        try:
            rows["torch.compile, then graph"] = epoch_ms(k, loader, device, wrap_step=torch.compile)
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
    engine = FusedTrials("lenet", specs, base_lr=0.05, total_steps=40, steps_per_epoch=20, device=device,
                         cuda_graph=False)
    batches = [b for _, b in zip(range(8), loader)]
    for x, y in batches[:3]:
        engine.step(x, y)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for x, y in batches[3:]:
            engine.step(x, y)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=70))


if __name__ == "__main__":
    main()
